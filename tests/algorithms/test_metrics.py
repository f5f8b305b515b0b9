"""The metric schema covers what runs log; the timer and the progress line read it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from algorithms.metrics import (
    METRICS,
    PLOTTED,
    PROGRESS,
    SUMMARY,
    MemoryWatch,
    Progress,
    Timer,
    ValidRateWatch,
    describe,
)

RECORD = Path(__file__).parent / "data" / "golden_runs.json"


def test_every_metric_a_run_logs_is_in_the_schema() -> None:
    machines = json.loads(RECORD.read_text("utf-8"))  # the golden runs, by kind of CPU
    logged = {key for runs in machines.values() for run in runs.values()
              for record in run["metrics"] for key in record}
    logged |= {"time/generate", "time/verify", "time/train", "time/sync", "time/iteration",
               "time/eval", "throughput/generated_tokens_per_s",
               "throughput/trained_tokens_per_s", "memory/generate", "memory/verify",
               "memory/train", "memory/sync", "memory/iteration"}  # left out of the record
    logged.discard("iteration")
    assert not [key for key in sorted(logged) if describe(key) is None]
    assert describe("eval/gsm8k/accuracy").key == "eval/<set>/accuracy"  # type: ignore[union-attr]
    assert describe("challenger/invalid/no_json").key == "challenger/invalid/<reason>"  # type: ignore[union-attr]
    assert describe("challenger/reward").key == "challenger/reward"  # type: ignore[union-attr]
    assert describe("nonsense/key") is None


def test_the_views_read_the_schema() -> None:
    keys = [m.key for m in METRICS]
    assert len(keys) == len(set(keys))
    assert [k for k, _ in PLOTTED] == [m.key for m in METRICS if m.title]
    assert ("R_c", "challenger/reward") in PROGRESS and "time/iteration" in SUMMARY
    status = Progress(1, 0, enabled=False).status({"challenger/reward": 0.25,
                                                   "time/iteration": 3.0,
                                                   "eval/heldout/accuracy": 0.5})
    assert status == "R_c 0.25  s/it 3.00  eval: heldout 0.50"


def test_the_timer_splits_the_rollout_into_generation_and_verification() -> None:
    timer = Timer()
    with timer.phase("rollout"):
        with timer.phase("generate"):
            time.sleep(0.01)
        time.sleep(0.01)
    totals = timer.totals()
    assert "rollout" not in totals and totals["verify"] > 0 and totals["generate"] > 0
    assert totals["iteration"] >= totals["verify"] + totals["generate"]


@pytest.mark.skipif(not MemoryWatch().available, reason="needs /proc/self/clear_refs")
def test_memory_peaks_belong_to_the_phase_that_made_them() -> None:
    memory = MemoryWatch()
    timer = Timer(memory)
    with timer.phase("rollout"):
        with timer.phase("generate"):
            held = bytearray(400 * 2**20)  # touched: 400 MiB resident for a moment
            held[:: 4096] = b"x" * len(range(0, len(held), 4096))
            del held
        time.sleep(0.001)
    with timer.phase("train"):
        time.sleep(0.001)
    peaks = timer.peaks()
    assert set(peaks) == {"generate", "verify", "train", "iteration"}
    assert peaks["generate"] - peaks["verify"] > 0.3  # the mark was reset after generation
    assert peaks["generate"] - peaks["train"] > 0.3
    assert peaks["iteration"] == peaks["generate"]
    assert timer.peaks() == {"iteration": 0.0}  # taken: the next iteration starts empty
    assert memory.run["generate"] == peaks["generate"] and "rollout" in memory.run
    assert Timer().peaks() == {}


def test_a_valid_rate_that_stays_low_is_warned_about_once_per_stretch() -> None:
    watch = ValidRateWatch(0.1, 3)
    low = {"challenger/valid_rate": 0.02, "challenger/invalid/no_json": 0.9,
           "challenger/invalid/too_long": 0.08, "challenger/invalid/bad_json": 0.0}
    said = [watch.check(i, low) for i in (1, 2, 3, 4, 5)]
    assert said[:2] == [None, None] and said[3:] == [None, None]
    assert said[2] is not None and "under 10% for 3 iterations" in said[2]
    assert "iteration 3" in said[2] and "no_json 90%, too_long 8%" in said[2]
    assert "bad_json" not in said[2]
    assert watch.check(6, {"eval/heldout/accuracy": 0.5}) is None  # no rollouts: no change
    assert watch.check(7, {"challenger/valid_rate": 0.5}) is None  # recovered: a new stretch
    assert [watch.check(i, low) for i in (8, 9, 10)][-1] is not None
    never = ValidRateWatch(0.0, 1)
    assert never.check(1, {"challenger/valid_rate": 0.0}) is None


def test_the_curves_show_invalid_outputs_by_reason(tmp_path: Path) -> None:
    from algorithms.runlog import invalid_reasons, plot_curves

    history = [{"iteration": i, "challenger/valid_rate": 0.5 - 0.1 * i,
                "challenger/invalid/no_json": 0.1 * i, "challenger/invalid/bad_json": 0.0,
                "challenger/invalid/too_long": 0.05} for i in range(1, 5)]
    assert invalid_reasons(history) == ["no_json", "too_long"]  # never above 0: left out
    assert invalid_reasons(history, most=1) == ["no_json"]
    path = plot_curves(history, tmp_path)
    assert path is not None and path.stat().st_size > 0
    only_reasons = [{"iteration": 1, "challenger/invalid/no_json": 1.0}]
    assert plot_curves(only_reasons, tmp_path / "alone") is not None
