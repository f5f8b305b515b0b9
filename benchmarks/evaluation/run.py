"""Running the protocol: the settings, the prompts, generation, verification and per-benchmark
summaries; a time estimate for small CPUs."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from agents.base import SamplingConfig
from benchmarks.evaluation.items import (
    EvalItem,
    LoadedBenchmark,
    load_benchmark,
)
from benchmarks.evaluation.sources import hub_reachable, offline_mode
from benchmarks.evaluation.specs import (
    BenchmarkSpec,
    BenchmarkUnavailable,
)
from spice_env.prompting import PromptStyle, reasoner_prompt
from spice_env.verify import Verifier


class EvalSettings(BaseModel):
    """How a model is evaluated (recorded in every report)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    prompt_style: PromptStyle = Field(default="paper", description="The Reasoner prompt: "
                                      "`paper` (reason step by step, answer in \\boxed{}) or "
                                      "`compact` (the short prompt with a worked example).")
    max_new_tokens: int = Field(default=2048, ge=1, description="Completion length limit.")
    batch_size: int = Field(default=32, ge=1, description="Questions sent to the backend at "
                            "once (each with all its samples).")
    limit: int | None = Field(default=None, ge=1, description="Items per benchmark (a seeded "
                              "random subset); all when None.")
    seed: int = Field(default=0, description="Seed of the subset and of sampled decoding.")
    template: Literal["auto", "chat", "plain"] = Field(default="auto", description="Chat "
                                                       "template or plain prompts (applied by "
                                                       "the agent; recorded here).")
    dtype: str = Field(default="auto", description="The dtype the model generated in (applied "
                       "when it is loaded; recorded here).")
    from_run: bool = Field(default=False, description="Whether the prompt style, template and "
                           "dtype not given on the command line came from the evaluated run's "
                           "config.")


Generate = Callable[[Sequence[Mapping[str, Any]], SamplingConfig], Sequence[Sequence[Any]]]
"""Generation for :func:`evaluate`: reasoner observations and sampling in, for each observation
the sampled completions (:class:`~agents.base.Generation` objects or plain strings) out."""


def agent_generate(agent: Any) -> Generate:
    """Adapt a :class:`~agents.self_play.SelfPlayAgent` (or any object with its ``sampling``
    mapping and ``generate(observations, n)``) to :data:`Generate`."""
    def generate(observations: Sequence[Mapping[str, Any]], sampling: SamplingConfig
                 ) -> Sequence[Sequence[Any]]:
        agent.sampling["reasoner"] = sampling
        return agent.generate(list(observations), sampling.n)

    return generate


def observation(item: EvalItem, style: PromptStyle) -> dict[str, Any]:
    """The Reasoner observation of an item (question only, zero-shot)."""
    rendered = reasoner_prompt(item.reasoner_question(), style)
    return {"role": "reasoner", "question": item.reasoner_question(),
            "messages": [dict(m) for m in rendered.messages],
            "assistant_prefix": rendered.assistant_prefix, "prompt": rendered.text}


def _response_record(generation: Any, verdict: Any) -> dict[str, Any]:
    text = generation if isinstance(generation, str) else generation.text
    record: dict[str, Any] = {"text": text, "extracted": verdict.extracted,
                              "outcome": verdict.outcome, "correct": verdict.correct}
    if not isinstance(generation, str):
        # a chat API may not report token ids: no count rather than a zero
        record["tokens"] = len(generation.completion_ids) if generation.completion_ids else None
        record["finish_reason"] = generation.finish_reason
    return record


def _summarise(records: list[dict[str, Any]]) -> dict[str, Any]:
    scores = [r["score"] for r in records]
    responses = [resp for r in records for resp in r["responses"]]
    n = len(scores)
    accuracy = sum(scores) / n if n else None
    # the spread of the per-item scores (0/1 for greedy items, a mean for sampled ones)
    stderr = (math.sqrt(sum((x - accuracy) ** 2 for x in scores) / n / n)
              if accuracy is not None and n else None)
    tokens = [resp["tokens"] for resp in responses if resp.get("tokens") is not None]
    return {
        "items": n,
        "accuracy": accuracy,
        "stderr": stderr,
        "answered_rate": (sum(bool((resp["extracted"] or "").strip()) for resp in responses)
                          / len(responses) if responses else None),
        "truncated_rate": (sum(resp.get("finish_reason") == "length" for resp in responses)
                           / len(responses) if responses else None),
        "mean_tokens": sum(tokens) / len(tokens) if tokens else None,
    }


def summary(benchmarks: Mapping[str, Mapping[str, Any]],
            names: Sequence[str] | None = None) -> dict[str, float | None]:
    """Math average, general average and overall mean over the benchmarks that ran (or over
    ``names``)."""
    chosen = [b for name, b in benchmarks.items() if (names is None or name in names)
              and b.get("accuracy") is not None]

    def mean(values: list[float]) -> float | None:
        return sum(values) / len(values) if values else None

    return {
        "math": mean([b["accuracy"] for b in chosen if b["category"] == "math"]),
        "general": mean([b["accuracy"] for b in chosen if b["category"] == "general"]),
        "overall": mean([b["accuracy"] for b in chosen]),
    }


