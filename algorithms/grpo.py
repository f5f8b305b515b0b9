"""GRPO as first published: advantages scaled by the group's standard deviation, each sequence's
token losses averaged over its own length, then averaged over sequences, with an optional KL
penalty to a frozen reference."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from pydantic import Field

from algorithms.base import (
    AlgorithmConfigBase,
    GroupAdvantages,
    PolicyBatch,
    clipped_surrogate,
    group_advantages,
    kl_to_reference,
    step_metrics,
)


class GRPOConfig(AlgorithmConfigBase):
    """Settings of GRPO."""

    name: Literal["grpo"] = "grpo"
    clip_eps: float = Field(default=0.2, gt=0, lt=1, description="PPO clip range ε.")
    beta: float = Field(default=0.0, ge=0, description="Weight of the KL penalty to the "
                        "frozen reference policy.")
    std_eps: float = Field(default=1e-6, gt=0, description="Added to the group's standard "
                           "deviation before dividing.")
    skip_zero_variance: bool = Field(default=False, description="Leave out groups whose "
                                     "rewards are all equal.")


class GRPO:
    """GRPO advantages and loss."""

    def __init__(self, config: GRPOConfig | None = None) -> None:
        self.config = config or GRPOConfig()

    def advantages(self, rewards: torch.Tensor, groups: Sequence[int]) -> GroupAdvantages:
        """``(r − mean(group)) / (std(group) + ε)`` per sequence."""
        return group_advantages(rewards, groups, scale_by_std=True, eps=self.config.std_eps)

    def loss(self, batch: PolicyBatch) -> tuple[torch.Tensor, dict[str, float]]:
        """Token-mean per sequence, then mean over sequences."""
        mask = batch.mask.to(batch.logprobs.dtype)
        per_token, ratio, clipped = clipped_surrogate(
            batch.logprobs, batch.old_logprobs, batch.token_advantages(), self.config.clip_eps)
        if self.config.beta > 0:
            if batch.ref_logprobs is None:
                raise ValueError("beta > 0 needs ref_logprobs in the batch")
            per_token = per_token + self.config.beta * kl_to_reference(batch.logprobs,
                                                                       batch.ref_logprobs)
        lengths = mask.sum(dim=1).clamp(min=1)
        loss = ((per_token * mask).sum(dim=1) / lengths).mean()
        return loss, step_metrics(batch, ratio, clipped, mask)
