"""Throughput benchmark of :class:`spice_env.verify.Verifier` (a script, not a test).

Usage (from the repository root)::

    python benchmarks/perf/verifier.py [--items N] [--batch B] [--repeats R] [--output PATH]

Its workload is :mod:`benchmarks.perf.workload`: Reasoner responses generated deterministically,
``GROUP_SIZE`` rollouts per task in training-like proportions of answer types.

Measured, through the public API only (``Verifier.verify_many``):

* worker start-up (the first call, which spawns the workers) and the cold first batch;
* steady-state verifications per second in batches of ``--batch`` pairs, with the default
  configuration, with ``cache_size=0``, and replaying the same batches (a hot cache);
* a breakdown by answer type;
* pathological answers (known slow Math-Verify inputs, an answer over ``max_answer_chars``, a
  degenerate response) alone and mixed into a normal batch;
* agreement with other graders' labels on their own test cases, next to plain Math-Verify's
  (:mod:`benchmarks.peer_graders`).

Math-Verify jobs are counted by swapping in a :class:`CountingPool` (a ``MathVerifyPool`` that
records the jobs it is given); nothing else of the verifier is touched. Results are written as
JSON (``--output``) and as a Markdown summary next to it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import statistics
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.peer_graders import TIMEOUT_S as PEER_TIMEOUT_S
from benchmarks.peer_graders import agreement
from benchmarks.perf.workload import (
    GROUP_SIZE,
    TYPE_WEIGHTS,
    Item,
    make_items,
)
from benchmarks.reporting import (
    command_line,
    machine,
    package_versions,
    source_files,
    write_report,
)
from spice_env.tasks import Task
from spice_env.verify import (
    MathVerifyPool,
    Outcome,
    Verdict,
    Verifier,
    VerifierConfig,
    extract_boxed,
)

TARGET_PER_S = 1000.0
DEFAULT_ITEMS = 4096
DEFAULT_BATCH = 256
DEFAULT_REPEATS = 5
DEFAULT_SEED = 1234
DEFAULT_OUTPUT = Path("benchmarks/results/verifier.json")
SETTLE_S = 2.5  # pause letting a replaced worker finish starting before a timed call
KILL_TOLERANCE_S = 0.25  # detecting a timeout, killing the worker and spawning its replacement

# --- measuring ---------------------------------------------------------------------------------


class CountingPool(MathVerifyPool):
    """A :class:`MathVerifyPool` that records every ``(gold, prediction)`` job it runs."""

    def __init__(self, workers: int, timeout_s: float) -> None:
        super().__init__(workers, timeout_s)
        self.jobs: list[tuple[str, str]] = []

    def run(self, jobs: Sequence[tuple[str, str]]) -> list[Outcome]:
        """Record the jobs, then run them as usual."""
        self.jobs.extend(jobs)
        return super().run(jobs)


def open_verifier(**overrides: Any) -> tuple[Verifier, CountingPool]:
    """A :class:`Verifier` (config ``overrides``) whose Math-Verify jobs are counted."""
    verifier = Verifier(**overrides)
    pool = CountingPool(verifier.config.workers, verifier.config.timeout_s)
    verifier.pool.close()
    verifier.pool = pool
    return verifier, pool


def start_workers(verifier: Verifier) -> None:
    """Make ``verifier`` start its Math-Verify workers (one call that needs Math-Verify)."""
    task = Task(kind="free_form", question="warm-up", answer="\\frac{3}{4}",
                answer_type="expression")
    verifier.verify_many([(task, "\\boxed{0.75}")])


@dataclass
class Pass:
    """The verdicts and per-batch wall times of one pass over some items."""

    verdicts: list[Verdict]
    batch_s: list[float]

    @property
    def seconds(self) -> float:
        """Time spent inside ``verify_many``."""
        return sum(self.batch_s)


def timed_pass(verifier: Verifier, items: Sequence[Item], batch: int) -> Pass:
    """Verify ``items`` in batches of ``batch`` pairs, timing each ``verify_many`` call."""
    verdicts: list[Verdict] = []
    times: list[float] = []
    for start in range(0, len(items), batch):
        pairs = [(item.task, item.response) for item in items[start : start + batch]]
        began = time.perf_counter()
        verdicts.extend(verifier.verify_many(pairs))
        times.append(time.perf_counter() - began)
    return Pass(verdicts, times)


def outcome_counts(verdicts: Sequence[Verdict]) -> dict[str, int]:
    """How many verdicts ended in each outcome."""
    return dict(sorted(Counter(v.outcome for v in verdicts).items()))


def disagreements(items: Sequence[Item], verdicts: Sequence[Verdict]) -> list[dict[str, Any]]:
    """Pairs where the verifier's verdict differs from what the generator meant."""
    return [{"answer_type": it.answer_type, "gold": it.task.answer, "extracted": v.extracted,
             "form": it.form, "intended": it.intended, "outcome": v.outcome}
            for it, v in zip(items, verdicts, strict=True) if v.correct != it.intended]


