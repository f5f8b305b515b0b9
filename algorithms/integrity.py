"""Checkpoints that are what was saved, and that cannot run code when read.

* **Checksums.** When a checkpoint is published, the SHA-256 of each of its files (one file, or
  every shard of a folder written under FSDP) is recorded beside it in ``<name>.sha256``, while
  the files are flushed to disk (``fsync``). :func:`verify_checkpoint` compares them before any
  model is loaded, so a checkpoint damaged on disk or cut short by a full disk fails at once with
  one line naming the bad file and the older checkpoints that remain. Checkpoints saved without
  a record are checked for completeness (a single-file checkpoint is a zip archive whose entries
  carry CRC-32s).
* **No pickled code.** Checkpoints are read with ``torch.load(weights_only=True)``: tensors,
  numbers, strings and containers only, plus NumPy arrays of plain numbers for checkpoints
  written before random states were stored as lists. A checkpoint that asks for anything else
  is refused instead of executed.
  The index of a checkpoint folder written under FSDP (``.metadata``, which PyTorch's
  distributed checkpoint reads with plain pickle) is first read by :func:`check_sharded_index`,
  which takes only the index's own classes.
* **Finite state.** :func:`nonfinite_tensors` names parameters or optimiser states holding NaN
  or infinity; the trainer refuses to resume from such a checkpoint.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import torch

from algorithms.sharding import SHARDED_INDEX, SHARDED_META
from spice_env.text import parse_json

CHECKSUM_SUFFIX = ".sha256"
_CHUNK = 8 << 20


class CheckpointError(ValueError):
    """A checkpoint is damaged, incomplete or holds what a checkpoint should not."""


def checksum_file(checkpoint: Path) -> Path:
    """Where the checksums of ``checkpoint`` are recorded (``iter-000006.ckpt.sha256``)."""
    return checkpoint.with_name(checkpoint.name + CHECKSUM_SUFFIX)


def _files(checkpoint: Path) -> list[Path]:
    if checkpoint.is_dir():
        return sorted(p for p in checkpoint.rglob("*") if p.is_file())
    return [checkpoint]


def _digest(path: Path, flush: bool) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(_CHUNK):
            digest.update(block)
        if flush:
            os.fsync(handle.fileno())
    return digest.hexdigest()


def fsync_folder(folder: Path) -> None:
    """Flush a folder's entries (renames, new files) to disk where the system allows it."""
    with contextlib.suppress(OSError):
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def record_checksums(checkpoint: Path) -> Path:
    """Flush every file of ``checkpoint`` to disk and record their SHA-256 beside it."""
    record = {"files": {str(p.relative_to(checkpoint)) if checkpoint.is_dir() else p.name:
                        _digest(p, flush=True) for p in _files(checkpoint)}}
    if checkpoint.is_dir():
        fsync_folder(checkpoint)
    target = checksum_file(checkpoint)
    temporary = target.with_name(target.name + ".tmp")
    with temporary.open("w", encoding="utf-8") as handle:
        json.dump(record, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, target)
    return target


def verify_checkpoint(checkpoint: Path, older: Iterable[Path] = ()) -> None:
    """Check ``checkpoint`` against its recorded checksums (or, without a record, that it is
    complete) before anything is loaded from it.

    A checkpoint that passed in this process and is unchanged since (the same sizes and
    modification times) is not read again: the command line's preflight check and the
    trainer's setup read it once between them.

    Raises:
        CheckpointError: one line naming the damaged file and the ``older`` checkpoints left.
    """
    seen = _fingerprint(checkpoint)
    if seen is not None and seen in _VERIFIED:
        return
    started = time.time_ns()
    problem = _problem(checkpoint)
    if problem is None:
        # a file changed within a second of the check could change again with the same time
        # stamp (their resolution is coarse): such a checkpoint is checked again next time
        if seen is not None and all(when < started - 10**9 for _, _, when in seen):
            _VERIFIED.add(seen)
        return
    names = [p.name for p in older if p != checkpoint]
    hint = (f"older checkpoints: {', '.join(names)} (write one of their names into "
            f"{checkpoint.parent / 'last'} to resume from it)" if names
            else "no older checkpoint is left")
    raise CheckpointError(f"{checkpoint} is damaged: {problem}; {hint}")


def verify_shared(checkpoint: Path, older: Iterable[Path], *, rank: int,
                  share: Callable[[str | None], list[str | None]]) -> None:
    """:func:`verify_checkpoint` on rank 0 only, its verdict handed to every rank by ``share``
    (which every rank calls; it returns what each rank gave, in rank order): one read of a
    large checkpoint instead of one per process.

    Raises:
        CheckpointError: on every rank, when the checkpoint is damaged.
    """
    problem = None
    if rank == 0:
        try:
            verify_checkpoint(checkpoint, older)
        except CheckpointError as error:
            problem = str(error)
    verdict = share(problem)[0]
    if verdict is not None:
        raise CheckpointError(verdict)


_VERIFIED: set[tuple[Any, ...]] = set()


def _fingerprint(checkpoint: Path) -> tuple[Any, ...] | None:
    """The checkpoint's files with their sizes and modification times (None: unreadable)."""
    try:
        files = sorted(checkpoint.iterdir()) if checkpoint.is_dir() else [checkpoint]
        files.append(checksum_file(checkpoint))
        stats = [(str(path), path.stat()) for path in files]
    except OSError:
        return None
    return tuple((name, info.st_size, info.st_mtime_ns) for name, info in stats)


