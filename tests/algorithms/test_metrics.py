"""The metric schema covers what runs log; the timer and the progress line read it."""

from __future__ import annotations

import json
import time
from pathlib import Path

from algorithms.metrics import METRICS, PLOTTED, PROGRESS, SUMMARY, Progress, Timer, describe

RECORD = Path(__file__).parent / "data" / "golden_runs.json"


def test_every_metric_a_run_logs_is_in_the_schema() -> None:
    machines = json.loads(RECORD.read_text("utf-8"))  # the golden runs, by kind of CPU
    logged = {key for runs in machines.values() for run in runs.values()
              for record in run["metrics"] for key in record}
    logged |= {"time/generate", "time/verify", "time/train", "time/sync", "time/iteration",
               "time/eval", "throughput/generated_tokens_per_s",
               "throughput/trained_tokens_per_s"}  # the golden record leaves timings out
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
