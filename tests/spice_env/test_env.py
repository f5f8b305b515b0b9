"""SpiceCorpus-v0 through gym.make: the episode protocol, settings, and bad input."""

from __future__ import annotations

from collections.abc import Iterator

import gymnasium as gym
import pytest

import spice_env
from agents.scripted import GarbageChallenger, NoisyReasoner, OracleChallenger
from spice_env.corpus import load_corpus
from spice_env.prompting import reasoner_prompt
from spice_env.tasks import REASONS
from spice_env.verify import Verifier


@pytest.fixture(scope="module")
def verifier() -> Iterator[Verifier]:
    with Verifier(timeout_s=2) as shared:
        yield shared


def make(verifier: Verifier, **kwargs: object) -> gym.Env:  # type: ignore[type-arg]
    kwargs.setdefault("corpus", "embedded:math")
    kwargs.setdefault("group_size", 4)
    return gym.make(spice_env.ENV_ID, verifier=verifier, **kwargs)


def test_registration_is_lazy_and_nondeterministic() -> None:
    spec = gym.spec(spice_env.ENV_ID)
    assert spec.entry_point == "spice_env.env:SpiceCorpusEnv"
    assert spec.nondeterministic is True


@pytest.mark.parametrize("style", ["paper", "compact"])
@pytest.mark.parametrize("fmt", ["mcq", "free_form"])
def test_valid_episode(verifier: Verifier, style: str, fmt: str) -> None:
    env = make(verifier, prompt_style=style, task_formats=fmt)
    challenger, reasoner = OracleChallenger(0), NoisyReasoner(0.5, 0)
    obs, info = env.reset(seed=0)
    assert obs["role"] == "challenger" and obs["task_format"] == fmt
    assert obs["document"] and obs["document"] in obs["prompt"]
    obs, reward, terminated, truncated, info = env.step(challenger.act(obs))
    assert (terminated, truncated, reward) == (False, False, 0.0), info
    assert obs["role"] == "reasoner" and info["task"].kind == fmt
    obs, reward, terminated, truncated, info = env.step(reasoner.act(obs, info, n=4))
    assert terminated and not truncated
    assert len(info["rewards"]["reasoner"]) == 4
    assert reward == info["rewards"]["challenger"]
    k = sum(info["correct"])
    assert info["pass_rate"] == k / 4
    assert info["rewards"]["reasoner"] == [1.0 if c else 0.0 for c in info["correct"]]
    env.close()


@pytest.mark.parametrize("style", ["paper", "compact"])
def test_reasoner_never_sees_the_document(verifier: Verifier, style: str) -> None:
    """On every embedded document sampled here, the Reasoner's observation is the question only."""
    env = make(verifier, corpus="embedded", prompt_style=style)
    challenger = OracleChallenger(1)
    sampled = 0
    for seed in range(30):
        obs, _ = env.reset(seed=seed)
        document = obs["document"]
        obs, _, terminated, _, info = env.step(challenger.act(obs))
        assert not terminated, info
        sampled += 1
        assert obs["document"] == ""
        assert obs["prompt"] == reasoner_prompt(info["task"].reasoner_question(), style).text
        for key, value in obs.items():
            if isinstance(value, str):
                assert document not in value, key
        assert all(document not in m["content"] for m in obs["messages"])
    assert sampled == 30
    env.close()


def test_invalid_question_earns_rho(verifier: Verifier) -> None:
    env = make(verifier, rho=-0.5)
    garbage = GarbageChallenger(0)
    seen = set()
    for seed in range(40):
        env.reset(seed=seed)
        obs, reward, terminated, _, info = env.step(garbage.act({}))
        assert terminated and reward == -0.5 and obs["role"] == "done"
        assert info["invalid_reason"] in REASONS and info["detail"]
        assert info["rewards"] == {"challenger": -0.5, "reasoner": []}
        seen.add(info["invalid_reason"])
    assert len(seen) >= 5


