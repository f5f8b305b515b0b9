"""What a training run logs: metrics, rollouts, evaluations, plots (the folder's layout is
:mod:`algorithms.run_folder`'s).

* ``metrics.jsonl`` — one JSON object per iteration (rank 0), the source of the plots and of a
  resumed run's history;
* the Fabric loggers' files — ``logs/metrics.csv`` (CSV) and ``tensorboard/`` (TensorBoard), and a
  W&B run when asked for;
* ``rollouts.jsonl`` (``rollouts.rank<r>.jsonl`` per rank in data-parallel runs) — every
  document's Challenger outputs, questions, gold answers, Reasoner answers, correctness and
  rewards;
* ``evaluations.jsonl`` — with in-loop evaluation, every evaluated answer (iteration, set,
  question, gold, response, verdict);
* ``plots/curves.png`` — the main curves, drawn at the end (the evaluation sets first).

A resumed run first cuts the JSONL files back to the checkpoint's iteration (a killed run may
have logged iterations past its last checkpoint) and replays the kept history into the loggers.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from algorithms.metrics import PLOTTED
from spice_env.text import parse_json, valid_unicode


def _parsed_lines(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """Each line of a JSONL file holding a JSON object, with that object (unreadable lines,
    such as a write cut off by a kill, are skipped)."""
    if not path.exists():
        return
    for raw in path.read_bytes().splitlines():
        try:  # a line cut inside a multi-byte character does not decode: it is torn too
            line = raw.decode("utf-8")
            record = parse_json(line)
        except ValueError:  # also a number or nesting that json cannot take
            continue
        if isinstance(record, dict):
            yield line, record


def truncate_jsonl(path: Path, last_iteration: int) -> int:
    """Keep the records of ``path`` whose ``iteration`` is at most ``last_iteration``; return how
    many were kept. Unreadable lines (a write cut off by a kill) are dropped."""
    if not path.exists():
        return 0
    kept = [line for line, record in _parsed_lines(path)
            if _iteration(record) <= last_iteration]
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text("".join(f"{line}\n" for line in kept), "utf-8")
    os.replace(temporary, path)
    return len(kept)


def _iteration(record: Mapping[str, Any]) -> float:
    """A record's iteration (0 without one); a record whose iteration is not an integer
    belongs to no iteration a run can resume at, so it counts as after all of them."""
    value = record.get("iteration", 0)
    if isinstance(value, bool) or not isinstance(value, int):
        return math.inf
    return value


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a file, one per line (unreadable lines skipped)."""
    return [record for _, record in _parsed_lines(path)]


def append_jsonl(path: Path, records: Iterable[Mapping[str, Any]]) -> None:
    """Append records, one JSON object per line, flushed to disk."""
    lines = "".join(_line(record) for record in records)  # all made before any is written
    with path.open("a", encoding="utf-8") as handle:
        handle.write(lines)
        handle.flush()
        os.fsync(handle.fileno())


def _line(record: Mapping[str, Any]) -> str:
    """One record as a line of JSON: text kept as it is, unless it holds a lone surrogate (a
    model's or a file's broken text), which only an ASCII escape can write."""
    line = json.dumps(record, ensure_ascii=False, default=_jsonable)
    if not valid_unicode(line):
        line = json.dumps(record, ensure_ascii=True, default=_jsonable)
    return line + "\n"


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)


