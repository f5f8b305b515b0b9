"""The conformance checker, run over every registered spice-env environment."""

from __future__ import annotations

import gymnasium as gym
import pytest

import spice_env  # noqa: F401  (registers the envs)
from agents.scripted import GarbageChallenger, NoisyReasoner, OracleChallenger
from spice_env.env import SpiceCorpusEnv
from spice_env.utils import EnvCheckError, check_env

OURS = sorted(env_id for env_id, spec in gym.registry.items()
              if isinstance(spec.entry_point, str) and spec.entry_point.startswith("spice_env"))


def test_some_env_is_registered() -> None:
    assert "SpiceCorpus-v0" in OURS


@pytest.mark.parametrize("env_id", OURS)
@pytest.mark.parametrize("settings", [
    {"prompt_style": "paper"},
    {"prompt_style": "compact", "task_formats": "mcq"},
    {"grounding": False, "task_formats": "free_form"},
])
def test_registered_envs_pass(env_id: str, settings: dict[str, object]) -> None:
    passed = check_env(env_id, OracleChallenger(0), NoisyReasoner(0.5, 0), GarbageChallenger(0),
                       corpus="embedded:math", group_size=4, **settings)
    assert {"check_valid_episode", "check_gymnasium_api", "check_garbage_questions"} <= set(passed)


def test_without_agents_only_agent_free_checks_run() -> None:
    passed = check_env("SpiceCorpus-v0", corpus="embedded:math", group_size=2)
    assert "check_valid_episode" not in passed and "check_reset" in passed


class LeakyEnv(SpiceCorpusEnv):
    """A broken env that shows the document to the Reasoner."""

    def _challenger_step(self, action):  # type: ignore[no-untyped-def]
        obs, reward, terminated, truncated, info = super()._challenger_step(action)
        if not terminated and self._document is not None:
            obs = {**obs, "document": self._document.text}
        return obs, reward, terminated, truncated, info


def test_a_broken_env_fails_with_an_actionable_message() -> None:
    env = LeakyEnv("embedded:math", group_size=2)
    with pytest.raises(EnvCheckError, match="reasoner's observation contains the document"):
        check_env(env, OracleChallenger(0), NoisyReasoner(0.5, 0))
    env.close()
