"""Reading the policy back out of a training run: checkpoints as models.

A run folder (``trainer.output_dir``) holds ``config.yaml``, ``checkpoints/iter-XXXXXX.ckpt``
(model, optimizer and training state), a ``checkpoints/last`` pointer and, at the end, ``model/``
(a transformers folder). :func:`load_policy` accepts any of these, or a model name:

* a shipped short name, a transformers folder or a hub id — loaded as is;
* a run folder — its ``model/`` export when there is one, else its newest checkpoint;
* ``runs/<run>/checkpoints/last`` or a ``.ckpt`` file — the base model named by the run's
  ``config.yaml`` with the checkpoint's weights (LoRA adapters merged).

A checkpoint is checked against the SHA-256 recorded when it was saved before the base model is
loaded, and read without running pickled code (:mod:`algorithms.integrity`); a policy with NaN or
infinite weights is refused.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import torch

from agents.models import LoadedModel, load_model
from algorithms.config import ConfigError, TrainConfig
from algorithms.integrity import (
    CheckpointError,
    check_sharded_index,
    load_tensors,
    nonfinite_tensors,
    verify_checkpoint,
)
from algorithms.run_folder import (
    CONFIG_FILE,
    EXPORT_DIR,
    RunFolder,
    checkpoint_iteration,
    resolve_checkpoint,
    run_folder_of,
)
from algorithms.sharding import SHARDED_INDEX, is_sharded_checkpoint, read_sharded_model

__all__ = ["checkpoint_iteration", "export_policy", "load_checkpoint_policy", "load_policy",
           "remote_code_source", "resolve_checkpoint", "run_config", "run_of"]


def run_config(checkpoint: Path) -> TrainConfig:
    """The training config of the run a checkpoint belongs to (``<run>/config.yaml``)."""
    folder = RunFolder(checkpoint.parent.parent)
    if not folder.is_run():
        raise FileNotFoundError(f"{checkpoint} has no {CONFIG_FILE} two folders up: cannot tell "
                                "which base model it was trained from")
    return folder.config()


def run_of(name_or_path: str | os.PathLike[str]) -> TrainConfig | None:
    """The training config of the run a policy comes from, or None for a plain model.

    A run folder, a checkpoint file, a ``checkpoints/last`` pointer and a run's ``model/``
    export all belong to a run (its ``config.yaml``); names, other folders and hub ids do not.

    Raises:
        ValueError: the run's config cannot be read.
    """
    folder = run_folder_of(name_or_path)
    if folder is None:
        return None
    try:
        return folder.config()
    except ConfigError as exc:
        raise ValueError(f"the run config {folder.config_file} is invalid: {exc}") from None


def _run_checkpoint(path: Path) -> Path | None:
    """The checkpoint a path stands for: itself or its ``last`` pointer's target, a run
    folder's newest checkpoint when it has no export; None for a run with an export or a
    plain model."""
    checkpoint = resolve_checkpoint(path)
    if checkpoint is not None:
        return checkpoint
    folder = RunFolder(path)
    if not (path.is_dir() and folder.is_run()) or folder.has_export():
        return None
    newest = folder.newest_checkpoint()
    if newest is None:
        raise FileNotFoundError(f"run folder {path} has neither {EXPORT_DIR}/ nor checkpoints")
    return newest


def load_checkpoint_policy(checkpoint: str | os.PathLike[str], *, dtype: Any = None,
                           device: str = "cpu", trust_remote_code: bool = False) -> LoadedModel:
    """The policy of a trainer checkpoint as a plain causal LM (LoRA merged), in eval mode.

    ``trust_remote_code`` is the caller's choice, whatever the run's config says.
    """
    path = Path(checkpoint)
    config = run_config(path)
    verify_checkpoint(path, RunFolder(path.parent.parent).checkpoints())
    if is_sharded_checkpoint(path):
        check_sharded_index(path)
    loaded = load_model(config.model.name, dtype=torch.float32, device="cpu",
                        trust_remote_code=trust_remote_code)
    module = loaded.model
    if config.trainer.lora_rank:
        from algorithms.lora import with_lora

        module = with_lora(module, config.trainer.lora_rank)
    if is_sharded_checkpoint(path):  # written under FSDP: read the shards in this process
        read_sharded_model(path, module)
    else:
        _read_model(path, module, config.model.name)
    bad = nonfinite_tensors(module.named_parameters())
    if bad:
        raise CheckpointError(f"{path} holds NaN or infinite weights ({', '.join(bad)}); it "
                              "is not loaded")
    if config.trainer.lora_rank:
        module = module.merge_and_unload()
    from agents.models import cast_parameters, default_dtype

    # parameters only: casting the buffers too (the rotary frequencies) would make the model
    # differ from the same weights loaded with from_pretrained(dtype=...)
    module = cast_parameters(module, dtype or default_dtype(device), device)
    module.eval()
    return LoadedModel(model=module, tokenizer=loaded.tokenizer,
                       source=f"{path} (base {config.model.name})")


def _read_model(path: Path, module: Any, base: str) -> None:
    """Load the model entry of a single-file checkpoint into ``module``."""
    state = load_tensors(path)
    if not isinstance(state, dict) or "model" not in state:
        raise ValueError(f"{path} is not a spice-env checkpoint (no 'model' entry)")
    missing, unexpected = module.load_state_dict(state["model"], strict=False)
    # tied output embeddings may be stored once; anything else missing is a mismatch
    if getattr(module.config, "tie_word_embeddings", False):
        missing = [k for k in missing if not k.endswith("lm_head.weight")]
    if missing or unexpected:
        raise ValueError(f"{path} does not match {base}: missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]}")


def load_policy(name_or_path: str | os.PathLike[str], *, dtype: Any = None, device: str = "cpu",
                trust_remote_code: bool = False) -> LoadedModel:
    """Load a policy by model name, transformers folder, hub id, run folder or checkpoint.

    See the module docstring for what each form means.
    """
    path = Path(name_or_path)
    checkpoint = _run_checkpoint(path)
    if checkpoint is None and RunFolder(path).is_run():
        return load_model(RunFolder(path).export_dir, dtype=dtype, device=device,
                          trust_remote_code=trust_remote_code)
    if checkpoint is not None:
        try:
            return load_checkpoint_policy(checkpoint, dtype=dtype, device=device,
                                          trust_remote_code=trust_remote_code)
        except ConfigError as exc:
            raise ValueError(f"the config of {checkpoint}'s run is invalid: {exc}") from exc
    return load_model(name_or_path, dtype=dtype, device=device,
                      trust_remote_code=trust_remote_code)


def _as_is_or_checkpoint(name_or_path: str | os.PathLike[str]) -> tuple[str, Path | None]:
    """``(model, None)`` for what loads as a model folder or name (a run's ``model/`` export,
    names, folders, hub ids), ``("", checkpoint)`` for a checkpoint."""
    path = Path(name_or_path)
    checkpoint = _run_checkpoint(path)
    if checkpoint is not None:
        return "", checkpoint
    if RunFolder(path).is_run():
        return str(RunFolder(path).export_dir), None
    return os.fspath(name_or_path), None


def remote_code_source(name_or_path: str | os.PathLike[str]) -> str:
    """The model whose own Python code (its ``auto_map`` modules) :func:`load_policy` runs with
    ``trust_remote_code=True``: a run's ``model/`` export, the base model a checkpoint's run
    names (``model.name``), or the name, folder or hub id itself.

    Raises:
        ValueError: the config of the checkpoint's run is invalid.
        FileNotFoundError: a run folder without export or checkpoints.
    """
    direct, checkpoint = _as_is_or_checkpoint(name_or_path)
    if checkpoint is None:
        return direct
    try:
        return run_config(checkpoint).model.name
    except ConfigError as exc:
        raise ValueError(f"the config of {checkpoint}'s run is invalid: {exc}") from exc


def export_policy(name_or_path: str | os.PathLike[str], work_dir: str | os.PathLike[str], *,
                  trust_remote_code: bool = False) -> str:
    """A transformers folder for any form :func:`load_policy` takes (for engines such as vLLM
    that load from disk): names, folders and hub ids are returned as they are; a run's ``model/``
    export is used; a checkpoint is saved once under ``work_dir/<run>-iter-XXXXXX-<key>/``, the
    key changing when the checkpoint file does."""
    direct, checkpoint = _as_is_or_checkpoint(name_or_path)
    if checkpoint is None:
        return direct
    stat = (checkpoint / SHARDED_INDEX if checkpoint.is_dir() else checkpoint).stat()
    key = hashlib.sha256(f"{checkpoint.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()
                         ).hexdigest()[:10]
    folder = Path(work_dir) / f"{checkpoint.parent.parent.name}-{checkpoint.stem}-{key}"
    if (folder / "config.json").is_file():
        return str(folder)
    loaded = load_checkpoint_policy(checkpoint, dtype=torch.float32,
                                    trust_remote_code=trust_remote_code)
    temporary = folder.with_name(folder.name + ".tmp")
    loaded.model.save_pretrained(temporary)
    loaded.tokenizer.save_pretrained(temporary)
    os.replace(temporary, folder)
    return str(folder)