def evaluate(generate: Generate, specs: Sequence[BenchmarkSpec], settings: EvalSettings, *,
             verifier: Verifier | None = None, progress: bool = True,
             rows: Mapping[str, Sequence[Mapping[str, Any]]] | None = None
             ) -> dict[str, Any]:
    """Run benchmarks and return the report (a JSON-ready dict).

    Args:
        generate: the model (see :func:`agent_generate`).
        specs: the benchmarks (see :func:`suite_benchmarks`).
        settings: prompt style, length limit, batch size, subset.
        verifier: the checker (a default :class:`~spice_env.verify.Verifier` when None).
        progress: show a progress bar.
        rows: raw rows by benchmark name, instead of each benchmark's source.
    """
    own_verifier = verifier is None
    checker = verifier or Verifier()
    loaded: dict[str, LoadedBenchmark] = {}
    report: dict[str, Any] = {"settings": settings.model_dump(), "benchmarks": {}}
    for spec in specs:
        entry: dict[str, Any] = {"title": spec.title, "category": spec.category,
                                 "source": spec.source, "location": spec.location}
        try:
            loaded[spec.name] = load_benchmark(spec, limit=settings.limit, seed=settings.seed,
                                               rows=(rows or {}).get(spec.name))
        except BenchmarkUnavailable as exc:
            entry.update(available=False, message=str(exc), accuracy=None)
        report["benchmarks"][spec.name] = entry
    total = sum(len(b.items) * b.spec.samples for b in loaded.values())
    try:
        with _progress(total, progress) as advance:
            for name, bench in loaded.items():
                report["benchmarks"][name].update(
                    _run_benchmark(bench, generate, settings, checker, advance))
    finally:
        if own_verifier:
            checker.close()
    report["summary"] = summary(report["benchmarks"])
    return report


def _run_benchmark(bench: LoadedBenchmark, generate: Generate, settings: EvalSettings,
                   checker: Verifier, advance: Callable[[int, str], None]) -> dict[str, Any]:
    spec = bench.spec
    sampling = SamplingConfig(temperature=spec.temperature, top_p=spec.top_p,
                              max_new_tokens=settings.max_new_tokens, n=spec.samples,
                              seed=settings.seed)
    started = time.perf_counter()
    records: list[dict[str, Any]] = []
    for start in range(0, len(bench.items), settings.batch_size):
        chunk = bench.items[start : start + settings.batch_size]
        outputs = generate([observation(item, settings.prompt_style) for item in chunk],
                           sampling)
        if len(outputs) != len(chunk) or any(len(row) != spec.samples for row in outputs):
            raise RuntimeError(f"the model returned {[len(row) for row in outputs]} samples for "
                               f"{len(chunk)} questions; expected {spec.samples} each")
        pairs = [(item.task(), g if isinstance(g, str) else g.text)
                 for item, samples in zip(chunk, outputs, strict=True) for g in samples]
        verdicts = iter(checker.verify_many(pairs))
        for item, samples in zip(chunk, outputs, strict=True):
            responses = [_response_record(g, next(verdicts)) for g in samples]
            score = sum(r["correct"] for r in responses) / len(responses)
            records.append({"id": item.id, "question": item.reasoner_question(),
                            "answer": item.answer, "answer_type": item.answer_type,
                            "score": score, "responses": responses})
        advance(len(chunk) * spec.samples, spec.title)
    result = {"available": True, "total_items": bench.total, "skipped_rows": len(bench.skipped),
              "skipped_examples": bench.skipped[:5], "samples": spec.samples,
              "temperature": spec.temperature, **_summarise(records),
              "seconds": round(time.perf_counter() - started, 2), "records": records}
    return result


class _progress:
    """A rich progress bar over generated samples (a no-op when disabled)."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.enabled = total, enabled
        self.bar: Any = None
        self.task: Any = None

    def __enter__(self) -> Callable[[int, str], None]:
        if self.enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(),
                                MofNCompleteColumn(), TimeElapsedColumn(),
                                TimeRemainingColumn())
            self.bar.start()
            self.task = self.bar.add_task("eval", total=self.total)

        def advance(count: int, title: str) -> None:
            if self.bar is not None:
                self.bar.update(self.task, advance=count, description=title)

        return advance

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()



_CPU_DECODE_STEP = (0.067, 0.006)
"""Seconds per decoding step of a 0.63B model on a 2-core bf16 CPU: fixed, and per row of the
batch (measured: about 15 tokens/s for one row, 124 tokens/s for 32 rows)."""


def cpu_eval_seconds(specs: Sequence[BenchmarkSpec], settings: EvalSettings,
                     parameters: int | None = None, *, hub: bool | None = None
                     ) -> tuple[float, int]:
    """An upper estimate of an evaluation's time on a small CPU, and its question count.

    Every batch is counted as running to ``max_new_tokens``; a model's size scales the step
    time (0.63B when unknown). Hub benchmarks count only when the hub answers (``hub``: whether
    it does; asked when None and needed).
    """
    fixed, per_row = _CPU_DECODE_STEP
    scale = (parameters or 6.3e8) / 6.3e8
    if hub is None and any(spec.source == "hub" for spec in specs):
        hub = offline_mode() is not None or hub_reachable(timeout_s=3.0) is None
    seconds, questions = 0.0, 0
    for spec in specs:
        if spec.source == "hub" and not hub:
            continue
        items = spec.size or settings.limit or 100
        if settings.limit is not None:
            items = min(items, settings.limit)
        questions += items
        full, rest = divmod(items, settings.batch_size)
        rows = [settings.batch_size * spec.samples] * full + ([rest * spec.samples] if rest
                                                              else [])
        seconds += sum(settings.max_new_tokens * (fixed + per_row * r) * scale for r in rows)
    return seconds, questions
