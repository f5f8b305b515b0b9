"""The PettingZoo ParallelEnv view."""

from __future__ import annotations

from pettingzoo.test import parallel_api_test

from agents.scripted import AnswerKey, NoisyReasoner, OracleChallenger
from spice_env.parallel import SpiceParallelEnv


def test_parallel_api_test_passes() -> None:
    env = SpiceParallelEnv(corpus="embedded:math", group_size=3)
    parallel_api_test(env, num_cycles=10)
    env.close()


def test_valid_episode_rewards_both_agents() -> None:
    env = SpiceParallelEnv(corpus="embedded:math", group_size=4, prompt_style="compact")
    key = AnswerKey()
    challenger, reasoner = OracleChallenger(0, key), NoisyReasoner(1.0, 0, key)
    obs, infos = env.reset(seed=0)
    assert env.agents == ["challenger", "reasoner"]
    assert obs["reasoner"]["role"] == "waiting" and obs["reasoner"]["prompt"] == ""
    obs, rewards, terms, _, infos = env.step(
        {"challenger": challenger.act(obs["challenger"]), "reasoner": ""})
    assert rewards == {"challenger": 0.0, "reasoner": 0.0} and not any(terms.values())
    assert obs["reasoner"]["role"] == "reasoner" and obs["reasoner"]["document"] == ""
    task = infos["challenger"]["task"]
    assert "task" not in infos["reasoner"]  # the gold answer and quotes stay with the Challenger
    assert set(infos["reasoner"]) == {"document_id", "invalid_reason"}
    assert task.answer
    answers = reasoner.act(obs["reasoner"], infos["reasoner"], n=4)
    obs, rewards, terms, _truncs, infos = env.step({"challenger": "", "reasoner": tuple(answers)})
    assert all(terms.values()) and env.agents == []
    assert rewards["reasoner"] == 1.0  # every answer correct
    assert rewards["challenger"] == infos["challenger"]["rewards"]["challenger"]
    env.close()


def test_invalid_question_ends_for_both() -> None:
    env = SpiceParallelEnv(corpus="embedded:math", group_size=2, rho=-0.2)
    env.reset(seed=1)
    _, rewards, terms, _, infos = env.step({"challenger": "nonsense", "reasoner": ""})
    assert rewards == {"challenger": -0.2, "reasoner": 0.0}
    assert all(terms.values()) and infos["challenger"]["invalid_reason"] == "no_json"
    env.close()


def test_selector_step_is_the_challengers() -> None:
    env = SpiceParallelEnv(corpus="embedded:math", group_size=2, format_choice="selector")
    key = AnswerKey()
    challenger, reasoner = OracleChallenger(0, key), NoisyReasoner(1.0, 0, key)
    obs, _ = env.reset(seed=0)
    assert obs["challenger"]["task_format"] == "select"
    obs, rewards, terms, _, infos = env.step(
        {"challenger": challenger.act(obs["challenger"]), "reasoner": ""})
    assert not any(terms.values()) and rewards == {"challenger": 0.0, "reasoner": 0.0}
    assert obs["challenger"]["role"] == "challenger" and obs["reasoner"]["role"] == "waiting"
    assert obs["challenger"]["task_format"] in ("mcq", "free_form")
    obs, _, _, _, infos = env.step({"challenger": challenger.act(obs["challenger"]),
                                    "reasoner": ""})
    assert obs["reasoner"]["role"] == "reasoner" and "task" not in infos["reasoner"]
    answers = reasoner.act(obs["reasoner"], infos["reasoner"], n=2)
    _, rewards, terms, _, _ = env.step({"challenger": "", "reasoner": tuple(answers)})
    assert all(terms.values()) and rewards["reasoner"] == 1.0
    env.close()
    api = SpiceParallelEnv(corpus="embedded:math", group_size=2, format_choice="selector")
    parallel_api_test(api, num_cycles=10)
    api.close()
