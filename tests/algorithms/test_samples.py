"""Rollouts to training samples, advantages per role group, and the micro-batched loss."""

from __future__ import annotations

import pytest
import torch

from agents.backends.hf import HFBackend
from agents.base import SamplingConfig
from agents.scripted import OracleChallenger
from agents.self_play import SelfPlayAgent
from agents.tiny import tiny_model
from algorithms.drgrpo import DrGRPO, DrGRPOConfig
from algorithms.grpo import GRPO, GRPOConfig
from algorithms.ppo import PPO, ValueHead
from algorithms.samples import (
    TrainingSample,
    assign_advantages,
    collect_samples,
    learning_samples,
    policy_loss,
)
from spice_env.runner import SpiceRunner
from spice_env.verify import Verifier


@pytest.fixture(scope="module")
def tiny() -> tuple[object, object]:
    return tiny_model(seed=7)


def test_collects_trainable_samples_per_role_group(tiny: tuple[object, object]) -> None:
    model, tokenizer = tiny
    agent = SelfPlayAgent(HFBackend(model, tokenizer),
                          challenger=SamplingConfig(max_new_tokens=8, seed=0),
                          reasoner=SamplingConfig(max_new_tokens=6, n=2, seed=1))
    oracle = OracleChallenger(seed=0)
    with Verifier(workers=1) as verifier:
        runner = SpiceRunner("embedded:math", batch_size=2, attempts=2, group_size=2,
                             verifier=verifier)
        # scripted questions (plain strings) and model answers (token ids and log-probs)
        rollout = runner.run(oracle.generate, agent.generate)
    collected = collect_samples(rollout)
    assert collected.untrainable == 4  # the oracle's 2 x 2 kept attempts have no token ids
    assert {s.role for s in collected.samples} == {"reasoner"}
    assert len(collected.samples) == 4 and len({s.group for s in collected.samples}) == 2
    for sample in collected.samples:
        assert len(sample.old_logprobs) == len(sample.completion_ids) > 0
    assert collect_samples(rollout, roles="challenger").samples == []


def sample(role: str, group: int, reward: float, completion: tuple[int, ...] = (5, 6, 7)
           ) -> TrainingSample:
    return TrainingSample(role=role, group=group, prompt_ids=(1, 2, 3),  # type: ignore[arg-type]
                          completion_ids=completion, old_logprobs=(0.0,) * len(completion),
                          reward=reward)


def test_advantages_are_computed_per_role_and_flat_groups_can_be_dropped() -> None:
    samples = [sample("challenger", 0, 1.0), sample("challenger", 0, 0.0),
               sample("reasoner", 1, 1.0), sample("reasoner", 1, 1.0)]
    kept, stats = assign_advantages(samples, DrGRPO())
    assert [s.advantage for s in kept] == [0.5, -0.5, 0.0, 0.0]
    assert stats["reasoner"].zero_variance_groups == 1 and stats["challenger"].groups == 1
    kept, stats = assign_advantages(samples, DrGRPO(), skip_zero_variance=True)
    assert [s.role for s in kept] == ["challenger", "challenger"]
    assert stats["reasoner"].dropped_samples == 2


@pytest.mark.parametrize("algorithm", [DrGRPO(DrGRPOConfig(loss_normaliser=8)), GRPO()])
def test_micro_batches_accumulate_to_the_full_batch_gradient(
        tiny: tuple[object, object], algorithm: DrGRPO | GRPO) -> None:
    model, tokenizer = tiny
    samples = [sample("reasoner", 0, r, completion) for r, completion in
               [(1.0, (5, 6, 7)), (0.0, (8, 9)), (1.0, (10,)), (0.0, (11, 12, 13, 14))]]
    samples, _ = assign_advantages(samples, algorithm)

    def gradients(micro: int) -> tuple[torch.Tensor, dict[str, float]]:
        model.zero_grad()  # type: ignore[attr-defined]
        metrics = policy_loss(model, samples, algorithm, pad_id=tokenizer.pad_token_id,  # type: ignore[attr-defined]
                              micro_batch_size=micro, backward=lambda loss: loss.backward())
        grad = model.model.embed_tokens.weight.grad  # type: ignore[attr-defined]
        return grad.clone(), metrics

    whole, metrics = gradients(4)
    pieces, _ = gradients(1)
    assert torch.allclose(whole, pieces, atol=1e-6) and float(whole.abs().sum()) > 0
    assert metrics["tokens"] == 10 and 0 <= metrics["clip_fraction"] <= 1
    assert metrics["entropy"] > 0 and torch.isfinite(torch.tensor(metrics["loss"]))
    with pytest.raises(ValueError, match="micro_batch_size"):
        policy_loss(model, samples, algorithm, pad_id=0, micro_batch_size=0)


