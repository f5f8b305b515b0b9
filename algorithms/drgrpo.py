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
    AlgorithmBase,
    AlgorithmConfigBase,
    GroupAdvantages,
    PolicyBatch,
    group_advantages,
    penalised_token_losses,
)


class DrGRPOConfig(AlgorithmConfigBase):
    """Settings of Dr. GRPO."""

    name: Literal["drgrpo"] = Field(default="drgrpo", description="Picks the algorithm (the "
                                 "section's tag).")
    loss_normaliser: int = Field(default=1024, ge=1, description="The constant the summed "
                                 "token losses are divided by: the maximum generation length.")


class DrGRPO(AlgorithmBase):
    """Dr. GRPO advantages and loss."""

    config_class = DrGRPOConfig
    config: DrGRPOConfig

    def __init__(self, config: DrGRPOConfig | None = None) -> None:
        super().__init__(config)

    def advantages(self, rewards: torch.Tensor, groups: Sequence[int]) -> GroupAdvantages:
        """``r − mean(group)`` per sequence."""
        return group_advantages(rewards, groups, scale_by_std=False)

    def loss(self, batch: PolicyBatch) -> tuple[torch.Tensor, dict[str, float]]:
        """Summed clipped token losses over (sequences × ``loss_normaliser``)."""
        per_token, mask, metrics = penalised_token_losses(batch, self.config)
        sequences = max(int(batch.logprobs.shape[0]), 1)
        loss = (per_token * mask).sum() / (sequences * self.config.loss_normaliser)
        return loss, metrics