def finite(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The metrics that are finite numbers (an empty mean is NaN; loggers get only numbers)."""
    return {k: number for k, v in metrics.items() if (number := _number(v)) is not None}


MUST_BE_FINITE = ("train/loss", "train/grad_norm")
"""Metrics that are numbers whenever an optimiser step ran (``train/lr`` is set); NaN or
infinity in them is a problem to report, not a mean over nothing."""


def nonfinite(metrics: Mapping[str, Any]) -> list[str]:
    """The names among :data:`MUST_BE_FINITE` that are NaN or infinite although a step ran:
    ``metrics.jsonl`` lists them under ``nonfinite`` rather than dropping them unsaid."""
    if _number(metrics.get("train/lr")) is None:
        return []
    return [name for name in MUST_BE_FINITE
            if name in metrics and _number(metrics[name]) is None]


def rollout_records(rollout: Any, iteration: int, rank: int) -> list[dict[str, Any]]:
    """One JSON-ready record per document of an ``IterationRollout``."""
    records = []
    for document in rollout.documents:
        attempts = []
        for index, attempt in enumerate(document.attempts):
            task = attempt.task
            attempts.append({
                "output": attempt.text,
                "valid": attempt.parse.valid,
                "invalid_reason": attempt.parse.reason,
                "kept": attempt.kept,
                "question": task.reasoner_question() if task else None,
                "gold": task.answer if task else None,
                "answer_type": task.answer_type if task else None,
                "pass_rate": attempt.pass_rate,
                "reward": attempt.reward,
                "reasoner_group": index == document.reasoner_choice,
                "answers": [{"text": a.text, "extracted": a.verdict.extracted,
                             "outcome": a.verdict.outcome, "correct": a.verdict.correct,
                             "reward": a.reward} for a in attempt.answers],
            })
            if getattr(attempt, "majority", None) is not None:  # label_source: majority
                attempts[-1]["majority"] = attempt.majority
        record = {"iteration": iteration, "rank": rank, "document_id": document.document.id,
                  "source": document.document.source, "task_format": document.task_format,
                  "attempts": attempts}
        turn = getattr(document, "selection", None)
        if turn is not None:
            record["selector"] = {"output": turn.text, "valid": turn.task_format is not None,
                                  "invalid_reason": turn.result.reason, "reward": turn.reward}
        records.append(record)
    return records


def eval_sets_in(history: Sequence[Mapping[str, Any]]) -> list[str]:
    """The evaluation sets with an ``eval/<set>/accuracy`` in ``history``, in order of
    appearance."""
    names: dict[str, None] = {}
    for record in history:
        for key in record:
            parts = key.split("/")
            if len(parts) == 3 and parts[0] == "eval" and parts[2] == "accuracy":
                names[parts[1]] = None
    return list(names)


def plot_curves(history: Sequence[Mapping[str, Any]], folder: Path) -> Path | None:
    """Draw the main curves of ``history`` (metrics.jsonl records) into ``folder/curves.png``:
    one panel per evaluation set (accuracy with ±1 standard error, boxed-answer rate, accuracy
    given a boxed answer), the training curves, then the Challenger's invalid outputs by
    reason."""
    sets = eval_sets_in(history)
    shown = [(key, title) for key, title in PLOTTED
             if any(_number(r.get(key)) is not None for r in history)]
    reasons = invalid_reasons(history)
    if not shown and not sets and not reasons:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = 2
    panels = len(sets) + len(shown) + (1 if reasons else 0)
    rows = math.ceil(panels / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(11, 2.8 * rows), squeeze=False)
    flat = list(axes.flat)
    for axis, name in zip(flat, sets, strict=False):
        _eval_panel(axis, history, name)
    for axis, (key, title) in zip(flat[len(sets):], shown, strict=False):
        xs, ys = _series(history, key)
        axis.plot(xs, ys, marker="o" if len(xs) < 30 else None, linewidth=1.2)
        axis.set_title(title, fontsize=10)
        axis.set_xlabel("iteration", fontsize=8)
        axis.grid(alpha=0.3)
    if reasons:
        _reasons_panel(flat[panels - 1], history, reasons)
    for axis in flat[panels:]:
        axis.axis("off")
    figure.tight_layout()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "curves.png"
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


_INVALID = "challenger/invalid/"


def invalid_reasons(history: Sequence[Mapping[str, Any]], most: int = 6) -> list[str]:
    """The reasons of ``challenger/invalid/<reason>`` in ``history`` that ever reached a share
    above 0, the ``most`` largest (by their highest share) first."""
    peaks: dict[str, float] = {}
    for record in history:
        for key, value in record.items():
            if key.startswith(_INVALID) and (share := _number(value)) is not None and share > 0:
                reason = key.removeprefix(_INVALID)
                peaks[reason] = max(peaks.get(reason, 0.0), share)
    return sorted(peaks, key=lambda reason: -peaks[reason])[:most]


def _reasons_panel(axis: Any, history: Sequence[Mapping[str, Any]], reasons: list[str]) -> None:
    for reason in reasons:
        xs, ys = _series(history, _INVALID + reason)
        axis.plot(xs, ys, marker="o" if len(xs) < 30 else None, linewidth=1.2, label=reason)
    axis.set_title("invalid Challenger outputs by reason (share of outputs)", fontsize=10)
    axis.set_xlabel("iteration", fontsize=8)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7, loc="best")


def _series(history: Sequence[Mapping[str, Any]], key: str) -> tuple[list[int], list[float]]:
    points = [(int(r["iteration"]), value) for r in history
              if (value := _number(r.get(key))) is not None]
    return [x for x, _ in points], [y for _, y in points]


def _eval_panel(axis: Any, history: Sequence[Mapping[str, Any]], name: str) -> None:
    xs, accuracy = _series(history, f"eval/{name}/accuracy")
    errors = dict(zip(*_series(history, f"eval/{name}/stderr"), strict=True))
    low = [a - errors.get(x, 0.0) for x, a in zip(xs, accuracy, strict=True)]
    high = [a + errors.get(x, 0.0) for x, a in zip(xs, accuracy, strict=True)]
    axis.fill_between(xs, low, high, alpha=0.2, linewidth=0)
    axis.plot(xs, accuracy, marker="o", linewidth=1.6, label="accuracy (±1 s.e.)")
    for key, label, style in (("boxed_rate", "boxed-answer rate", "--"),
                              ("accuracy_given_boxed", "accuracy given boxed", ":")):
        bx, by = _series(history, f"eval/{name}/{key}")
        if bx:
            axis.plot(bx, by, marker=".", linestyle=style, linewidth=1.2, label=label)
    items = [v for v in _series(history, f"eval/{name}/items")[1]]
    count = f", {int(items[-1])} questions" if items else ""
    axis.set_title(f"evaluation: {name}{count} (greedy)", fontsize=10)
    axis.set_xlabel("iteration", fontsize=8)
    axis.set_ylim(-0.02, 1.02)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7, loc="best")


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None
