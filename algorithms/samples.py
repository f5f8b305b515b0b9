"""From one iteration's rollouts to training samples with advantages, and their loss.

:func:`collect_samples` walks an :class:`spice_env.runner.IterationRollout` and returns one
:class:`TrainingSample` per trainable completion, grouped as in the paper: the Challenger's G kept
attempts on a document form one group; the G answers to the document's chosen question form one
Reasoner group; with the task-type selector, the selector steps of all documents form one more
Challenger group. Samples without token ids (plain strings, or a remote server's chat answers)
cannot be trained on and are counted instead.

:func:`assign_advantages` runs the algorithm's advantage estimator per role and reports how many
groups had no reward variance (and drops them when asked). :func:`policy_loss` computes the loss
in micro-batches, calling ``backward`` on each, so the caller (the Fabric trainer) controls
gradient accumulation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from typing import Any, Literal

import torch

from agents.base import TrainableSample
from algorithms.base import Algorithm, PolicyBatch
from algorithms.logprobs import completion_logprobs
from spice_env.types import Role


@dataclass(frozen=True)
class TrainingSample:
    """One completion to learn from."""

    role: Role
    group: int
    prompt_ids: tuple[int, ...]
    completion_ids: tuple[int, ...]
    old_logprobs: tuple[float, ...]
    reward: float
    advantage: float = 0.0
    # filled by an algorithm's ``prepare`` hook (one with a value head): one per completion token
    token_advantages: tuple[float, ...] | None = None  # per-token advantages
    old_values: tuple[float, ...] | None = None  # value predictions before the update
    returns: tuple[float, ...] | None = None  # value targets


@dataclass
class CollectedSamples:
    """The trainable samples of an iteration and what could not be used."""

    samples: list[TrainingSample]
    untrainable: int = 0


def trainable(sample: object) -> bool:
    """Whether a sample can be trained on: a :class:`~agents.base.TrainableSample` with a
    prompt, a completion and one log-probability per completion token."""
    return (isinstance(sample, TrainableSample) and bool(sample.prompt_ids)
            and bool(sample.completion_ids)
            and len(sample.logprobs or ()) == len(sample.completion_ids))


def collect_samples(rollout: Any, roles: Literal["both", "challenger", "reasoner"] = "both"
                    ) -> CollectedSamples:
    """Training samples of ``rollout`` (an ``IterationRollout``), one group per document and
    role."""
    out = CollectedSamples(samples=[])
    group = 0
    for document in rollout.documents:
        groups: list[tuple[Role, list[tuple[Any, float]]]] = []
        if roles in ("both", "challenger"):
            groups.append(("challenger", [(a.sample, float(a.reward)) for a in document.kept
                                          if a.reward is not None]))
        if roles in ("both", "reasoner"):
            groups.append(("reasoner", [(a.sample, float(a.reward))
                                        for a in document.reasoner_group]))
        for role, members in groups:
            group += _add_group(out, role, group, members)
    if roles in ("both", "challenger"):  # selector steps: one group across the documents
        _add_group(out, "challenger", group, [
            (d.selection.sample, float(d.selection.reward)) for d in rollout.documents
            if getattr(d, "selection", None) is not None and d.selection.reward is not None])
    return out


def _add_group(out: CollectedSamples, role: Role, group: int,
               members: Sequence[tuple[Any, float]]) -> int:
    """Add one group's trainable samples to ``out``; 1 if the group had members, else 0."""
    for sample, reward in members:
        if not trainable(sample):
            out.untrainable += 1
            continue
        out.samples.append(TrainingSample(
            role=role, group=group, prompt_ids=tuple(sample.prompt_ids),
            completion_ids=tuple(sample.completion_ids),
            old_logprobs=tuple(sample.logprobs), reward=reward))
    return 1 if members else 0


@dataclass(frozen=True)
class AdvantageStats:
    """Group statistics of one role."""

    groups: int
    zero_variance_groups: int
    dropped_samples: int


def assign_advantages(samples: Sequence[TrainingSample], algorithm: Algorithm, *,
                      skip_zero_variance: bool | None = None
                      ) -> tuple[list[TrainingSample], dict[str, AdvantageStats]]:
    """Samples with their advantages (per role, per group) and statistics per role.

    ``skip_zero_variance`` defaults to the algorithm configuration's setting.
    """
    if skip_zero_variance is None:
        skip_zero_variance = bool(algorithm.config.skip_zero_variance)
    result: list[TrainingSample] = []
    stats: dict[str, AdvantageStats] = {}
    for role in ("challenger", "reasoner"):
        members = [s for s in samples if s.role == role]
        if not members:
            continue
        rewards = torch.tensor([s.reward for s in members])
        found = algorithm.advantages(rewards, [s.group for s in members])
        dropped = 0
        for sample, advantage, flat in zip(members, found.advantages.tolist(),
                                           found.zero_variance.tolist(), strict=True):
            if flat and skip_zero_variance:
                dropped += 1
                continue
            result.append(replace(sample, advantage=float(advantage)))
        stats[role] = AdvantageStats(groups=found.groups,
                                     zero_variance_groups=found.zero_variance_groups,
                                     dropped_samples=dropped)
    return result, stats


