"""The policy engine: what generates with the trained weights, and how the weights reach it.

:class:`PolicyEngine` owns the generation side of a run: the backend that samples for both roles
(the trained module itself, a compute-dtype copy of it under mixed precision, or a vLLM engine),
the :class:`~agents.self_play.SelfPlayAgent` on top of it, a frozen Challenger when the config
names one, the per-iteration sampling seeds, the weight sync after each update and the export of
the policy as a transformers folder.
"""

from __future__ import annotations

import copy
import os
import shutil
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.base import SamplingConfig
from agents.models import cast_parameters
from agents.self_play import SelfPlayAgent
from algorithms.config import TrainConfig
from algorithms.launch import MIXED, compute_dtype
from algorithms.lora import merged_lora_weights


class PolicyEngine:
    """The generation backend, the agents and the weight sync of one rank.

    Args:
        config: the run.
        fabric: the run's Fabric.
        model: the Fabric-wrapped policy that is trained.
        tokenizer: its tokenizer.
        precision: the resolved precision.
        source: where the policy's weights were loaded from (a vLLM engine starts from it).
        agent_wrapper: wraps each generating agent (see :class:`~algorithms.trainer.SpiceTrainer`).
    """

    def __init__(self, config: TrainConfig, fabric: Any, model: Any, tokenizer: Any, *,
                 precision: str, source: str,
                 agent_wrapper: Callable[[SelfPlayAgent], Any] | None = None) -> None:
        self.config, self.fabric, self.model = config, fabric, model
        self.precision = precision
        self.shares_module = False
        self.agent = SelfPlayAgent(self._backend(tokenizer, source), challenger=config.challenger,
                                   reasoner=config.reasoner, template=config.model.template)
        self.player: Any = agent_wrapper(self.agent) if agent_wrapper else self.agent
        try:
            self.frozen = self._frozen_challenger()
        except BaseException:
            self.agent.close()
            raise
        self.frozen_player: Any = None
        if self.frozen is not None:
            self.frozen_player = agent_wrapper(self.frozen) if agent_wrapper else self.frozen

    def _backend(self, tokenizer: Any, source: str) -> Any:
        cfg = self.config
        original = self.model.module
        if cfg.model.backend == "hf":
            from agents.backends.hf import HFBackend

            if self.precision in MIXED:  # generate in the compute dtype from a synced copy
                # parameters only: the buffers (rotary frequencies) stay as the trained
                # module has them, so the copy samples from the policy that is trained
                generator = cast_parameters(copy.deepcopy(original), compute_dtype(
                    self.precision)).eval().requires_grad_(False)
            else:
                generator, self.shares_module = original, True
            return HFBackend(generator, tokenizer, **cfg.model.backend_options)
        from agents.backends.vllm import VLLMBackend

        options = {"seed": cfg.trainer.seed + self.fabric.global_rank,
                   **cfg.model.backend_options}
        dtype_name = str(compute_dtype(self.precision)).removeprefix("torch.") \
            if self.fabric.device.type == "cuda" else None  # the CPU default (float32) is right
        backend = VLLMBackend(source, dtype=dtype_name,
                              trust_remote_code=cfg.model.trust_remote_code, **options)
        if cfg.trainer.lora_rank:  # the engine starts from the base weights plus zero deltas
            backend.update_weights(self.export_weights())
        return backend

    def _frozen_challenger(self) -> SelfPlayAgent | None:
        cfg = self.config
        if not cfg.model.frozen_challenger:
            return None
        if cfg.model.frozen_challenger_endpoint:
            return SelfPlayAgent("openai", cfg.model.frozen_challenger, challenger=cfg.challenger,
                                 template=cfg.model.template,
                                 backend_options={"base_url":
                                                  cfg.model.frozen_challenger_endpoint})
        device = "cuda" if self.fabric.device.type == "cuda" else "cpu"
        return SelfPlayAgent("hf", cfg.model.frozen_challenger, challenger=cfg.challenger,
                             template=cfg.model.template, dtype=compute_dtype(self.precision),
                             device=device, trust_remote_code=cfg.model.trust_remote_code)

    @property
    def challenger(self) -> Any:
        """Who writes the questions: the frozen Challenger, or the policy."""
        return self.frozen_player or self.player

    def seed_sampling(self, iteration: int) -> None:
        """Per-iteration, per-rank, per-role sampling seeds: a resumed run samples the same."""
        for agent in filter(None, (self.agent, self.frozen)):
            for index, role in enumerate(("challenger", "reasoner")):
                seed = np.random.SeedSequence(
                    [self.config.trainer.seed, iteration, self.fabric.global_rank, index]
                ).generate_state(1)[0]
                current: SamplingConfig = agent.sampling[role]  # type: ignore[index]
                agent.sampling[role] = current.model_copy(update={"seed": int(seed)})  # type: ignore[index]

    def generation_context(self, agent: Any) -> AbstractContextManager[Any]:
        """Autocast when ``agent`` generates with the trained module itself."""
        if agent is self.player and self.shares_module:
            context: AbstractContextManager[Any] = self.fabric.autocast()
            return context
        return nullcontext()

    def export_weights(self) -> list[tuple[str, torch.Tensor]]:
        """The policy's weights under transformers names (LoRA deltas merged in)."""
        original = self.model.module
        if self.config.trainer.lora_rank:
            return merged_lora_weights(original)
        return [(name, p.detach()) for name, p in original.named_parameters()]

    def sync(self) -> None:
        """Bring the trained weights to the generation backend (nothing to do when it
        generates with the trained module)."""
        if self.shares_module:
            return
        with torch.no_grad():
            if self.config.model.backend == "hf":  # a copy of the trained module, adapters too
                self.agent.backend.update_weights(
                    [(n, p.detach()) for n, p in self.model.module.named_parameters()])
            else:
                self.agent.backend.update_weights(self.export_weights())

    def export(self, folder: Path, tokenizer: Any) -> Path | None:
        """Save the policy (LoRA merged) and tokenizer as a transformers folder (rank 0)."""
        if self.fabric.global_rank != 0:
            self.fabric.barrier()
            return None
        original = self.model.module
        temporary = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(temporary, ignore_errors=True)
        if self.config.trainer.lora_rank:  # the merged weights, leaving the adapters in place
            base = original.get_base_model()
            base.save_pretrained(temporary, state_dict=dict(merged_lora_weights(original)))
        else:
            original.save_pretrained(temporary)
        tokenizer.save_pretrained(temporary)
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(temporary, folder)
        self.fabric.barrier()
        return folder

    def close(self) -> None:
        """Release the generation engines."""
        for agent in (self.agent, self.frozen):
            if agent is not None:
                agent.close()
