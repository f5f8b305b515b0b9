"""The verifier against other graders' own test cases: at least as often right as plain
Math-Verify on the same inputs, every case cited, and the comparison's input rules."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from benchmarks.peer_graders import (
    CASES_FILE,
    PeerCase,
    agreement,
    answer_type,
    bare_answer,
    comparison_input,
    load_cases,
)

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "verifier.json"
SOURCE = re.compile(r"^[\w.-]+/[\w.-]+ \S+::\S")


def test_every_case_is_cited_and_labelled() -> None:
    cases = load_cases()
    assert len(cases) >= 400
    repos = {case.source.split(" ")[0] for case in cases}
    assert len(repos) >= 6 and "huggingface/Math-Verify" in repos
    for case in cases:
        assert SOURCE.match(case.source), case.source
        assert re.fullmatch(r"[0-9a-f]{40}", case.commit), case
        assert isinstance(case.equivalent, bool)
    assert sum(not case.equivalent for case in cases) >= 50  # negative cases too
    lines = CASES_FILE.read_text("utf-8").splitlines()
    assert all(set(json.loads(line)) == {"gold", "prediction", "equivalent", "source",
                                         "commit", "notes"} for line in lines)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_agreement_is_at_least_math_verifys_and_matches_the_record() -> None:
    found = agreement()
    assert found["peer_cases"]["compared"] >= 350
    assert found["peer_agreement"] >= found["math_verify_agreement"]
    recorded = json.loads(RESULTS.read_text("utf-8"))
    assert recorded["peer_agreement"] == found["peer_agreement"]
    assert recorded["math_verify_agreement"] == found["math_verify_agreement"]
    assert recorded["peer_cases"] == found["peer_cases"]
    assert recorded["peer_timeouts"] == found["peer_timeouts"]


@pytest.mark.parametrize(
    ("text", "answer"),
    [("$\\frac{1}{2}$", "\\frac{1}{2}"), ("\\(x+1\\)", "x+1"), ("$$ 9 $$", "9"),
     ("\\boxed{2}, \\boxed{5}", "2, 5"), ("$1,000.99", "$1,000.99"), ("10 weeks", "10 weeks"),
     ("We find that $x \\lt 3$.", None), ("The answer is plainly seven here", None),
     ("", None), ("\\boxed{", None)],
)
def test_bare_answers(text: str, answer: str | None) -> None:
    assert bare_answer(text) == answer


def test_comparison_inputs() -> None:
    def case(gold: str, prediction: str) -> PeerCase:
        return PeerCase(gold=gold, prediction=prediction, equivalent=True, source="a/b c::d",
                        commit="0" * 40)

    assert comparison_input(case("$5$", "5")) == ("5", "\\boxed{5}")
    assert comparison_input(case("5", "so \\boxed{5} done")) == ("5", "so \\boxed{5} done")
    assert comparison_input(case("5", "")) == ("5", "\\boxed{}")
    assert comparison_input(case("5", "The answer is five, as we saw")) is None
    assert comparison_input(case("Setting $x=0$ gives $f(0)=1$", "1")) is None
    assert (answer_type("-12"), answer_type("1.5"), answer_type("x")) == (
        "integer", "expression", "expression")
