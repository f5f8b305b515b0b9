"""From raw rows to items: question, options and gold answer read as each spec says; the
seeded subsets; question sets for the trainer's in-loop evaluation."""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from benchmarks.evaluation.sources import read_rows
from benchmarks.evaluation.specs import (
    BENCHMARKS,
    BenchmarkSpec,
    BenchmarkUnavailable,
)
from spice_env.tasks import AnswerType, Task
from spice_env.verify import extract_boxed


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
        loaded = load_benchmark(BENCHMARKS[name], limit=limit, seed=seed)
        out[name] = [EvalQuestion(item.id, item.task()) for item in loaded.items]
    return out
