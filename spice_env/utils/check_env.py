"""A conformance checker for SPICE environments.

:func:`check_env` runs small ``check_*`` functions against an environment (an instance or a
registered id) and raises :class:`EnvCheckError` listing every failed check with a message that
says what to fix. Agent-driven checks need a Challenger that writes valid tasks and a Reasoner
(e.g. ``agents.scripted.OracleChallenger`` and ``NoisyReasoner``); without them only the checks
that need no valid question run.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import gymnasium as gym

from spice_env.tasks import REASONS
from spice_env.types import OBSERVATION_KEYS

REQUIRED_KEYS = OBSERVATION_KEYS
"""The keys every observation must carry (those of :class:`~spice_env.types.Observation`)."""


class ChallengerLike(Protocol):
    """Anything that writes a Challenger output for an observation."""

    def act(self, observation: Mapping[str, Any], info: Mapping[str, Any] | None = None) -> str:
        ...


class ReasonerLike(Protocol):
    """Anything that writes ``n`` Reasoner answers for an observation."""

    def act(self, observation: Mapping[str, Any], info: Mapping[str, Any] | None = None,
            n: int | None = None) -> list[str]:
        ...


class EnvCheckError(AssertionError):
    """One or more conformance checks failed; the message lists each with its fix."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise EnvCheckError(message)


def _group_size(env: gym.Env[Any, Any]) -> int:
    return int(env.unwrapped.config.group_size)  # type: ignore[attr-defined]


