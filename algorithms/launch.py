"""Lightning Fabric for a run: precision, loggers, checkpoint I/O, and the process machinery.

:func:`make_fabric` builds the :class:`lightning.fabric.Fabric` that the ``trainer`` section
describes; :func:`gather` collects a picklable object from every rank; :func:`release_memory`
hands freed heap pages back to the system between generation and training.
"""

from __future__ import annotations

from contextlib import suppress
from pathlib import Path
from typing import Any

import torch

from algorithms.config import TrainConfig

MIXED = ("bf16-mixed", "16-mixed")
"""Precisions with float32 master weights and lower-precision compute."""


def resolve_precision(precision: str, accelerator: str) -> str:
    """``auto`` becomes ``bf16-mixed`` on GPUs and on CPUs with bf16 units, else ``32-true``.

    Mixed precision keeps float32 master weights: with the paper's learning rate of 1e-6 an update
    is far below bfloat16's resolution, so pure bf16 weights (``bf16-true``) would barely move.
    """
    if precision != "auto":
        return precision
    from agents.models import cpu_has_bf16_units

    on_gpu = accelerator in ("auto", "cuda", "gpu") and torch.cuda.is_available()
    return "bf16-mixed" if on_gpu or (accelerator != "mps" and cpu_has_bf16_units()) \
        else "32-true"


def compute_dtype(precision: str) -> torch.dtype:
    """The dtype matrix products run in under ``precision``."""
    if precision.startswith("bf16"):
        return torch.bfloat16
    if precision.startswith("16"):
        return torch.float16
    return torch.float32


def make_fabric(config: TrainConfig, resume_iteration: int | None = None) -> Any:
    """A :class:`lightning.fabric.Fabric` for the ``trainer`` section, with its loggers
    (TensorBoard drops events after ``resume_iteration`` when a run resumes)."""
    from lightning.fabric import Fabric

    from algorithms.tracking import make_loggers

    section = config.trainer
    strategy: Any = section.strategy
    plugins: list[Any] = [_streaming_checkpoint_io()]
    if strategy == "fsdp":  # FSDP2; it writes sharded checkpoints with its own I/O
        from algorithms.sharding import fsdp_strategy

        strategy, plugins = fsdp_strategy(), []
    return Fabric(accelerator=section.accelerator, strategy=strategy,
                  devices=section.devices, num_nodes=section.num_nodes,
                  precision=resolve_precision(section.precision, section.accelerator),  # type: ignore[arg-type]
                  loggers=make_loggers(config, resume_iteration), plugins=plugins)


def _streaming_checkpoint_io() -> Any:
    """Checkpoint I/O that writes straight to the file and maps it when reading.

    Fabric's default serialises a whole checkpoint into memory before writing it: for a model
    with AdamW state that is several GB on top of the training state, enough to run a small
    machine out of memory. The trainer makes saving atomic itself (temporary name, rename).
    """
    from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

    class StreamingCheckpointIO(TorchCheckpointIO):
        def save_checkpoint(self, checkpoint: dict[str, Any], path: Any,
                            storage_options: Any | None = None) -> None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            torch.save(checkpoint, path)

        def load_checkpoint(self, path: Any, map_location: Any = None,
                            weights_only: bool | None = None) -> dict[str, Any]:
            from algorithms.integrity import load_tensors

            if weights_only is False:  # only on an explicit request
                loaded: dict[str, Any] = torch.load(path, map_location="cpu", mmap=True,
                                                    weights_only=False)
                return loaded
            return load_tensors(Path(path))

    return StreamingCheckpointIO()


def gather(fabric: Any, obj: Any) -> list[Any]:
    """``obj`` from every rank, in rank order (any picklable object)."""
    if fabric.world_size == 1:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * fabric.world_size
    dist.all_gather_object(out, obj)
    return out


def end_process_group() -> None:
    """Tear the default process group down, if one was started."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def release_memory() -> None:
    """Collect garbage and hand freed heap pages back to the system (glibc keeps them
    otherwise, and a CPU run alternating training and generation grows until it is killed)."""
    import ctypes
    import gc

    gc.collect()
    with suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
