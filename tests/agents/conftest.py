"""Shared checks of the agent tests."""

from __future__ import annotations

from collections.abc import Callable

import gymnasium as gym
import pytest

import spice_env
from agents.self_play import SelfPlayAgent
from spice_env.verify import Verifier

VALID_QUESTION = '{"question": "What is 6 times 7?", "answer": "42", "answer_type": "integer"}'


def _play_random_model_episodes(agent: SelfPlayAgent) -> None:
    """Two episodes through ``gym.make`` with a randomly initialised model in both roles.

    The model's own question is noise, so that episode ends at once with ρ and a reason; the
    second gets a valid question written for it, and the model's G = 4 answers end it.
    """
    with Verifier(workers=1) as verifier:
        env = gym.make(spice_env.ENV_ID, corpus="embedded:math", group_size=4,
                       prompt_style="compact", verifier=verifier)
        obs, _ = env.reset(seed=0)
        _, reward, terminated, _, info = env.step(agent.act(obs))
        assert terminated and reward == -0.1 and info["invalid_reason"]
        obs, _ = env.reset(seed=1)
        obs, _, terminated, _, info = env.step(VALID_QUESTION)
        assert not terminated
        answers = agent.act(obs, info)
        assert isinstance(answers, list) and len(answers) == 4
        _, _, terminated, _, info = env.step(answers)
        assert terminated and len(info["rewards"]["reasoner"]) == 4
        env.close()


@pytest.fixture()
def play_random_model_episodes() -> Callable[[SelfPlayAgent], None]:
    """A function playing two SPICE episodes with an agent (see its docstring)."""
    return _play_random_model_episodes
