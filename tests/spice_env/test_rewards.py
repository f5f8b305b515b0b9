"""The reward table of SPICE.md, the registry, and the reasoner reward."""

from __future__ import annotations

import math

import pytest

from spice_env.rewards import (
    CHALLENGER_REWARDS,
    DEFAULT_RHO,
    checked_reward,
    get_challenger_reward,
    reasoner_reward,
    register_challenger_reward,
    variance_reward,
)

# SPICE.md, "Rewards": values for G = 8 with k correct answers
TABLE = {
    "variance": [0.0439, 0.3720, 0.8226, 0.9879, 1.0, 0.9879, 0.8226, 0.3720, 0.0439],
    "r_zero": [0, 0.25, 0.5, 0.75, 1, 0.75, 0.5, 0.25, 0],
    "absolute_zero": [0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125, 0],
    "threshold": [0, 1, 1, 1, 1, 1, 1, 1, 0],
}


def labels(k: int, g: int = 8) -> list[bool]:
    return [True] * k + [False] * (g - k)


@pytest.mark.parametrize("name", sorted(TABLE))
@pytest.mark.parametrize("k", range(9))
def test_reward_table(name: str, k: int) -> None:
    assert CHALLENGER_REWARDS[name](labels(k)) == pytest.approx(TABLE[name][k], abs=1e-4)


def test_variance_uses_population_variance() -> None:
    # with the sample variance (ddof=1) the 4-of-8 group would have Var = 0.2857, reward < 1
    assert variance_reward(labels(4)) == 1.0
    sample_var = 0.25 * 8 / 7
    assert math.exp(-((sample_var - 0.25) ** 2) / 0.02) < 0.95


def test_order_of_labels_does_not_matter() -> None:
    assert variance_reward([True, False, True, False]) == variance_reward([True, True, False,
                                                                           False])


def test_empty_group_is_an_error() -> None:
    with pytest.raises(ValueError, match="at least one"):
        variance_reward([])


def test_rho_default() -> None:
    assert DEFAULT_RHO == -0.1


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ValueError, match=r"absolute_zero.*r_zero.*threshold.*variance"):
        get_challenger_reward("nope")


def test_register_and_callable() -> None:
    def always_half(correct: object) -> float:
        return 0.5

    register_challenger_reward("test_always_half", always_half)
    try:
        assert get_challenger_reward("test_always_half") is always_half
        with pytest.raises(ValueError, match="exists"):
            register_challenger_reward("test_always_half", always_half)
        register_challenger_reward("test_always_half", always_half, overwrite=True)
    finally:
        CHALLENGER_REWARDS.unregister("test_always_half")
    assert get_challenger_reward(always_half) is always_half
    with pytest.raises(TypeError):
        register_challenger_reward("x", 3)  # type: ignore[arg-type]


def test_checked_reward_rejects_non_numbers() -> None:
    with pytest.raises(TypeError, match="not a number"):
        checked_reward(lambda c: "high", [True])  # type: ignore[arg-type, return-value]
    with pytest.raises(ValueError, match="nan"):
        checked_reward(lambda c: float("nan"), [True])


def test_reasoner_reward() -> None:
    assert reasoner_reward(True) == 1.0
    assert reasoner_reward(False) == 0.0
    assert reasoner_reward(False, well_formed=True, format_weight=0.1) == pytest.approx(0.1)
    assert reasoner_reward(True, well_formed=False, format_weight=0.1) == 1.0
