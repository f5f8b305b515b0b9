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