def _problem(checkpoint: Path) -> str | None:
    record_path = checksum_file(checkpoint)
    if not record_path.is_file():
        return _incomplete(checkpoint)
    try:
        files = parse_json(record_path.read_text("utf-8"))["files"]
        expected = {str(k): str(v) for k, v in files.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return f"its checksum record {record_path.name} cannot be read"
    for name, digest in sorted(expected.items()):
        path = checkpoint / name if checkpoint.is_dir() else checkpoint
        if not path.is_file():
            return f"{name} is missing"
        if _digest(path, flush=False) != digest:
            return (f"{path.name if checkpoint.is_dir() else 'its content'} does not match the "
                    "SHA-256 recorded when it was saved")
    return None


def _incomplete(checkpoint: Path) -> str | None:
    """Without a record: a single-file checkpoint must be a whole zip archive whose entries
    match their CRC-32s; a sharded one must hold its metadata files."""
    if checkpoint.is_dir():
        missing = [n for n in (SHARDED_INDEX, SHARDED_META) if not (checkpoint / n).is_file()]
        return f"{', '.join(missing)} missing" if missing else None
    try:
        with zipfile.ZipFile(checkpoint) as archive:
            bad = archive.testzip()
    except (OSError, zipfile.BadZipFile, EOFError, ValueError) as exc:
        return f"it is not a complete checkpoint file ({exc})"
    return f"its entry {bad} is corrupt (CRC-32 mismatch)" if bad is not None else None


@contextlib.contextmanager
def tensors_only() -> Iterator[None]:
    """``torch.load(weights_only=True)`` that also takes NumPy arrays of plain numbers (the
    random states of checkpoints from earlier versions)."""
    import numpy as np

    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # NumPy < 2
        from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
    allowed: list[Any] = [_reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]
    with torch.serialization.safe_globals(allowed):
        yield


def load_tensors(path: Path) -> Any:
    """A single-file checkpoint read without running pickled code (memory-mapped)."""
    try:
        with tensors_only():
            return torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path} holds objects other than tensors and plain values; "
                              f"it is not read ({first[:200]})") from None


def nonfinite_tensors(named: Iterable[tuple[str, Any]], limit: int = 3) -> list[str]:
    """The names (at most ``limit``) of tensors among ``named`` holding NaN or infinity; a
    sharded tensor is checked in its local part."""
    found: list[str] = []
    for name, value in named:
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            continue
        local = value.to_local() if hasattr(value, "to_local") else value
        if not bool(torch.isfinite(local.detach()).all()):
            found.append(name)
            if len(found) >= limit:
                break
    return found


def refuse_nonfinite(path: Path, model: Any, optimizer: Any,
                     any_rank: Callable[[bool], bool] = bool) -> None:
    """Refuse a resumed state whose parameters or optimiser state hold NaN or infinity (on
    any rank: ``any_rank`` tells whether any process found some).

    Raises:
        CheckpointError: naming the first such tensors.
    """
    bad = nonfinite_tensors([*model.named_parameters(), *optimizer_tensors(optimizer)])
    if any_rank(bool(bad)):
        where = ", ".join(bad) if bad else "on another rank"
        raise CheckpointError(f"{path} holds NaN or infinite values ({where}); resume from an "
                              "older checkpoint")


def plain(value: Any) -> Any:
    """NumPy arrays and scalars inside tuples and lists as lists and Python numbers (what a
    checkpoint read as tensors only can hold)."""
    import numpy as np

    if isinstance(value, tuple | list):
        return type(value)(plain(v) for v in value)
    return value.tolist() if isinstance(value, np.ndarray | np.generic) else value


def optimizer_tensors(optimizer: Any) -> Iterator[tuple[str, Any]]:
    """Every tensor of an optimiser's state, named ``state[<index>].<key>``."""
    for index, state in enumerate(optimizer.state.values()):
        for key, value in state.items():
            yield f"state[{index}].{key}", value


_INDEX_CLASSES = {
    "torch.distributed.checkpoint.metadata": None,  # any of the index's own dataclasses
    "torch.distributed.checkpoint.filesystem": {"_StorageInfo"},
    "torch.serialization": {"_get_layout"},
    "torch": {"Size", *(name for name in dir(torch) if isinstance(getattr(torch, name, None),
                                                               torch.dtype))},
    "pathlib": {"PosixPath", "PurePosixPath", "WindowsPath", "PureWindowsPath", "Path"},
    "collections": {"OrderedDict"},
    "builtins": {"set", "frozenset", "slice", "complex"},
}


class _IndexReader(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        allowed = _INDEX_CLASSES.get(module, set())
        if module not in _INDEX_CLASSES or (allowed is not None and name not in allowed):
            raise pickle.UnpicklingError(f"{module}.{name} is not part of a checkpoint index")
        return super().find_class(module, name)


def check_sharded_index(checkpoint: Path) -> None:
    """Read the index of a sharded checkpoint with an unpickler that knows only the index's
    classes, so that loading the checkpoint afterwards cannot run other code.

    Raises:
        CheckpointError: the index refers to anything else, or cannot be read.
    """
    index = checkpoint / SHARDED_INDEX
    try:
        with index.open("rb") as handle:
            _IndexReader(handle).load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError,
            AttributeError, ImportError) as exc:
        raise CheckpointError(f"{index} is not a checkpoint index: {exc}") from None
