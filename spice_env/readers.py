"""Reading records from corpus sources: JSON Lines, JSON, Parquet, CSV and plain-text files,
folders of them, and Hugging Face datasets; malformed records, unreadable files, entries of a
folder that are not plain corpus files, and files or records over the byte caps of
:class:`~spice_env.files.ReadLimits` are skipped and counted in :class:`CorpusStats`, never
fatal."""

from __future__ import annotations

import csv
import itertools
import json
import logging
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, BinaryIO

from spice_env.files import (
    DEFAULT_LIMITS,
    ReadLimits,
    UnusablePathError,
    corpus_files,
    numbered_lines,
    read_bounded,
)
from spice_env.text import parse_json

logger = logging.getLogger("spice_env.corpus")

TEXT_FIELDS = ("text", "content", "document", "passage", "body", "story", "context")
"""Field names tried, in order, when records do not name their text field."""

SUPPORTED_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv", ".txt", ".md")
_MAX_REPORTED_ERRORS = 50


class CorpusError(ValueError):
    """A corpus spec or source cannot give any usable document."""


_SKIP_WORDS = (
    ("empty_skipped", "empty"), ("duplicates_skipped", "duplicate"),
    ("malformed_skipped", "malformed"), ("oversized_records_skipped", "oversized records"),
    ("unreadable_files", "unreadable files"), ("oversized_files_skipped", "oversized files"),
    ("special_files_skipped", "special files"), ("links_skipped", "links"),
    ("unknown_files_skipped", "files of unknown type"),
)
_PROBLEMS = ("malformed_skipped", "oversized_records_skipped", "unreadable_files",
             "oversized_files_skipped", "special_files_skipped", "links_skipped",
             "unknown_files_skipped")


@dataclass
class CorpusStats:
    """What happened while loading: counts of everything kept, split, skipped and why.

    Attributes:
        files_read: files (and datasets) read.
        records_read: records read, kept or not.
        documents: documents kept.
        segmented: texts split into several documents.
        empty_skipped: records whose text is empty.
        duplicates_skipped: segments whose text was already kept.
        malformed_skipped: records that are not JSON, lack a text field, or hold no string.
        oversized_records_skipped: records over ``max_record_bytes`` (JSON Lines and CSV lines,
            plain-text files).
        unreadable_files: files that could not be read or parsed.
        oversized_files_skipped: files over ``max_file_bytes``, never opened.
        special_files_skipped: FIFOs, sockets and device files in a folder, never opened.
        links_skipped: links in a folder that are broken or loop, lead outside the folder or to
            a folder, or to a file read already (hard links included).
        unknown_files_skipped: files in a folder without a supported suffix.
        errors: the first 50 problems, in words.
    """

    files_read: int = 0
    records_read: int = 0
    documents: int = 0
    segmented: int = 0
    empty_skipped: int = 0
    duplicates_skipped: int = 0
    malformed_skipped: int = 0
    oversized_records_skipped: int = 0
    unreadable_files: int = 0
    oversized_files_skipped: int = 0
    special_files_skipped: int = 0
    links_skipped: int = 0
    unknown_files_skipped: int = 0
    errors: list[str] = field(default_factory=list)

    def record_error(self, message: str) -> None:
        """Remember a problem (the first few are kept verbatim) and log it."""
        logger.warning("corpus: %s", message)
        if len(self.errors) < _MAX_REPORTED_ERRORS:
            self.errors.append(message)

    def merge(self, other: CorpusStats) -> None:
        """Add another load's counts to these."""
        for counter in fields(self):
            if counter.name != "errors":
                setattr(self, counter.name,
                        getattr(self, counter.name) + getattr(other, counter.name))
        for message in other.errors:
            if len(self.errors) < _MAX_REPORTED_ERRORS:
                self.errors.append(message)

    @property
    def has_problems(self) -> bool:
        """Whether anything was skipped for a reason other than being empty or a duplicate."""
        return any(getattr(self, name) for name in _PROBLEMS)

    def summary(self) -> str:
        """The counts in words: ``"12 records read; skipped: 2 malformed, 1 unreadable files"``
        (only the non-zero skip counts are named)."""
        skipped = [f"{getattr(self, name)} {words}" for name, words in _SKIP_WORDS
                   if getattr(self, name)]
        return f"{self.records_read} records read; skipped: {', '.join(skipped) or 'nothing'}"


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


def _text_lines(handle: BinaryIO, path: Path, limit: int | None, stats: CorpusStats
                ) -> Iterator[tuple[int, str]]:
    """The numbered lines of a UTF-8 file; lines over ``limit`` bytes are skipped and counted."""
    for lineno, line in numbered_lines(handle, limit):
        if line is None:
            stats.records_read += 1
            stats.oversized_records_skipped += 1
            stats.record_error(f"{path}:{lineno}: line longer than {limit} bytes "
                               "(max_record_bytes), skipped")
        else:
            yield lineno, line


