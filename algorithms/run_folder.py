"""A training run's folder: the one place that knows its layout.

::

    <run>/
      spice-run.json           the marker saying a run owns this folder's run files
      config.yaml              the validated config the run started with
      metrics.jsonl            one record per iteration (rank 0)
      evaluations.jsonl        every answer of the in-loop evaluation
      rollouts.jsonl           every document's rollout (rollouts.rank<r>.jsonl per rank)
      ranks.jsonl              the ranks' parameter checksums (data-parallel runs)
      memory.json              peak resident memory per phase (setup, generate, train, save, …)
      logs/ tensorboard/ wandb/   the CSV, TensorBoard and W&B loggers' files
      wandb-run-id             the W&B run this training run logs to (kept by --resume)
      plots/curves.png         the main curves
      checkpoints/iter-XXXXXX.ckpt, its .sha256 record, checkpoints/last
      model/                   the final policy as a transformers folder

:class:`RunFolder` names these paths and does what is done to them: find the newest checkpoint
through the ``last`` pointer, tell a checkpoint's iteration from its name, publish a checkpoint
atomically and prune old ones, cut the logs back to a checkpoint on resume, and clear what an
earlier run left before a fresh start. Only a folder holding the run marker is ever cleared: a
folder whose ``model/``, ``logs/`` or ``checkpoints/`` no run wrote is refused, not emptied. The
trainer, the checkpoint loaders, the preflight checks and the benchmarks that read runs all go
through it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from algorithms.config import TrainConfig

MARKER_FILE = "spice-run.json"
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
EVALUATIONS_FILE = "evaluations.jsonl"
RANKS_FILE = "ranks.jsonl"
MEMORY_FILE = "memory.json"
PLOTS_DIR = "plots"
CHECKPOINTS_DIR = "checkpoints"
LAST_POINTER = "last"
EXPORT_DIR = "model"
LOG_DIRS = ("logs", "tensorboard", "wandb")
WANDB_ID_FILE = "wandb-run-id"
_CHECKPOINT = re.compile(r"^iter-(\d{1,18})\.ckpt$")  # a longer number is no iteration


def checkpoint_name(iteration: int) -> str:
    """The file name of the checkpoint saved after ``iteration``."""
    return f"iter-{iteration:06d}.ckpt"


def checkpoint_iteration(path: str | os.PathLike[str]) -> int:
    """The iteration a checkpoint file was saved at, from its name (``iter-000006.ckpt`` → 6)."""
    match = _CHECKPOINT.match(Path(path).name)
    if match is None:
        raise ValueError(f"{path} is not named like a checkpoint (iter-XXXXXX.ckpt)")
    return int(match.group(1))


def remove(path: Path) -> None:
    """Delete a file or a folder if it exists."""
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


class RunFolder:
    """The paths and file operations of one run folder (see the module docstring)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    # -- paths ---------------------------------------------------------------------------------
    @property
    def config_file(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def metrics_file(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def evaluations_file(self) -> Path:
        return self.path / EVALUATIONS_FILE

    @property
    def ranks_file(self) -> Path:
        return self.path / RANKS_FILE

    @property
    def memory_file(self) -> Path:
        """The run's peak resident memory per phase (written at the end of ``fit``)."""
        return self.path / MEMORY_FILE

    @property
    def plots_dir(self) -> Path:
        return self.path / PLOTS_DIR

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / CHECKPOINTS_DIR

    @property
    def last_pointer(self) -> Path:
        return self.checkpoints_dir / LAST_POINTER

    @property
    def wandb_id_file(self) -> Path:
        """Where the W&B run id of this run is kept."""
        return self.path / WANDB_ID_FILE

    @property
    def export_dir(self) -> Path:
        return self.path / EXPORT_DIR

    def rollouts_file(self, rank: int = 0, world_size: int = 1) -> Path:
        """A rank's rollouts file (one file when the run has one process)."""
        name = "rollouts.jsonl" if world_size == 1 else f"rollouts.rank{rank}.jsonl"
        return self.path / name

    def rollout_files(self) -> list[Path]:
        """Every rollouts file present, sorted."""
        return sorted(self.path.glob("rollouts*.jsonl"))

    # -- what the folder holds -----------------------------------------------------------------
    def is_run(self) -> bool:
        """Whether the folder holds a run's config."""
        return self.config_file.is_file()

    def has_history(self) -> bool:
        """Whether the folder holds a run's metrics or checkpoints (an earlier run)."""
        return self.metrics_file.exists() or self.latest() is not None

    def is_marked(self) -> bool:
        """Whether the folder holds the run marker (a run of this library owns its run files)."""
        return (self.path / MARKER_FILE).is_file()

    def run_paths(self) -> list[Path]:
        """The paths of the run layout present here: what :meth:`clear` removes."""
        candidates = [self.checkpoints_dir, self.metrics_file, self.ranks_file,
                      self.evaluations_file, self.plots_dir, self.export_dir,
                      self.wandb_id_file, self.memory_file,
                      *(self.path / d for d in LOG_DIRS), *self.rollout_files()]
        return [p for p in candidates if p.exists() or p.is_symlink()]

    def unowned_paths(self) -> list[Path]:
        """Run-layout paths that no run is known to have written (there is no marker):
        clearing the folder would delete them, so a fresh start refuses."""
        return [] if self.is_marked() else self.run_paths()

    def has_export(self) -> bool:
        """Whether the final policy was exported as a transformers folder."""
        return (self.export_dir / "config.json").is_file()

    def config(self) -> TrainConfig:
        """The run's config (:class:`~algorithms.config.ConfigError` when it is invalid)."""
        from algorithms.config import load_config

        if not self.is_run():
            raise FileNotFoundError(f"{self.path} is not a run folder (no {CONFIG_FILE})")
        return load_config(self.config_file)

    def checkpoints(self) -> list[Path]:
        """The checkpoints (files, or folders of shards under FSDP), oldest first."""
        found = [p for p in self.checkpoints_dir.glob("iter-*.ckpt") if _CHECKPOINT.match(p.name)]
        return sorted(found, key=checkpoint_iteration)

    def pointed(self) -> Path | None:
        """The checkpoint the ``last`` pointer names (None without a readable pointer).

        The pointer holds a checkpoint's file name inside ``checkpoints/``; anything else (a
        path, a name of another form) is not followed.
        """
        name = _read_pointer(self.last_pointer)
        if name is None or not _CHECKPOINT.match(name):
            return None
        return self.checkpoints_dir / name

    def latest(self) -> Path | None:
        """The checkpoint to resume from: the one ``last`` names, if it exists."""
        path = self.pointed()
        return path if path is not None and path.exists() else None

    def latest_iteration(self) -> int | None:
        """The iteration of :meth:`latest`, if there is a checkpoint."""
        path = self.latest()
        return checkpoint_iteration(path) if path is not None else None

    def newest_checkpoint(self) -> Path | None:
        """The newest checkpoint file, pointer or not."""
        found = self.checkpoints()
        return found[-1] if found else None

    # -- writing -------------------------------------------------------------------------------
    def write_config(self, text: str) -> None:
        """Write ``config.yaml`` (the run's validated config as YAML)."""
        self.path.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(text, "utf-8")

    def checkpoint_path(self, iteration: int) -> Path:
        """Where the checkpoint of ``iteration`` lives once published."""
        return self.checkpoints_dir / checkpoint_name(iteration)

    def staging_path(self, iteration: int) -> Path:
        """The temporary name a checkpoint is written under before :meth:`publish`."""
        return self.checkpoints_dir / (checkpoint_name(iteration) + ".tmp")

    def prepare_staging(self, temporary: Path) -> None:
        """Make the checkpoint folder and remove a stale temporary (call on one process)."""
        self.checkpoints_dir.mkdir(parents=True, exist_ok=True)
        remove(temporary)

    def publish(self, temporary: Path, iteration: int, keep: int) -> Path:
        """Rename a written checkpoint to its final name, point ``last`` at it and delete all
        but the ``keep`` newest checkpoints (call on one process)."""
        from algorithms.integrity import checksum_file, fsync_folder, record_checksums

        final = self.checkpoint_path(iteration)
        remove(final)
        remove(checksum_file(final))
        os.replace(temporary, final)
        record_checksums(final)  # the files flushed to disk, their SHA-256 recorded beside
        pointer = self.checkpoints_dir / (LAST_POINTER + ".tmp")
        with pointer.open("w", encoding="utf-8") as handle:
            handle.write(final.name)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(pointer, self.last_pointer)
        fsync_folder(self.checkpoints_dir)
        existing = sorted(self.checkpoints_dir.glob("iter-*.ckpt"))
        for old in existing[:-keep]:
            remove(old)
            remove(checksum_file(old))
        return final

    def cut_back(self, iteration: int, rank: int, world_size: int) -> int:
        """Cut the logs back to ``iteration`` (a resumed run redoes what came after its
        checkpoint): this rank's rollouts, and on rank 0 the evaluations and metrics. Returns
        how many metric records were kept (0 on other ranks)."""
        from algorithms.runlog import truncate_jsonl

        truncate_jsonl(self.rollouts_file(rank, world_size), iteration)
        if rank != 0:
            return 0
        truncate_jsonl(self.evaluations_file, iteration)
        return truncate_jsonl(self.metrics_file, iteration)

    def mark(self) -> None:
        """Write the run marker (at a fresh start, and on resuming a folder without one)."""
        from spice_env import __version__

        self.path.mkdir(parents=True, exist_ok=True)
        if not self.is_marked():
            record = {"library": "spice-env", "version": __version__,
                      "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            (self.path / MARKER_FILE).write_text(json.dumps(record) + "\n", "utf-8")

    def clear(self) -> None:
        """Delete what an earlier run wrote here and mark the folder for a fresh start.

        Raises:
            FileExistsError: the folder holds run-layout paths but no run marker (they may be
                the user's own files; nothing is deleted).
        """
        unowned = self.unowned_paths()
        if unowned:
            raise FileExistsError(unowned_message(self, unowned))
        for path in self.run_paths():
            remove(path)
        self.mark()


def unowned_message(run: RunFolder, unowned: list[Path]) -> str:
    """The one-line refusal to start in a folder whose run files no run wrote."""
    names = ", ".join(p.name + ("/" if p.is_dir() else "") for p in unowned)
    return (f"{run.path} holds {names} but no {MARKER_FILE}, so no run of this library wrote "
            "them and a fresh start would delete them; move them away or choose another "
            "trainer.output_dir")


def _read_pointer(path: Path) -> str | None:
    """The text of a ``last`` pointer, if it is a short regular UTF-8 file (a FIFO or device
    put in its place is never read: opening does not wait, and the file type is checked)."""
    try:
        handle = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except (OSError, ValueError):
        return None
    try:
        if not stat.S_ISREG(os.fstat(handle).st_mode):
            return None
        data = os.read(handle, _POINTER_BYTES + 1)
    except OSError:
        return None
    finally:
        os.close(handle)
    if len(data) > _POINTER_BYTES:
        return None
    try:
        return data.decode("utf-8").strip()
    except UnicodeDecodeError:
        return None


_POINTER_BYTES = 256


def resolve_checkpoint(path: str | os.PathLike[str]) -> Path | None:
    """The checkpoint ``path`` names (a ``.ckpt`` file or folder of shards, or a
    ``checkpoints/last`` pointer), or None when ``path`` is not a checkpoint.

    Raises:
        FileNotFoundError: a ``last`` pointer names a checkpoint that is gone.
    """
    candidate = Path(path)
    if candidate.exists() and candidate.suffix == ".ckpt":
        return candidate
    if (candidate.is_file() and candidate.name == LAST_POINTER
            and candidate.parent.name == CHECKPOINTS_DIR):
        folder = RunFolder(candidate.parent.parent)
        target = folder.pointed()
        if target is None:
            raise FileNotFoundError(f"{candidate} does not name a checkpoint file "
                                    "(iter-XXXXXX.ckpt)")
        if not target.exists():
            raise FileNotFoundError(f"{candidate} names {target.name}, which does not exist")
        return target
    return None


def is_checkpoint_reference(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is written like a checkpoint (a ``.ckpt`` file or a
    ``checkpoints/last`` pointer), whether or not it exists."""
    candidate = Path(path)
    return candidate.suffix == ".ckpt" or (candidate.name == LAST_POINTER
                                           and candidate.parent.name == CHECKPOINTS_DIR)


def run_folder_of(path: str | os.PathLike[str]) -> RunFolder | None:
    """The run a path belongs to: a run folder itself, one of its checkpoints (or its ``last``
    pointer) or its ``model/`` export; None for anything else."""
    candidate = Path(path)
    try:
        checkpoint = resolve_checkpoint(candidate)
    except FileNotFoundError:
        checkpoint = None
    if checkpoint is not None:
        folder = RunFolder(checkpoint.parent.parent)
    elif candidate.is_dir() and (candidate / CONFIG_FILE).is_file():
        folder = RunFolder(candidate)
    elif candidate.is_dir() and candidate.name == EXPORT_DIR:
        folder = RunFolder(candidate.parent)
    else:
        return None
    return folder if folder.is_run() else None
