"""Majority labels (game.label_source="majority"): grouping by the verifier, ties, no answers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from spice_env.labels import majority_labels
from spice_env.tasks import Task
from spice_env.verify import Verifier


@pytest.fixture(scope="module")
def verifier() -> Iterator[Verifier]:
    with Verifier(timeout_s=5) as shared:
        yield shared


def free(answer_type: str, gold: str = "1") -> Task:
    return Task(kind="free_form", question="Q?", answer=gold,
                answer_type=answer_type)  # type: ignore[arg-type]


def labels(verifier: Verifier, task: Task, answers: list[str]
           ) -> tuple[str | None, tuple[bool, ...]]:
    verdicts = verifier.verify_many([(task, a) for a in answers])
    found = majority_labels(verifier, [(task, verdicts)])[0]
    return found.majority, found.correct


def boxed(*answers: str) -> list[str]:
    return [f"so \\boxed{{{a}}}" for a in answers]


def test_equivalent_answers_count_together(verifier: Verifier) -> None:
    task = free("expression", gold="7")  # the gold plays no part
    majority, correct = labels(verifier, task, boxed("\\frac{1}{2}", "3", "0.5", "1/2", "3"))
    assert majority == "\\frac{1}{2}" and correct == (True, False, True, True, False)


def test_a_tie_goes_to_the_answer_given_first(verifier: Verifier) -> None:
    task = free("integer")
    assert labels(verifier, task, boxed("5", "4", "4", "5")) == ("5", (True, False, False, True))
    assert labels(verifier, task, boxed("4", "5", "5", "4"))[0] == "4"


def test_answers_without_a_box_are_never_the_majority(verifier: Verifier) -> None:
    task = free("integer")
    majority, correct = labels(verifier, task, ["no box", "none", "still none", "\\boxed{12}"])
    assert majority == "12" and correct == (False, False, False, True)
    assert labels(verifier, task, ["a", "b"]) == (None, (False, False))


def test_integers_and_strings_group_by_their_value(verifier: Verifier) -> None:
    assert labels(verifier, free("integer"), boxed("1,000", "1000", "999"))[1] == (
        True, True, False)
    majority, correct = labels(verifier, free("string"), boxed("The Nile", "nile", "Amazon"))
    assert majority == "The Nile" and correct == (True, True, False)


def test_mcq_answers_group_by_the_letter_they_name(verifier: Verifier) -> None:
    task = Task(kind="mcq", question="Q?", answer="A", answer_type="mcq_letter",
                options={"A": "red", "B": "blue", "C": "green", "D": "pink"})
    majority, correct = labels(verifier, task, boxed("B", "(B)", "blue", "A"))
    assert majority == "B" and correct == (True, True, True, False)


def test_many_questions_in_one_batch(verifier: Verifier) -> None:
    tasks = [free("integer"), free("expression")]
    answers = [boxed("2", "2", "3"), boxed("x+1", "1+x", "x")]
    found = majority_labels(verifier, [(t, verifier.verify_many([(t, a) for a in group]))
                                       for t, group in zip(tasks, answers, strict=True)])
    assert [f.correct for f in found] == [(True, True, False), (True, True, False)]
    assert found[1].agreement == pytest.approx(2 / 3)
