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

from agents.backends.hf import HFBackend
from agents.base import SamplingConfig, SleepingBackend
from agents.models import cast_parameters
from agents.self_play import SelfPlayAgent
from algorithms.config import TrainConfig
from algorithms.launch import MIXED, compute_dtype
from algorithms.lora import merged_lora_weights
from algorithms.sharding import gathered, is_sharded


def generation_copy(config: TrainConfig, module: Any, precision: str, device: Any
                    ) -> Any | None:
    """The hf backend's generation copy of the policy ``module`` on ``device``, or ``None``
    when the trained module can generate itself (float32 or bf16-true on one replica).

    Under mixed precision the copy holds the compute-dtype parameters (made once, refreshed in
    place after each update); under FSDP every rank needs a full copy, since the trained
    module is sharded. The buffers (rotary frequencies) stay as the trained module has them,
    so the copy samples from the policy that is trained.
    """
    if config.model.backend != "hf":
        return None
    if precision not in MIXED and config.trainer.strategy != "fsdp":
        return None
    dtype = compute_dtype(precision) if precision in MIXED else next(module.parameters()).dtype
    return cast_parameters(copy.deepcopy(module), dtype, device).eval().requires_grad_(False)


def vllm_rank_options(fabric: Any) -> dict[str, Any]:
    """Engine options for the colocated vLLM engine of one rank: under several processes vLLM's
    ``external_launcher``, so that each rank runs its own engine inside its own process (on a
    GPU with ``gpu_memory_utilization``, a share of it), and on GPUs sleep mode, which frees the
    engine's memory during the update."""
    options: dict[str, Any] = {}
    if fabric.world_size > 1:
        options["distributed_executor_backend"] = "external_launcher"
    if fabric.device.type == "cuda":
        options["sleep_mode"] = True
    return options


class PolicyEngine:
    """The generation backend, the agents and the weight sync of one rank.

    Args:
        config: the run.
        fabric: the run's Fabric.
        model: the Fabric-wrapped policy that is trained.
        tokenizer: its tokenizer.
        precision: the resolved precision.
        source: where the policy's weights were loaded from (a vLLM engine starts from it).
        generator: the hf backend's generation copy, from :func:`generation_copy` (made before
            the policy is sharded); by default one is made from ``model`` when it is needed.
        agent_wrapper: wraps each generating agent (see :class:`~algorithms.trainer.SpiceTrainer`).
    """

    def __init__(self, config: TrainConfig, fabric: Any, model: Any, tokenizer: Any, *,
                 precision: str, source: str, generator: Any = None,
                 agent_wrapper: Callable[[SelfPlayAgent], Any] | None = None) -> None:
        self.config, self.fabric, self.model = config, fabric, model
        self.precision = precision
        self.shares_module = False
        self.sharded = is_sharded(model)
        self.agent = SelfPlayAgent(self._backend(tokenizer, source, generator),
                                   challenger=config.challenger,
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

    def _backend(self, tokenizer: Any, source: str, generator: Any) -> Any:
        cfg = self.config
        original = self.model.module
        if cfg.model.backend == "hf":
            if generator is None and self.sharded:
                raise ValueError("a sharded policy generates from a copy made before it was "
                                 "sharded: pass generator=generation_copy(...)")
            if generator is None:
                generator = generation_copy(cfg, original, self.precision, self.fabric.device)
            if generator is None:  # generate with the trained module itself
                generator, self.shares_module = original, True
            options = dict(cfg.model.backend_options)
            if not self.shares_module and self.fabric.device.type == "cpu":
                options.setdefault("pack_weights", True)  # a copy of its own: packed for speed
            return HFBackend(generator, tokenizer, **options)
        from agents.backends.vllm import VLLMBackend

        options = {"seed": cfg.trainer.seed + self.fabric.global_rank,
                   **vllm_rank_options(self.fabric), **cfg.model.backend_options}
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
        """The policy's weights under transformers names (LoRA deltas merged in). A sharded
        policy's must be read inside :func:`~algorithms.sharding.gathered`."""
        original = self.model.module
        if self.config.trainer.lora_rank:
            return merged_lora_weights(original)
        return [(name, p.detach()) for name, p in original.named_parameters()]

    def rest(self) -> None:
        """Free generation memory before the update where the backend can: a vLLM engine in
        sleep mode (the next :meth:`sync` or generation wakes it), and the hf backend's
        compute-dtype copy of the policy, whose parameters the next :meth:`sync` makes again
        from the updated weights (under mixed precision the update makes compute-dtype casts
        of its own, so the two never coexist)."""
        if isinstance(self.agent.backend, SleepingBackend):
            self.agent.backend.sleep()
        elif isinstance(self.agent.backend, HFBackend) and not self.shares_module:
            self.agent.backend.release_weights()

    def sync(self) -> None:
        """Bring the trained weights to the generation backend (nothing to do when it
        generates with the trained module); sharded weights are gathered for it (every rank
        calls it)."""
        if self.shares_module:
            return
        with gathered(self.model):
            if self.config.model.backend == "hf":  # a copy of the trained module, adapters too
                self.agent.backend.update_weights(
                    [(n, p.detach()) for n, p in self.model.module.named_parameters()])
            else:
                self.agent.backend.update_weights(self.export_weights())

    def export(self, folder: Path, tokenizer: Any) -> Path | None:
        """Save the policy (LoRA merged) and tokenizer as a transformers folder (rank 0; every
        rank calls it, since sharded weights are gathered first)."""
        written = None
        with gathered(self.model):
            if self.fabric.global_rank == 0:
                written = self._save_export(folder, tokenizer)
        self.fabric.barrier()
        return written

    def _save_export(self, folder: Path, tokenizer: Any) -> Path:
        original = self.model.module
        temporary = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(temporary, ignore_errors=True)
        if self.config.trainer.lora_rank:  # the merged weights, leaving the adapters in place
            base = original.get_base_model()
            base.save_pretrained(temporary, state_dict=dict(merged_lora_weights(original)))
        elif self.sharded:  # the gathered tensors; the module itself is an FSDP wrapper class
            original.save_pretrained(temporary, state_dict={
                name: p.detach() for name, p in original.named_parameters()})
        else:
            original.save_pretrained(temporary)
        tokenizer.save_pretrained(temporary)
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(temporary, folder)
        return folder

    def close(self) -> None:
        """Release the generation engines."""
        for agent in (self.agent, self.frozen):
            if agent is not None:
                agent.close()
