"""GRPO as first published: advantages scaled by the group's standard deviation, each sequence's
token losses averaged over its own length, then averaged over sequences, with an optional KL
penalty to a frozen reference."""

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


class GRPOConfig(AlgorithmConfigBase):
    """Settings of GRPO."""

    name: Literal["grpo"] = Field(default="grpo", description="Picks the algorithm (the "
                                 "section's tag).")
    std_eps: float = Field(default=1e-6, gt=0, description="Added to the group's standard "
                           "deviation before dividing.")


class GRPO(AlgorithmBase):
    """GRPO advantages and loss."""

    config_class = GRPOConfig
    config: GRPOConfig

    def __init__(self, config: GRPOConfig | None = None) -> None:
        super().__init__(config)

    def advantages(self, rewards: torch.Tensor, groups: Sequence[int]) -> GroupAdvantages:
        """``(r − mean(group)) / (std(group) + ε)`` per sequence."""
        return group_advantages(rewards, groups, scale_by_std=True, eps=self.config.std_eps)

    def loss(self, batch: PolicyBatch) -> tuple[torch.Tensor, dict[str, float]]:
        """Token-mean per sequence, then mean over sequences."""
        per_token, mask, metrics = penalised_token_losses(batch, self.config)
        lengths = mask.sum(dim=1).clamp(min=1)
        loss = ((per_token * mask).sum(dim=1) / lengths).mean()
        return loss, metrics
