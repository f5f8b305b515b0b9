"""Reading records from corpus sources: JSON Lines, JSON, Parquet, CSV and plain-text files,
folders of them, and Hugging Face datasets; malformed records and unreadable files are skipped
and counted in :class:`CorpusStats`, never fatal."""

from __future__ import annotations

import csv
import itertools
import json
import logging
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger("spice_env.corpus")

TEXT_FIELDS = ("text", "content", "document", "passage", "body", "story", "context")
"""Field names tried, in order, when records do not name their text field."""

SUPPORTED_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv", ".txt", ".md")
_MAX_REPORTED_ERRORS = 50


class CorpusError(ValueError):
    """A corpus spec or source cannot give any usable document."""


@dataclass
class CorpusStats:
    """What happened while loading: counts of everything kept, split, skipped and why."""

    files_read: int = 0
    records_read: int = 0
    documents: int = 0
    segmented: int = 0
    empty_skipped: int = 0
    duplicates_skipped: int = 0
    malformed_skipped: int = 0
    unreadable_files: int = 0
    errors: list[str] = field(default_factory=list)

    def record_error(self, message: str) -> None:
        """Remember a problem (the first few are kept verbatim) and log it."""
        logger.warning("corpus: %s", message)
        if len(self.errors) < _MAX_REPORTED_ERRORS:
            self.errors.append(message)

    def merge(self, other: CorpusStats) -> None:
        """Add another load's counts to these."""
        for name in (
            "files_read", "records_read", "documents", "segmented", "empty_skipped",
            "duplicates_skipped", "malformed_skipped", "unreadable_files",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for message in other.errors:
            if len(self.errors) < _MAX_REPORTED_ERRORS:
                self.errors.append(message)


@dataclass
class Record:
    text: Any
    source: str
    metadata: dict[str, Any]


def _short_str(value: Any) -> bool:
    return isinstance(value, str) and len(value) <= 1000


def _pick_text(row: Mapping[str, Any], text_field: str | None) -> tuple[Any, dict[str, Any]]:
    names = (text_field,) if text_field else TEXT_FIELDS
    for name in names:
        if name in row:
            meta = {
                k: v for k, v in row.items()
                if k != name and (isinstance(v, int | float | bool) or _short_str(v))
            }
            return row[name], meta
    wanted = repr(text_field) if text_field else "one of " + ", ".join(TEXT_FIELDS)
    raise KeyError(f"record has no text field ({wanted}); fields: {sorted(row)[:10]}")


def rows_to_records(
    rows: Iterable[Any], source: str, text_field: str | None, stats: CorpusStats
) -> Iterator[Record]:
    from spice_env.corpus import Document  # the corpus module builds on this one

    for index, row in enumerate(rows):
        stats.records_read += 1
        where = f"{source} record {index}"
        if isinstance(row, str):
            yield Record(row, where, {})
            continue
        if isinstance(row, Document):
            yield Record(row.text, row.source, dict(row.metadata))
            continue
        if not isinstance(row, Mapping):
            stats.malformed_skipped += 1
            stats.record_error(f"{where}: expected a string or an object, got {type(row).__name__}")
            continue
        try:
            text, meta = _pick_text(row, text_field)
        except KeyError as exc:
            stats.malformed_skipped += 1
            stats.record_error(f"{where}: {exc.args[0]}")
            continue
        yield Record(text, str(row.get("source", source)), meta)


def read_jsonl(path: Path, text_field: str | None, stats: CorpusStats) -> Iterator[Record]:
    with path.open("r", encoding="utf-8-sig", errors="replace") as handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                stats.records_read += 1
                stats.malformed_skipped += 1
                stats.record_error(f"{path}:{lineno}: malformed JSON line ({exc.msg})")
                continue
            yield from rows_to_records([row], f"{path}:{lineno}", text_field, stats)


def _read_json(path: Path, text_field: str | None, stats: CorpusStats) -> Iterator[Record]:
    data = json.loads(path.read_text(encoding="utf-8-sig", errors="replace"))
    if isinstance(data, Mapping):
        for key in ("documents", "data", "rows", "examples"):
            if isinstance(data.get(key), list):
                data = data[key]
                break
        else:
            data = [data]
    if not isinstance(data, list):
        raise ValueError("expected a list of records or an object holding one")
    yield from rows_to_records(data, str(path), text_field, stats)


def _read_parquet(path: Path, text_field: str | None, stats: CorpusStats) -> Iterator[Record]:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    yield from rows_to_records(table.to_pylist(), str(path), text_field, stats)


def _read_csv(path: Path, text_field: str | None, stats: CorpusStats) -> Iterator[Record]:
    csv.field_size_limit(1 << 30)
    with path.open("r", encoding="utf-8-sig", errors="replace", newline="") as handle:
        yield from rows_to_records(csv.DictReader(handle), str(path), text_field, stats)


def _read_plain(path: Path, text_field: str | None, stats: CorpusStats) -> Iterator[Record]:
    stats.records_read += 1
    yield Record(path.read_text(encoding="utf-8-sig", errors="replace"), str(path), {})


_READERS: dict[str, Callable[[Path, str | None, CorpusStats], Iterator[Record]]] = {
    ".jsonl": read_jsonl,
    ".json": _read_json,
    ".parquet": _read_parquet,
    ".csv": _read_csv,
    ".txt": _read_plain,
    ".md": _read_plain,
}


def read_path(path: Path, text_field: str | None, stats: CorpusStats) -> Iterator[Record]:
    if not path.exists():
        raise CorpusError(f"corpus path does not exist: {path}")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in _READERS)
        if not files:
            raise CorpusError(
                f"corpus directory {path} holds no {', '.join(SUPPORTED_SUFFIXES)} file"
            )
    elif path.suffix not in _READERS:
        raise CorpusError(
            f"unsupported corpus file type {path.suffix!r} ({path}); "
            f"supported: {', '.join(SUPPORTED_SUFFIXES)}"
        )
    else:
        files = [path]
    for file in files:
        try:
            # materialise per file so a failure mid-file is attributed and the rest continues
            records = list(_READERS[file.suffix](file, text_field, stats))
        except Exception as exc:  # pyarrow, csv and json raise their own types on corrupt files
            stats.unreadable_files += 1
            stats.record_error(f"{file}: unreadable ({type(exc).__name__}: {exc})")
            continue
        stats.files_read += 1
        yield from records


