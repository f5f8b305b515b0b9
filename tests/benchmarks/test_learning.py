"""The learning report: in-loop held-out numbers next to the checkpoint path and a control."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.learning import identical, learning_report, main, paired

pytestmark = pytest.mark.slow


def test_paired_change_and_identical_responses() -> None:
    before = [{"id": str(i), "correct": i < 2, "text": f"t{i}"} for i in range(4)]
    after = [{"id": str(i), "correct": i in (1, 2, 3), "text": "t0" if i == 0 else "new"}
             for i in range(4)]
    found = paired(before, after)
    assert found["n"] == 4 and found["gain"] == pytest.approx(0.25)
    assert (found["turned_right"], found["turned_wrong"]) == (2, 1)
    assert found["stderr"] > 0
    assert identical(before, after) == 1
    assert paired(before, [{"id": "x", "correct": True}]) == {"n": 0}


def test_an_unmoved_run_reports_no_change_on_every_path(still_run: tuple[Path, Path],
                                                        tmp_path: Path) -> None:
    _, run = still_run
    out = tmp_path / "learning.json"
    assert main(["--run", str(run), "--control", str(run), "--benchmarks", "gsm8k",
                 "--limit", "2", "--train-command", "spice train ...", "--output",
                 str(out)]) == 0
    report = json.loads(out.read_text())
    held = report["heldout"]
    assert held["n"] == 6 and held["iterations"] == [0, 1]
    assert held["paired"]["gain"] == 0 and held["paired"]["turned_right"] == 0
    path = report["checkpoint_path"]
    # the loop's own generation and the load paths give the very same answers
    assert path["base_identical_to_loop_before"] == 6
    assert path["after_identical_to_loop_after"] == 6
    assert report["control"]["identical"] == 6
    assert report["control"]["before"] == report["control"]["after"]
    assert report["benchmarks"]["gsm8k"]["before"]["items"] == 2
    assert report["benchmarks"]["gsm8k"]["before"] == report["benchmarks"]["gsm8k"]["after"]
    assert [c["iteration"] for c in report["curves"]] == [0, 1]
    assert report["train_command"] == "spice train ..." and report["minutes"] >= 0
    assert out.with_suffix(".png").stat().st_size > 1000
    assert "Control" in out.with_suffix(".md").read_text()


def test_a_run_without_heldout_evaluation_is_refused(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("trainer:\n  iterations: 1\n")
    with pytest.raises(ValueError, match="no held-out evaluation"):
        learning_report(tmp_path)
    assert main(["--run", str(tmp_path / "nothing")]) == 2
