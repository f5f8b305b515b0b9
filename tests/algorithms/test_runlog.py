"""The run's JSONL logs: torn tails after a kill, cutting back to a checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

from algorithms.runlog import append_jsonl, finite, nonfinite, read_jsonl, truncate_jsonl


def test_a_tail_torn_inside_a_character_is_cut_like_a_torn_line(tmp_path: Path) -> None:
    path = tmp_path / "rollouts.jsonl"
    append_jsonl(path, [{"iteration": k, "question": f"Combien fait {k} × 2 ? é"}
                        for k in (1, 2, 3)])
    torn = json.dumps({"iteration": 4, "question": "é"}, ensure_ascii=False).encode("utf-8")
    with path.open("ab") as handle:  # the write stopped inside the two bytes of "é"
        handle.write(torn[: torn.index("é".encode()) + 1])
    assert [r["iteration"] for r in read_jsonl(path)] == [1, 2, 3]
    assert truncate_jsonl(path, 2) == 2
    assert [r["iteration"] for r in read_jsonl(path)] == [1, 2]
    assert path.read_text("utf-8").endswith("é\"}\n")  # what is kept is whole


def test_records_without_an_integer_iteration_are_dropped_on_cut_back(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"iteration": 1}\n{"iteration": "two"}\n{"iteration": true}\n[1, 2]\n'
                    '{"note": "no iteration"}\n{"iteration": 3}\n', "utf-8")
    assert truncate_jsonl(path, 2) == 2
    assert read_jsonl(path) == [{"iteration": 1}, {"note": "no iteration"}]
    assert truncate_jsonl(tmp_path / "missing.jsonl", 5) == 0


def test_metrics_that_must_be_numbers_are_named_when_they_are_not() -> None:
    step = {"train/lr": 1e-6, "train/loss": float("nan"), "train/grad_norm": float("inf"),
            "train/entropy": float("nan"), "reasoner/groups": 3, "note": "text", "flag": None}
    assert finite(step) == {"train/lr": 1e-6, "reasoner/groups": 3.0}
    assert nonfinite(step) == ["train/loss", "train/grad_norm"]
    # no optimiser step ran: the loss and gradient norm are means over nothing, not problems
    assert nonfinite({"train/loss": float("nan"), "train/grad_norm": float("nan")}) == []
    assert nonfinite({**step, "train/loss": 0.5, "train/grad_norm": 1.0}) == []


def test_the_trainer_lists_non_finite_metrics_in_metrics_jsonl(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from algorithms.metrics import ValidRateWatch
    from algorithms.run_folder import RunFolder
    from algorithms.trainer import SpiceTrainer

    logged: list[dict[str, float]] = []
    fabric = SimpleNamespace(global_rank=0, log_dict=lambda values, step: logged.append(values))
    trainer = SimpleNamespace(fabric=fabric, run=RunFolder(tmp_path), iteration=4,
                              _watch=ValidRateWatch(0.05, 5))
    SpiceTrainer._log(trainer, {"train/lr": 1e-6, "train/loss": float("nan"),  # type: ignore
                                "train/grad_norm": 2.0})
    (record,) = read_jsonl(tmp_path / "metrics.jsonl")
    assert record == {"iteration": 4, "train/lr": 1e-6, "train/grad_norm": 2.0,
                      "nonfinite": ["train/loss"]}
    assert logged == [{"train/lr": 1e-6, "train/grad_norm": 2.0}]  # loggers take numbers only
