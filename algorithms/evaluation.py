"""Evaluation inside the training loop: questions the policy answers greedily while it trains.

Two kinds of question sets are evaluated (see :class:`~algorithms.config.EvaluationConfig`):

* the **held-out set**: documents of the training corpus set aside before training
  (:meth:`spice_env.corpus.Corpus.hold_out`) whose records carry a question and its gold answer
  (:func:`heldout_questions`); the trainer never samples them;
* **benchmark subsets**, given to the trainer as :class:`EvalQuestion` lists (the CLI builds them
  with :func:`benchmarks.evaluation.benchmark_questions`).

Every question is put to the Reasoner with the game's prompt, decoded greedily, and checked by the
verifier. :func:`summarise` separates format from reasoning: ``boxed_rate`` is the share of answers
with a ``\\boxed{}``, ``accuracy_given_boxed`` the share of those that are correct, and
``accuracy`` their product.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from agents.base import Generation, SamplingConfig
from spice_env.corpus import Document
from spice_env.numeric import parse_float, parse_integer
from spice_env.tasks import AnswerType, Task
from spice_env.types import Observation
from spice_env.verify import Verifier, extract_boxed

HELDOUT = "heldout"
"""The name of the held-out set in metrics (``eval/heldout/accuracy``) and records."""

HeldoutAnswers = Literal["numeric", "any"]


@dataclass(frozen=True)
class EvalQuestion:
    """One question of an evaluation set: an id (stable across runs) and the task the verifier
    checks the answer against."""

    id: str
    task: Task


def gold_answer_type(gold: str) -> AnswerType:
    """How a gold answer is checked: ``integer`` or ``float`` for numbers (units allowed, as in
    ``32 days``), ``expression`` (Math-Verify) otherwise."""
    if parse_integer(gold) is not None:
        return "integer"
    if parse_float(gold) is not None:
        return "float"
    return "expression"


def _field(document: Document, name: str) -> str | None:
    value = document.metadata.get(name)
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    text = str(value).strip()
    return text or None


def heldout_eligible(question_field: str, answer_field: str,
                     answers: HeldoutAnswers = "numeric") -> Callable[[Document], bool]:
    """Whether a document can be held out: its record has a question and a gold answer (a
    number when ``answers`` is ``numeric``; any answer of at most 200 characters otherwise)."""
    def eligible(document: Document) -> bool:
        question, gold = _field(document, question_field), _field(document, answer_field)
        if question is None or gold is None or len(gold) > 200:
            return False
        return answers == "any" or gold_answer_type(gold) != "expression"

    return eligible


def heldout_questions(documents: Sequence[Document], question_field: str,
                      answer_field: str) -> list[EvalQuestion]:
    """The held-out documents as questions (see :func:`heldout_eligible`)."""
    out = []
    for document in documents:
        question, gold = _field(document, question_field), _field(document, answer_field)
        if question is None or gold is None:
            raise ValueError(f"document {document.id} has no {question_field!r} or "
                             f"{answer_field!r} field")
        out.append(EvalQuestion(document.id, Task(kind="free_form", question=question,
                                                  answer=gold,
                                                  answer_type=gold_answer_type(gold),
                                                  document_id=document.id)))
    return out


Generate = Callable[[list[Observation], SamplingConfig], Sequence[Sequence[Generation]]]
"""Reasoner observations and the sampling to use in, one list of generations per observation
out."""


def answer_questions(questions: Sequence[EvalQuestion], generate: Generate,
                     observe: Callable[[Task], Observation], verifier: Verifier, *,
                     max_new_tokens: int, batch_size: int, seed: int = 0
                     ) -> list[dict[str, Any]]:
    """Answer each question once, greedily, and check it: one record per question."""
    sampling = SamplingConfig(temperature=0.0, max_new_tokens=max_new_tokens, n=1, seed=seed)
    records: list[dict[str, Any]] = []
    for start in range(0, len(questions), batch_size):
        chunk = questions[start : start + batch_size]
        outputs = generate([observe(q.task) for q in chunk], sampling)
        if len(outputs) != len(chunk) or any(len(row) != 1 for row in outputs):
            raise RuntimeError(f"the policy returned {[len(row) for row in outputs]} answers "
                               f"for {len(chunk)} questions; expected one each")
        texts = [row[0].text for row in outputs]
        verdicts = verifier.verify_many([(q.task, text) for q, text in
                                         zip(chunk, texts, strict=True)])
        for question, row, verdict in zip(chunk, outputs, verdicts, strict=True):
            generation = row[0]
            records.append({
                "id": question.id, "question": question.task.question,
                "answer": question.task.answer, "text": generation.text,
                "extracted": verdict.extracted, "outcome": verdict.outcome,
                "correct": bool(verdict.correct),
                "boxed": extract_boxed(generation.text) is not None,
                "tokens": len(generation.completion_ids),
                "finish_reason": generation.finish_reason,
            })
    return records


def summarise(records: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Accuracy (with its standard error), boxed-answer rate, accuracy given a boxed answer,
    truncation rate and mean answer length of a set's records."""
    n = len(records)
    if not n:
        return {}
    correct = sum(bool(r["correct"]) for r in records)
    boxed = sum(bool(r["boxed"]) for r in records)
    accuracy = correct / n
    return {
        "items": float(n),
        "accuracy": accuracy,
        "stderr": math.sqrt(accuracy * (1 - accuracy) / n),
        "boxed_rate": boxed / n,
        "accuracy_given_boxed": (sum(bool(r["correct"]) and bool(r["boxed"]) for r in records)
                                 / boxed) if boxed else float("nan"),
        "truncated_rate": sum(r.get("finish_reason") == "length" for r in records) / n,
        "mean_tokens": sum(int(r.get("tokens") or 0) for r in records) / n,
    }


def set_metrics(name: str, records: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """:func:`summarise` under ``eval/<name>/`` keys."""
    return {f"eval/{name}/{key}": value for key, value in summarise(records).items()}
