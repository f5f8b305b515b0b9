"""Each algorithm's advantages and loss against examples computed by hand."""

from __future__ import annotations

import pytest
import torch
from pydantic import TypeAdapter, ValidationError

from algorithms.base import PolicyBatch, clipped_surrogate, group_advantages
from algorithms.drgrpo import DrGRPO, DrGRPOConfig
from algorithms.grpo import GRPO, GRPOConfig
from algorithms.ppo import PPO, PPOConfig, ValueHead, gae
from algorithms.registry import ALGORITHMS, AlgorithmConfig, make_algorithm

REWARDS = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.5, 0.5])
GROUPS = [0, 0, 0, 0, 1, 1]


def test_drgrpo_advantages_are_centred_not_scaled() -> None:
    result = DrGRPO().advantages(REWARDS, GROUPS)
    assert result.advantages.tolist() == [0.5, -0.5, -0.5, 0.5, 0.0, 0.0]
    assert result.zero_variance.tolist() == [False] * 4 + [True] * 2
    assert (result.groups, result.zero_variance_groups) == (2, 1)


def test_grpo_advantages_are_scaled_by_the_group_std() -> None:
    result = GRPO().advantages(REWARDS, GROUPS)  # std of [1, 0, 0, 1] is 0.5
    assert torch.allclose(result.advantages, torch.tensor([1.0, -1, -1, 1, 0, 0]), atol=1e-5)


def test_group_advantages_reject_mismatched_groups() -> None:
    with pytest.raises(ValueError, match="one group id per reward"):
        group_advantages(REWARDS, [0, 1], scale_by_std=False)


def two_sequences(advantages: list[float]) -> PolicyBatch:
    logprobs = torch.full((2, 3), -1.0, requires_grad=True)
    return PolicyBatch(logprobs=logprobs, old_logprobs=torch.full((2, 3), -1.0),
                       mask=torch.tensor([[1, 1, 1], [1, 0, 0]]),
                       advantages=torch.tensor(advantages))


def test_drgrpo_divides_the_token_sum_by_a_constant() -> None:
    batch = two_sequences([0.5, -1.0])
    loss, metrics = DrGRPO(DrGRPOConfig(loss_normaliser=4)).loss(batch)
    # tokens: 3 x (-0.5) for the first sequence, 1 x (+1) for the second; sum -0.5 / (2 x 4)
    assert float(loss.detach()) == pytest.approx(-0.0625)
    loss.backward()
    assert batch.logprobs.grad is not None
    expected = torch.tensor([[-0.5, -0.5, -0.5], [1.0, 0.0, 0.0]]) / 8
    assert torch.allclose(batch.logprobs.grad, expected)  # every token weighs the same
    assert metrics["clip_fraction"] == 0 and metrics["tokens"] == 4


def test_grpo_averages_each_sequence_over_its_own_length() -> None:
    loss, _ = GRPO().loss(two_sequences([0.5, -1.0]))
    assert float(loss.detach()) == pytest.approx((-0.5 + 1.0) / 2)


def test_the_surrogate_clips_both_ways() -> None:
    logprobs = torch.log(torch.tensor([1.5, 0.5, 0.5, 1.1]))
    advantages = torch.tensor([1.0, 1.0, -1.0, 1.0])
    loss, ratio, clipped = clipped_surrogate(logprobs, torch.zeros(4), advantages, 0.2)
    assert torch.allclose(loss, torch.tensor([-1.2, -0.5, 0.8, -1.1]))
    assert clipped.tolist() == [1.0, 0.0, 1.0, 0.0]
    assert torch.allclose(ratio, torch.tensor([1.5, 0.5, 0.5, 1.1]))


def test_kl_penalty_needs_and_uses_a_reference() -> None:
    batch = two_sequences([0.0, 0.0])
    with pytest.raises(ValueError, match="ref_logprobs"):
        DrGRPO(DrGRPOConfig(beta=0.1)).loss(batch)
    batch.ref_logprobs = torch.full((2, 3), -2.0)  # d = -1: exp(-1) + 1 - 1 per token
    loss, metrics = GRPO(GRPOConfig(beta=0.5)).loss(batch)
    kl = float(torch.exp(torch.tensor(-1.0)))
    assert metrics["kl"] == pytest.approx(kl)
    assert float(loss.detach()) == pytest.approx(0.5 * kl)


