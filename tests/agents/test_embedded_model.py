"""One smoke run of the real embedded default model (prepared by the project's setup)."""

from __future__ import annotations

import gymnasium as gym

import spice_env
from agents.base import SamplingConfig
from agents.self_play import SelfPlayAgent


def test_embedded_model_plays_an_episode() -> None:
    agent = SelfPlayAgent("hf", "qwen2.5-coder-0.5b-instruct",
                          challenger=SamplingConfig(temperature=0, max_new_tokens=96),
                          reasoner=SamplingConfig(temperature=0.7, max_new_tokens=48, n=2, seed=0))
    env = gym.make(spice_env.ENV_ID, corpus="embedded:math", group_size=2,
                   prompt_style="compact", task_formats="free_form")
    obs, _ = env.reset(seed=1)
    text = agent.act(obs)
    assert isinstance(text, str) and text.strip()  # a real model writes real text
    obs, reward, terminated, _, info = env.step(text)
    if not terminated:
        answers = agent.act(obs, info)
        assert len(answers) == 2 and all(isinstance(a, str) for a in answers)
        obs, reward, terminated, _, info = env.step(answers)
        assert terminated and len(info["rewards"]["reasoner"]) == 2
    else:
        assert reward == -0.1 and info["invalid_reason"]
    env.close()
