"""``spice bench perf``: the combined report, and the TRL comparison on a tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agents.tiny import save_tiny_model
from benchmarks.perf.report import PARTS, headline, markdown, run
from benchmarks.perf.trl_compare import questions
from spice_cli.main import main

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"


@pytest.mark.parametrize("part", ["verifier", "rollout", "train"])
def test_headlines_of_the_committed_results(part: str) -> None:
    data = json.loads((RESULTS / f"{part}.json").read_text())
    found = headline(part, data)
    assert found and all(value is not None for value in found.values()), found


def test_workload_questions_are_seeded_and_answerable() -> None:
    first = questions(5, seed=1)
    assert first == questions(5, seed=1) and first != questions(5, seed=2)
    for question, answer in first:
        assert question.endswith("left?") and int(answer) >= -20


@pytest.mark.slow
def test_spice_bench_perf_runs_the_trl_comparison(tmp_path: Path) -> None:
    tiny = save_tiny_model(tmp_path / "tiny", seed=0)
    out = tmp_path / "results"
    trl_args = (f"--model {tiny} --prompts 2 --generations 2 --max-tokens 6 --micro-batch 2 "
                "--steps 2")
    code = main(["bench", "perf", "--only", "trl", "--output-dir", str(out),
                 "--trl-args", trl_args])
    assert code == 0
    trl = json.loads((out / "trl.json").read_text())
    assert trl["speedup_vs_trl"] > 0 and trl["workload"]["generations_per_prompt"] == 2
    for side in ("spice", "trl"):
        result = trl["results"][side]
        assert len(result["steps"]) == 2 and result["mean_step_s"] > 0
        assert result["mean_completion_tokens"] <= 2 * 2 * 6
    report = json.loads((out / "perf.json").read_text())
    assert report["parts"]["trl"]["speedup_vs_trl"] == trl["speedup_vs_trl"]
    assert "| trl |" in (out / "perf.md").read_text()


def test_a_failing_part_is_reported_and_the_rest_kept(tmp_path: Path) -> None:
    (tmp_path / "trl.json").write_text('{"speedup_vs_trl": 9.9}')  # an older result
    report = run(["trl"], tmp_path, {"trl": ["--micro-batch", "3"]})  # 4 × 4 not divisible by 3
    failed = report["parts"]["trl"]
    assert failed["exit_code"] == 2 and "failed: no result file written" in markdown(report)
    assert not (tmp_path / "trl.json").exists()  # never reported as this run's
    report = run(["trl"], tmp_path, {"trl": ["--steps", "1"]})
    assert "error" in report["parts"]["trl"]
    (tmp_path / "perf.json").write_text(json.dumps(
        {"parts": {"verifier": {"date": "d0", "file": "verifier.json", "wall_s": 1.0,
                                "verifications_per_s": 5.0}}}))
    report = run(["trl"], tmp_path, {"trl": ["--steps", "1"]})
    assert list(report["parts"]) == ["verifier", "trl"]  # the earlier entry is kept
    assert report["parts"]["verifier"]["date"] == "d0"
    with pytest.raises(ValueError, match="unknown benchmark"):
        run(["speed"], tmp_path)
    assert PARTS == ("verifier", "rollout", "train", "trl")
