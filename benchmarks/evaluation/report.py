"""Reports of an evaluation: a Markdown table, and the comparison of two reports."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from benchmarks.evaluation.run import (
    summary,
)


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def markdown(report: Mapping[str, Any]) -> str:
    """The report as a Markdown table (accuracy in %), with averages and unavailable benchmarks."""
    settings = report.get("settings", {})
    lines = [f"# Evaluation of `{report.get('model', '?')}`", ""]
    if report.get("command"):
        lines += [f"`{report['command']}`", ""]
    limit = settings.get("limit")
    subset = "all items" if limit is None else f"a seeded random subset of {limit} items"
    source = " (the run's own settings)" if settings.get("from_run") else ""
    lines += [f"Zero-shot, `{settings.get('prompt_style')}` Reasoner prompt, "
              f"`{settings.get('template', 'auto')}` template, `{settings.get('dtype', 'auto')}`"
              f"{source}, at most {settings.get('max_new_tokens')} new tokens, greedy unless "
              f"stated; {subset} per benchmark.", "",
              "| benchmark | category | items | accuracy % | ± s.e. | answered % | cut off % | "
              "rows skipped |",
              "|---|---|---|---|---|---|---|---|"]
    missing = []
    for name, bench in report.get("benchmarks", {}).items():
        if not bench.get("available", True):
            missing.append(f"- {bench.get('title', name)}: {bench.get('message')}")
            continue
        samples = bench.get("samples", 1)
        note = f" (mean of {samples} at T={bench.get('temperature')})" if samples > 1 else ""
        lines.append(f"| {bench.get('title', name)}{note} | {bench['category']} | "
                     f"{bench['items']} | {_pct(bench['accuracy'])} | {_pct(bench['stderr'])} | "
                     f"{_pct(bench.get('answered_rate'))} | {_pct(bench.get('truncated_rate'))} | "
                     f"{bench.get('skipped_rows', 0)} |")
    averages = report.get("summary", {})
    for key in ("math", "general", "overall"):
        lines.append(f"| **{key} average** | | | **{_pct(averages.get(key))}** | | | | |")
    if missing:
        lines += ["", "Not run:", *missing]
    return "\n".join(lines) + "\n"


def compare(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    """Per-benchmark and average accuracy of two reports and their differences (after − before).

    Averages are taken over the benchmarks both reports ran, so they compare like with like.
    """
    a, b = before.get("benchmarks", {}), after.get("benchmarks", {})
    rows = []
    common = []
    for name in [*a, *(n for n in b if n not in a)]:
        x = a.get(name, {}).get("accuracy")
        y = b.get(name, {}).get("accuracy")
        if x is not None and y is not None:
            common.append(name)
        title = (a.get(name) or b.get(name) or {}).get("title", name)
        ids = [{str(r.get("question")) for r in side.get(name, {}).get("records", [])}
               for side in (a, b)]
        same = None if not ids[0] or not ids[1] else ids[0] == ids[1]
        rows.append({"benchmark": name, "title": title, "before": x, "after": y,
                     "delta": None if x is None or y is None else y - x,
                     "same_items": same if x is not None and y is not None else None})
    avg_a, avg_b = summary(a, common), summary(b, common)
    averages: dict[str, dict[str, float | None]] = {}
    for key in avg_a:
        x_avg, y_avg = avg_a[key], avg_b[key]
        averages[key] = {"before": x_avg, "after": y_avg,
                         "delta": None if x_avg is None or y_avg is None else y_avg - x_avg}
    settings_a, settings_b = before.get("settings", {}), after.get("settings", {})
    differ = sorted(k for k in set(settings_a) | set(settings_b)
                    if settings_a.get(k) != settings_b.get(k))
    return {"before": before.get("model"), "after": after.get("model"), "rows": rows,
            "averages": averages, "common": common, "settings_differ": differ}


def compare_markdown(result: Mapping[str, Any]) -> str:
    """:func:`compare`'s result as a Markdown table (percentage points)."""
    def delta(value: float | None) -> str:
        return "–" if value is None else f"{100 * value:+.1f}"

    lines = [f"| benchmark | before (`{result['before']}`) | after (`{result['after']}`) | Δ |",
             "|---|---|---|---|"]
    neither = [row["title"] for row in result["rows"]
               if row["before"] is None and row["after"] is None]
    for row in result["rows"]:
        if row["before"] is None and row["after"] is None:
            continue
        warn = " (different items)" if row["same_items"] is False else ""
        lines.append(f"| {row['title']}{warn} | {_pct(row['before'])} | {_pct(row['after'])} | "
                     f"{delta(row['delta'])} |")
    for key, values in result["averages"].items():
        lines.append(f"| **{key} average** | {_pct(values['before'])} | "
                     f"{_pct(values['after'])} | {delta(values['delta'])} |")
    if neither:
        lines += ["", "Run in neither report: " + ", ".join(neither) + "."]
    if result.get("settings_differ"):
        lines += ["", "The two reports differ in their settings: "
                  + ", ".join(result["settings_differ"]) + "."]
    return "\n".join(lines) + "\n"
