"""Fully sharded data parallelism (``trainer.strategy: fsdp``) through Lightning Fabric.

The policy is sharded with PyTorch's FSDP2 (``fully_shard``) by Fabric's
``ModelParallelStrategy`` on a one-dimensional mesh over all processes: every decoder layer is
one unit, the embeddings, final norm and output head are the root unit. Parameters, gradients and
AdamW state are split over the ranks; a layer's full parameters exist only while it runs.

Generation does not run through the sharded module (ranks generate different lengths, and every
sharded forward is a collective): each rank generates from its own full copy (the hf backend's
compute-dtype copy, or its vLLM engine), and :func:`gathered` makes the full parameters
available for the weight sync after each update and for the export. Checkpoints are sharded: a
checkpoint is a folder with one file of shards per rank (``torch.distributed.checkpoint``) and
the rest of the training state in ``meta.pt``; :func:`read_sharded_model` reads the model part
back in a single process.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

SHARDED_META = "meta.pt"
"""The file of a sharded checkpoint that holds everything but the model and optimiser."""

SHARDED_INDEX = ".metadata"
"""The index torch's distributed checkpoint writes beside the shards (which tensor is where)."""


def fsdp_strategy() -> Any:
    """Fabric's FSDP2 strategy, with every process in one data-parallel (sharding) group and
    sharded checkpoints."""
    from lightning.fabric.strategies import ModelParallelStrategy

    class FullyShardedStrategy(ModelParallelStrategy):
        def setup_environment(self) -> None:
            # one sharding group over all processes (Fabric's default splits the mesh into
            # nodes x processes for tensor parallelism)
            self._data_parallel_size = self.num_nodes * self.num_processes
            self._tensor_parallel_size = 1
            super().setup_environment()

    return FullyShardedStrategy(shard_module, save_distributed_checkpoint=True)


def shard_module(module: torch.nn.Module, mesh: Any) -> torch.nn.Module:
    """Apply ``fully_shard`` to each decoder layer of ``module`` and then to ``module`` itself
    (the ``parallelize_fn`` Fabric calls in ``setup_module``)."""
    from torch.distributed.fsdp import fully_shard

    group = mesh["data_parallel"] if "data_parallel" in (mesh.mesh_dim_names or ()) else mesh
    for layer in decoder_layers(module):
        fully_shard(layer, mesh=group)
    fully_shard(module, mesh=group)
    return module


def decoder_layers(module: torch.nn.Module) -> list[torch.nn.Module]:
    """The repeated blocks of a transformers model (the classes it lists in
    ``_no_split_modules``, LoRA-wrapped or not); empty for other modules."""
    names: set[str] = set()
    for sub in module.modules():
        names.update(getattr(sub, "_no_split_modules", None) or ())
    return [sub for sub in module.modules() if type(sub).__name__ in names]


def is_sharded(module: Any) -> bool:
    """Whether any parameter of ``module`` (Fabric-wrapped or not) is a sharded DTensor."""
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in module.parameters())


def full_value(tensor: Any) -> Any:
    """A DTensor's full value (a collective: every rank calls it); anything else as it is."""
    gather = getattr(tensor, "full_tensor", None)
    return gather() if callable(gather) else tensor


@contextmanager
def gathered(module: Any) -> Iterator[None]:
    """Inside, ``module``'s parameters are full, plain tensors (every FSDP unit unsharded, a
    collective that every rank enters); they are resharded on leaving. A module that is not
    sharded is left as it is."""
    from torch.distributed.fsdp import FSDPModule

    units = [sub for sub in module.modules() if isinstance(sub, FSDPModule)]
    with torch.no_grad():
        try:
            for unit in units:
                unit.unshard()
            yield
        finally:
            for unit in reversed(units):
                unit.reshard()


def is_sharded_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` is a sharded checkpoint folder (written under ``trainer.strategy:
    fsdp``)."""
    folder = Path(path)
    return folder.is_dir() and (folder / SHARDED_INDEX).is_file()


def read_sharded_model(path: str | Path, module: torch.nn.Module) -> None:
    """Load the model part of a sharded checkpoint into an unsharded ``module`` of the same
    architecture, in this process alone (no process group needed).

    Raises:
        ValueError: the checkpoint does not hold these parameters.
    """
    import torch.distributed.checkpoint as dcp

    state = {name: tensor for name, tensor in module.state_dict().items()}
    tied = {name for name in state if name.endswith("lm_head.weight")} if getattr(
        getattr(module, "config", None), "tie_word_embeddings", False) else set()
    wanted = {"model": {name: tensor for name, tensor in state.items() if name not in tied}}
    try:
        with warnings.catch_warnings():  # "assuming the intent is to load in a single process"
            warnings.simplefilter("ignore", UserWarning)
            dcp.load(wanted, checkpoint_id=str(path), no_dist=True)
    except Exception as error:  # DCP reports missing keys as a CheckpointException
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"{path} does not hold this model's parameters: {first}") from None
    module.load_state_dict(wanted["model"], strict=False)