def learning_samples(samples: Sequence[TrainingSample], algorithm: Algorithm
                     ) -> tuple[list[TrainingSample], int]:
    """The samples whose loss has a gradient, and how many were left out.

    An algorithm whose ``zero_advantage_inert`` attribute is true (Dr. GRPO and GRPO with
    β = 0) gives a sample of advantage exactly 0 no loss and no gradient, so leaving it out of
    the forward and backward changes nothing in the step as long as the micro-batch weights
    still count it (``policy_loss``'s ``batch_total``). Other algorithms keep every sample.
    """
    if not algorithm.zero_advantage_inert:
        return list(samples), 0
    kept = [s for s in samples if s.advantage != 0.0 or s.token_advantages is not None]
    return kept, len(samples) - len(kept)


def _padded(rows: Sequence[Sequence[float]], like: torch.Tensor) -> torch.Tensor:
    out = torch.zeros_like(like)
    for row, values in enumerate(rows):
        out[row, : len(values)] = torch.tensor(list(values), dtype=like.dtype)
    return out


def _policy_batch(chunk: Sequence[TrainingSample], current: Any, *, pad_id: int,
                  value_head: torch.nn.Module | None, reference: Any | None,
                  share_prompts: bool) -> PolicyBatch:
    """One micro-batch's :class:`PolicyBatch` from the policy's forward (``current``): the old
    log-probabilities, the advantages (per token when the samples carry them), the reference's
    log-probabilities and the value head's predictions where there are those."""
    like = current.logprobs.detach()
    batch = PolicyBatch(logprobs=current.logprobs,
                        old_logprobs=_padded([s.old_logprobs for s in chunk], like),
                        mask=current.mask,
                        advantages=torch.tensor([s.advantage for s in chunk],
                                                device=like.device))
    if reference is not None:
        with torch.no_grad():
            batch.ref_logprobs = completion_logprobs(
                reference, [s.prompt_ids for s in chunk], [s.completion_ids for s in chunk],
                pad_id, share_prompts=share_prompts).logprobs.to(like.device)
    if value_head is not None:
        assert current.hidden is not None
        batch.advantages = _padded([s.token_advantages or () for s in chunk], like)
        batch.values = value_head(current.hidden).float() * current.mask
        batch.old_values = _padded([s.old_values or () for s in chunk], like)
        batch.returns = _padded([s.returns or () for s in chunk], like)
    return batch


def policy_loss(model: Any, samples: Sequence[TrainingSample], algorithm: Algorithm, *,
                pad_id: int, micro_batch_size: int,
                backward: Callable[[torch.Tensor], None] | None = None,
                value_head: torch.nn.Module | None = None, reference: Any | None = None,
                batch_total: int | None = None,
                chunk_context: Callable[[int, int], AbstractContextManager[Any]] | None = None,
                share_prompts: bool = True) -> dict[str, float]:
    """The algorithm's loss over ``samples`` in micro-batches; ``backward`` is called on each.

    Each micro-batch's loss is weighted by its share of the samples (of ``batch_total`` when
    given: the whole step's count when the samples are one data-parallel rank's part), so for
    Dr. GRPO and GRPO the accumulated gradient equals that of one batch holding them all (PPO's
    token mean is then taken per micro-batch). Returns the summed loss and token-weighted
    metrics (clip fraction, ratio, entropy, KL, …).

    Args:
        value_head: the value head of an algorithm that ``needs_value_head``, whose samples
            come from its ``prepare`` hook.
        reference: a frozen model whose log-probabilities feed the KL penalty (``beta > 0``).
        chunk_context: ``chunk_context(index, count)`` wraps each micro-batch's forward and
            backward (the trainer skips gradient synchronisation on all but the last).
        share_prompts: compute a prompt shared by several samples of a micro-batch once
            (:func:`~algorithms.logprobs.completion_logprobs`); the gradient is the same.
    """
    if micro_batch_size < 1:
        raise ValueError("micro_batch_size must be >= 1")
    if algorithm.config.beta > 0 and reference is None:
        raise ValueError(f"beta={algorithm.config.beta} needs a reference model")
    total = batch_total if batch_total is not None else len(samples)
    count = -(-len(samples) // micro_batch_size)
    valued = algorithm.needs_value_head
    if valued and (value_head is None or any(s.token_advantages is None for s in samples)):
        raise ValueError(f"{type(algorithm).__name__} needs a value_head and samples prepared "
                         "by its prepare hook")
    totals: dict[str, float] = {}
    tokens = 0.0
    loss_sum = 0.0
    for index, start in enumerate(range(0, len(samples), micro_batch_size)):
        chunk = samples[start:start + micro_batch_size]
        with chunk_context(index, count) if chunk_context is not None else nullcontext():
            current = completion_logprobs(model, [s.prompt_ids for s in chunk],
                                          [s.completion_ids for s in chunk], pad_id,
                                          with_hidden=valued, share_prompts=share_prompts)
            batch = _policy_batch(chunk, current, pad_id=pad_id,
                                  value_head=value_head if valued else None,
                                  reference=reference, share_prompts=share_prompts)
            loss, metrics = algorithm.loss(batch)
            weighted = loss * (len(chunk) / total)
            if backward is not None:
                backward(weighted)
        loss_sum += float(weighted.detach())
        chunk_tokens = float(current.mask.sum())
        metrics["entropy"] = float((current.entropy.sum() / max(chunk_tokens, 1.0)).detach())
        for key, value in metrics.items():
            if key != "tokens":
                totals[key] = totals.get(key, 0.0) + value * chunk_tokens
        tokens += chunk_tokens
    out = {key: value / max(tokens, 1.0) for key, value in totals.items()}
    out.update(loss=loss_sum, tokens=tokens)
    return out