def run_config(items: Sequence[Item], warmup: Sequence[Item], batch: int,
               cache_size: int) -> dict[str, Any]:
    """Start-up, a cold batch, the steady state and (with a cache) a hot replay, one verifier."""
    verifier, pool = open_verifier(cache_size=cache_size)
    with verifier:
        began = time.perf_counter()
        start_workers(verifier)
        startup_s = time.perf_counter() - began
        cold = timed_pass(verifier, warmup[:batch], batch)
        before = len(pool.jobs)
        steady = timed_pass(verifier, items, batch)
        jobs = pool.jobs[before:]
        hot = timed_pass(verifier, items, batch) if cache_size else None
        hot_jobs = len(pool.jobs) - before - len(jobs)
    result: dict[str, Any] = {
        "worker_startup_s": round(startup_s, 3),
        "first_batch_s": round(cold.seconds, 3),
        "verifications_per_s": round(len(items) / steady.seconds, 1),
        "seconds": round(steady.seconds, 3),
        "batch_s_median": round(statistics.median(steady.batch_s), 4),
        "batch_s_max": round(max(steady.batch_s), 4),
        "math_verify_jobs": len(jobs),
        "distinct_math_verify_pairs": len(set(jobs)),
        "outcomes": outcome_counts(steady.verdicts),
        "disagreements": disagreements(items, steady.verdicts),
    }
    if hot is not None:
        result["hot_replay_per_s"] = round(len(items) / hot.seconds, 1)
        result["hot_replay_math_verify_jobs"] = hot_jobs
    return result


def summarise(runs: Sequence[dict[str, Any]], key: str) -> dict[str, Any]:
    """Best, median and spread of ``key`` over repeated runs."""
    values = [float(run[key]) for run in runs]
    best = max(values)
    return {"best": best, "median": round(statistics.median(values), 1), "all": values,
            "spread_pct": round(100 * (best - min(values)) / best, 1)}


def by_answer_type(items: Sequence[Item], warmup: Sequence[Item],
                   batch: int) -> dict[str, dict[str, Any]]:
    """Steady-state throughput per answer type (default config, one warmed verifier)."""
    verifier, pool = open_verifier()
    breakdown: dict[str, dict[str, Any]] = {}
    with verifier:
        timed_pass(verifier, warmup[:batch], batch)
        for answer_type in TYPE_WEIGHTS:
            subset = [item for item in items if item.answer_type == answer_type]
            before = len(pool.jobs)
            result = timed_pass(verifier, subset, batch)
            breakdown[answer_type] = {
                "items": len(subset),
                "verifications_per_s": round(len(subset) / result.seconds, 1),
                "us_per_item": round(1e6 * result.seconds / len(subset), 1),
                "math_verify_jobs": len(pool.jobs) - before,
                "outcomes": outcome_counts(result.verdicts),
                "agreement": round(1 - len(disagreements(subset, result.verdicts))
                                   / len(subset), 4),
            }
    return breakdown


# --- pathological answers ----------------------------------------------------------------------

