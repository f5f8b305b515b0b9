"""The scripted agents used by the tests, the checker and the demo."""

from __future__ import annotations

import pytest

from agents.scripted import GARBAGE, AnswerKey, GarbageChallenger, NoisyReasoner, OracleChallenger
from spice_env.corpus import load_corpus
from spice_env.game import GameConfig, SpiceGame
from spice_env.tasks import REASONS, parse_challenger_output
from spice_env.verify import Verifier


@pytest.mark.parametrize("style", ["paper", "compact"])
@pytest.mark.parametrize("fmt", ["mcq", "free_form"])
def test_oracle_writes_valid_grounded_tasks(style: str, fmt: str) -> None:
    corpus = load_corpus("embedded")
    game = SpiceGame(GameConfig(prompt_style=style), Verifier())  # type: ignore[arg-type]
    oracle = OracleChallenger(0)
    for document in corpus.documents[::500]:
        obs = game.challenger_observation(document, fmt)  # type: ignore[arg-type]
        parsed = game.parse(oracle.act(obs), document, fmt)  # type: ignore[arg-type]
        assert parsed.task is not None, (parsed.reason, parsed.detail, document.text[:200])
        assert parsed.task.answer in document.text or parsed.task.kind == "mcq"
        assert oracle.answer_key.lookup(parsed.task.reasoner_question()) is not None


def test_oracle_without_document_writes_arithmetic() -> None:
    text = OracleChallenger(0).act({"document": "", "task_format": "free_form"})
    task = parse_challenger_output(text).task
    assert task is not None and task.answer_type == "integer"
    a, b = (int(x) for x in task.question.removeprefix("What is ").rstrip("?").split(" + "))
    assert int(task.answer) == a + b


def test_noisy_reasoner_rate_and_answer_key() -> None:
    key = AnswerKey()
    oracle = OracleChallenger(0, key)
    text = oracle.act({"document": "The tower has 300 steps and 4 floors.",
                       "task_format": "free_form"})
    task = parse_challenger_output(text).task
    assert task is not None
    with Verifier() as verifier:
        for p in (0.0, 0.3, 1.0):
            reasoner = NoisyReasoner(p, seed=1, answer_key=key)
            answers = reasoner.act({"question": task.reasoner_question()}, n=400)
            rate = sum(verifier.check_many([(task, a) for a in answers])) / 400
            assert rate == pytest.approx(p, abs=0.07)
    with pytest.raises(ValueError):
        NoisyReasoner(1.5)


def test_garbage_is_always_invalid_with_known_reasons() -> None:
    garbage = GarbageChallenger(0)
    reasons = set()
    for _ in range(3 * (len(GARBAGE) + 1)):
        result = parse_challenger_output(garbage.act({}))
        assert result.task is None and result.reason in REASONS
        reasons.add(result.reason)
    assert {"empty", "no_json", "bad_letter", "not_four_options", "refers_to_document",
            "string_too_long", "type_mismatch", "answer_not_scalar"} <= reasons