def read_hf(spec: str, text_field: str | None, limit: int | None, stats: CorpusStats
             ) -> Iterator[Record]:
    body = spec[len("hf:"):]
    name, split = body, "train"
    head, sep, tail = body.rpartition(":")
    if sep and head and re.fullmatch(r"[A-Za-z0-9_.\-\[\]%+]+", tail):
        name, split = head, tail
    if not name:
        raise CorpusError(
            f"empty dataset id in corpus spec {spec!r}; use 'hf:<dataset id>[:split]'")
    try:
        import datasets
    except ImportError as exc:  # pragma: no cover - datasets is a dependency
        raise CorpusError("the 'datasets' package is needed for hf: corpora") from exc
    try:
        dataset = datasets.load_dataset(name, split=split, streaming=True)
    except Exception as exc:
        raise CorpusError(f"could not load dataset {name!r} (split {split!r}): {exc}") from exc
    stats.files_read += 1
    rows = dataset if limit is None else itertools.islice(dataset, limit)
    yield from rows_to_records(rows, f"hf:{name}:{split}", text_field, stats)


# --- dataset entries ------------------------------------------------------------------------------

def valid_weight(weight: Any) -> bool:
    """Whether ``weight`` can weigh a part of a mixture: a finite number >= 0 (not a bool)."""
    return (not isinstance(weight, bool) and isinstance(weight, int | float) and weight >= 0
            and math.isfinite(weight))


ENTRY_KEYS = ("hf", "config", "split", "text", "weight", "max_records")
"""The keys of a corpus entry given as a mapping (``hf`` is required)."""
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class DatasetEntry:
    """One dataset of a corpus: ``{hf: <hub id, local folder or datasets object>, config: <name>,
    split: <split>, text: <field or "{a}\\n\\n{b}" template>, weight: <w>, max_records: <n>}``.

    Attributes:
        source: a hub id, a local dataset folder (files with a README ``configs:`` section, or a
            folder written by ``save_to_disk``), or a ``datasets`` object.
        config: the dataset's config name (None: its default).
        split: the split (``train`` unless given).
        text: the field holding the text, or a template naming fields in braces; None: the first
            of :data:`TEXT_FIELDS` present.
        weight: the entry's weight in a mixture.
        max_records: read at most this many records (None: the loader's limit, else all).
    """

    source: Any
    config: str | None = None
    split: str = "train"
    text: str | None = None
    weight: float = 1.0
    max_records: int | None = None

    @classmethod
    def parse(cls, spec: Mapping[str, Any]) -> DatasetEntry:
        """Check a mapping's keys and values (a :class:`CorpusError` names the problem)."""
        unknown = sorted(set(map(str, spec)) - set(ENTRY_KEYS))
        if unknown:
            raise CorpusError(f"corpus entry: unknown key(s) {', '.join(unknown)}; an entry has "
                              f"{', '.join(ENTRY_KEYS)}")
        source = spec.get("hf")
        if (isinstance(source, str) and not source.strip()) or source is None:
            raise CorpusError("corpus entry: 'hf' must name a dataset (hub id or folder)")
        for key in ("config", "split", "text"):
            if spec.get(key) is not None and (not isinstance(spec[key], str)
                                              or not spec[key].strip()):
                raise CorpusError(f"corpus entry {source!r}: {key} must be a non-empty string, "
                                  f"got {spec[key]!r}")
        weight = spec.get("weight", 1.0)
        if not valid_weight(weight):
            raise CorpusError(f"corpus entry {source!r}: weight must be a finite number >= 0, "
                              f"got {weight!r}")
        most = spec.get("max_records")
        if most is not None and (isinstance(most, bool) or not isinstance(most, int)
                                 or most < 1):
            raise CorpusError(f"corpus entry {source!r}: max_records must be an integer >= 1, "
                              f"got {most!r}")
        text = spec.get("text")
        if text is not None and "{" in text:
            bad = [name for name in _PLACEHOLDER.findall(text)
                   if not _FIELD_NAME.fullmatch(name)]
            if bad or text.count("{") != len(_PLACEHOLDER.findall(text)):
                raise CorpusError(f"corpus entry {source!r}: text template {text!r} may only "
                                  "name fields in braces, such as '{question}\\n\\n{answer}'")
        return cls(source=source, config=spec.get("config"), split=spec.get("split") or "train",
                   text=text, weight=float(weight), max_records=most)

    @property
    def label(self) -> str:
        """How the entry is named in the corpus and its documents' sources."""
        where = self.source if isinstance(self.source, str) else type(self.source).__name__
        config = f"/{self.config}" if self.config else ""
        return f"hf:{where}{config}:{self.split}"