def read_jsonl(path: Path, text_field: str | None, stats: CorpusStats,
               limits: ReadLimits = DEFAULT_LIMITS) -> Iterator[Record]:
    """The records of a JSON Lines file, one per line; malformed and overlong lines are skipped
    and counted."""
    with path.open("rb") as handle:
        for lineno, line in _text_lines(handle, path, limits.max_record_bytes, stats):
            if not line.strip():
                continue
            try:
                row = parse_json(line)
            except ValueError as exc:  # also a number or nesting that json cannot take
                stats.records_read += 1
                stats.malformed_skipped += 1
                why = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
                stats.record_error(f"{path}:{lineno}: malformed JSON line ({why})")
                continue
            yield from rows_to_records([row], f"{path}:{lineno}", text_field, stats)


def _decoded(path: Path, limit: int | None) -> str | None:
    data = read_bounded(path, limit)
    return None if data is None else data.decode("utf-8-sig", errors="replace")


def _read_json(path: Path, text_field: str | None, stats: CorpusStats, limits: ReadLimits
               ) -> Iterator[Record]:
    text = _decoded(path, limits.max_file_bytes)
    if text is None:
        raise ValueError(f"the file grew past {limits.max_file_bytes} bytes (max_file_bytes)")
    data = parse_json(text)
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


def _read_parquet(path: Path, text_field: str | None, stats: CorpusStats, limits: ReadLimits
                  ) -> Iterator[Record]:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    yield from rows_to_records(table.to_pylist(), str(path), text_field, stats)


def _read_csv(path: Path, text_field: str | None, stats: CorpusStats, limits: ReadLimits
              ) -> Iterator[Record]:
    csv.field_size_limit(limits.max_record_bytes or 1 << 30)  # a field spanning many lines
    with path.open("rb") as handle:
        lines = (line for _, line in _text_lines(handle, path, limits.max_record_bytes, stats))
        yield from rows_to_records(csv.DictReader(lines), str(path), text_field, stats)


def _read_plain(path: Path, text_field: str | None, stats: CorpusStats, limits: ReadLimits
                ) -> Iterator[Record]:
    stats.records_read += 1
    limit = limits.max_record_bytes
    text = None if limit is not None and path.stat().st_size > limit else _decoded(path, limit)
    if text is None:
        stats.oversized_records_skipped += 1
        stats.record_error(f"{path}: a plain-text file (one record) over {limit} bytes "
                           "(max_record_bytes), skipped")
        return
    yield Record(text, str(path), {})


_READERS: dict[str, Callable[[Path, str | None, CorpusStats, ReadLimits], Iterator[Record]]] = {
    ".jsonl": read_jsonl,
    ".json": _read_json,
    ".parquet": _read_parquet,
    ".csv": _read_csv,
    ".txt": _read_plain,
    ".md": _read_plain,
}


_SKIP_COUNTERS = {"special": "special_files_skipped", "link": "links_skipped",
                  "unknown": "unknown_files_skipped", "unreadable": "unreadable_files"}


def _corpus_files(path: Path, stats: CorpusStats) -> list[Path]:
    """The files to read for a corpus path, a folder's other entries counted in ``stats``."""
    try:
        files, skipped = corpus_files(path, SUPPORTED_SUFFIXES)
    except UnusablePathError as exc:
        raise CorpusError(str(exc)) from None
    for entry in skipped:
        counter = _SKIP_COUNTERS[entry.kind]
        setattr(stats, counter, getattr(stats, counter) + 1)
        if entry.kind != "unknown":  # a README or a licence file is no problem to report
            stats.record_error(f"{entry.path}: {entry.reason}; skipped")
    return files


def _read_file(file: Path, text_field: str | None, stats: CorpusStats, limits: ReadLimits
               ) -> list[Record] | None:
    """All records of one file (None: it was skipped, and counted)."""
    try:
        size = file.stat().st_size
        if limits.max_file_bytes is not None and size > limits.max_file_bytes:
            stats.oversized_files_skipped += 1
            stats.record_error(f"{file}: {size} bytes, over {limits.max_file_bytes} "
                               "(max_file_bytes); skipped")
            return None
        # materialise per file so a failure mid-file is attributed and the rest continues
        return list(_READERS[file.suffix](file, text_field, stats, limits))
    except Exception as exc:  # pyarrow, csv and json raise their own types on corrupt files
        stats.unreadable_files += 1
        stats.record_error(f"{file}: unreadable ({type(exc).__name__}: {exc})")
        return None


def read_path(path: Path, text_field: str | None, stats: CorpusStats,
              limits: ReadLimits = DEFAULT_LIMITS) -> Iterator[Record]:
    """The records of a corpus file, or of every supported file under a folder (see
    :func:`~spice_env.files.find_files`), within ``limits``.

    Raises:
        CorpusError: a missing path, a FIFO, socket or device file (never opened), an
            unsupported suffix, or a folder without a supported file.
    """
    for file in _corpus_files(path, stats):
        records = _read_file(file, text_field, stats, limits)
        if records is not None:
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


def mixture_shares(weights: Sequence[float]) -> list[float]:
    """``weights`` scaled to sum to 1, without overflow for weights near the largest float; an
    empty list when a weight is not valid (see :func:`valid_weight`) or none is > 0."""
    top = max(weights, default=0.0)
    if not all(valid_weight(w) for w in weights) or top <= 0:
        return []
    scaled = [w / top for w in weights]
    total = math.fsum(scaled)
    return [w / total for w in scaled]


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
