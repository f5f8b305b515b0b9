"""Tests of spice_env.verify: answer extraction, the per-type comparison rules, the Math-Verify
worker pool (timeouts, crashes, caching) and that model output is never evaluated."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spice_env import _verify_worker
from spice_env.tasks import Task
from spice_env.verify import (
    OUTCOMES,
    MathVerifyPool,
    Verdict,
    Verifier,
    VerifierConfig,
    extract_boxed,
    mcq_letter,
    normalize_string,
    parse_boolean,
    parse_float,
    parse_integer,
)

OPTIONS = {"A": "Paris", "B": "London", "C": "Rome", "D": "Berlin"}
PATHOLOGICAL = "10^{10^{10^{10}}}"


def mcq(answer: str = "B", options: dict[str, str] | None = None) -> Task:
    return Task(kind="mcq", question="Capital of the UK?", answer=answer,
                answer_type="mcq_letter", options=options or OPTIONS)


def free(answer: str, answer_type: str) -> Task:
    return Task(kind="free_form", question="A question?", answer=answer,
                answer_type=answer_type)  # type: ignore[arg-type]


def boxed(value: str) -> str:
    return f"Let me think step by step. ... So the result is \\boxed{{{value}}}."


@pytest.fixture(scope="module")
def verifier() -> Iterator[Verifier]:
    """One verifier (two Math-Verify workers) shared by the module; closed at the end."""
    with Verifier(timeout_s=4.0) as v:
        yield v


@pytest.fixture
def offline() -> Verifier:
    """A verifier whose pool must not be used (checks that need no Math-Verify)."""
    v = Verifier()

    def forbidden(jobs: Any) -> Any:
        raise AssertionError(f"Math-Verify was called for {jobs}")

    v.pool.run = forbidden  # type: ignore[method-assign]
    return v


# --- extracting the answer -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("\\boxed{42}", "42"),
        ("so \\boxed{ 42 } .", "42"),
        ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("\\boxed{\\frac{a^{2}}{\\sqrt{b_{1}}}}", "\\frac{a^{2}}{\\sqrt{b_{1}}}"),
        ("\\fbox{7}", "7"),
        ("first \\boxed{1}, then \\boxed{2}", "2"),
        ("\\boxed{1} and \\fbox{3}", "3"),
        ("\\boxed{3} but then \\boxed{4", "3"),  # cut off: the earlier complete box wins
        ("\\boxed{3} and a bare \\boxed", "3"),
        ("\\boxed 5", "5"),
        ("\\boxed 5 apples", "5"),
        ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),
        ("\\boxed{\\}}", "\\}"),
        ("\\boxed{a{b{c}}d}", "a{b{c}}d"),
        ("$\\boxed{x+1}$", "x+1"),
        ("\\boxed{}", ""),
        ("no box here", None),
        ("\\boxed{unclosed", None),
        ("\\boxedfoo{1}", None),
        ("", None),
        ("The final answer is 7", None),  # the fallback is off by default
    ],
)
def test_extract_boxed(text: str, expected: str | None) -> None:
    assert extract_boxed(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The final answer is 7", "7"),
        ("Work...\nThe final answer is $7$.", "7"),
        ("so the answer is: 12", "12"),
        ("Answer: 7", "7"),
        ("Reasoning here.\nanswer: B", "B"),
        ("\\boxed{3}\nThe final answer is 7", "3"),  # a box always wins
        ("I have no idea.", None),
    ],
)
def test_extract_boxed_fallback(text: str, expected: str | None) -> None:
    assert extract_boxed(text, fallback=True) == expected


@pytest.mark.parametrize("value", [None, 5, 3.2, b"\\boxed{1}", ["\\boxed{1}"]])
def test_extract_boxed_non_string_is_none(value: Any) -> None:
    assert extract_boxed(value) is None
    assert extract_boxed(value, fallback=True) is None


# --- multiple choice ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "answer",
    ["B", "(B)", "B)", "B.", "b", "(b)", "\\text{B}", "\\textbf{(B)}", "\\mathrm{B}",
     "B) London", "(B) London", "London", "london.", "\\text{London}", "Option B"],
)
def test_mcq_correct_forms(offline: Verifier, answer: str) -> None:
    verdict = offline.verify(mcq(), boxed(answer))
    assert verdict == Verdict(True, "correct", answer)


@pytest.mark.parametrize("answer", ["A", "(C)", "D) Berlin", "Paris", "E", "B or C", "A B",
                                    "C) London", "Madrid", "42"])
def test_mcq_wrong_forms(offline: Verifier, answer: str) -> None:
    verdict = offline.verify(mcq(), boxed(answer))
    assert (verdict.correct, verdict.outcome) == (False, "wrong")


def test_mcq_ambiguous_option_text_is_wrong(offline: Verifier) -> None:
    options = {"A": "Same thing", "B": "same thing!", "C": "x", "D": "y"}
    assert offline.verify(mcq("B", options), boxed("same thing")).outcome == "wrong"
    assert mcq_letter("same thing", options) is None
    assert mcq_letter("x", options) == "C"


def test_mcq_lowercase_gold_letter(offline: Verifier) -> None:
    assert offline.check(mcq("b"), boxed("B"))


# --- integers ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gold", "answer"),
    [
        ("1234", "1234"), ("1234", "1,234"), ("1234", "1\\,234"), ("1234", "1 234"),
        ("1234", "1{,}234"), ("1234567", "1,234,567"), ("42", "42.0"), ("42", "42.00"),
        ("17", "17 cm"), ("17", "17\\text{ cm}"), ("5", "\\$5"), ("5", "$5$"), ("-3", "-3"),
        ("-3", "−3"), ("1,234", "1234"), ("50", "50\\%"), ("12", "\\text{12}"), ("90", "90^\\circ"),
    ],
)
def test_integer_correct(offline: Verifier, gold: str, answer: str) -> None:
    assert offline.verify(free(gold, "integer"), boxed(answer)).outcome == "correct"


@pytest.mark.parametrize(
    ("gold", "answer"),
    [("1234", "1235"), ("-3", "3"), ("3", "-3"), ("10", "1,000"), ("1000", "10 cm")],
)
def test_integer_wrong(offline: Verifier, gold: str, answer: str) -> None:
    verdict = offline.verify(free(gold, "integer"), boxed(answer))
    assert (verdict.correct, verdict.outcome) == (False, "wrong")


@pytest.mark.parametrize(
    ("gold", "answer", "correct"),
    [("1", "\\frac{3}{3}", True), ("32349", "32,\\! 349", True), ("11", "x \\approx 11", True),
     ("7", "7/1", True), ("5", "2+3", True), ("12", "x \\approx 11", False),
     ("42", "forty-two", False), ("42", "abc", False), ("42", "4 2 1", False),
     ("12", "12,34", False), ("5", "5 or 6", False), ("5", "5 million", False),
     ("42", "42.5", False), ("111", "0,111", False)],
)
def test_integers_not_written_as_one_go_to_math_verify(verifier: Verifier, gold: str,
                                                       answer: str, correct: bool) -> None:
    verdict = verifier.verify(free(gold, "integer"), boxed(answer))
    assert verdict.correct is correct and verdict.outcome == ("correct" if correct else "wrong")


@pytest.mark.parametrize(
    ("gold", "answer_type", "answer", "correct"),
    [("0.1", "float", "10\\%", True), ("10\\%", "float", "0.1", True),
     ("10\\%", "float", "10", True), ("10", "integer", "10\\%", True),
     ("10", "integer", "1000\\%", True), ("0.1", "float", "10", False),
     ("10", "integer", "0.1", False), ("0.25", "expression", "25\\%", True),
     ("25\\%", "expression", "\\frac{1}{4}", True), ("50", "float", "0.5", False)],
)
def test_a_percent_is_its_value_or_hundredths(verifier: Verifier, gold: str, answer_type: str,
                                              answer: str, correct: bool) -> None:
    assert verifier.verify(free(gold, answer_type), boxed(answer)).correct is correct


@pytest.mark.parametrize(
    ("gold", "response", "correct"),
    [("2, 5", "So \\boxed{2}, \\boxed{5}", True), ("2, 5", "\\boxed{2} and \\boxed{5}", True),
     ("2, 5", "\\boxed{2}, \\boxed{6}", False), ("2, 5", "\\boxed{5}", False),
     ("(1, 2), 3", "\\boxed{(1, 2)} \\boxed{3}", True), ("2, 5", "\\boxed{2, 5}", True),
     ("1,234", "\\boxed{1}, \\boxed{234}", False)],  # a number, not two parts
)
def test_a_multi_part_gold_takes_one_box_per_part(verifier: Verifier, gold: str,
                                                  response: str, correct: bool) -> None:
    assert verifier.verify(free(gold, "expression"), response).correct is correct


@pytest.mark.parametrize(
    ("gold", "response", "correct"),
    [("\\{1, 2, 3\\}", "\\boxed{1}, \\boxed{2}, \\boxed{3}", True),
     ("{1,2,3}", "\\boxed{1} and \\boxed{2} and \\boxed{3}", True),
     ("\\left\\{2, 5\\right\\}", "\\boxed{5} \\boxed{2}", True),
     ("\\{1, 2, 3\\}", "\\boxed{1}, \\boxed{2}, \\boxed{4}", False),
     ("\\{1, 2, 3\\}", "\\boxed{3}", False)],
)
def test_a_set_gold_takes_one_box_per_member(verifier: Verifier, gold: str, response: str,
                                             correct: bool) -> None:
    assert verifier.verify(free(gold, "expression"), response).correct is correct


@pytest.mark.parametrize(
    ("gold", "answer_type", "answer", "correct"),
    [("3.54 \\times 10^{-7}", "expression", "3.54e-07", True),
     ("3.54*10^{-7}", "expression", "0.000000354", True),
     ("2.314814814815 \\times 10^{-3}", "expression", "\\frac{1}{432}", True),
     ("0.000354", "float", "3.54 \\times 10^{-4}", True),
     ("2000", "integer", "2 \\cdot 10^{3}", True), ("2000", "integer", "2e3", True),
     ("3.54 \\times 10^{-7}", "expression", "3.55e-07", False),
     ("1e400", "expression", "1e401", False),  # beyond a float: left to Math-Verify
     ("1" + "0" * 400, "expression", "2" + "0" * 400, False)],
)
def test_scientific_notation_is_read_as_the_number(verifier: Verifier, gold: str,
                                                   answer_type: str, answer: str,
                                                   correct: bool) -> None:
    verdict = verifier.verify(free(gold, answer_type), boxed(answer))
    assert verdict.correct is correct
    assert verdict.extracted == answer  # the verdict shows the answer as written


@pytest.mark.parametrize(
    ("gold", "answer_type", "answer", "correct"),
    [("1000.99", "expression", "1000,99", True), ("2.5", "float", "2,5", True),
     ("1.5", "float", "1,500", False),  # a thousands group: fifteen hundred
     ("1500", "integer", "1,500", True), ("2, 5", "expression", "2,5", True),
     ("2.5", "expression", "2,6", False)],
)
def test_a_decimal_comma_answers_a_single_number(verifier: Verifier, gold: str,
                                                 answer_type: str, answer: str,
                                                 correct: bool) -> None:
    assert verifier.verify(free(gold, answer_type), boxed(answer)).correct is correct


def test_parse_integer_and_float() -> None:
    assert parse_integer("1,234") == 1234
    assert parse_integer("abc") is None
    assert parse_integer("2.5") is None
    assert parse_float("2.5 m") == 2.5
    assert parse_float("1e400") is None  # not finite
    assert parse_float("x") is None


# --- floats ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "correct"),
    [("3.14159", True), ("3.1416", True), ("3.14160 m", True), ("3.1415926", True),
     ("3.14", False), ("3.2", False), ("-3.14159", False), ("pi", False)],
)
def test_float_with_tolerance(verifier: Verifier, answer: str, correct: bool) -> None:
    verdict = verifier.verify(free("3.14159", "float"), boxed(answer))
    assert verdict.correct is correct
    assert verdict.outcome == ("correct" if correct else "wrong")


def test_float_tolerance_is_configurable(offline: Verifier) -> None:
    task = free("100", "float")
    assert not offline.check(task, boxed("100.5"))
    loose = Verifier(float_rel_tol=0.01)
    assert loose.check(task, boxed("100.5"))
    assert not loose.check(task, boxed("102"))
    assert Verifier(float_abs_tol=0.1).check(free("0", "float"), boxed("0.05"))


def test_float_in_non_decimal_form_goes_to_math_verify(verifier: Verifier) -> None:
    assert verifier.verify(free("0.5", "float"), boxed("\\frac{1}{2}")).outcome == "correct"
    assert verifier.verify(free("0.5", "float"), boxed("\\frac{1}{3}")).outcome == "wrong"


# --- expressions ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gold", "answer", "correct"),
    [
        ("\\frac{1}{2}", "0.5", True),
        ("\\frac{1}{2}", "2/4", True),
        ("\\frac{1}{2}", "\\dfrac{1}{2}", True),
        ("\\frac{1}{2}", "\\frac{1}{2}", True),
        ("\\frac{1}{2}", "1/3", False),
        ("\\sqrt{8}", "2\\sqrt{2}", True),
        ("\\sqrt{8}", "3\\sqrt{2}", False),
        ("x^2+2x+1", "(x+1)^2", True),
        ("x^2+2x+1", "(x-1)^2", False),
        ("2", "2.0", True),
        ("$\\pi/2$", "\\frac{\\pi}{2}", True),
    ],
)
def test_expressions_through_math_verify(verifier: Verifier, gold: str, answer: str,
                                         correct: bool) -> None:
    verdict = verifier.verify(free(gold, "expression"), boxed(answer))
    assert verdict.outcome == ("correct" if correct else "wrong")
    assert verdict.correct is correct
    assert verdict.extracted == answer


def test_gold_goes_first_to_math_verify() -> None:
    v = Verifier()
    calls: list[list[tuple[str, str]]] = []

    def fake_run(jobs: Any) -> list[str]:
        calls.append(list(jobs))
        return ["correct"] * len(jobs)

    v.pool.run = fake_run  # type: ignore[method-assign]
    assert v.check(free("\\frac{1}{2}", "expression"), boxed("2/4"))
    assert calls == [[("\\frac{1}{2}", "2/4")]]


def test_worker_compare_calls_verify_gold_first(monkeypatch: pytest.MonkeyPatch) -> None:
    import math_verify

    seen: list[tuple[Any, Any]] = []
    real_parse = math_verify.parse

    def fake_verify(gold: Any, target: Any, **kwargs: Any) -> bool:
        seen.append((gold, target))
        return True

    monkeypatch.setattr(math_verify, "verify", fake_verify)
    assert _verify_worker.compare("\\frac{1}{2}", "0.5", 5) is True
    assert len(seen) == 1
    gold, target = seen[0]
    assert str(gold) == str(real_parse("$\\frac{1}{2}$"))
    assert str(target) == str(real_parse("$0.5$"))


def test_worker_compare_real() -> None:
    assert _verify_worker.compare("\\frac{1}{2}", "0.5", 5)
    assert not _verify_worker.compare("\\frac{1}{2}", "1/3", 5)
    assert not _verify_worker.compare("\\frac{1}{2}", "", 5)


def test_a_math_verify_failure_falls_back_to_its_own_comparison(verifier: Verifier) -> None:
    # sympy cannot evaluate 1/0 ("zoo"): raising, Math-Verify gave 'error'; its own handling of
    # the failure still compares the normalised forms
    assert _verify_worker.compare("1/0", "\\frac{1}{0}", 5)
    assert not _verify_worker.compare("1/0", "\\frac{2}{3}", 5)
    assert verifier.verify(free("1/0", "expression"), boxed("\\frac{1}{0}")).outcome == "correct"


def test_quick_path_needs_no_worker(offline: Verifier) -> None:
    task = free("\\frac{1}{2}", "expression")
    assert offline.verify(task, boxed("\\displaystyle \\frac{1}{2}.")).outcome == "correct"
    assert offline.verify(free("1,000", "expression"), boxed("1000")).outcome == "correct"
    assert offline.verify(free("0.5", "expression"), boxed("0.25")).outcome == "wrong"


# --- strings and booleans -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "correct"),
    [("Krebs cycle", True), ("krebs CYCLE", True), ("The Krebs cycle.", True),
     ("  krebs    cycle ", True), ("\\text{Krebs cycle}", True), ("a Krebs-cycle!", True),
     ("\\textbf{the krebs cycle}", True), ("Calvin cycle", False), ("Krebs", False),
     ("cycle Krebs", False)],
)
def test_strings(offline: Verifier, answer: str, correct: bool) -> None:
    assert offline.check(free("the Krebs cycle", "string"), boxed(answer)) is correct


def test_normalize_string() -> None:
    assert normalize_string("  The  \\text{Quick}, brown FOX!! ") == "quick brown fox"
    assert normalize_string("An apple a day") == "apple a day"  # only a leading article goes
    assert normalize_string("Vitamin A") != normalize_string("Vitamin")
    assert normalize_string("C++") != normalize_string("C")


@pytest.mark.parametrize(
    ("gold", "answer", "correct"),
    [("yes", "Yes", True), ("yes", "true", True), ("yes", "\\text{True}", True),
     ("True", "yes.", True), ("no", "False", True), ("false", "No", True), ("yes", "no", False),
     ("no", "yes", False), ("yes", "maybe", False), ("no", "maybe", False), ("yes", "1", False)],
)
def test_booleans(offline: Verifier, gold: str, answer: str, correct: bool) -> None:
    assert offline.check(free(gold, "boolean"), boxed(answer)) is correct


def test_parse_boolean() -> None:
    assert parse_boolean("TRUE") is True
    assert parse_boolean("n") is False
    assert parse_boolean("perhaps") is None


# --- outcomes that are not a comparison -----------------------------------------------------------


@pytest.mark.parametrize(
    "task",
    [mcq(), free("3", "integer"), free("3.5", "float"), free("x", "string"),
     free("yes", "boolean"), free("x+1", "expression")],
    ids=lambda t: t.answer_type,
)
@pytest.mark.parametrize("response", ["The answer is 3 but I will not box it.", "", "\\boxed{",
                                      "\\boxed{   }"])
def test_no_answer(offline: Verifier, task: Task, response: str) -> None:
    verdict = offline.verify(task, response)
    assert (verdict.correct, verdict.outcome) == (False, "no_answer")


def test_unboxed_answers_are_accepted_when_allowed() -> None:
    v = Verifier(allow_unboxed=True)
    assert v.verify(free("7", "integer"), "Thus, the final answer is 7.").outcome == "correct"
    assert v.verify(free("7", "integer"), "Answer: 8").outcome == "wrong"
    assert v.verify(free("7", "integer"), "no idea").outcome == "no_answer"


def test_too_long(offline: Verifier) -> None:
    v = Verifier(max_answer_chars=10)
    v.pool.run = offline.pool.run  # type: ignore[method-assign]
    assert v.verify(free("12345", "integer"), boxed("12345")).outcome == "correct"
    verdict = v.verify(free("12345", "integer"), boxed("1" * 11))
    assert (verdict.correct, verdict.outcome) == (False, "too_long")
    long_expr = "x+" * 300 + "1"
    verdict = v.verify(free("x+1", "expression"), boxed(long_expr))
    assert verdict.outcome == "too_long"
    assert verdict.extracted is not None and len(verdict.extracted) <= 200
    assert offline.verify(free("1", "string"), boxed("a" * 1001)).outcome == "too_long"


def test_counts_tally_outcomes(offline: Verifier) -> None:
    assert offline.counts == {}
    offline.verify(free("3", "integer"), boxed("3"))
    offline.verify(free("3", "integer"), boxed("4"))
    offline.verify(free("3", "integer"), boxed("3.0"))
    offline.verify(free("3", "integer"), "no box")
    offline.verify(free("3", "integer"), boxed("3" * 2000))
    offline.check_many([(mcq(), boxed("B")), (mcq(), boxed("A"))])
    assert offline.counts == {"correct": 3, "wrong": 2, "no_answer": 1, "too_long": 1}


def test_check_many_and_verify_many(verifier: Verifier) -> None:
    pairs = [
        (mcq(), boxed("B")),
        (free("1234", "integer"), boxed("1,234")),
        (free("\\frac{1}{2}", "expression"), boxed("3/6")),
        (free("\\frac{1}{2}", "expression"), boxed("2/3")),
        (free("Krebs cycle", "string"), "no box"),
        (free("\\frac{1}{2}", "expression"), boxed("3/6")),  # same check twice in one batch
        (free("yes", "boolean"), boxed("no")),
    ]
    assert verifier.check_many(pairs) == [True, True, True, False, False, True, False]
    outcomes = [v.outcome for v in verifier.verify_many(pairs)]
    assert outcomes == ["correct", "correct", "correct", "wrong", "no_answer", "correct", "wrong"]
    assert verifier.check_many([]) == []


# --- the Math-Verify cache ------------------------------------------------------------------------


def test_cache_avoids_a_second_pool_call(verifier: Verifier,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[tuple[str, str]]] = []
    real_run = verifier.pool.run

    def counting_run(jobs: Any) -> Any:
        calls.append(list(jobs))
        return real_run(jobs)

    monkeypatch.setattr(verifier.pool, "run", counting_run)
    task = free("\\frac{3}{7}", "expression")
    first = verifier.verify(task, boxed("6/14"))
    assert first.outcome == "correct"
    assert len(calls) == 1
    second = verifier.verify(task, "Another response with the same answer: \\boxed{6/14}")
    assert second.outcome == "correct"
    assert len(calls) == 1
    # a batch with a cached and a new answer sends only the new one
    assert verifier.check_many([(task, boxed("6/14")), (task, boxed("9/21"))]) == [True, True]
    assert calls == [[("\\frac{3}{7}", "6/14")], [("\\frac{3}{7}", "9/21")]]


def test_cache_can_be_disabled_and_errors_are_not_cached() -> None:
    outcomes = iter(["error", "correct", "correct", "correct"])
    calls: list[Any] = []

    def fake_run(jobs: Any) -> list[str]:
        calls.append(jobs)
        return [next(outcomes) for _ in jobs]

    v = Verifier()
    v.pool.run = fake_run  # type: ignore[method-assign]
    task = free("x^2", "expression")
    assert v.verify(task, boxed("x*x")).outcome == "error"
    assert v.verify(task, boxed("x*x")).outcome == "correct"  # the error was not remembered
    assert v.verify(task, boxed("x*x")).outcome == "correct"
    assert len(calls) == 2
    uncached = Verifier(cache_size=0)
    uncached.pool.run = fake_run  # type: ignore[method-assign]
    uncached.verify(task, boxed("x*x"))
    uncached.verify(task, boxed("x*x"))
    assert len(calls) == 4


# --- the worker pool: timeouts, crashes, lifecycle ------------------------------------------------


def _warm_up(v: Verifier, rounds: int = 8) -> None:
    """Run simple checks, pausing so that both workers start, until three batches in a row
    finish without a timeout (a worker's first comparisons pay Math-Verify's lazy set-up)."""
    clean = 0
    for r in range(rounds):
        pairs = [(free("\\frac{1}{2}", "expression"), boxed(f"{k}/{2 * k}"))
                 for k in range(10 * r + 2, 10 * r + 8)]
        outcomes = [x.outcome for x in v.verify_many(pairs)]
        assert set(outcomes) <= {"correct", "timeout"}
        clean = clean + 1 if set(outcomes) == {"correct"} else 0
        if clean >= 3:
            return
        time.sleep(0.5)
    pytest.fail("Math-Verify workers never answered simple checks in time")


def test_pathological_expression_times_out_without_blocking_others() -> None:
    started = time.monotonic()
    with Verifier(timeout_s=1, workers=2) as v:
        _warm_up(v)
        restarts = v.pool.restarts
        t0 = time.monotonic()
        verdicts = v.verify_many([
            (free("2", "expression"), boxed(PATHOLOGICAL)),
            (free("\\frac{1}{2}", "expression"), boxed("\\frac{5}{10}")),
            (free("\\sqrt{8}", "expression"), boxed("2\\sqrt{2}")),
            (free("\\frac{1}{2}", "expression"), boxed("\\frac{1}{3}")),
            (free("7", "integer"), boxed("7")),
            (mcq(), boxed("B")),
        ])
        elapsed = time.monotonic() - t0
        assert [x.outcome for x in verdicts] == [
            "timeout", "correct", "correct", "wrong", "correct", "correct"]
        assert not verdicts[0].correct
        assert elapsed < 1 + 3.0
        assert v.pool.restarts == restarts + 1  # the stuck worker was killed and replaced
        assert v.counts["timeout"] == 1
        # the pool keeps working afterwards
        assert v.verify(free("x+1", "expression"), boxed("1+x")).outcome == "correct"
    assert time.monotonic() - started < 1 + 20.0  # including worker start and warm-up


def _ready_workers(v: Verifier) -> None:
    """Check until every worker has announced itself ready (uses private pool state)."""
    deadline = time.monotonic() + 60
    r = 0
    while time.monotonic() < deadline:
        r += 1
        v.verify_many([(free("\\frac{1}{2}", "expression"), boxed(f"{k}/{2 * k}"))
                       for k in range(100 * r + 2, 100 * r + 8)])
        if len(v.pool._workers) == v.pool.size and all(w.ready for w in v.pool._workers):
            return
        time.sleep(0.2)
    pytest.fail("Math-Verify workers never became ready")


def _alive(process: Any) -> bool:
    return process.poll() is None if hasattr(process, "poll") else process.is_alive()


def _kill(process: Any) -> None:
    process.kill()
    if hasattr(process, "wait"):
        process.wait(5)
    else:
        process.join(5)


def _child_pids() -> set[int]:
    """Live (non-zombie) child processes of this process, read from /proc."""
    if not Path("/proc/self/stat").exists():
        pytest.skip("needs /proc")
    me, found = os.getpid(), set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == me and fields[0] != "Z":
            found.add(int(entry.name))
    return found


def test_idle_worker_killed_between_calls_is_replaced() -> None:
    with Verifier(timeout_s=10, workers=2) as v:
        _ready_workers(v)
        _kill(v.pool._workers[0].process)
        restarts = v.pool.restarts
        task = free("\\frac{1}{2}", "expression")
        verdicts = v.verify_many([(task, boxed("3/6")), (task, boxed("4/8")),
                                  (task, boxed("1/5"))])
        assert [x.outcome for x in verdicts] == ["correct", "correct", "wrong"]
        assert v.pool.restarts > restarts
        assert all(_alive(w.process) for w in v.pool._workers)
        again = v.verify_many([(task, boxed("5/10")), (task, boxed("6/12")),
                               (task, boxed("1/7"))])
        assert [x.outcome for x in again] == ["correct", "correct", "wrong"]


def test_worker_killed_during_a_check_is_replaced() -> None:
    """A worker dying under a check is replaced; the check gets one retry, then is an error."""
    with Verifier(timeout_s=30, workers=2) as v:
        _ready_workers(v)
        restarts = v.pool.restarts
        killed: list[int] = []

        def kill_busy_worker() -> None:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and len(killed) < 2:
                for worker in list(v.pool._workers):
                    if (worker.job is not None and _alive(worker.process)
                            and worker.process.pid not in killed):
                        time.sleep(0.3)
                        killed.append(worker.process.pid)
                        worker.process.kill()
                        break
                time.sleep(0.02)

        killer = threading.Thread(target=kill_busy_worker, daemon=True)
        killer.start()
        t0 = time.monotonic()
        verdict = v.verify(free("2", "expression"), boxed(PATHOLOGICAL))
        killer.join(5)
        assert len(killed) == 2  # the first death was retried on the other worker
        assert verdict.outcome == "error"
        assert time.monotonic() - t0 < 15  # ended by the crashes, not by the time limits
        assert v.pool.restarts == restarts + 2
        assert all(w.process.pid not in killed for w in v.pool._workers)
        task = free("\\frac{1}{2}", "expression")
        verdicts = v.verify_many([(task, boxed("7/14")), (task, boxed("8/16")),
                                  (task, boxed("1/9"))])
        assert [x.outcome for x in verdicts] == ["correct", "correct", "wrong"]


def test_verifier_context_manager_closes_workers() -> None:
    before = _child_pids()
    with Verifier(timeout_s=10) as v:
        assert v.check(free("\\frac{1}{4}", "expression"), boxed("0.25"))
        started = _child_pids() - before
        assert len(started) == 2
    assert not started & _child_pids()
    # a closed verifier starts workers again when needed
    assert v.check(free("\\frac{1}{4}", "expression"), boxed("1/4"))
    assert len(_child_pids() - before) == 2
    v.close()
    assert not _child_pids() - before


def test_pool_validates_its_size() -> None:
    with pytest.raises(ValueError):
        MathVerifyPool(workers=0)
    assert MathVerifyPool(workers=1).run([]) == []


def test_config_overrides_and_validation() -> None:
    base = VerifierConfig(timeout_s=3.0)
    v = Verifier(base, workers=1)
    assert (v.config.timeout_s, v.config.workers) == (3.0, 1)
    assert v.pool.size == 1 and v.pool.timeout_s == 3.0
    with pytest.raises(ValueError):
        Verifier(no_such_option=1)
    with pytest.raises(ValueError):
        VerifierConfig(timeout_s=0)


# --- model output is never evaluated --------------------------------------------------------------


@pytest.mark.parametrize("answer_type", ["expression", "float", "integer", "string"])
def test_model_output_is_never_evaluated(verifier: Verifier, tmp_path: Path,
                                         answer_type: str) -> None:
    target = tmp_path / "pwned_spice"
    payloads = [
        f"__import__('os').system('touch {target}')",
        f"open('{target}', 'w').write('x')",
        f"eval(\"__import__('os').system('touch {target}')\")",
        f"\\text{{__import__('os').system('touch {target}')}}",
    ]
    task = free("2" if answer_type != "string" else "two", answer_type)
    for payload in payloads:
        verdict = verifier.verify(task, boxed(payload))
        assert verdict.outcome in ("wrong", "error")
        assert not verdict.correct
    time.sleep(0.2)
    assert not target.exists()


# --- fuzzing --------------------------------------------------------------------------------------

PIECES = ["\\boxed", "\\fbox", "{", "}", "\\", "$", " ", "\n", "1", "-", ".", ",", "x", "^",
          "\\frac", "\\text{", "(B)", "B)", "Answer:", "The final answer is", "yes", "London"]
responses = st.one_of(
    st.text(),
    st.text().map(boxed),
    st.lists(st.sampled_from(PIECES), max_size=25).map("".join),
)
FUZZ_TASKS = {  # an integer answer not written as one goes to Math-Verify: fuzzed below
    "mcq_letter": mcq(),
    "string": free("Krebs cycle", "string"),
    "boolean": free("yes", "boolean"),
}


@pytest.mark.parametrize("answer_type", sorted(FUZZ_TASKS))
@settings(max_examples=250, deadline=1000, suppress_health_check=[HealthCheck.too_slow])
@given(response=responses, fallback=st.booleans())
def test_fuzz_responses_without_math_verify(answer_type: str, response: str,
                                            fallback: bool) -> None:
    v = Verifier(allow_unboxed=fallback)
    verdict = v.verify(FUZZ_TASKS[answer_type], response)
    assert verdict.outcome in OUTCOMES
    assert verdict.correct == (verdict.outcome == "correct")
    assert verdict.outcome not in ("timeout", "error")
    extracted = extract_boxed(response, fallback=fallback)
    assert extracted is None or isinstance(extracted, str)


def _fuzz_with_math_verify(v: Verifier, task: Task, response: str) -> None:
    t0 = time.monotonic()
    verdict = v.verify(task, response)
    assert time.monotonic() - t0 < v.config.timeout_s + 10  # bounded by the hard timeout
    assert verdict.outcome in OUTCOMES
    assert verdict.correct == (verdict.outcome == "correct")


# few examples: a response may go to a Math-Verify worker process
MATH_FUZZ = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@MATH_FUZZ
@given(response=st.one_of(st.text(max_size=30).map(boxed), responses))
def test_fuzz_float_responses(verifier: Verifier, response: str) -> None:
    _fuzz_with_math_verify(verifier, free("0.5", "float"), response)


@MATH_FUZZ
@given(response=st.one_of(st.text(max_size=30).map(boxed), responses))
def test_fuzz_integer_responses(verifier: Verifier, response: str) -> None:
    _fuzz_with_math_verify(verifier, free("12", "integer"), response)


@MATH_FUZZ
@given(response=st.one_of(st.text(max_size=30).map(boxed), responses))
def test_fuzz_expression_responses(verifier: Verifier, response: str) -> None:
    _fuzz_with_math_verify(verifier, free("\\frac{x}{2}", "expression"), response)


def test_an_answer_listing_several_options_names_none() -> None:
    from spice_env.verify import mcq_letter

    assert mcq_letter("A) Paris B) London") is None
    assert mcq_letter("B) London") == "B"


def test_timeouts_are_not_cached() -> None:
    outcomes = iter(["timeout", "wrong"])
    v = Verifier()
    v.pool.run = lambda jobs: [next(outcomes) for _ in jobs]  # type: ignore[method-assign]
    task = free("x^2", "expression")
    assert v.verify(task, boxed("y")).outcome == "timeout"
    assert v.verify(task, boxed("y")).outcome == "wrong"  # asked again, not remembered


def test_many_unclosed_boxes_fall_back_to_the_last_complete_one() -> None:
    text = "first \\boxed{1} then \\boxed{\\frac{2}{3}}" + " \\boxed{" * 3000
    assert extract_boxed(text) == "\\frac{2}{3}"
    assert extract_boxed("\\boxed{" * 3000) is None


@pytest.mark.parametrize(("gold", "answer", "correct"), [
    ("2", "2x", False), ("5", "5 million", False), ("3", "3 or more", False), ("12", "1 2", False),
    ("5", "x = 5", True), ("8", "{{8}}", True), ("1234", "1234\\text{ cm}^2", True),
    ("60", "60 km per hour", True), ("2", "2 m", True),
])
def test_integer_answers_must_be_the_number(verifier: Verifier, gold: str, answer: str,
                                            correct: bool) -> None:
    assert verifier.check(free(gold, "integer"), boxed(answer)) is correct


def test_mcq_letter_follows_the_options_letters() -> None:
    five = {letter: f"option {letter}" for letter in "ABCDE"}
    ten = {letter: f"choice {letter}" for letter in "ABCDEFGHIJ"}
    assert mcq_letter("E", five) == "E" and mcq_letter("(e)", five) == "E"
    assert mcq_letter("E") is None  # four options by default
    assert mcq_letter("J) choice J", ten) == "J" and mcq_letter("J", five) is None
    assert mcq_letter("choice H", ten) == "H"
    assert mcq_letter("C", {"A": "x", "B": "y", "C": "z"}) == "C"
    assert mcq_letter("D", {"A": "x", "B": "y", "C": "z"}) is None