def is_entry(spec: Any) -> bool:
    """Whether ``spec`` is a corpus entry: a mapping with an ``hf`` key, or a datasets object."""
    return (isinstance(spec, Mapping) and "hf" in spec) or _is_datasets_object(spec)


def as_entry(spec: Any) -> DatasetEntry:
    """A corpus entry from a mapping or a datasets object (see :func:`is_entry`)."""
    return DatasetEntry.parse({"hf": spec} if _is_datasets_object(spec) else spec)


def _is_datasets_object(value: Any) -> bool:
    module = type(value).__module__
    return module.startswith("datasets.") and type(value).__name__ in (
        "Dataset", "IterableDataset", "DatasetDict", "IterableDatasetDict")


def _saved_to_disk(path: Path) -> bool:
    return path.is_dir() and any((path / name).is_file() for name in (
        "dataset_info.json", "state.json", "dataset_dict.json"))


def _entry_rows(entry: DatasetEntry) -> Iterable[Any]:
    """The rows of an entry's split."""
    try:
        import datasets
    except ImportError as exc:  # pragma: no cover - datasets is a dependency
        raise CorpusError("the 'datasets' package is needed for dataset corpora") from exc
    found: Any = entry.source
    if isinstance(found, str):
        path = Path(found).expanduser()
        try:
            if _saved_to_disk(path):
                found = datasets.load_from_disk(str(path))
            else:
                return datasets.load_dataset(found, entry.config, split=entry.split,
                                             streaming=True)
        except Exception as exc:  # the hub, a missing config or split: one message
            config = f", config {entry.config!r}" if entry.config else ""
            raise CorpusError(f"could not load dataset {found!r}{config} (split "
                              f"{entry.split!r}): {' '.join(str(exc).split())[:500]}") from exc
    if isinstance(found, Mapping) or type(found).__name__.endswith("DatasetDict"):
        if entry.split not in found:
            raise CorpusError(f"dataset {entry.label}: no split {entry.split!r}; it has "
                              f"{', '.join(map(str, found))}")
        found = found[entry.split]
    return found


def read_entry(entry: DatasetEntry, text_field: str | None, limit: int | None,
               stats: CorpusStats) -> Iterator[Record]:
    """The records of a dataset entry (its text field or template, at most ``max_records``)."""
    rows = _entry_rows(entry)
    stats.files_read += 1
    most = entry.max_records or limit
    if most is not None:
        rows = itertools.islice(rows, most)
    if entry.text is not None and "{" in entry.text:
        yield from _templated(rows, entry.text, entry.label, stats)
    else:
        yield from rows_to_records(rows, entry.label, entry.text or text_field, stats)


def _fill(template: str, values: Mapping[str, str]) -> str:
    """``template`` with each ``{field}`` replaced by its value (nothing else is interpreted)."""
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


def _templated(rows: Iterable[Any], template: str, source: str, stats: CorpusStats
               ) -> Iterator[Record]:
    """Records whose text fills ``template``'s ``{field}`` placeholders from each row."""
    names = _PLACEHOLDER.findall(template)
    for index, row in enumerate(rows):
        stats.records_read += 1
        where = f"{source} record {index}"
        missing = [n for n in names if not isinstance(row, Mapping) or row.get(n) is None]
        if missing:
            stats.malformed_skipped += 1
            stats.record_error(f"{where}: no field(s) {', '.join(missing)} for the text template")
            continue
        text = _fill(template, {name: str(row[name]) for name in names})
        meta = {k: v for k, v in row.items()
                if isinstance(v, int | float | bool) or _short_str(v)}
        yield Record(text, source, meta)
