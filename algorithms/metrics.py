"""What a run measures: the metric names, the phase timer, and one iteration's numbers over all
ranks.

:data:`METRICS` is the one list of metric names a run logs, with what each means; the progress
line (:data:`PROGRESS`), the curves (:data:`PLOTTED`), the CLI's closing line (:data:`SUMMARY`)
and the documentation's table read it. Keys with ``<...>`` stand for a family (one key per
reason, per set, per role).

:func:`local_metrics` packs what one rank saw in an iteration (small enough to gather);
:func:`merge_iteration` turns the gathered parts into the iteration's metrics.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from spice_env.game import observation
from spice_env.runner import ChallengerAttempt, DocumentRollout, IterationRollout, ReasonerAnswer


@dataclass(frozen=True)
class Metric:
    """One metric (or family of metrics) a run logs.

    Attributes:
        key: the name, ``<...>`` for a part that varies (``eval/<set>/accuracy``).
        meaning: what it measures.
        title: the title of its panel in ``plots/curves.png`` (not plotted when empty).
        label: its label in the progress line (not shown when empty).
        summary: shown in the line ``spice train`` ends with.
    """

    key: str
    meaning: str
    title: str = ""
    label: str = ""
    summary: bool = False

    def matches(self, name: str) -> bool:
        """Whether ``name`` is this metric or a member of its family."""
        pattern = re.sub(r"<[^>]+>", "[^/]+", re.escape(self.key))
        return re.fullmatch(pattern, name) is not None


METRICS: tuple[Metric, ...] = (
    Metric("challenger/valid_rate", "share of the B × N Challenger outputs that parsed into a "
           "valid task", title="valid question rate", label="valid", summary=True),
    Metric("challenger/frontier_share", "share of valid questions with 0 < pass rate < 1: "
           "those that teach", title="share of questions with 0 < p < 1", label="0<p<1",
           summary=True),
    Metric("challenger/reward", "mean Challenger reward over kept attempts",
           title="Challenger reward", label="R_c", summary=True),
    Metric("challenger/pass_rate", "mean Reasoner pass rate on kept valid questions",
           title="Reasoner pass rate on kept questions"),
    Metric("challenger/kept_valid_rate", "share of the G kept attempts that are valid"),
    Metric("challenger/invalid/<reason>", "share of outputs rejected for each reason "
           "(`no_json`, `type_mismatch`, …)"),
    Metric("reasoner/reward", "mean Reasoner reward over the Reasoner groups",
           title="Reasoner reward", label="R_r", summary=True),
    Metric("reasoner/boxed_rate", "share of Reasoner answers with a `\\boxed{}` answer",
           title="Reasoner boxed-answer rate", summary=True),
    Metric("verifier/<outcome>", "share of Reasoner answers per verifier outcome "
           "(`correct`, `wrong`, `no_answer`, …)"),
    Metric("pass_rate_hist/<k>of<G>", "share of valid questions answered right k times out "
           "of G"),
    Metric("documents_with_reasoner_group", "documents that gave the Reasoner a group"),
    Metric("<role>/groups", "groups of the role in the update"),
    Metric("<role>/zero_variance_fraction", "share of the role's groups whose rewards are all "
           "equal"),
    Metric("<role>/dropped_samples", "samples of zero-variance groups left out "
           "(`algorithm.skip_zero_variance`)"),
    Metric("<role>/completion_tokens", "mean generated length of the role's samples"),
    Metric("<role>/truncated_rate", "share of the role's samples cut at `max_new_tokens`"),
    Metric("train/loss", "the summed loss of the update", title="loss"),
    Metric("train/entropy", "mean token entropy of the trained completions", title="entropy"),
    Metric("train/clip_fraction", "share of tokens whose ratio was clipped",
           title="clip fraction"),
    Metric("train/ratio_mean", "mean policy ratio over trained tokens"),
    Metric("train/<loss term>", "the algorithm's own terms: `kl` with a KL penalty, "
           "`policy_loss` and `value_loss` for PPO"),
    Metric("train/grad_norm", "gradient norm before clipping"),
    Metric("train/lr", "the learning rate of the step"),
    Metric("train/nonfinite_step", "1 when the loss or the gradient was NaN or infinite and "
           "the step was skipped (the weights unchanged); absent otherwise"),
    Metric("train/completion_tokens", "completion tokens run through the update"),
    Metric("train/skipped_samples", "samples left out of the forward and backward because "
           "they cannot change the gradient"),
    Metric("untrainable_samples", "samples without token ids (a remote server's), not "
           "trained on"),
    Metric("time/iteration", "seconds of the iteration (slowest rank)",
           title="seconds per iteration", label="s/it", summary=True),
    Metric("time/<phase>", "seconds per phase, slowest rank: `generate`, `verify`, `train`, "
           "`sync`, and `eval` when the policy was evaluated"),
    Metric("memory/iteration", "peak resident memory of the iteration in GB (largest "
           "rank; Linux)", title="peak memory (GB)"),
    Metric("memory/<phase>", "peak resident memory in GB per phase, largest rank: "
           "`generate`, `verify`, `train`, `sync` (the whole run's, setup, saves, evaluation "
           "and export included, are in `memory.json`)"),
    Metric("throughput/generated_tokens_per_s", "tokens generated per second of generation"),
    Metric("throughput/trained_tokens_per_s", "prompt and completion tokens trained per "
           "second of update"),
    Metric("eval/<set>/accuracy", "in-loop evaluation: greedy accuracy on the set"),
    Metric("eval/<set>/stderr", "its standard error"),
    Metric("eval/<set>/boxed_rate", "share of answers with a `\\boxed{}`"),
    Metric("eval/<set>/accuracy_given_boxed", "share of the boxed answers that are right"),
    Metric("eval/<set>/truncated_rate", "share of answers cut at the limit"),
    Metric("eval/<set>/mean_tokens", "mean answer length"),
    Metric("eval/<set>/items", "questions evaluated"),
)
"""Every metric a training run logs, in the order the progress line and the curves show them."""

PLOTTED: tuple[tuple[str, str], ...] = tuple((m.key, m.title) for m in METRICS if m.title)
"""``(key, panel title)`` of the training curves (the evaluation sets get panels of their own)."""

PROGRESS: tuple[tuple[str, str], ...] = tuple((m.label, m.key) for m in METRICS if m.label)
"""``(label, key)`` of the numbers in the progress line."""

SUMMARY: tuple[str, ...] = tuple(m.key for m in METRICS if m.summary)
"""The keys of the line ``spice train`` ends with."""


def describe(name: str) -> Metric | None:
    """The schema entry of a logged metric name, if there is one."""
    exact = [m for m in METRICS if m.key == name]
    if exact:
        return exact[0]
    return next((m for m in METRICS if m.matches(name)), None)


class MemoryWatch:
    """Peak resident memory (GB) of this process per phase, from the kernel's high-water mark.

    At every phase boundary the mark (``VmHWM``) is read and reset (``/proc/self/clear_refs``),
    so each reading belongs to the innermost phase open since the last boundary: a phase's peak
    is exact, and the peak of a phase around others (the rollout around generation) counts
    only what happened outside them. :meth:`take` returns the peaks since it was last called
    (one iteration's); :attr:`run` keeps them over the whole run. Where the mark cannot be
    reset (not Linux), nothing is recorded.
    """

    def __init__(self) -> None:
        self.run: dict[str, float] = {}
        self._window: dict[str, float] = {}
        self._open: list[str] = []
        self.available = _reset_peak_rss()

    def _mark(self) -> None:
        if not self.available:
            return
        peak = _peak_rss_gb()
        _reset_peak_rss()
        name = self._open[-1] if self._open else "other"
        for peaks in (self._window, self.run):
            peaks[name] = max(peaks.get(name, 0.0), peak)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Attribute the peak of the block (outside phases opened inside it) to ``name``."""
        self._mark()
        self._open.append(name)
        try:
            yield
        finally:
            self._mark()
            self._open.pop()

    def take(self) -> dict[str, float]:
        """The peaks per phase since the last call (the current phase's so far included)."""
        self._mark()
        out, self._window = self._window, {}
        return out


def _peak_rss_gb() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20  # kB
    return 0.0


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as clear:
            clear.write("5")  # the high-water mark back to the current resident size
    except OSError:
        return False
    return True


class Timer:
    """Seconds per phase of one iteration, and with a :class:`MemoryWatch` its peak memory."""

    def __init__(self, memory: MemoryWatch | None = None) -> None:
        self.seconds: dict[str, float] = {}
        self.start = time.perf_counter()
        self.memory = memory

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Add the time spent in the block to ``name``."""
        begin = time.perf_counter()
        try:
            if self.memory is None:
                yield
            else:
                with self.memory.phase(name):
                    yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - begin

    def totals(self) -> dict[str, float]:
        """The phases, ``verify`` as the rollout's time outside generation, and the whole."""
        out: dict[str, float] = dict(self.seconds)
        out["verify"] = max(0.0, out.get("rollout", 0.0) - out.get("generate", 0.0))
        out["iteration"] = time.perf_counter() - self.start
        out.pop("rollout", None)
        return out

    def peaks(self) -> dict[str, float]:
        """Peak memory (GB) per phase of the iteration (``verify``: the rollout outside
        generation), and ``iteration`` over all of it; empty without a watch."""
        if self.memory is None or not self.memory.available:
            return {}
        taken = self.memory.take()  # what ran between iterations is left to the run's peaks
        out = reported_peaks({name: taken[name] for name in ("generate", "rollout", "train",
                                                             "sync") if name in taken})
        out["iteration"] = max(out.values(), default=0.0)
        return out


def reported_peaks(peaks: Mapping[str, float]) -> dict[str, float]:
    """Peaks under the names a run reports them by: the rollout outside generation is
    ``verify``, as in the timings."""
    return {("verify" if name == "rollout" else name): value for name, value in peaks.items()}


def light(rollout: IterationRollout) -> IterationRollout:
    """The rollout with samples reduced to their text (small enough to gather across ranks)."""
    documents = []
    for document in rollout.documents:
        attempts = [replace(a, sample=a.text, answers=[ReasonerAnswer(r.text, r.verdict, r.reward)
                                                       for r in a.answers])
                    for a in document.attempts]
        turn = document.selection
        documents.append(DocumentRollout(document.document, document.task_format,
                                         observation("done"),
                                         attempts, document.reasoner_choice, None,
                                         replace(turn, sample=turn.text) if turn else None))
    return IterationRollout(documents)


def merge_iteration(parts: Sequence[Mapping[str, Any]], group_size: int) -> dict[str, float]:
    """One iteration's metrics from every rank's part (see the module docstring)."""
    rollout = IterationRollout([d for p in parts for d in p["rollout"].documents])
    out = rollout.metrics()
    out.update(_pass_rate_histogram(rollout, group_size))
    for role in ("challenger", "reasoner"):
        out.update(_role_metrics(parts, role))
    out.update(_train_metrics(parts))
    out.update(_time_metrics(parts))
    return out


def _pass_rate_histogram(rollout: IterationRollout, group_size: int) -> dict[str, float]:
    """Share of scored questions with k of G answers right, for every k."""
    scored: list[ChallengerAttempt] = [a for d in rollout.documents for a in d.kept
                                       if a.pass_rate is not None]
    return {f"pass_rate_hist/{k}of{group_size}": (
        sum(round((a.pass_rate or 0.0) * group_size) == k for a in scored) / len(scored)
        if scored else float("nan")) for k in range(group_size + 1)}


def _role_metrics(parts: Sequence[Mapping[str, Any]], role: str) -> dict[str, float]:
    groups, flat, dropped = (sum(column) for column in
                             zip(*(p["zero"].get(role, (0, 0, 0)) for p in parts), strict=True))
    samples = sum(p["generated"].get(f"{role}_samples", 0) for p in parts)
    tokens = sum(p["generated"].get(role, 0) for p in parts)
    truncated = sum(p["generated"].get(f"{role}_truncated", 0) for p in parts)
    return {f"{role}/groups": float(groups),
            f"{role}/zero_variance_fraction": flat / groups if groups else float("nan"),
            f"{role}/dropped_samples": float(dropped),
            f"{role}/completion_tokens": tokens / samples if samples else float("nan"),
            f"{role}/truncated_rate": truncated / samples if samples else float("nan")}


def _train_metrics(parts: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    out: dict[str, float] = {}
    trained = [p["train"] for p in parts if p["train"].get("tokens")]
    tokens = sum(t["tokens"] for t in trained)
    keys = {k for t in trained for k in t} - {"tokens", "loss", "grad_norm", "lr",
                                               "skipped_samples", "nonfinite_step"}
    for key in ("entropy", "clip_fraction", "ratio_mean"):  # present even when nothing ran
        out[f"train/{key}"] = float("nan")
    for key in sorted(keys):
        out[f"train/{key}"] = sum(t.get(key, 0.0) * t["tokens"] for t in trained) / tokens
    skipped = sum(p["train"].get("skipped_samples", 0.0) for p in parts)
    # nothing run because every sample had advantage 0: the loss is exactly 0
    out["train/loss"] = (sum(p["train"].get("loss", 0.0) for p in parts) if trained
                         else 0.0 if skipped else float("nan"))
    norms = [p["train"]["grad_norm"] for p in parts if "grad_norm" in p["train"]]
    out["train/grad_norm"] = norms[0] if norms else float("nan")
    out["train/completion_tokens"] = float(tokens)
    out["train/skipped_samples"] = float(skipped)
    rates = [p["train"]["lr"] for p in parts if "lr" in p["train"]]
    out["train/lr"] = rates[0] if rates else float("nan")
    out["untrainable_samples"] = float(sum(p["untrainable"] for p in parts))
    if any(p["train"].get("nonfinite_step") for p in parts):
        out["train/nonfinite_step"] = 1.0
    return out


def _time_metrics(parts: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    times = {key: max(p["times"].get(key, 0.0) for p in parts)
             for key in ("generate", "verify", "train", "sync", "iteration")}
    out = {f"time/{key}": value for key, value in times.items()}
    for key in sorted({k for p in parts for k in p.get("memory", {})}):  # the largest rank
        out[f"memory/{key}"] = max(p.get("memory", {}).get(key, 0.0) for p in parts)
    generated = sum(p["generated"].get(r, 0) for p in parts for r in ("challenger", "reasoner"))
    out["throughput/generated_tokens_per_s"] = generated / times["generate"] \
        if times["generate"] else float("nan")
    out["throughput/trained_tokens_per_s"] = (sum(p["trained_tokens"] for p in parts)
                                              / times["train"]) if times["train"] \
        else float("nan")
    return out


class ValidRateWatch:
    """Warns when the Challenger's valid-question rate stays under ``threshold`` for
    ``patience`` iterations in a row: a self-play run can collapse this way (an invalid-question
    penalty driving the valid rate to 0), and its invalid outputs by reason show why. It warns
    once per such stretch; a ``threshold`` of 0 never warns."""

    def __init__(self, threshold: float, patience: int) -> None:
        self.threshold, self.patience, self.low = threshold, patience, 0

    def check(self, iteration: int, metrics: Mapping[str, float]) -> str | None:
        """The warning to print after ``iteration`` (its metrics), if one is due."""
        rate = metrics.get("challenger/valid_rate")
        if rate is None or not math.isfinite(rate):  # a record without rollouts
            return None
        self.low = self.low + 1 if rate < self.threshold else 0
        if self.low != self.patience:
            return None
        reasons = sorted(((v, k.rsplit("/", 1)[1]) for k, v in metrics.items()
                          if k.startswith("challenger/invalid/") and math.isfinite(v) and v > 0),
                         reverse=True)[:3]
        why = ", ".join(f"{reason} {share:.0%}" for share, reason in reasons) or "none logged"
        return (f"warning: the Challenger's valid-question rate has stayed under "
                f"{self.threshold:.0%} for {self.patience} iterations (now {rate:.1%} at "
                f"iteration {iteration}); the largest reasons: {why}")


class Progress:
    """A rich progress bar with the latest key numbers (rank 0)."""

    def __init__(self, total: int, done: int, *, enabled: bool) -> None:
        self.enabled = enabled
        self.last_eval = ""
        if enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as Bar

            self.bar = Bar(TextColumn("[bold]spice train"), BarColumn(), MofNCompleteColumn(),
                           TimeElapsedColumn(), TimeRemainingColumn(),
                           TextColumn("{task.fields[status]}"))
            self.task = self.bar.add_task("train", total=total, completed=done, status="")

    def __enter__(self) -> Progress:
        if self.enabled:
            self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self.bar.stop()

    def advance(self, metrics: Mapping[str, float]) -> None:
        """One iteration done: advance and show its numbers."""
        if self.enabled:
            self.bar.update(self.task, advance=1, status=self.status(metrics))

    def show(self, metrics: Mapping[str, float]) -> None:
        """Show metrics without advancing (the evaluation before the first iteration)."""
        if self.enabled:
            self.bar.update(self.task, status=self.status(metrics))

    def status(self, metrics: Mapping[str, float]) -> str:
        """The numbers shown: :data:`PROGRESS`, then the latest evaluation accuracies."""
        if any(key.startswith("eval/") for key in metrics):
            self.last_eval = "  ".join(
                f"{key.split('/')[1]} {metrics[key]:.2f}" for key in metrics
                if key.startswith("eval/") and key.endswith("/accuracy")
                and math.isfinite(metrics[key]))
        status = "  ".join(f"{label} {metrics[key]:.2f}" for label, key in PROGRESS
                           if key in metrics and math.isfinite(metrics[key]))
        return f"{status}  eval: {self.last_eval}" if self.last_eval else status
