"""The training state a checkpoint saves beside the learner's: the iteration, every rank's
corpus sampler and random number generators, and the held-out set's digest."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from algorithms.config import ConfigError
from algorithms.integrity import plain
from algorithms.launch import gather


class TrainingProgress:
    """The iteration, the corpus sampler and every RNG, as one stateful object for Fabric."""

    def __init__(self, trainer: Any, runner: Any) -> None:
        self.trainer, self.runner = trainer, runner

    def state_dict(self) -> dict[str, Any]:
        """The iteration and every rank's own sampler and RNG states (called on all ranks:
        rank 0 writes the file, so each rank's part is gathered into it)."""
        local: dict[str, Any] = {
            "runner": self.runner.state_dict(),
            "python_rng": random.getstate(),
            "numpy_rng": plain(np.random.get_state()),  # no arrays: read as tensors only
            "torch_rng": torch.get_rng_state(),
        }
        if torch.cuda.is_available():
            local["cuda_rng"] = torch.cuda.get_rng_state_all()
        fabric = self.trainer.fabric
        return {"iteration": self.trainer.iteration, "world_size": fabric.world_size,
                "heldout": self.trainer.evaluator.digest(), "ranks": gather(fabric, local)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        world = self.trainer.fabric.world_size
        if int(state.get("world_size", world)) != world:
            raise ValueError(f"the checkpoint was written by {state['world_size']} processes; "
                             f"this run has {world} (each owns a corpus shard)")
        saved, current = state.get("heldout"), self.trainer.evaluator.digest()
        if saved is not None and saved != current:
            raise ConfigError("evaluation: the run was trained with another held-out set "
                              "(evaluation.heldout, seed, fields or corpus changed); resume "
                              "with the settings it started with, or start a new run")
        self.trainer.iteration = int(state["iteration"])
        local = state["ranks"][self.trainer.fabric.global_rank]
        self.runner.load_state_dict(local["runner"])
        random.setstate(local["python_rng"])
        name, keys, *rest = local["numpy_rng"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))
        torch.set_rng_state(local["torch_rng"])
        if "cuda_rng" in local and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(local["cuda_rng"])