@pytest.mark.parametrize("algorithm", [DrGRPO(DrGRPOConfig(loss_normaliser=8)), GRPO()])
def test_zero_advantage_samples_are_left_out_with_the_same_gradient(
        tiny: tuple[object, object], algorithm: DrGRPO | GRPO) -> None:
    model, tokenizer = tiny
    rewards = [(0, 1.0, (5, 6, 7)), (0, 0.0, (8, 9)), (1, 1.0, (10,)), (1, 1.0, (11, 12)),
               (2, 0.5, (13,)), (2, 1.0, (14, 15)), (2, 0.0, (16,))]
    samples, _ = assign_advantages([sample("reasoner", g, r, c) for g, r, c in rewards],
                                   algorithm)
    learning, skipped = learning_samples(samples, algorithm)
    # the flat group 1 and the middle answer of group 2 (advantage exactly 0) are left out
    assert skipped == 3 and [s.reward for s in learning] == [1.0, 0.0, 1.0, 0.0]

    def gradient(chosen: list[TrainingSample]) -> torch.Tensor:
        model.zero_grad()  # type: ignore[attr-defined]
        policy_loss(model, chosen, algorithm, pad_id=tokenizer.pad_token_id,  # type: ignore[attr-defined]
                    micro_batch_size=2, batch_total=len(samples),
                    backward=lambda loss: loss.backward())
        return model.model.embed_tokens.weight.grad.clone()  # type: ignore[attr-defined]

    torch.testing.assert_close(gradient(learning), gradient(samples), rtol=0, atol=1e-6)
    # a KL penalty gives zero-advantage samples a gradient, PPO's advantages are per token:
    # every sample is kept
    assert learning_samples(samples, GRPO(GRPOConfig(beta=0.1))) == (samples, 0)
    assert learning_samples(samples, PPO()) == (samples, 0)


def test_ppo_trains_the_policy_and_the_value_head(tiny: tuple[object, object]) -> None:
    model, tokenizer = tiny
    head = ValueHead(model.config.hidden_size)  # type: ignore[attr-defined]
    with torch.no_grad():
        head.linear.bias.fill_(0.3)  # non-zero predictions, so the value loss is not trivial
    ppo = PPO()
    samples = [sample("reasoner", 0, r, c) for r, c in [(1.0, (5, 6, 7)), (0.0, (8, 9))]]
    samples, _ = assign_advantages(samples, ppo)
    pad = tokenizer.pad_token_id  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="prepare hook"):
        policy_loss(model, samples, ppo, pad_id=pad, micro_batch_size=2, value_head=head)
    prepared = ppo.prepare(model, samples, value_head=head, pad_id=pad, micro_batch_size=1)
    assert [len(s.token_advantages or ()) for s in prepared] == [3, 2]
    assert prepared[0].old_values == pytest.approx((0.3, 0.3, 0.3))
    assert prepared[1].returns is not None and prepared[1].returns[-1] == pytest.approx(0.0)
    model.zero_grad()  # type: ignore[attr-defined]
    metrics = policy_loss(model, prepared, ppo, pad_id=pad, micro_batch_size=2,
                          backward=lambda loss: loss.backward(), value_head=head)
    assert head.linear.weight.grad is not None and float(head.linear.weight.grad.abs().sum()) > 0
    assert model.model.embed_tokens.weight.grad is not None  # type: ignore[attr-defined]
    assert metrics["value_loss"] > 0 and torch.isfinite(torch.tensor(metrics["loss"]))