def check_spaces(env: gym.Env[Any, Any]) -> None:
    """The observation space is a Dict with every observation key; an action space exists."""
    space = env.observation_space
    _require(isinstance(space, gym.spaces.Dict),
             f"observation_space must be a gymnasium.spaces.Dict, got {type(space).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in space.spaces]  # type: ignore[attr-defined]
    _require(not missing, f"observation_space lacks the keys {missing}; observations of both "
             "roles must carry all of " + ", ".join(REQUIRED_KEYS))
    _require(env.action_space is not None, "set env.action_space (a TextAction space)")


def check_reset(env: gym.Env[Any, Any], seed: int = 0) -> None:
    """reset() returns the Challenger's observation, inside the space, reproducible by seed."""
    obs, info = env.reset(seed=seed)
    _require(obs.get("role") == "challenger", f"reset() must return the challenger's "
             f"observation (role 'challenger'), got role {obs.get('role')!r}")
    _require(env.observation_space.contains(obs), "the reset observation is not inside "
             "observation_space: check every key's type (strings, tuple of message dicts)")
    _require(bool(obs["prompt"]) and bool(obs["messages"]),
             "the challenger observation needs a non-empty prompt and chat messages")
    _require("document_id" in info, "reset() info must carry the document_id")
    again, _ = env.reset(seed=seed)
    _require(again["document_id"] == obs["document_id"] and again["prompt"] == obs["prompt"],
             "reset(seed=s) twice must give the same document and prompt; seed the document "
             "sampler from the reset seed")


def check_invalid_question(env: gym.Env[Any, Any], text: str = "not a question") -> None:
    """A malformed question ends the episode with reward rho and a known reason code."""
    env.reset(seed=1)
    obs, reward, terminated, truncated, info = env.step(text)
    rho = env.unwrapped.config.rho  # type: ignore[attr-defined]
    _require(terminated and not truncated, "an invalid question must terminate the episode")
    _require(reward == rho, f"an invalid question must earn rho={rho}, got {reward}")
    _require(info.get("invalid_reason") in REASONS,
             f"info['invalid_reason'] must be one of REASONS, got {info.get('invalid_reason')!r}")
    _require(info.get("rewards") == {"challenger": rho, "reasoner": []},
             "info['rewards'] of an invalid question must be {'challenger': rho, 'reasoner': []}")
    _require(env.observation_space.contains(obs), "the final observation is not in the space")


def check_garbage_questions(env: gym.Env[Any, Any], garbage: ChallengerLike,
                            episodes: int = 24) -> None:
    """Malformed Challenger output of every kind ends its episode with rho, never an exception."""
    rho = env.unwrapped.config.rho  # type: ignore[attr-defined]
    for episode in range(episodes):
        obs, _ = env.reset(seed=100 + episode)
        text = garbage.act(obs)
        try:
            obs, reward, terminated, _, info = env.step(text)
        except Exception as exc:
            raise EnvCheckError(f"step({text[:60]!r}) raised {type(exc).__name__}: {exc}; bad "
                                "model output must be an invalid question, not an error") from exc
        _require(terminated and reward == rho and info.get("invalid_reason") in REASONS,
                 f"malformed output {text[:60]!r} must end the episode with rho and a reason "
                 f"code; got terminated={terminated}, reward={reward}, "
                 f"reason={info.get('invalid_reason')!r}")


def check_step_after_end(env: gym.Env[Any, Any]) -> None:
    """Stepping an ended episode is refused with an error, not silently played."""
    env.reset(seed=2)
    env.step("")
    try:
        env.step("")
    except (RuntimeError, gym.error.ResetNeeded):
        return
    raise EnvCheckError("step() after the episode ended must raise; it must not start a new one")


def check_valid_episode(env: gym.Env[Any, Any], challenger: ChallengerLike,
                        reasoner: ReasonerLike, seed: int = 3) -> None:
    """A valid question hands over to the Reasoner without the document; G answers score it."""
    obs, _ = env.reset(seed=seed)
    document = obs["document"]
    obs, reward, terminated, _, info = env.step(challenger.act(obs))
    _require(not terminated, f"the oracle's question was rejected ({info.get('invalid_reason')}:"
             f" {info.get('detail')}); the parser or the prompt format disagree")
    _require(obs["role"] == "reasoner" and bool(obs["question"]),
             "after a valid question the observation must be the reasoner's, with the question")
    leaked = [k for k in REQUIRED_KEYS if document and isinstance(obs[k], str)
              and document in obs[k]]
    leaked += ["messages"] * any(document and document in m["content"] for m in obs["messages"])
    _require(not obs["document"] and not leaked,
             f"the reasoner's observation contains the document text (in {leaked or 'document'})")
    _require(reward == 0.0, "the challenger step of a valid question gives reward 0 (the "
             "Challenger's reward is known only after the answers)")
    group = _group_size(env)
    obs, reward, terminated, _, info = env.step(reasoner.act(obs, info, n=group))
    _require(terminated, "the episode must end after the reasoner's answers")
    rewards = info.get("rewards", {})
    _require(len(rewards.get("reasoner", [])) == group,
             f"info['rewards']['reasoner'] must have G={group} entries")
    _require(math.isfinite(reward) and reward == rewards.get("challenger"),
             "the final step reward must be the (finite) challenger reward")
    pass_rate = info.get("pass_rate")
    _require(pass_rate is not None and 0.0 <= pass_rate <= 1.0, "info['pass_rate'] in [0, 1]")
    expected = env.unwrapped.game.reward_fn(info["correct"])  # type: ignore[attr-defined]
    _require(math.isclose(reward, expected), f"challenger reward {reward} differs from the "
             f"configured reward function's {expected}")


def check_wrong_answer_count(env: gym.Env[Any, Any], challenger: ChallengerLike) -> None:
    """Giving the Reasoner's step the wrong number of answers is an error that names G."""
    obs, _ = env.reset(seed=4)
    obs, _, terminated, _, _ = env.step(challenger.act(obs))
    if terminated:
        raise EnvCheckError("the oracle's question was rejected; cannot reach the reasoner step")
    group = _group_size(env)
    try:
        env.step(["\\boxed{1}"] * (group + 1))
    except ValueError as exc:
        _require(str(group) in str(exc), "the wrong-count error should name the group size")
        return
    raise EnvCheckError(f"a reasoner step with {group + 1} answers (G={group}) must raise")


def check_gymnasium_api(env: gym.Env[Any, Any]) -> None:
    """Gymnasium's own checker passes (render checks skipped)."""
    from gymnasium.utils.env_checker import check_env as gym_check_env

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gym_check_env(env.unwrapped, skip_render_check=True)


def check_env(env: gym.Env[Any, Any] | str, challenger: ChallengerLike | None = None,
              reasoner: ReasonerLike | None = None, garbage: ChallengerLike | None = None,
              **make_kwargs: Any) -> list[str]:
    """Run every applicable check; return the names of those that passed.

    Args:
        env: an environment, or a registered id to ``gym.make`` with ``make_kwargs``.
        challenger: writes valid tasks (needed for the valid-episode checks).
        reasoner: answers questions (needed with ``challenger``).
        garbage: writes malformed output (e.g. ``agents.scripted.GarbageChallenger``).

    Raises:
        EnvCheckError: listing each failed check and how to fix it.
    """
    owned = isinstance(env, str)
    instance = gym.make(env, **make_kwargs) if isinstance(env, str) else env
    checks: list[tuple[str, Callable[[], None]]] = [
        ("check_spaces", lambda: check_spaces(instance)),
        ("check_reset", lambda: check_reset(instance)),
        ("check_invalid_question", lambda: check_invalid_question(instance)),
        ("check_step_after_end", lambda: check_step_after_end(instance)),
        ("check_gymnasium_api", lambda: check_gymnasium_api(instance)),
    ]
    if garbage is not None:
        checks.append(("check_garbage_questions", lambda: check_garbage_questions(instance,
                                                                                  garbage)))
    if challenger is not None and reasoner is not None:
        checks += [
            ("check_valid_episode", lambda: check_valid_episode(instance, challenger, reasoner)),
            ("check_wrong_answer_count", lambda: check_wrong_answer_count(instance, challenger)),
        ]
    passed, failures = [], []
    try:
        for name, run in checks:
            try:
                run()
                passed.append(name)
            except Exception as exc:  # every failure is reported, not just the first
                failures.append(f"{name}: {type(exc).__name__}: {exc}")
    finally:
        if owned:
            instance.close()
    if failures:
        raise EnvCheckError("environment check failed:\n  " + "\n  ".join(failures))
    return passed
