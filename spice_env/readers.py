"""Reading records from corpus sources: JSON Lines, JSON, Parquet, CSV and plain-text files,
folders of them, and Hugging Face datasets; malformed records and unreadable files are skipped
and counted in :class:`CorpusStats`, never fatal."""

from __future__ import annotations

import csv
import itertools
import json
import logging
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
