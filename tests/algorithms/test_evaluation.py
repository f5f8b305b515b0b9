"""Tests of algorithms.evaluation: held-out questions from corpus records, greedy answering,
and the split of accuracy into boxed-answer rate and accuracy given a boxed answer."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pytest

from agents.base import Generation, SamplingConfig
from algorithms.evaluation import (
    EvalQuestion,
    answer_questions,
    gold_answer_type,
    heldout_eligible,
    heldout_questions,
    set_metrics,
    summarise,
)
from spice_env.corpus import Document
from spice_env.game import GameConfig, SpiceGame
from spice_env.tasks import Task
from spice_env.verify import Verifier


@pytest.mark.parametrize(("gold", "kind"), [("32", "integer"), ("32 days", "integer"),
                                            ("52 %", "integer"), ("$ 0.32", "float"),
                                            ("82.5 kmph", "float"), ("1 / 3", "expression"),
                                            ("rs . 1200", "expression")])
def test_gold_answer_types(gold: str, kind: str) -> None:
    assert gold_answer_type(gold) == kind


def document(question: Any, answer: Any) -> Document:
    return Document.from_text(f"Problem: {question}\nAnswer: {answer}", "test",
                              {"question": question, "answer": answer})


def test_which_documents_can_be_held_out() -> None:
    numeric = heldout_eligible("question", "answer")
    anything = heldout_eligible("question", "answer", "any")
    assert numeric(document("how many?", "32 days")) and anything(document("how many?", "32"))
    assert not numeric(document("which ratio?", "3 : 4"))
    assert anything(document("which ratio?", "3 : 4"))
    assert not anything(document("", "3")) and not anything(document("why?", "  "))
    assert not anything(document("why?", "x" * 201))
    assert not anything(Document.from_text("no fields", "test"))
    assert not anything(document("flag?", True))  # a boolean is not an answer field
    assert numeric(document("count?", 7))  # a number-typed field is


def test_heldout_questions_become_tasks() -> None:
    found = heldout_questions([document("how many?", "32 days")], "question", "answer")
    assert len(found) == 1
    task = found[0].task
    assert (task.question, task.answer, task.answer_type) == ("how many?", "32 days", "integer")
    assert found[0].id == task.document_id
    with pytest.raises(ValueError, match="no 'question'"):
        heldout_questions([Document.from_text("bare", "test")], "question", "answer")


def records(*rows: tuple[bool, bool]) -> list[dict[str, Any]]:
    return [{"correct": correct, "boxed": boxed, "finish_reason": "stop", "tokens": 10}
            for correct, boxed in rows]


def test_format_and_reasoning_are_told_apart() -> None:
    # 4 of 8 answers boxed, 3 of those right, and 1 right without a box (an unboxed fallback)
    found = summarise(records((True, True), (True, True), (True, True), (False, True),
                              (True, False), (False, False), (False, False), (False, False)))
    assert found["accuracy"] == 0.5 and found["boxed_rate"] == 0.5
    assert found["accuracy_given_boxed"] == 0.75
    assert found["stderr"] == pytest.approx(math.sqrt(0.25 / 8))
    assert found["items"] == 8 and found["truncated_rate"] == 0 and found["mean_tokens"] == 10
    nothing_boxed = summarise(records((False, False)))
    assert math.isnan(nothing_boxed["accuracy_given_boxed"])
    assert summarise([]) == {}
    assert set(set_metrics("heldout", records((True, True)))) == {
        f"eval/heldout/{k}" for k in ("items", "accuracy", "stderr", "boxed_rate",
                                      "accuracy_given_boxed", "truncated_rate",
                                      "mean_tokens")}


def generation(text: str, finish: str = "stop") -> Generation:
    return Generation(text=text, prompt_ids=(1,), completion_ids=(2, 3, 4), logprobs=(0.0,) * 3,
                      finish_reason=finish)  # type: ignore[arg-type]


def test_answer_questions_greedily_in_batches() -> None:
    questions = [EvalQuestion(f"q{i}", Task(kind="free_form", question=f"{i} + {i}?",
                                            answer=str(2 * i), answer_type="integer"))
                 for i in range(5)]
    seen: list[tuple[int, SamplingConfig]] = []

    def generate(observations: list[dict[str, Any]], sampling: SamplingConfig
                 ) -> Sequence[Sequence[Generation]]:
        seen.append((len(observations), sampling))
        out = []
        for obs in observations:
            i = int(obs["question"].split(" ")[0])
            text = {0: "\\boxed{0}", 1: "\\boxed{3}", 2: "it is 4"}.get(i, f"\\boxed{{{2 * i}}}")
            out.append([generation(text, "length" if i == 4 else "stop")])
        return out

    def short(observations: list[dict[str, Any]], sampling: SamplingConfig) -> list[Any]:
        return [[] for _ in observations]

    game = SpiceGame(GameConfig(prompt_style="compact"), Verifier())
    try:
        found = answer_questions(questions, generate, game.reasoner_observation, game.verifier,
                                 max_new_tokens=17, batch_size=2, seed=5)
        with pytest.raises(RuntimeError, match="expected one each"):
            answer_questions(questions, short, game.reasoner_observation, game.verifier,
                             max_new_tokens=4, batch_size=8)
    finally:
        game.verifier.close()
    assert [n for n, _ in seen] == [2, 2, 1]
    assert all(s.temperature == 0 and s.max_new_tokens == 17 and s.n == 1 and s.seed == 5
               for _, s in seen)
    assert [r["correct"] for r in found] == [True, False, False, True, True]
    assert [r["boxed"] for r in found] == [True, True, False, True, True]
    assert found[4]["finish_reason"] == "length" and found[0]["tokens"] == 3
    assert found[1]["extracted"] == "3" and found[2]["outcome"] == "no_answer"
