"""What every algorithm shares: the batch of scored samples, group advantages, the clipped ratio.

A :class:`PolicyBatch` holds S sampled completions padded to T tokens: the log-probabilities of the
sampled tokens under the current policy (with gradients), under the policy that sampled them
(``old_logprobs``), optionally under a frozen reference, a mask of real completion tokens, and one
advantage per sequence or per token. Algorithms turn rewards into advantages
(:meth:`Algorithm.advantages`) and a batch into a loss (:meth:`Algorithm.loss`).

Groups follow the paper: a Challenger group is the G kept attempts on one document, a Reasoner
group the G answers to one question. Rewards are compared only within a group.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import torch
from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from algorithms.samples import TrainingSample


class AlgorithmConfigBase(BaseModel):
    """Fields every algorithm's configuration has: the clipped surrogate, the KL penalty and
    what to do with groups whose rewards are all equal."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    name: str = Field(default="", description="Picks the algorithm (the section's tag).")
    clip_eps: float = Field(default=0.2, gt=0, lt=1, description="PPO clip range ε of the "
                            "policy ratio.")
    beta: float = Field(default=0.0, ge=0, description="Weight of the KL penalty to the "
                        "frozen reference policy (0: no reference model is kept).")
    skip_zero_variance: bool = Field(default=False, description="Leave out groups whose "
                                     "rewards are all equal (their advantages are zero).")


@dataclass
class PolicyBatch:
    """Completions of one update step, padded to a common length T.

    Attributes:
        logprobs: ``(S, T)`` log-probs of the sampled tokens under the current policy.
        old_logprobs: ``(S, T)`` the same under the policy that sampled them (no gradient).
        mask: ``(S, T)`` 1 for completion tokens, 0 for padding.
        advantages: ``(S,)`` one per sequence, or ``(S, T)`` one per token.
        ref_logprobs: ``(S, T)`` under a frozen reference policy, for a KL penalty.
        values: ``(S, T)`` value predictions (PPO).
        old_values: ``(S, T)`` value predictions when the samples were taken (PPO).
        returns: ``(S, T)`` value targets (PPO).
    """

    logprobs: torch.Tensor
    old_logprobs: torch.Tensor
    mask: torch.Tensor
    advantages: torch.Tensor
    ref_logprobs: torch.Tensor | None = None
    values: torch.Tensor | None = None
    old_values: torch.Tensor | None = None
    returns: torch.Tensor | None = None

    def token_advantages(self) -> torch.Tensor:
        """Advantages broadcast to ``(S, T)``."""
        if self.advantages.dim() == 1:
            return self.advantages[:, None].expand_as(self.logprobs)
        return self.advantages


@dataclass(frozen=True)
class GroupAdvantages:
    """Advantages of a batch of sequences and what their groups looked like."""

    advantages: torch.Tensor
    zero_variance: torch.Tensor  # (S,) True for members of groups whose rewards are all equal
    groups: int
    zero_variance_groups: int


class Algorithm(Protocol):
    """What the trainer needs of an algorithm: advantages, a loss, and three things it asks
    before it builds the update.

    Attributes:
        config: the algorithm's settings (an :class:`AlgorithmConfigBase`).
        needs_value_head: the trainer builds a value head (:meth:`make_value_head`), runs the
            model with hidden states and passes the head to :meth:`prepare` and the loss.
        zero_advantage_inert: a sample whose advantage is exactly 0 adds nothing to the loss or
            its gradient, so the trainer may leave it out of the forward and backward.
    """

    config: Any

    @property
    def needs_value_head(self) -> bool: ...

    @property
    def zero_advantage_inert(self) -> bool: ...

    def advantages(self, rewards: torch.Tensor, groups: Sequence[int]) -> GroupAdvantages:
        """One advantage per sequence from its reward and its group id."""
        ...

    def prepare(self, model: Any, samples: Sequence[TrainingSample], *,
                value_head: torch.nn.Module | None, pad_id: int, micro_batch_size: int,
                share_prompts: bool = True) -> list[TrainingSample]:
        """The samples as the loss needs them, computed with the policy before the update
        (PPO: value predictions, per-token GAE advantages and returns)."""
        ...

    def make_value_head(self, hidden_size: int) -> torch.nn.Module:
        """A value head on hidden states of ``hidden_size`` (when ``needs_value_head``)."""
        ...

    def loss(self, batch: PolicyBatch) -> tuple[torch.Tensor, dict[str, float]]:
        """The scalar to minimise and metrics of this step."""
        ...


class AlgorithmBase:
    """What most algorithms share: settings of type ``config_class``, no value head, samples
    used as they are, and zero-advantage samples inert unless a KL penalty (``beta > 0``)
    gives them a gradient. Subclasses define ``advantages`` and ``loss``."""

    config_class: ClassVar[type[AlgorithmConfigBase]] = AlgorithmConfigBase
    needs_value_head: ClassVar[bool] = False

    def __init__(self, config: Any = None) -> None:
        self.config = config if config is not None else self.config_class()

    @property
    def zero_advantage_inert(self) -> bool:
        """True without a KL penalty (β = 0): an advantage of 0 then gives a zero loss."""
        return bool(self.config.beta == 0)

    def prepare(self, model: Any, samples: Sequence[TrainingSample], *,
                value_head: torch.nn.Module | None, pad_id: int, micro_batch_size: int,
                share_prompts: bool = True) -> list[TrainingSample]:
        """The samples unchanged: the loss needs nothing computed before the update."""
        return list(samples)

    def make_value_head(self, hidden_size: int) -> torch.nn.Module:
        raise NotImplementedError(f"{type(self).__name__} has no value head")


def group_advantages(rewards: torch.Tensor, groups: Sequence[int], *, scale_by_std: bool,
                     eps: float = 1e-6) -> GroupAdvantages:
    """``r − mean(group)``, divided by the group's standard deviation when ``scale_by_std``.

    The standard deviation is the population one (divide by G). Groups whose rewards are all equal
    get zero advantages (with or without scaling) and are flagged in ``zero_variance``.
    """
    if rewards.dim() != 1 or len(groups) != rewards.shape[0]:
        raise ValueError("rewards must be 1-D with one group id per reward")
    rewards = rewards.double()
    ids = torch.as_tensor(list(groups))
    advantages = torch.zeros_like(rewards)
    zero = torch.zeros(rewards.shape[0], dtype=torch.bool)
    unique = ids.unique()
    flat = 0
    for group in unique:
        members = (ids == group).nonzero()[:, 0]
        values = rewards[members]
        centred = values - values.mean()
        spread = values.std(unbiased=False)
        if bool((values == values[0]).all()):
            zero[members] = True
            flat += 1
            continue
        advantages[members] = centred / (spread + eps) if scale_by_std else centred
    return GroupAdvantages(advantages=advantages.float(), zero_variance=zero,
                           groups=len(unique), zero_variance_groups=flat)


def clipped_surrogate(logprobs: torch.Tensor, old_logprobs: torch.Tensor,
                      advantages: torch.Tensor, clip_eps: float
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-token PPO-clip loss ``−min(ρA, clip(ρ, 1−ε, 1+ε)A)``, the ratio ρ, and where it
    clipped."""
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * advantages
    loss = -torch.minimum(unclipped, clipped)
    was_clipped = (clipped < unclipped).float()
    return loss, ratio, was_clipped


def penalised_token_losses(batch: PolicyBatch, config: AlgorithmConfigBase
                           ) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
    """Per-token clipped surrogate plus ``beta`` × KL, the float mask, and the step's metrics.

    What the algorithms differ in is only how they aggregate these token losses.
    """
    mask = batch.mask.to(batch.logprobs.dtype)
    per_token, ratio, clipped = clipped_surrogate(batch.logprobs, batch.old_logprobs,
                                                  batch.token_advantages(), config.clip_eps)
    if config.beta > 0:
        if batch.ref_logprobs is None:
            raise ValueError("beta > 0 needs ref_logprobs in the batch")
        per_token = per_token + config.beta * kl_to_reference(batch.logprobs,
                                                              batch.ref_logprobs)
    return per_token, mask, step_metrics(batch, ratio, clipped, mask)


def whiten(values: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``values`` normalised to zero mean and unit variance over the ``mask``ed entries (all
    when no mask); masked-out entries become 0. One value or none is returned unchanged."""
    weights = torch.ones_like(values) if mask is None else mask.to(values.dtype)
    if weights.sum() <= 1:
        return values
    mean = masked_mean(values, weights)
    variance = masked_mean((values - mean) ** 2, weights)
    return (values - mean) / torch.sqrt(variance + 1e-8) * weights


def kl_to_reference(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """Per-token estimate of KL(π‖π_ref) that is never negative: ``exp(d) − d − 1``, d = ref − π."""
    delta = ref_logprobs - logprobs
    return torch.exp(delta) - delta - 1


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the tokens where ``mask`` is 1 (0 when there are none)."""
    total = mask.sum()
    return (values * mask).sum() / total.clamp(min=1)


def step_metrics(batch: PolicyBatch, ratio: torch.Tensor, clipped: torch.Tensor,
                 mask: torch.Tensor) -> dict[str, float]:
    """Clip fraction, mean ratio, token count and (with a reference) KL of one loss step."""
    with torch.no_grad():
        found = {"clip_fraction": float(masked_mean(clipped, mask)),
                 "ratio_mean": float(masked_mean(ratio, mask)),
                 "tokens": float(mask.sum())}
        if batch.ref_logprobs is not None:
            found["kl"] = float(masked_mean(kl_to_reference(batch.logprobs, batch.ref_logprobs),
                                            mask))
    return found