def test_challenger_reward_by_name_and_callable(verifier: Verifier) -> None:
    for reward in ("r_zero", lambda correct: 0.25):
        env = make(verifier, challenger_reward=reward, task_formats="free_form")
        obs, _ = env.reset(seed=0)
        obs, _, _, _, info = env.step(OracleChallenger(0).act(obs))
        _, r, _, _, info = env.step(NoisyReasoner(1.0, 0).act(obs, info, n=4))
        assert r == (0.0 if reward == "r_zero" else 0.25)  # all correct: r_zero gives 0


def test_bad_settings_are_clear_errors(verifier: Verifier) -> None:
    with pytest.raises(ValueError, match="unknown challenger reward 'best'"):
        make(verifier, challenger_reward="best")
    with pytest.raises(ValueError, match="group_size"):
        make(verifier, group_size=0)
    with pytest.raises(ValueError, match="prompt_style"):
        make(verifier, prompt_style="verbose")
    with pytest.raises(ValueError, match="typo_setting"):
        make(verifier, typo_setting=1)


def test_step_errors(verifier: Verifier) -> None:
    env = make(verifier)
    obs, _ = env.reset(seed=0)
    with pytest.raises(TypeError, match="one string"):
        env.step(["a list"])
    obs, _, _, _, _info = env.step(OracleChallenger(0).act(obs))
    with pytest.raises(ValueError, match="4 answers"):
        env.step(["\\boxed{1}"] * 3)
    with pytest.raises(TypeError, match="not a string"):
        env.step(["a", "b", None, "d"])
    env.step(["x"] * 4)
    with pytest.raises(RuntimeError, match="reset"):
        env.step("again")


def test_ungrounded_challenger_sees_no_document(verifier: Verifier) -> None:
    env = make(verifier, grounding=False)
    obs, info = env.reset(seed=0)
    document = env.unwrapped.corpus.documents  # type: ignore[attr-defined]
    assert obs["document"] == ""
    text = next(d.text for d in document if d.id == info["document_id"])
    assert text not in obs["prompt"]
    assert "[BEGINNING OF THE DOCUMENT]" not in obs["prompt"]
    obs, _, terminated, _, _ = env.step(OracleChallenger(0).act(obs))
    assert not terminated


def test_seeded_reset_and_resume(verifier: Verifier) -> None:
    env = make(verifier)
    first = [env.reset(seed=7)[1]["document_id"]] + [env.reset()[1]["document_id"]
                                                     for _ in range(3)]
    again = [env.reset(seed=7)[1]["document_id"]] + [env.reset()[1]["document_id"]
                                                     for _ in range(3)]
    assert first == again
    env.reset(seed=7)
    env.reset()
    state = env.unwrapped.state_dict()  # type: ignore[attr-defined]
    tail = [env.reset()[0]["prompt"] for _ in range(2)]
    env.unwrapped.load_state_dict(state)  # type: ignore[attr-defined]
    assert [env.reset()[0]["prompt"] for _ in range(2)] == tail


def test_reset_with_a_chosen_document(verifier: Verifier) -> None:
    corpus = load_corpus(["The bridge is 120 metres long and was built in 1890."])
    env = make(verifier, corpus=corpus, task_formats="mcq")
    obs, info = env.reset(options={"document": corpus[0], "task_format": "free_form"})
    assert info["document_id"] == corpus[0].id and obs["task_format"] == "free_form"
    assert "120 metres" in obs["prompt"]


def test_render_ansi(verifier: Verifier) -> None:
    env = make(verifier, render_mode="ansi")
    env.reset(seed=0)
    assert "phase: challenger" in env.render()


def test_both_formats_are_drawn(verifier: Verifier) -> None:
    env = make(verifier, task_formats="both")
    formats = {env.reset(seed=s)[0]["task_format"] for s in range(20)}
    assert formats == {"mcq", "free_form"}


