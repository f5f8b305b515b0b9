"""PPO with a learned value function.

The value head is a linear layer on the policy's last hidden states (shared model), or any module
the trainer gives (a separate critic). Each completion's reward arrives at its last token; GAE
(γ, λ) turns it and the value predictions into per-token advantages and returns. The loss is the
clipped policy surrogate averaged over tokens plus ``vf_coef`` times the clipped value loss.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Literal

import torch
from pydantic import Field
from torch import nn

from algorithms.base import (
    AlgorithmBase,
    AlgorithmConfigBase,
    GroupAdvantages,
    PolicyBatch,
    group_advantages,
    masked_mean,
    penalised_token_losses,
    whiten,
)

if TYPE_CHECKING:
    from algorithms.samples import TrainingSample


class PPOConfig(AlgorithmConfigBase):
    """Settings of PPO."""

    name: Literal["ppo"] = Field(default="ppo", description="Picks the algorithm (the "
                                 "section's tag).")
    gamma: float = Field(default=1.0, ge=0, le=1, description="Discount γ of GAE.")
    lam: float = Field(default=0.95, ge=0, le=1, description="λ of GAE.")
    value_clip: float = Field(default=0.2, gt=0, description="How far a new value prediction "
                              "may move from the old one before its loss is clipped.")
    vf_coef: float = Field(default=0.1, ge=0, description="Weight of the value loss.")
    whiten_advantages: bool = Field(default=True, description="Normalise the token "
                                    "advantages of a batch to zero mean and unit variance.")


class ValueHead(nn.Module):
    """A scalar value per position from the hidden states: ``(S, T, H) -> (S, T)``."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.linear = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.linear(hidden.to(self.linear.weight.dtype))[..., 0]


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float,
        lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token advantages and returns for sequence rewards paid at each sequence's last token.

    ``rewards`` is ``(S,)``; ``values`` and ``mask`` are ``(S, T)`` (completion tokens left-aligned,
    padding after). After the last token the value is 0 (the episode ends).
    """
    steps = values.shape[1]
    values = values.detach().float() * mask
    lengths = mask.sum(dim=1).long()
    per_token = torch.zeros_like(values)
    last = (lengths - 1).clamp(min=0)
    has_tokens = lengths > 0
    per_token[has_tokens, last[has_tokens]] = rewards.float()[has_tokens]
    advantages = torch.zeros_like(values)
    running = torch.zeros(values.shape[0], dtype=values.dtype)
    for t in reversed(range(steps)):
        following = values[:, t + 1] if t + 1 < steps else torch.zeros_like(running)
        delta = per_token[:, t] + gamma * following - values[:, t]
        running = delta + gamma * lam * running
        running = running * mask[:, t]
        advantages[:, t] = running
    return advantages, (advantages + values) * mask


class PPO(AlgorithmBase):
    """PPO advantages (GAE) and loss, with a value head."""

    config_class = PPOConfig
    config: PPOConfig
    needs_value_head = True

    def __init__(self, config: PPOConfig | None = None) -> None:
        super().__init__(config)

    @property
    def zero_advantage_inert(self) -> bool:
        """False: a sample's per-token advantages and its value loss do not vanish with its
        sequence advantage."""
        return False

    def make_value_head(self, hidden_size: int) -> torch.nn.Module:
        """A zero-initialised :class:`ValueHead` (the same on every rank)."""
        return ValueHead(hidden_size)

    @torch.no_grad()
    def prepare(self, model: Any, samples: Sequence[TrainingSample], *,
                value_head: torch.nn.Module | None, pad_id: int, micro_batch_size: int,
                share_prompts: bool = True) -> list[TrainingSample]:
        """Samples with their old values, GAE advantages (whitened over the whole batch when
        the configuration says so) and returns, computed before the update."""
        from algorithms.logprobs import completion_logprobs

        if value_head is None:
            raise ValueError("PPO needs a value head to prepare its samples")
        prepared: list[TrainingSample] = []
        for start in range(0, len(samples), micro_batch_size):
            chunk = samples[start:start + micro_batch_size]
            current = completion_logprobs(model, [s.prompt_ids for s in chunk],
                                          [s.completion_ids for s in chunk], pad_id,
                                          with_hidden=True, share_prompts=share_prompts)
            assert current.hidden is not None
            values = value_head(current.hidden).float() * current.mask
            rewards = torch.tensor([s.reward for s in chunk], device=values.device)
            advantages, returns = gae(rewards, values, current.mask, self.config.gamma,
                                      self.config.lam)
            for row, sample in enumerate(chunk):
                n = len(sample.completion_ids)
                prepared.append(replace(sample, old_values=tuple(values[row, :n].tolist()),
                                        token_advantages=tuple(advantages[row, :n].tolist()),
                                        returns=tuple(returns[row, :n].tolist())))
        if self.config.whiten_advantages:  # over the whole batch, not per micro-batch
            lengths = [len(s.token_advantages or ()) for s in prepared]
            flat = whiten(torch.tensor([a for s in prepared for a in (s.token_advantages or ())]))
            pieces = flat.split(lengths)
            prepared = [replace(s, token_advantages=tuple(piece.tolist()))
                        for s, piece in zip(prepared, pieces, strict=True)]
        return prepared

    def advantages(self, rewards: torch.Tensor, groups: Sequence[int]) -> GroupAdvantages:
        """The raw sequence rewards, with group statistics; :func:`gae` spreads them over tokens.

        PPO's baseline is the value function, not the group mean, so rewards are not centred.
        """
        stats = group_advantages(rewards, groups, scale_by_std=False)
        return GroupAdvantages(advantages=rewards.float(), zero_variance=stats.zero_variance,
                               groups=stats.groups,
                               zero_variance_groups=stats.zero_variance_groups)

    def token_advantages(self, rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """GAE advantages (whitened when configured) and returns."""
        advantages, returns = gae(rewards, values, mask, self.config.gamma, self.config.lam)
        if self.config.whiten_advantages:
            advantages = whiten(advantages, mask)
        return advantages, returns

    def loss(self, batch: PolicyBatch) -> tuple[torch.Tensor, dict[str, float]]:
        """Token-mean clipped policy loss plus ``vf_coef`` × clipped value loss."""
        if batch.values is None or batch.old_values is None or batch.returns is None:
            raise ValueError("PPO needs values, old_values and returns in the batch")
        per_token, mask, metrics = penalised_token_losses(batch, self.config)
        policy_loss = masked_mean(per_token, mask)
        moved = batch.old_values + torch.clamp(batch.values - batch.old_values,
                                               -self.config.value_clip, self.config.value_clip)
        value_loss = 0.5 * masked_mean(torch.maximum((batch.values - batch.returns) ** 2,
                                                     (moved - batch.returns) ** 2), mask)
        metrics.update(policy_loss=float(policy_loss.detach()),
                       value_loss=float(value_loss.detach()))
        return policy_loss + self.config.vf_coef * value_loss, metrics
