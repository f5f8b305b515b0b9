"""Dr. GRPO, the paper's algorithm and the default.

* Advantages: ``A_i = r_i − mean(r_group)``, with no division by the group's standard deviation.
* Loss: PPO-clip (ε = 0.2) on the token log-probability ratios; the per-token losses of the batch
  are summed and divided by a constant, ``loss_normaliser`` (the maximum generation length),
  instead of each sequence's own length, so long and short answers weigh the same per token.
  With several sequences the sum is also divided by their number.
* KL to a frozen reference: β = 0 by default (none).
"""

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


class DrGRPOConfig(AlgorithmConfigBase):
    """Settings of Dr. GRPO."""

    name: Literal["drgrpo"] = "drgrpo"
    clip_eps: float = Field(default=0.2, gt=0, lt=1, description="PPO clip range ε.")
    beta: float = Field(default=0.0, ge=0, description="Weight of the KL penalty to the "
                        "frozen reference policy (0: no reference model is kept).")
    loss_normaliser: int = Field(default=1024, ge=1, description="The constant the summed "
                                 "token losses are divided by: the maximum generation length.")
    skip_zero_variance: bool = Field(default=False, description="Leave out groups whose "
                                     "rewards are all equal (their advantages are zero anyway).")


class DrGRPO:
    """Dr. GRPO advantages and loss."""

    def __init__(self, config: DrGRPOConfig | None = None) -> None:
        self.config = config or DrGRPOConfig()

    def advantages(self, rewards: torch.Tensor, groups: Sequence[int]) -> GroupAdvantages:
        """``r − mean(group)`` per sequence."""
        return group_advantages(rewards, groups, scale_by_std=False)

    def loss(self, batch: PolicyBatch) -> tuple[torch.Tensor, dict[str, float]]:
        """Summed clipped token losses over (sequences × ``loss_normaliser``)."""
        mask = batch.mask.to(batch.logprobs.dtype)
        per_token, ratio, clipped = clipped_surrogate(
            batch.logprobs, batch.old_logprobs, batch.token_advantages(), self.config.clip_eps)
        if self.config.beta > 0:
            if batch.ref_logprobs is None:
                raise ValueError("beta > 0 needs ref_logprobs in the batch")
            per_token = per_token + self.config.beta * kl_to_reference(batch.logprobs,
                                                                       batch.ref_logprobs)
        sequences = max(int(batch.logprobs.shape[0]), 1)
        loss = (per_token * mask).sum() / (sequences * self.config.loss_normaliser)
        return loss, step_metrics(batch, ratio, clipped, mask)