PATHOLOGICAL: tuple[tuple[str, str, str], ...] = (
    ("power_tower_10", "2", "10^{10^{10^{10}}}"),
    ("math_verify_issue_65", "\\frac{5}{16}",
     "\\dfrac{5^{\\left(5^{\\left(5^{\\left(5^5\\right)}\\right)} - 4\\right)} - 5}{16}"),
    ("power_tower_9", "2", "9^{9^{9^{9}}}"),
    ("power_tower_2", "2", "2^{2^{2^{2^{2^{2}}}}}"),
    ("huge_factorial", "2", "(10^{100})!"),
    ("huge_binomial", "1", "\\binom{10^{9}}{10^{5}}"),
    ("huge_product", "1", "\\prod_{k=1}^{10^{6}} k"),
    ("nonelementary_integral", "1", "\\int_0^1 e^{x^{2}} \\sin(x^{7}) dx"),
    ("nested_logs_issue_63", "x",
     "\\log_{2^5}(\\log_{2^4}(\\log_{2^3}(\\log_{2^2}(\\log_{2^1}x))))"),
)


def _expression_item(name: str, gold: str, response: str) -> Item:
    task = Task(kind="free_form", question=f"Pathological case {name}", answer=gold,
                answer_type="expression")
    return Item(task, response, "expression", False, name)


def pathological_items() -> list[Item]:
    """The slow Math-Verify inputs, boxed at the end of a short response, and a too-long one."""
    items = [_expression_item(name, gold, f"After a long computation, $\\boxed{{{answer}}}$.")
             for name, gold, answer in PATHOLOGICAL]
    too_long = "+".join(["x^{2}"] * 250)  # 1,499 characters > max_answer_chars
    items.append(_expression_item("too_long_answer", "250x^{2}", f"\\boxed{{{too_long}}}"))
    return items


def solo_costs(items: Sequence[Item]) -> dict[str, Any]:
    """Each pathological item alone in a batch (no cache; a pause before each call)."""
    verifier, _ = open_verifier(cache_size=0)
    rows = []
    with verifier:
        start_workers(verifier)
        for item in items:
            time.sleep(SETTLE_S)
            began = time.perf_counter()
            verdict = verifier.verify_many([(item.task, item.response)])[0]
            rows.append({"name": item.form, "answer_chars": len(extract_boxed(item.response) or ""),
                         "outcome": verdict.outcome,
                         "wall_s": round(time.perf_counter() - began, 3)})
        restarts = verifier.pool.restarts
    return {"cases": rows, "worker_restarts": restarts}


