"""The batched runner: Algorithm 1's rollouts, ratio-preserving sub-sampling, records."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.scripted import GARBAGE, AnswerKey, NoisyReasoner, OracleChallenger
from spice_env.runner import SpiceRunner, ratio_preserving_subsample
from spice_env.verify import Verifier


@pytest.fixture(scope="module")
def verifier() -> Iterator[Verifier]:
    with Verifier(timeout_s=2) as shared:
        yield shared


@given(st.lists(st.booleans(), min_size=1, max_size=64), st.integers(1, 16), st.integers(0, 99))
@settings(max_examples=300, deadline=None)
def test_subsample_preserves_ratio(valid: list[bool], keep: int, seed: int) -> None:
    kept = ratio_preserving_subsample(valid, keep, np.random.default_rng(seed))
    assert kept == sorted(set(kept)) and all(0 <= i < len(valid) for i in kept)
    assert len(kept) == min(keep, len(valid))
    if len(valid) > keep:
        v, n = sum(valid), len(valid)
        n_valid = sum(valid[i] for i in kept)
        ideal = keep * v / n
        if min(v, n - v) >= keep:  # both classes can fill the quota: nearest count to the ratio
            assert abs(n_valid - ideal) <= 0.5
        else:  # one class is short: take all of it, fill with the other
            assert n_valid in (min(v, keep), keep - min(n - v, keep)) or abs(n_valid - ideal) <= 0.5


def test_subsample_examples() -> None:
    rng = np.random.default_rng(0)
    valid = [True] * 12 + [False] * 4  # 3:1 of 16 -> keep 6 valid, 2 invalid of 8
    kept = ratio_preserving_subsample(valid, 8, rng)
    assert sum(valid[i] for i in kept) == 6
    assert ratio_preserving_subsample([True, False], 8, rng) == [0, 1]
    kept = ratio_preserving_subsample([False] * 15 + [True], 8, rng)  # 0.5 valid -> rounds up
    assert sum(1 for i in kept if i == 15) == 1


@dataclass
class Generation:
    """A sample object carrying more than text (like an agent's output)."""

    text: str
    logprobs: list[float]


def test_iteration_records(verifier: Verifier) -> None:
    key = AnswerKey()
    oracle, reasoner = OracleChallenger(0, key), NoisyReasoner(0.5, 0, key)

    def challenger(observations: Sequence[dict[str, Any]], n: int) -> list[list[Generation]]:
        out = []
        for index, obs in enumerate(observations):
            assert obs["role"] == "challenger" and obs["document"]
            # half the attempts of odd documents are garbage: validity varies per document
            texts = [GARBAGE[2] if index % 2 and j % 2 else oracle.act(obs) for j in range(n)]
            out.append([Generation(t, [0.0]) for t in texts])
        return out

    def answer(observations: Sequence[dict[str, Any]], n: int) -> list[list[str]]:
        for obs in observations:
            assert obs["role"] == "reasoner" and obs["document"] == ""
        return reasoner.generate(observations, n)

    runner = SpiceRunner("embedded", batch_size=6, attempts=8, group_size=4, seed=3,
                         verifier=verifier)
    rollout = runner.run(challenger, answer)
    assert len(rollout.documents) == 6
    for index, doc in enumerate(rollout.documents):
        assert len(doc.attempts) == 8 and len(doc.kept) == 4
        valid_kept = [a for a in doc.kept if a.task is not None]
        assert len(valid_kept) == (2 if index % 2 else 4)  # the 1:1 ratio of the 8 is kept
        for attempt in doc.kept:
            assert isinstance(attempt.sample, Generation)
            if attempt.task is None:
                assert attempt.reward == -0.1 and attempt.answers == []
            else:
                assert len(attempt.answers) == 4 and attempt.pass_rate is not None
        for attempt in doc.attempts:
            if not attempt.kept:
                assert attempt.reward is None and attempt.answers == []
        chosen = doc.attempts[doc.reasoner_choice]  # type: ignore[index]
        assert chosen.kept and chosen.task is not None
        assert doc.reasoner_group is chosen.answers
        assert doc.reasoner_observation is not None
        assert doc.reasoner_observation["question"] == chosen.task.reasoner_question()
    metrics = rollout.metrics()
    assert metrics["challenger/valid_rate"] == pytest.approx(0.75)
    assert metrics["challenger/kept_valid_rate"] == pytest.approx(0.75)
    assert metrics["challenger/invalid/no_json"] == pytest.approx(0.25)
    assert metrics["reasoner/boxed_rate"] == 1.0
    assert 0 <= metrics["challenger/frontier_share"] <= 1


def test_no_valid_question(verifier: Verifier) -> None:
    runner = SpiceRunner("embedded:math", batch_size=2, attempts=4, group_size=2,
                         verifier=verifier)
    rollout = runner.run(lambda obs, n: [["junk"] * n for _ in obs],
                         lambda obs, n: pytest.fail("no reasoner call expected"))
    assert all(d.reasoner_group == [] and d.reasoner_choice is None for d in rollout.documents)
    assert all(a.reward == -0.1 for d in rollout.documents for a in d.kept)
    assert rollout.metrics()["challenger/valid_rate"] == 0.0


def test_bad_generate_shape_and_settings(verifier: Verifier) -> None:
    runner = SpiceRunner("embedded:math", batch_size=2, attempts=4, group_size=2,
                         verifier=verifier)
    with pytest.raises(ValueError, match="4 samples for each of 2"):
        runner.run(lambda obs, n: [["x"] * 3 for _ in obs])
    with pytest.raises(ValueError, match="attempts"):
        SpiceRunner("embedded:math", attempts=2, group_size=4, verifier=verifier)


def test_sharding_and_resume(verifier: Verifier) -> None:
    def ids(runner: SpiceRunner) -> list[str]:
        rollout = runner.run(lambda obs, n: [["junk"] * n for _ in obs])
        return [d.document.id for d in rollout.documents]

    ranks = [SpiceRunner("embedded:math", batch_size=4, attempts=2, group_size=2, rank=r,
                         world_size=2, verifier=verifier) for r in range(2)]
    shard_ids = [{d.id for d in r.corpus} for r in ranks]
    assert not shard_ids[0] & shard_ids[1]
    assert set(ids(ranks[0])) <= shard_ids[0] and set(ids(ranks[1])) <= shard_ids[1]

    runner = SpiceRunner("embedded:math", batch_size=3, attempts=2, group_size=2, seed=5,
                         verifier=verifier)
    ids(runner)
    state = runner.state_dict()
    expected = ids(runner) + ids(runner)
    fresh = SpiceRunner("embedded:math", batch_size=3, attempts=2, group_size=2, seed=99,
                        verifier=verifier)
    fresh.load_state_dict(state)
    assert ids(fresh) + ids(fresh) == expected


def test_the_runner_takes_a_game_config_and_a_loaded_corpus(verifier: Verifier) -> None:
    from spice_env.corpus import load_corpus
    from spice_env.game import GameConfig

    corpus = load_corpus("embedded:math")
    game = GameConfig(group_size=2, challenger_reward="threshold", task_formats="mcq")
    runner = SpiceRunner(corpus, game=game, batch_size=2, attempts=2, verifier=verifier)
    assert runner.config is game and len(runner.corpus) == len(corpus)
    rollout = runner.run(lambda obs, n: [["junk"] * n for _ in obs])
    assert {d.task_format for d in rollout.documents} == {"mcq"}
    with pytest.raises(TypeError, match="not both"):
        SpiceRunner(corpus, game=game, group_size=2, verifier=verifier)


# --- the task-type selector, majority labels, ρ schedules, the repetition penalty -------------


@pytest.mark.parametrize("style", ["paper", "compact"])
def test_selector_step_picks_each_documents_format(verifier: Verifier, style: str) -> None:
    key = AnswerKey()
    oracle, reasoner = OracleChallenger(0, key), NoisyReasoner(0.5, 0, key)
    seen: list[str] = []

    def challenger(observations: Sequence[dict[str, Any]], n: int) -> list[list[str]]:
        seen.extend(obs["task_format"] for obs in observations)
        out = []
        for index, obs in enumerate(observations):
            if obs["task_format"] != "select":
                out.append([oracle.act(obs) for _ in range(n)])
            elif index % 3 == 0:  # every third document: an invalid choice
                out.append(['{"suitable_for_mcq": false, "suitable_for_free_form": false}'])
            elif index % 3 == 1:
                out.append(['{"suitable_for_mcq": true, "suitable_for_free_form": false}']
                           if style == "paper" else ["yes</mcq><free_form>no</free_form>"])
            else:
                out.append([oracle.act(obs)])  # both suitable
        return out

    runner = SpiceRunner("embedded", batch_size=6, attempts=4, group_size=4, seed=1,
                         verifier=verifier, format_choice="selector", prompt_style=style)
    rollout = runner.run(challenger, reasoner.generate)
    assert seen[:6] == ["select"] * 6 and len(seen) == 6 + 4  # 2 documents got no question
    for index, doc in enumerate(rollout.documents):
        assert doc.selection is not None
        if index % 3 == 0:
            assert doc.task_format is None and doc.attempts == []
            assert doc.selection.reward == -0.1
            assert doc.selection.result.reason == "no_suitable_format"
        else:
            assert doc.task_format == ("mcq" if index % 3 == 1 else doc.task_format)
            kept = [a.reward for a in doc.kept if a.reward is not None]
            assert doc.selection.reward == pytest.approx(sum(kept) / len(kept))
    metrics = rollout.metrics()
    assert metrics["selector/valid_rate"] == pytest.approx(4 / 6)
    assert metrics["selector/invalid/no_suitable_format"] == pytest.approx(2 / 6)


def test_an_invalid_selector_output_of_every_document(verifier: Verifier) -> None:
    def challenger(observations: Sequence[dict[str, Any]], n: int) -> list[list[str]]:
        return [[GARBAGE[i % len(GARBAGE)] for _ in range(n)] for i in range(len(observations))]

    runner = SpiceRunner("embedded", batch_size=4, attempts=4, group_size=4, seed=0,
                         verifier=verifier, format_choice="selector")
    rollout = runner.run(challenger)
    assert all(d.attempts == [] and d.selection and d.selection.reward == -0.1
               for d in rollout.documents)
    assert rollout.metrics()["selector/valid_rate"] == 0.0


def test_majority_labels_replace_the_gold_answer(verifier: Verifier) -> None:
    key = AnswerKey()
    oracle = OracleChallenger(0, key)

    def agree(observations: Sequence[dict[str, Any]], n: int) -> list[list[str]]:
        return [["\\boxed{123456789}"] * (n - 1) + ["\\boxed{987654321}"] for _ in observations]

    runner = SpiceRunner("embedded", batch_size=3, attempts=4, group_size=4, seed=0,
                         verifier=verifier, label_source="majority", task_formats="free_form",
                         challenger_reward="r_zero")
    rollout = runner.run(oracle.generate, agree)
    for doc in rollout.documents:
        for attempt in doc.kept:
            assert attempt.majority == "123456789" and attempt.pass_rate == 0.75
            assert attempt.reward == pytest.approx(0.5)  # 1 - 2|0.75 - 0.5|
            assert [a.reward for a in attempt.answers] == [1.0, 1.0, 1.0, 0.0]
            assert not any(a.verdict.correct for a in attempt.answers)  # against the gold


def test_rho_follows_its_schedule_and_resumes(verifier: Verifier) -> None:
    def garbage(observations: Sequence[dict[str, Any]], n: int) -> list[list[str]]:
        return [["not a question"] * n for _ in observations]

    def make() -> SpiceRunner:
        return SpiceRunner("embedded", batch_size=1, attempts=2, group_size=2, seed=0,
                           verifier=verifier, rho_schedule=[[0, 0.0], [2, -0.2]])

    runner = make()
    rewards = [runner.run(garbage).documents[0].kept[0].reward for _ in range(2)]
    assert rewards == [0.0, pytest.approx(-0.1)]
    resumed = make()
    resumed.load_state_dict(runner.state_dict())
    assert resumed.rho == pytest.approx(-0.2)
    assert resumed.run(garbage).documents[0].kept[0].reward == pytest.approx(-0.2)


def test_repetition_penalty_lowers_repeated_questions(verifier: Verifier) -> None:
    def same(observations: Sequence[dict[str, Any]], n: int) -> list[list[str]]:
        text = '{"question": "What is 17 times 3?", "answer": "51", "answer_type": "integer"}'
        return [[text] * n for _ in observations]

    def half(observations: Sequence[dict[str, Any]], n: int) -> list[list[str]]:
        return [["\\boxed{51}", "\\boxed{50}"] * (n // 2) for _ in observations]

    plain = SpiceRunner("embedded", batch_size=2, attempts=2, group_size=2, seed=0,
                        verifier=verifier, task_formats="free_form").run(same, half)
    penalised = SpiceRunner("embedded", batch_size=2, attempts=2, group_size=2, seed=0,
                            verifier=verifier, task_formats="free_form",
                            repetition_penalty=True).run(same, half)
    for before, after in zip(plain.documents, penalised.documents, strict=True):
        for a, b in zip(before.kept, after.kept, strict=True):
            assert b.repetition_penalty == 1.0  # all 4 questions in one cluster, 4 scored
            assert b.reward == pytest.approx((a.reward or 0.0) - 1.0)
    assert penalised.metrics()["challenger/repetition_penalty"] == 1.0
    assert "challenger/repetition_penalty" not in plain.metrics()
