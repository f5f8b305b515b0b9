"""Rewards of both roles.

A Challenger reward maps the correctness of the G Reasoner answers to one valid question to a
float; an invalid question earns ``rho`` instead (:data:`DEFAULT_RHO`, the paper's −0.1).

Built-in Challenger rewards (:data:`CHALLENGER_REWARDS`), with ``p`` the pass rate:

* ``variance`` — SPICE: ``exp(−(Var − 0.25)² / (2·0.01))`` with the *population* variance
  ``Var = p(1 − p)``; it peaks at p = 0.5;
* ``r_zero`` — ``1 − 2|p − 0.5|``;
* ``absolute_zero`` — ``1 − p``, and 0 when p is 0 or 1;
* ``threshold`` — 1 unless p is 0 or 1.

Register your own with :func:`register_challenger_reward`, or pass any callable where a reward
name is accepted.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from spice_env.registry import Registry

ChallengerReward = Callable[[Sequence[bool]], float]
"""Correctness of the G Reasoner answers to one valid question -> the Challenger's reward."""

DEFAULT_RHO = -0.1
"""The paper's reward for an invalid question."""


def pass_rate(correct: Sequence[bool]) -> float:
    """The fraction of correct answers; raises ``ValueError`` for an empty group."""
    if len(correct) == 0:
        raise ValueError("a Challenger reward needs at least one Reasoner answer (G >= 1)")
    return sum(1 for c in correct if c) / len(correct)


def variance_reward(correct: Sequence[bool], target: float = 0.25, tau: float = 0.01) -> float:
    """SPICE's Gaussian of the population variance of the correctness labels (ddof = 0)."""
    if tau <= 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    p = pass_rate(correct)
    variance = p * (1.0 - p)  # population variance of binary labels
    return math.exp(-((variance - target) ** 2) / (2.0 * tau))


def r_zero_reward(correct: Sequence[bool]) -> float:
    """R-Zero's uncertainty reward ``1 − 2|p − 0.5|`` (its paper's formula; equal to
    ``2·min(p, 1 − p)``, twice what its released code computes)."""
    return 1.0 - 2.0 * abs(pass_rate(correct) - 0.5)


def absolute_zero_reward(correct: Sequence[bool]) -> float:
    """Absolute Zero's learnability reward ``1 − p``, zero for questions always or never solved."""
    p = pass_rate(correct)
    return 0.0 if p in (0.0, 1.0) else 1.0 - p


def threshold_reward(correct: Sequence[bool]) -> float:
    """1 for questions solved sometimes but not always, else 0."""
    return 0.0 if pass_rate(correct) in (0.0, 1.0) else 1.0


CHALLENGER_REWARDS: Registry[ChallengerReward] = Registry("challenger reward", {
    "variance": variance_reward,
    "absolute_zero": absolute_zero_reward,
    "r_zero": r_zero_reward,
    "threshold": threshold_reward,
})
"""Challenger rewards by name; extend it with :func:`register_challenger_reward`."""


def register_challenger_reward(
    name: str, reward: ChallengerReward, *, overwrite: bool = False
) -> ChallengerReward:
    """Make ``reward`` available by ``name`` (e.g. in configs and ``gym.make`` kwargs); a taken
    name is refused unless ``overwrite``."""
    if not callable(reward):
        raise TypeError(f"reward {name!r} must be callable, got {type(reward).__name__}")
    return CHALLENGER_REWARDS.register(name, reward, overwrite=overwrite)


def get_challenger_reward(reward: str | ChallengerReward) -> ChallengerReward:
    """Resolve a reward name (or return a callable as is); unknown names list the valid ones."""
    if callable(reward):
        return reward
    return CHALLENGER_REWARDS[reward]


def checked_reward(reward: ChallengerReward, correct: Sequence[bool]) -> float:
    """Call a (possibly user-written) reward and insist on a finite float back."""
    value = reward(correct)
    try:
        result = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"challenger reward returned {value!r}, not a number") from None
    if not math.isfinite(result):
        raise ValueError(f"challenger reward returned {result} for {list(correct)}")
    return result


def reasoner_reward(
    correct: bool, *, well_formed: bool | None = None, format_weight: float = 0.0
) -> float:
    """The Reasoner's reward: 1 if correct else 0, plus an optional format term.

    With ``format_weight > 0`` a response whose answer was well formed (boxed) earns
    ``format_weight`` more; the paper uses no format term (weight 0, the default).
    """
    reward = 1.0 if correct else 0.0
    if format_weight and well_formed:
        reward += format_weight
    return reward