def _interleave(normal: Sequence[Item], extra: Sequence[Item]) -> list[Item]:
    """``extra`` spread evenly through ``normal``."""
    mixed = list(normal)
    for i, item in enumerate(extra):
        mixed.insert((i + 1) * len(mixed) // (len(extra) + 1), item)
    return mixed


def mixed_batch_cost(normal: Sequence[Item], extra: Sequence[Item]) -> dict[str, Any]:
    """Wall time of ``normal`` with and without ``extra`` mixed in (no cache, warm workers)."""
    verifier, _ = open_verifier(cache_size=0)
    config = verifier.config
    with verifier:
        base = min((timed_pass(verifier, normal, len(normal)) for _ in range(3)),
                   key=lambda p: p.seconds)
        time.sleep(SETTLE_S)
        mixed_items = _interleave(normal, extra)
        mixed = timed_pass(verifier, mixed_items, len(mixed_items))
        after = timed_pass(verifier, normal, len(normal))
    by_name = {it.form: v.outcome for it, v in zip(mixed_items, mixed.verdicts, strict=True)}
    kept = [v for it, v in zip(mixed_items, mixed.verdicts, strict=True) if it not in extra]
    timeouts = sum(by_name[it.form] == "timeout" for it in extra)
    bound = math.ceil(timeouts / config.workers) * config.timeout_s
    return {
        "normal_items": len(normal), "pathological_items": len(extra), "timeouts": timeouts,
        "base_s": round(base.seconds, 3), "mixed_s": round(mixed.seconds, 3),
        "extra_s": round(mixed.seconds - base.seconds, 3),
        "bound_s": bound, "tolerance_s": KILL_TOLERANCE_S,
        "within_bound": mixed.seconds - base.seconds <= bound + KILL_TOLERANCE_S,
        "overhead_per_timeout_round_s": round((mixed.seconds - base.seconds - bound)
                                              / max(1, math.ceil(timeouts / config.workers)), 3),
        "normal_verdicts_unchanged": kept == base.verdicts,
        "base_right_after_s": round(after.seconds, 3),
        "outcomes": {it.form: by_name[it.form] for it in extra},
    }


def cached_repeat(item: Item) -> dict[str, Any]:
    """A timed-out answer checked again by the same default verifier (its cache answers)."""
    verifier, pool = open_verifier()
    with verifier:
        start_workers(verifier)
        first = timed_pass(verifier, [item], 1)
        before = len(pool.jobs)
        again = timed_pass(verifier, [item], 1)
        jobs = len(pool.jobs) - before
    return {"name": item.form, "first_s": round(first.seconds, 3),
            "first_outcome": first.verdicts[0].outcome, "repeat_s": round(again.seconds, 4),
            "repeat_outcome": again.verdicts[0].outcome, "repeat_math_verify_jobs": jobs}


def degenerate_responses(repeats: Sequence[int]) -> list[dict[str, Any]]:
    """Responses of ``\\boxed{`` repeated (a model stuck in a loop): box extraction cost."""
    task = Task(kind="free_form", question="degenerate", answer="2", answer_type="integer")
    rows = []
    with Verifier() as verifier:  # no Math-Verify call: workers never start
        for count in repeats:
            response = "\\boxed{" * count
            began = time.perf_counter()
            verdict = verifier.verify_many([(task, response)])[0]
            rows.append({"repeats": count, "response_chars": len(response),
                         "outcome": verdict.outcome,
                         "wall_s": round(time.perf_counter() - began, 3)})
    return rows


def pathological(warmup: Sequence[Item], batch: int) -> dict[str, Any]:
    """Costs of slow and oversized answers, alone and mixed into a normal batch."""
    items = pathological_items()
    normal = warmup[:batch]
    return {
        "solo": solo_costs(items),
        "one_in_batch": mixed_batch_cost(normal, items[:1]),
        "all_in_batch": mixed_batch_cost(normal, items),
        "cached_repeat": cached_repeat(items[0]),
        "degenerate_response": degenerate_responses((500, 1000, 2000, 4000)),
    }


# --- environment and report --------------------------------------------------------------------


def versions() -> dict[str, str]:
    """Versions of Python, the project and the packages the verifier depends on."""
    return package_versions(("spice-env", "math-verify", "latex2sympy2_extended", "sympy",
                             "numpy", "pydantic"))


def source() -> dict[str, Any]:
    """The commit and the verifier's source files as measured (they may have local edits)."""
    return source_files(("spice_env/verify.py", "spice_env/_verify_worker.py"))


def workload(items: Sequence[Item]) -> dict[str, Any]:
    """What the generated pairs look like."""
    chars = [len(item.response) for item in items]
    return {
        "items": len(items), "tasks": len({id(item.task) for item in items}),
        "group_size": GROUP_SIZE,
        "answer_types": dict(Counter(item.answer_type for item in items).most_common()),
        "forms": dict(Counter(item.form for item in items).most_common()),
        "meant_correct": sum(item.intended for item in items),
        "revised_box": sum(item.response.count("\\boxed{") > 1 for item in items),
        "response_chars_mean": round(statistics.mean(chars)),
        "response_chars_min_max": [min(chars), max(chars)],
    }


def _without_details(run: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in run.items() if key != "disagreements"}


def throughput(args: argparse.Namespace, items: Sequence[Item],
               warmup: Sequence[Item]) -> dict[str, Any]:
    """Repeated default and no-cache runs (interleaved, so load drift hits both alike)."""
    default_runs: list[dict[str, Any]] = []
    no_cache_runs: list[dict[str, Any]] = []
    for _ in range(args.repeats):
        default_runs.append(run_config(items, warmup, args.batch, VerifierConfig().cache_size))
        no_cache_runs.append(run_config(items, warmup, args.batch, 0))
    best = max(default_runs, key=lambda run: float(run["verifications_per_s"]))
    jobs_cached, jobs_plain = best["math_verify_jobs"], no_cache_runs[0]["math_verify_jobs"]
    wrong = best["disagreements"]
    return {
        "verifications_per_s": best["verifications_per_s"],
        "verifications_per_s_no_cache": summarise(no_cache_runs, "verifications_per_s")["best"],
        "verifications_per_s_hot_cache": summarise(default_runs, "hot_replay_per_s")["best"],
        "variance": {"default": summarise(default_runs, "verifications_per_s"),
                     "no_cache": summarise(no_cache_runs, "verifications_per_s"),
                     "hot_cache": summarise(default_runs, "hot_replay_per_s")},
        "worker_startup_s": min(run["worker_startup_s"] for run in default_runs + no_cache_runs),
        "first_batch_s": min(run["first_batch_s"] for run in default_runs + no_cache_runs),
        "cache": {"math_verify_jobs_with_cache": jobs_cached,
                  "math_verify_jobs_no_cache": jobs_plain,
                  "cache_hits": jobs_plain - jobs_cached,
                  "distinct_math_verify_pairs": best["distinct_math_verify_pairs"],
                  "math_verify_jobs_per_item": round(jobs_plain / len(items), 4),
                  "hot_replay_math_verify_jobs": best["hot_replay_math_verify_jobs"]},
        "outcomes": best["outcomes"],
        "agreement_with_generator": round(1 - len(wrong) / len(items), 4),
        "disagreements_sample": wrong[:10],
        "runs": {"default": [_without_details(run) for run in default_runs],
                 "no_cache": [_without_details(run) for run in no_cache_runs]},
    }


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Every measurement, as the JSON report."""
    began = time.perf_counter()
    items = make_items(args.items, args.seed)
    warmup = make_items(args.batch, args.seed + 1)
    load_before = os.getloadavg()
    source_before = source()
    report: dict[str, Any] = {"benchmark": "spice_env.verify.Verifier throughput"}
    report.update(throughput(args, items, warmup))
    report["target_per_s"] = TARGET_PER_S
    report["target_met"] = report["verifications_per_s"] >= TARGET_PER_S
    report["target_met_no_cache"] = report["verifications_per_s_no_cache"] >= TARGET_PER_S
    report["by_answer_type"] = by_answer_type(items, warmup, args.batch)
    report["pathological"] = pathological(warmup, args.batch)
    report["workload"] = workload(items)
    report.update(agreement())  # peer_agreement, math_verify_agreement, the cases missed
    report["settings"] = {"items": args.items, "batch": args.batch, "repeats": args.repeats,
                          "seed": args.seed, "verifier_config": VerifierConfig().model_dump()}
    report["machine"] = {**machine(), "load_avg_at_start": [round(x, 2) for x in load_before]}
    report["versions"] = versions()
    report["source"] = {**source_before, "changed_during_run": source() != source_before}
    report["date"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    report["command"] = command_line()
    report["benchmark_wall_s"] = round(time.perf_counter() - began, 1)
    return report


def _headline_rows(report: dict[str, Any]) -> list[tuple[str, str]]:
    """The (measure, value) rows of the Markdown summary."""
    path, var = report["pathological"], report["variance"]
    one, every = path["one_in_batch"], path["all_in_batch"]
    loop = next(row for row in path["degenerate_response"] if row["repeats"] == 2000)
    return [
        ("Verifications/s, steady state, default config",
         f"{report['verifications_per_s']:.0f} (median {var['default']['median']:.0f}, "
         f"spread {var['default']['spread_pct']}%)"),
        ("Verifications/s, `cache_size=0`",
         f"{report['verifications_per_s_no_cache']:.0f} (median {var['no_cache']['median']:.0f}, "
         f"spread {var['no_cache']['spread_pct']}%)"),
        ("Verifications/s, same batches replayed (hot cache)",
         f"{report['verifications_per_s_hot_cache']:.0f}"),
        (f"Target {report['target_per_s']:.0f}/s met", "yes" if report["target_met"] else "no"),
        ("Worker start-up (first call)", f"{report['worker_startup_s']:.2f} s"),
        ("First batch after start-up", f"{report['first_batch_s']:.2f} s"),
        ("Math-Verify jobs per item (no cache) / cache hits",
         f"{report['cache']['math_verify_jobs_per_item']} / {report['cache']['cache_hits']}"),
        ("One pathological answer in a batch: extra wall time",
         f"{one['extra_s']:.2f} s (timeout {one['bound_s']:.1f} s)"),
        (f"{every['pathological_items']} pathological answers in a batch: extra wall time",
         f"{every['extra_s']:.2f} s for {every['timeouts']} timeouts "
         f"(timeout rounds alone: {every['bound_s']:.1f} s)"),
        ("Degenerate response (`\\boxed{` x 2000, 14k chars): box extraction",
         f"{loop['wall_s']:.2f} s"),
        (f"Agreement with other graders' test labels ({report['peer_cases']['compared']} cases)",
         f"{report['peer_agreement']:.1%} (plain Math-Verify: "
         f"{report['math_verify_agreement']:.1%}; {report['peer_timeouts']} timeouts at "
         f"`timeout_s={PEER_TIMEOUT_S:g}`)"),
    ]


def markdown(report: dict[str, Any]) -> str:
    """A short Markdown summary of ``report``."""
    table = "\n".join(f"| {name} | {value} |" for name, value in _headline_rows(report))
    types = "\n".join(f"| {name} | {row['items']} | {row['verifications_per_s']:.0f} | "
                      f"{row['math_verify_jobs']} |"
                      for name, row in report["by_answer_type"].items())
    host, settings = report["machine"], report["settings"]
    return (f"# Verifier throughput\n\n`{report['command']}` on {report['date']}, "
            f"{host['cpu_model']} ({host['cores']} cores, {host['ram_gib']} GiB), batch "
            f"{settings['batch']}, {settings['items']} items, best of {settings['repeats']}.\n\n"
            f"| Measure | Value |\n|---|---|\n{table}\n\n"
            f"| Answer type | Items | Verifications/s | Math-Verify jobs |\n|---|---|---|---|\n"
            f"{types}\n\n{_notes(report)}\n\nFull results: `verifier.json`.\n")


def _notes(report: dict[str, Any]) -> str:
    """Two sentences putting the headline in context."""
    expression = report["by_answer_type"]["expression"]
    cache = report["cache"]
    return (f"Only {100 * cache['math_verify_jobs_per_item']:.1f}% of pairs needed a Math-Verify "
            f"call (the rest took fast paths); expression answers alone ran at "
            f"{expression['verifications_per_s']:.0f}/s. Tasks are fresh in every batch, so the "
            f"cache answered {cache['cache_hits']} of {cache['math_verify_jobs_no_cache']} "
            f"Math-Verify calls; it matters for replays ("
            f"{report['verifications_per_s_hot_cache']:.0f}/s). Timeouts are never cached, so "
            f"a repeated pathological answer is tried again.")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--items", type=int, default=DEFAULT_ITEMS, help="pairs to verify")
    parser.add_argument("--batch", type=int, default=DEFAULT_BATCH, help="pairs per call")
    parser.add_argument("--repeats", type=int, default=DEFAULT_REPEATS, help="runs per config")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="workload seed")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="JSON report path")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, write the JSON and Markdown reports, print the headline."""
    args = parse_args(argv)
    report = measure(args)
    write_report(report, args.output, markdown)
    print(f"verifications/s: {report['verifications_per_s']:.0f} (default), "
          f"{report['verifications_per_s_no_cache']:.0f} (no cache), target "
          f"{TARGET_PER_S:.0f}/s {'met' if report['target_met'] else 'NOT met'}; "
          f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