def test_non_finite_settings_are_refused(verifier: Verifier) -> None:
    with pytest.raises(ValueError, match="rho"):
        make(verifier, rho=float("nan"))
    with pytest.raises(ValueError, match="reasoner_format_weight"):
        make(verifier, reasoner_format_weight=float("inf"))


def test_a_tokenizer_sets_the_segment_length(verifier: Verifier) -> None:
    class Characters:
        """A tokenizer with one token per character."""

        def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
            return [ord(c) for c in text]

    corpus = ["word " * 100]
    env = make(verifier, corpus=corpus, max_tokens=120, tokenizer=Characters())
    assert all(len(d.text) <= 120 for d in env.unwrapped.corpus)  # type: ignore[attr-defined]
    assert len(env.unwrapped.corpus) > 1  # type: ignore[attr-defined]


@pytest.mark.parametrize("style", ["paper", "compact"])
def test_selector_step_through_gym_make(verifier: Verifier, style: str) -> None:
    env = make(verifier, format_choice="selector", prompt_style=style)
    challenger, reasoner = OracleChallenger(0), NoisyReasoner(0.5, 0)
    formats = set()
    for seed in range(8):
        obs, info = env.reset(seed=seed)
        assert obs["role"] == "challenger" and obs["task_format"] == info["task_format"] == "select"
        assert obs["document"] in obs["prompt"]
        obs, reward, terminated, _, info = env.step(challenger.act(obs))
        assert (reward, terminated) == (0.0, False), info
        assert obs["role"] == "challenger" and obs["task_format"] == info["task_format"]
        assert info["selection"].suitable_for_mcq and info["invalid_reason"] is None
        formats.add(obs["task_format"])
        obs, _, terminated, _, info = env.step(challenger.act(obs))
        assert not terminated and obs["role"] == "reasoner"
        _, reward, terminated, _, info = env.step(reasoner.act(obs, info, n=4))
        assert terminated and reward == info["rewards"]["challenger"]
    assert formats == {"mcq", "free_form"}  # both suitable: one of the two at random
    env.close()


def test_invalid_selector_choice_ends_the_episode_with_rho(verifier: Verifier) -> None:
    env = make(verifier, format_choice="selector", rho_schedule=[[0, -0.5], [10, -1.0]])
    env.reset(seed=0)
    obs, reward, terminated, _, info = env.step("I would rather not say.")
    assert terminated and reward == -0.5 and obs["role"] == "done"
    assert info["invalid_reason"] == "no_json" and info["rewards"]["challenger"] == -0.5
    env.unwrapped.iteration = 10  # type: ignore[attr-defined]
    env.reset(seed=1)
    _, reward, _, _, info = env.step('{"suitable_for_mcq": "no", "suitable_for_free_form": "no"}')
    assert reward == -1.0 and info["invalid_reason"] == "no_suitable_format"
    obs, _ = env.reset(seed=2, options={"task_format": "mcq"})  # a named format skips the step
    assert obs["task_format"] == "mcq"
    with pytest.raises(TypeError, match="selector step takes one string"):
        env.reset(seed=3)
        env.step(["a", "b"])
    env.close()


def test_majority_labels_through_gym_make(verifier: Verifier) -> None:
    env = make(verifier, label_source="majority", task_formats="free_form",
               challenger_reward="r_zero")
    obs, _ = env.reset(seed=0)
    obs, _, _, _, info = env.step(OracleChallenger(0).act(obs))
    answers = ["\\boxed{424242}", "\\boxed{424242}", "\\boxed{17}", "no answer"]
    _, reward, _, _, info = env.step(answers)
    assert info["majority"] == "424242" and info["correct"] == [True, True, False, False]
    assert info["rewards"]["reasoner"] == [1.0, 1.0, 0.0, 0.0] and reward == 1.0
    env.close()


def test_the_repetition_penalty_needs_a_batch(verifier: Verifier) -> None:
    with pytest.raises(ValueError, match="SpiceRunner"):
        make(verifier, repetition_penalty=True)
