"""The evaluation suites: every spec loads and scores, the protocol's arithmetic, the CLI."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from agents.base import SamplingConfig
from agents.tiny import save_tiny_model
from benchmarks.evaluation import (
    BENCHMARKS,
    OFFLINE,
    BenchmarkSpec,
    BenchmarkUnavailable,
    EvalItem,
    EvalSettings,
    compare,
    compare_markdown,
    evaluate,
    load_benchmark,
    markdown,
    suite_benchmarks,
)
from spice_cli.main import main
from spice_env.verify import Verifier


@pytest.fixture(scope="module")
def verifier() -> Any:
    with Verifier(workers=1) as checker:
        yield checker


@pytest.fixture()
def no_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    """Point the hub at a closed local port: hub benchmarks fail fast and say why."""
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)


def wrong_answer(item: EvalItem) -> str:
    if item.options:
        return next(letter for letter in item.options if letter != item.answer)
    return "-123456789" if item.answer != "-123456789" else "0"


def assert_scores(items: Sequence[EvalItem], verifier: Verifier) -> None:
    for item in items:
        task = item.task()
        right = verifier.verify(task, f"So the answer is \\boxed{{{item.answer}}}.")
        wrong = verifier.verify(task, f"\\boxed{{{wrong_answer(item)}}}")
        assert right.correct, (item.id, item.answer, right)
        assert not wrong.correct and wrong.outcome == "wrong", (item.id, wrong)


@pytest.mark.parametrize("name", OFFLINE)
def test_offline_benchmarks_load_and_score(name: str, verifier: Verifier) -> None:
    loaded = load_benchmark(BENCHMARKS[name], limit=6, seed=1)
    expected_total = {"gsm8k": 1319, "math500": 500, "mmlu": 14042, "arc_challenge": 1172}
    assert loaded.total == expected_total[name] and not loaded.skipped
    assert len(loaded.items) == 6 and len({i.id for i in loaded.items}) == 6
    assert load_benchmark(BENCHMARKS[name], limit=6, seed=1).items == loaded.items  # seeded
    assert_scores(loaded.items, verifier)


def test_offline_golds_are_parsed_as_documented() -> None:
    gsm8k = load_benchmark(BENCHMARKS["gsm8k"]).items
    assert gsm8k[0].answer == "18" and gsm8k[0].answer_type == "integer"
    math500 = load_benchmark(BENCHMARKS["math500"]).items
    assert math500[0].answer == "\\left( 3, \\frac{\\pi}{2} \\right)"  # from the boxed solution
    assert math500[0].answer_type == "expression"
    arc = {i.id: i for i in load_benchmark(BENCHMARKS["arc_challenge"]).items}
    three = arc["NYSEDREGENTS_2010_4_4"]
    assert three.options == {"A": "slower", "B": "faster", "C": "at the same speed"}
    assert three.answer == "A" and "Question:" not in three.question
    assert sum(len(i.options or {}) == 5 for i in arc.values()) == 3
    mmlu = load_benchmark(BENCHMARKS["mmlu"], limit=200).items
    assert len({i.question for i in mmlu}) == 200 and all(len(i.options or {}) == 4 for i in mmlu)


HUB_ROWS: dict[str, list[dict[str, Any]]] = {
    "aime24": [{"id": 60, "problem": "Find the number of ...", "answer": "204"}],
    "aime25": [{"problem": "Find the sum of all integer bases ...", "answer": "70"}],
    "amc23": [{"question": "What is 1/2 + 1/3?", "answer": "5/6"}],
    "minerva": [{"question": "Compute the period.", "answer": "2\\pi"}],
    "olympiadbench": [{"question": "Find x.", "final_answer": ["$\\frac{1}{2}$"]}],
    "mmlu_pro": [{"question_id": 7, "question": "Which is a prime?",
                  "options": ["4", "6", "8", "9", "10", "11", "12", "14", "15", "16"],
                  "answer": "F", "answer_index": 5}],
    "supergpqa": [{"uuid": "u1", "question": "Pick the noble gas.",
                   "options": ["N", "O", "Ar", "C"], "answer_letter": "C"}],
    "gpqa_diamond": [{"Record ID": "r1", "Question": "Which particle is charged?",
                      "Correct Answer": "electron", "Incorrect Answer 1": "neutron",
                      "Incorrect Answer 2": "photon", "Incorrect Answer 3": "neutrino"}],
    "bbeh": [{"input": "Is the sentence plausible?", "target": "no"}],
}


@pytest.mark.parametrize("name", [n for n in BENCHMARKS if n not in OFFLINE])
def test_hub_specs_turn_rows_into_items_and_say_when_unavailable(
        name: str, verifier: Verifier, no_hub: None) -> None:
    spec = BENCHMARKS[name]
    loaded = load_benchmark(spec, rows=HUB_ROWS[name])
    assert len(loaded.items) == 1 and not loaded.skipped
    assert_scores(loaded.items, verifier)
    with pytest.raises(BenchmarkUnavailable, match=r"Hugging Face Hub .*not reachable"):
        load_benchmark(spec)


def test_gpqa_options_are_shuffled_the_same_way_every_time() -> None:
    spec = BENCHMARKS["gpqa_diamond"]
    first = load_benchmark(spec, rows=HUB_ROWS["gpqa_diamond"]).items[0]
    again = load_benchmark(spec, rows=HUB_ROWS["gpqa_diamond"]).items[0]
    assert first == again and first.options and first.options[first.answer] == "electron"


def test_malformed_rows_are_skipped_and_counted() -> None:
    rows = [{"question": "ok?", "answer": "x #### 5"}, {"question": "no marker", "answer": "5"},
            {"answer": "#### 3"}, {"question": "", "answer": "#### 1"}]
    loaded = load_benchmark(BENCHMARKS["gsm8k"], rows=rows)
    assert [i.answer for i in loaded.items] == ["5"]
    assert len(loaded.skipped) == 3 and "####" in loaded.skipped[0]
    assert "no field 'question'" in loaded.skipped[1]


def test_a_benchmark_without_usable_rows_is_unavailable_not_zero() -> None:
    renamed = [{"problem": "What is 2 + 2?", "solution": "4"}]  # a dataset that renamed fields
    with pytest.raises(BenchmarkUnavailable, match=r"no usable item .*no field 'question'"):
        load_benchmark(BENCHMARKS["gsm8k"], rows=renamed)
    gaps = [{"id": "x", "query": "Question: Q?\n A. a\n B. b\n D. d\nAnswer:", "gold": 0}]
    with pytest.raises(BenchmarkUnavailable, match="not lettered"):
        load_benchmark(BENCHMARKS["arc_challenge"], rows=gaps)


def test_suites() -> None:
    assert {s.name for s in suite_benchmarks("math")} == {
        "gsm8k", "math500", "aime24", "aime25", "amc23", "minerva", "olympiadbench"}
    assert {s.category for s in suite_benchmarks("general")} == {"general"}
    assert len(suite_benchmarks("all")) == len(BENCHMARKS) == 13
    assert [s.name for s in suite_benchmarks("gsm8k, mmlu")] == ["gsm8k", "mmlu"]
    with pytest.raises(ValueError, match="unknown suite"):
        suite_benchmarks("gsm9k")


def oracle(right_every: int) -> Any:
    """A generate function that answers every ``right_every``-th sample right."""
    calls: list[SamplingConfig] = []
    counter = iter(range(10**6))

    def generate(observations: Sequence[Mapping[str, Any]], sampling: SamplingConfig
                 ) -> list[list[str]]:
        calls.append(sampling)
        out = []
        for obs in observations:
            gold = GOLDS[obs["question"]]
            out.append([f"\\boxed{{{gold if next(counter) % right_every == 0 else 'nope'}}}"
                        for _ in range(sampling.n)])
        return out

    generate.calls = calls  # type: ignore[attr-defined]
    return generate


GOLDS: dict[str, str] = {}


def test_evaluate_arithmetic_and_sampling(verifier: Verifier) -> None:
    math_spec = BenchmarkSpec(name="toy_math", title="Toy", category="math", source="hub",
                              location="toy", question_field="q", answer_field="a")
    sampled = math_spec.model_copy(update={"name": "toy_aime", "samples": 4,
                                           "temperature": 0.6})
    general = BenchmarkSpec(name="toy_mcq", title="ToyMCQ", category="general", source="hub",
                            location="toy", question_field="q", answer_field="a", gold="letter",
                            choices="list", choices_field="c")
    rows = {
        "toy_math": [{"q": f"m{i}", "a": str(i)} for i in range(4)],
        "toy_aime": [{"q": f"s{i}", "a": str(i)} for i in range(2)],
        "toy_mcq": [{"q": f"g{i}", "a": "B", "c": ["x", "y"]} for i in range(3)],
    }
    for spec in (math_spec, sampled):
        for row in rows[spec.name]:
            GOLDS[row["q"]] = row["a"]
    for row in rows["toy_mcq"]:
        GOLDS[f"{row['q']}\nA) x\nB) y"] = "B"
    generate = oracle(right_every=2)
    report = evaluate(generate, [math_spec, sampled, general],
                      EvalSettings(batch_size=3, max_new_tokens=7), verifier=verifier,
                      progress=False, rows=rows)
    benches = report["benchmarks"]
    # samples are numbered across the run: right on even counts
    assert benches["toy_math"]["accuracy"] == pytest.approx(0.5)
    assert benches["toy_aime"]["accuracy"] == pytest.approx(0.5)  # 2 of 4 samples per item
    assert [r["score"] for r in benches["toy_aime"]["records"]] == [0.5, 0.5]
    assert benches["toy_mcq"]["items"] == 3
    mcq_acc = benches["toy_mcq"]["accuracy"]
    assert report["summary"]["math"] == pytest.approx(0.5)
    assert report["summary"]["general"] == pytest.approx(mcq_acc)
    assert report["summary"]["overall"] == pytest.approx((0.5 + 0.5 + mcq_acc) / 3)
    temps = {(c.temperature, c.n, c.max_new_tokens) for c in generate.calls}
    assert temps == {(0.0, 1, 7), (0.6, 4, 7)}  # greedy, except the sampled benchmark
    assert "| Toy | math | 4 | 50.0 |" in markdown(report)


def report_of(accuracies: Mapping[str, float | None], ids: Sequence[str] = ("1", "2")
              ) -> dict[str, Any]:
    benchmarks = {}
    for name, acc in accuracies.items():
        spec = BENCHMARKS[name]
        benchmarks[name] = ({"title": spec.title, "category": spec.category, "accuracy": acc,
                             "items": len(ids), "records": [{"id": i, "question": f"q{i}"}
                                                            for i in ids]}
                            if acc is not None else
                            {"title": spec.title, "category": spec.category, "accuracy": None,
                             "available": False, "message": "hub"})
    return {"model": "m", "benchmarks": benchmarks}


def test_compare_arithmetic() -> None:
    before = report_of({"gsm8k": 0.30, "math500": 0.10, "mmlu": 0.40, "aime24": None})
    after = report_of({"gsm8k": 0.35, "math500": 0.05, "mmlu": 0.46, "aime24": 0.2})
    result = compare(before, after)
    rows = {r["benchmark"]: r for r in result["rows"]}
    assert rows["gsm8k"]["delta"] == pytest.approx(0.05)
    assert rows["math500"]["delta"] == pytest.approx(-0.05)
    assert rows["aime24"]["delta"] is None and "aime24" not in result["common"]
    averages = result["averages"]
    assert averages["math"]["before"] == pytest.approx(0.20)
    assert averages["math"]["after"] == pytest.approx(0.20)  # AIME'24 left out: not in both
    assert averages["general"]["delta"] == pytest.approx(0.06)
    assert averages["overall"]["delta"] == pytest.approx((0.05 - 0.05 + 0.06) / 3)
    table = compare_markdown(result)
    assert "| GSM8K | 30.0 | 35.0 | +5.0 |" in table and "| AIME'24 | – | 20.0 | – |" in table
    other = report_of({"gsm8k": 0.5}, ids=("1", "3"))
    assert "(different items)" in compare_markdown(compare(before, other))
    before["settings"], after["settings"] = {"max_new_tokens": 256}, {"max_new_tokens": 512}
    assert "differ in their settings: max_new_tokens" in compare_markdown(compare(before, after))


@pytest.mark.slow
def test_spice_eval_end_to_end_with_a_tiny_model(tmp_path: Path, no_hub: None,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    folder = save_tiny_model(tmp_path / "tiny", seed=0)
    out = tmp_path / "before.json"
    code = main(["eval", "--model", str(folder), "--suite", "all", "--limit", "2",
                 "--max-new-tokens", "4", "--output", str(out), "--no-progress"])
    assert code == 0
    report = json.loads(out.read_text())
    assert report["model"] == str(folder) and report["command"].startswith("spice eval")
    assert {"machine", "versions", "settings", "summary"} <= set(report)
    for name in OFFLINE:
        bench = report["benchmarks"][name]
        assert bench["available"] and bench["items"] == 2 and len(bench["records"]) == 2
        record = bench["records"][0]
        assert record["responses"][0]["tokens"] <= 4 and "outcome" in record["responses"][0]
    unavailable = [b for b in report["benchmarks"].values() if not b.get("available", True)]
    assert len(unavailable) == 9 and all("not reachable" in b["message"] for b in unavailable)
    assert report["summary"]["overall"] is not None
    table = out.with_suffix(".md").read_text()
    assert "| GSM8K | math | 2 |" in table and "Not run:" in table

    code = main(["eval", "--compare", str(out), str(out), "--output", str(tmp_path / "c.md")])
    assert code == 0 and "+0.0" in (tmp_path / "c.md").read_text()
    assert main(["eval", "--suite", "math"]) == 2  # no model
    assert main(["eval", "--model", str(folder), "--suite", "nope"]) == 2
    assert "unknown suite" in capsys.readouterr().err
