"""The optimisation side of a run: the trained module, its optimiser and one update step.

:class:`Learner` wraps the policy (and, for algorithms that need them, a value head and a frozen
reference) in Fabric, builds AdamW and the warm-up schedule, and turns samples that carry their
advantages into one optimiser step: the algorithm's ``prepare`` hook, the loss in micro-batches
with gradient accumulation (gradients synchronised across ranks on the last micro-batch only),
clipping, the step.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from typing import Any

import torch

from agents.models import cast_parameters
from algorithms.base import Algorithm
from algorithms.config import TrainConfig
from algorithms.launch import compute_dtype, gather
from algorithms.samples import TrainingSample, learning_samples, policy_loss
from algorithms.sharding import full_value, gathered, is_sharded


def make_adamw(parameters: list[torch.nn.Parameter], *, fused: bool = True, **options: Any
               ) -> torch.optim.AdamW:
    """AdamW with the fused kernel where every parameter's device and dtype support it (one
    pass over each tensor instead of several) and ``fused`` allows it, the multi-tensor one
    otherwise. (float16 training needs the unfused one: Fabric unscales its gradients before
    clipping.)"""
    fusable = fused and all(p.device.type in ("cpu", "cuda") and p.dtype in (
        torch.float32, torch.bfloat16, torch.float16) for p in parameters)
    if fusable:
        try:
            return torch.optim.AdamW(parameters, fused=True, **options)
        except (RuntimeError, ValueError):
            pass
    return torch.optim.AdamW(parameters, **options)


@contextmanager
def uncached_casts() -> Iterator[None]:
    """Inside an autocast region: cast weights anew at each use instead of caching the casts
    until the region ends."""
    previous = torch.is_autocast_cache_enabled()
    torch.set_autocast_cache_enabled(False)
    try:
        yield
    finally:
        torch.set_autocast_cache_enabled(previous)


def freeze_input_embeddings(module: Any) -> int:
    """Stop training ``module``'s input embedding table (``trainer.freeze_input_embeddings``)
    when it is its own; the number of parameters frozen. A table the output layer shares
    (tied embeddings) stays trained, since freezing it would freeze the output layer: 0."""
    table = module.get_input_embeddings().weight
    output = module.get_output_embeddings()
    if output is not None and getattr(output, "weight", None) is table:
        return 0
    table.requires_grad_(False)
    return table.numel()


class Learner:
    """The trained module, the optimiser and the update step of one rank.

    Args:
        config: the run.
        fabric: the run's Fabric.
        module: the policy (a transformers causal LM, LoRA-wrapped or not), not yet set up.
        algorithm: the loss and its hooks.
        precision: the resolved precision.
        pad_id: the tokenizer's padding id.
    """

    def __init__(self, config: TrainConfig, fabric: Any, module: Any, algorithm: Algorithm, *,
                 precision: str, pad_id: int) -> None:
        self.config, self.fabric, self.algorithm = config, fabric, algorithm
        self.pad_id = pad_id
        self.reference = None
        if algorithm.config.beta > 0:
            self.reference = cast_parameters(copy.deepcopy(module), compute_dtype(precision),
                                             fabric.device).eval().requires_grad_(False)
        hidden_size = module.config.hidden_size
        self.model = fabric.setup_module(module)
        self.sharded = is_sharded(self.model)
        self.value_head = None
        if algorithm.needs_value_head:  # zero-initialised: the same on every rank
            self.value_head = fabric.setup_module(algorithm.make_value_head(hidden_size))
        parameters = [p for p in self.model.parameters() if p.requires_grad]
        if self.value_head is not None:
            parameters += list(self.value_head.parameters())
        opt = config.optimizer
        optimizer = make_adamw(parameters, fused=precision != "16-mixed", lr=opt.lr,
                               betas=opt.betas, weight_decay=opt.weight_decay)
        self.optimizer = fabric.setup_optimizers(optimizer)
        warmup = opt.warmup_iterations
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: min(1.0, (step + 1) / (warmup + 1)) if warmup else 1.0)

    def stateful(self) -> dict[str, Any]:
        """What a checkpoint saves of the learner, by name."""
        state: dict[str, Any] = {"model": self.model, "optimizer": self.optimizer,
                                 "scheduler": self.scheduler}
        if self.value_head is not None:
            state["value_head"] = self.value_head
        return state

    def learning_samples(self, samples: list[TrainingSample]
                         ) -> tuple[list[TrainingSample], int]:
        """The samples the update runs through the model, and how many it leaves out."""
        if not self.config.trainer.skip_inert_samples:
            return samples, 0
        return learning_samples(samples, self.algorithm)

    def update(self, samples: list[TrainingSample]) -> dict[str, float]:
        """One optimiser step on samples that carry their advantages (every rank calls it).

        Samples that cannot contribute to the gradient (see
        :meth:`learning_samples`) are not run through the model; they still count in the
        batch size the loss is divided by, so the step is the same. ``skipped_samples`` says
        how many were left out."""
        learning, skipped = self.learning_samples(samples)
        metrics = self._update(learning, sum(gather(self.fabric, len(samples))))
        metrics["skipped_samples"] = float(skipped)
        return metrics

    def _update(self, samples: list[TrainingSample], batch_total: int) -> dict[str, float]:
        """Micro-batched loss and backward, clipping and one optimiser step."""
        fabric = self.fabric
        self.optimizer.zero_grad(set_to_none=True)
        if batch_total == 0:  # no rank has anything to learn from: no step
            return {}
        self.model.train()
        if samples:
            with fabric.autocast():
                samples = self.algorithm.prepare(
                    self.model.module, samples,
                    value_head=self.value_head.module if self.value_head is not None else None,
                    pad_id=self.pad_id, micro_batch_size=self.config.trainer.micro_batch_size,
                    share_prompts=self.config.trainer.share_prompts)
        modules = [m for m in (self.model, self.value_head) if m is not None]
        passes = -(-len(samples) // self.config.trainer.micro_batch_size)
        # sharded parameters are gathered in every forward and backward, so every rank runs
        # as many micro-batches as the busiest one (those it lacks with a zero contribution)
        most = max(gather(fabric, passes)) if self.sharded else max(passes, 1)

        def chunk_context(index: int, count: int) -> AbstractContextManager[Any]:
            stack = ExitStack()  # gradients are synchronised on the last pass only
            for module in modules:
                stack.enter_context(fabric.no_backward_sync(module, enabled=index < most - 1))
            return stack

        metrics: dict[str, float] = {}
        if samples:
            # autocast without its cache of weight casts: each matmul casts its weight when it
            # runs, so no compute-dtype copy of the whole model is held through the update
            # (measured on a CPU: 1 GB less for the 0.5B model, and no slower)
            with fabric.autocast(), uncached_casts():
                metrics = self._loss(samples, batch_total, chunk_context)
        for index in range(passes, most):  # take part in the gradient reduction with zero
            with chunk_context(index, most):
                self._zero_backward()
        return self._step(metrics)

    def _loss(self, samples: list[TrainingSample], batch_total: int,
              chunk_context: Callable[[int, int], AbstractContextManager[Any]]
              ) -> dict[str, float]:
        fabric, world = self.fabric, self.fabric.world_size
        # the module behind Fabric's wrapper (DDP's, when there is one, so gradients still
        # synchronise): the caller's autocast region applies, and the vocabulary-sized logits
        # stay in bf16 instead of being copied to float32 by Fabric's output conversion
        forward = getattr(self.model, "_forward_module", self.model)
        return policy_loss(forward, samples, self.algorithm, pad_id=self.pad_id,
                           micro_batch_size=self.config.trainer.micro_batch_size,
                           backward=lambda loss: fabric.backward(loss * world),
                           value_head=self.value_head, reference=self.reference,
                           batch_total=batch_total, chunk_context=chunk_context,
                           share_prompts=self.config.trainer.share_prompts)

    def _step(self, metrics: dict[str, float]) -> dict[str, float]:
        """Clip, step the optimiser and the schedule, free the gradients."""
        cfg, fabric = self.config, self.fabric
        # the norm over all the optimiser's parameters (the same on every rank), also without
        # clipping: a non-finite gradient is never applied
        norm = fabric.clip_gradients(self.model, self.optimizer,
                                     max_norm=cfg.optimizer.grad_clip or math.inf,
                                     error_if_nonfinite=False)
        value = float(full_value(norm)) if norm is not None else 0.0  # a DTensor under FSDP
        if norm is not None:
            metrics["grad_norm"] = value
        metrics["lr"] = float(self.optimizer.param_groups[0]["lr"])  # the rate this step used
        loss = metrics.get("loss", 0.0)
        if not (math.isfinite(value) and math.isfinite(loss)):
            fabric.print(f"warning: a non-finite update (loss {loss}, gradient norm {value})"
                         + ("; the step was skipped, the weights are unchanged"
                            if not math.isfinite(value) else ""))
        if math.isfinite(value):
            self.optimizer.step()
        else:  # the weights stay as they are; the schedule moves on with the iterations
            metrics["nonfinite_step"] = 1.0
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)  # no gradient memory while generating
        self.model.eval()
        return metrics

    def _zero_backward(self) -> None:
        from algorithms.logprobs import completion_logprobs

        found = completion_logprobs(self.model, [[self.pad_id]], [[self.pad_id]], self.pad_id,
                                    with_hidden=self.value_head is not None)
        loss = found.logprobs.sum() * 0.0
        if self.value_head is not None and found.hidden is not None:
            loss = loss + self.value_head(found.hidden).sum() * 0.0
        self.fabric.backward(loss)

    def parameter_checksum(self) -> float:
        """The sum of all trained parameters (float64), to compare ranks (the full parameters
        when they are sharded: every rank calls it)."""
        with gathered(self.model):
            return float(sum(p.detach().double().sum() for p in self.model.parameters()))