def test_gae_by_hand() -> None:
    values = torch.tensor([[0.5, 0.2, 0.1, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    advantages, returns = gae(torch.tensor([1.0]), values, mask, gamma=1.0, lam=1.0)
    assert torch.allclose(advantages, torch.tensor([[0.5, 0.8, 0.9, 0.0]]))
    assert torch.allclose(returns, torch.tensor([[1.0, 1.0, 1.0, 0.0]]))
    advantages, returns = gae(torch.tensor([1.0]), values, mask, gamma=1.0, lam=0.5)
    # deltas 0.9 (last), -0.1, -0.3; A1 = -0.1 + 0.5 * 0.9, A0 = -0.3 + 0.5 * A1
    assert torch.allclose(advantages, torch.tensor([[-0.125, 0.35, 0.9, 0.0]]))
    assert torch.allclose(returns, torch.tensor([[0.375, 0.55, 1.0, 0.0]]))


def test_ppo_clips_the_value_loss() -> None:
    ppo = PPO(PPOConfig(vf_coef=1.0, value_clip=0.2))
    batch = PolicyBatch(logprobs=torch.zeros(1, 1), old_logprobs=torch.zeros(1, 1),
                        mask=torch.ones(1, 1), advantages=torch.zeros(1, 1),
                        values=torch.ones(1, 1), old_values=torch.full((1, 1), 0.5),
                        returns=torch.zeros(1, 1))
    loss, metrics = ppo.loss(batch)
    # unclipped (1 - 0)^2 = 1, clipped (0.7 - 0)^2 = 0.49: the larger one counts, halved
    assert metrics["value_loss"] == pytest.approx(0.5) and float(loss) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="values"):
        ppo.loss(two_sequences([1.0, 1.0]))


def test_ppo_keeps_raw_rewards_and_whitens_token_advantages() -> None:
    ppo = PPO()
    assert ppo.advantages(REWARDS, GROUPS).advantages.tolist() == REWARDS.tolist()
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    advantages, _ = ppo.token_advantages(torch.tensor([1.0, 0.0]), torch.zeros(2, 3), mask)
    real = advantages[mask.bool()]
    assert abs(float(real.mean())) < 1e-5 and float(real.std(unbiased=False)) == \
        pytest.approx(1.0, abs=1e-3)
    assert ValueHead(8)(torch.randn(2, 3, 8)).shape == (2, 3)


def test_registry_and_tagged_configs() -> None:
    adapter: TypeAdapter[AlgorithmConfig] = TypeAdapter(AlgorithmConfig)
    config = adapter.validate_python({"name": "grpo", "beta": 0.05})
    assert isinstance(config, GRPOConfig) and isinstance(make_algorithm(config), GRPO)
    assert isinstance(make_algorithm(adapter.validate_python({"name": "drgrpo"})), DrGRPO)
    assert set(ALGORITHMS) == {"drgrpo", "grpo", "ppo"}
    with pytest.raises(ValidationError, match="clip_eps"):
        adapter.validate_python({"name": "drgrpo", "clip_eps": 1.5})
    with pytest.raises(ValidationError, match="gamma_typo"):
        adapter.validate_python({"name": "ppo", "gamma_typo": 0.9})
    with pytest.raises(ValidationError, match="drgrpo"):
        adapter.validate_python({"name": "sac"})


def test_a_registered_algorithm_is_usable_from_a_config() -> None:
    from typing import Literal

    from algorithms.base import AlgorithmBase, AlgorithmConfigBase, group_advantages
    from algorithms.config import ConfigError, build_config
    from algorithms.registry import register_algorithm

    class SignConfig(AlgorithmConfigBase):
        name: Literal["sign"] = "sign"
        scale: float = 1.0

    class Sign(AlgorithmBase):
        config_class = SignConfig

        def advantages(self, rewards: torch.Tensor, groups: list[int]) -> object:
            found = group_advantages(rewards, groups, scale_by_std=False)
            return type(found)(found.advantages.sign() * self.config.scale,
                               found.zero_variance, found.groups, found.zero_variance_groups)

        def loss(self, batch: PolicyBatch) -> tuple[torch.Tensor, dict[str, float]]:
            return -(batch.logprobs * batch.token_advantages()).sum(), {}

    register_algorithm(Sign)
    try:
        with pytest.raises(ValueError, match="algorithm named 'sign' exists"):
            register_algorithm(Sign)
        config = build_config({}, ["algorithm.name=sign", "algorithm.scale=2"])
        assert isinstance(config.algorithm, SignConfig) and config.algorithm.scale == 2.0
        assert config.model_dump()["algorithm"] == {**AlgorithmConfigBase().model_dump(),
                                                    "name": "sign", "scale": 2.0}
        algorithm = make_algorithm(config.algorithm)
        assert isinstance(algorithm, Sign) and algorithm.zero_advantage_inert
        found = algorithm.advantages(torch.tensor([1.0, 0.0]), [0, 0])
        assert found.advantages.tolist() == [2.0, -2.0]
        with pytest.raises(ConfigError, match=r"algorithm.scal: unknown key \(did you mean "
                                              r"algorithm.scale\?\)"):
            build_config({}, ["algorithm.name=sign", "algorithm.scal=2"])
    finally:
        ALGORITHMS.unregister("sign")
    with pytest.raises(TypeError, match="config_class"):
        register_algorithm(int)
