"""Corpora of documents: loading, segmenting, de-duplicating, seeded sampling and sharding.

``load_corpus(spec)`` accepts

* ``"embedded"`` — the offline corpus (a 50/50 mixture of math word problems and general
  passages, see :mod:`spice_env.assets`); ``"embedded:math"`` or ``"embedded:general"`` for one
  half;
* a path to a ``.jsonl``, ``.json``, ``.parquet``, ``.csv``, ``.txt`` or ``.md`` file, or to a
  directory of such files (searched recursively; other entries and outward links are skipped);
* ``"hf:<dataset id>[:split]"`` — a dataset loaded through ``datasets`` (streamed);
* a list of strings, of mappings with a text field, or of :class:`Document`;
* a mapping ``{spec: weight}`` — a weighted mixture of several corpora.

Bad input never aborts a large load: unreadable files, malformed records and files or records over
the byte caps are skipped, counted in :attr:`Corpus.stats` and logged. A corpus with no usable
document is a :class:`CorpusError`.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from spice_env.files import DEFAULT_MAX_FILE_BYTES, DEFAULT_MAX_RECORD_BYTES, ReadLimits
from spice_env.readers import (
    SUPPORTED_SUFFIXES,
    TEXT_FIELDS,
    CorpusError,
    CorpusStats,
    DatasetEntry,
    Record,
    as_entry,
    is_entry,
    mixture_shares,
    read_entry,
    read_hf,
    read_jsonl,
    read_path,
    rows_to_records,
    valid_weight,
)
from spice_env.segment import (
    TokenCounter,
    approx_token_count,
    segment_text,
    segment_texts,
    token_counter,
)
from spice_env.text import valid_unicode, writable

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_MAX_TOKENS", "SUPPORTED_SUFFIXES", "TEXT_FIELDS", "Corpus", "CorpusError",
           "CorpusSampler", "CorpusSpec", "CorpusStats", "Document", "SourcePeek",
           "TokenCounter", "approx_token_count", "load_corpus", "peek_corpus", "segment_text",
           "segment_texts",
           "token_counter"]

DEFAULT_MAX_TOKENS = 5992
"""The paper's segment length: a document is a text segment of at most this many tokens."""

CorpusSpec = str | Path | Sequence[Any] | Mapping[str, float]


@dataclass(frozen=True)
class Document:
    """One text segment of a corpus.

    Attributes:
        id: stable identifier, a hash of the text (equal texts get equal ids).
        text: the segment's text.
        source: where it came from (file path, dataset id, ``embedded:math/mathqa``, ...).
        metadata: the record's other scalar fields (numbers, booleans, strings of at most 1,000
            characters), plus ``segment`` when a long text was split.
    """

    id: str
    text: str
    source: str
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_text(
        cls, text: str, source: str, metadata: Mapping[str, Any] | None = None
    ) -> Document:
        """Build a document whose id is derived from its text."""
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
        return cls(id=digest, text=text, source=source, metadata=dict(metadata or {}))



# --- the corpus -------------------------------------------------------------------------------


class Corpus:
    """An immutable collection of documents, optionally grouped into weighted components.

    Sampling picks a component by weight, then a document uniformly within it (with one component
    this is uniform over all documents). Use :meth:`sampler` for a seeded, resumable stream and
    :meth:`shard` to give each distributed rank its own slice.
    """

    def __init__(
        self,
        documents: Sequence[Document],
        *,
        name: str = "corpus",
        stats: CorpusStats | None = None,
        components: Sequence[tuple[str, Sequence[int], float]] | None = None,
    ) -> None:
        if not documents:
            raise CorpusError(f"corpus {name!r} has no usable document")
        self.documents: tuple[Document, ...] = tuple(documents)
        self.name = name
        self.stats = stats or CorpusStats(documents=len(self.documents))
        if components is None:
            components = [(name, range(len(self.documents)), 1.0)]
        self.components: tuple[tuple[str, np.ndarray, float], ...] = tuple(
            (cname, np.asarray(list(indices), dtype=np.int64), float(weight))
            for cname, indices, weight in components
            if len(indices) > 0
        )
        shares = mixture_shares([w for _, _, w in self.components])
        if not shares:
            raise CorpusError(f"corpus {name!r} has no component with documents and weight > 0")
        self.weights = np.array(shares)

    def __len__(self) -> int:
        return len(self.documents)

    def __getitem__(self, index: int) -> Document:
        return self.documents[index]

    def __iter__(self) -> Iterator[Document]:
        return iter(self.documents)

    def __repr__(self) -> str:
        parts = ", ".join(f"{n}: {len(i)} docs x{w:.2f}" for n, i, w in self.components)
        return f"Corpus({self.name!r}, {len(self)} documents; {parts})"

    def shard(self, rank: int, world_size: int) -> Corpus:
        """The documents of one rank: every ``world_size``-th document of each component."""
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(
                f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        if world_size == 1:
            return self
        for cname, indices, _ in self.components:
            if len(indices) < world_size:
                raise CorpusError(f"component {cname!r} has {len(indices)} documents, too few "
                                  f"for {world_size} ranks")
        keep: list[int] = []
        new_components: list[tuple[str, list[int], float]] = []
        for cname, indices, weight in self.components:
            mine = indices[rank::world_size].tolist()
            new_components.append((cname, list(range(len(keep), len(keep) + len(mine))), weight))
            keep.extend(mine)
        return Corpus(
            [self.documents[i] for i in keep],
            name=f"{self.name}[rank {rank}/{world_size}]",
            stats=self.stats,
            components=new_components,
        )

    def hold_out(self, n: int, *, seed: int = 0,
                 eligible: Callable[[Document], bool] | None = None,
                 key: Callable[[Document], Any] | None = None) -> tuple[Corpus, list[Document]]:
        """Set ``n`` documents aside, drawn at random with ``seed`` among the ``eligible`` ones.

        Documents with the same ``key`` (by default their text; say, the segments of one record
        or one problem stored twice) count as one: the draw takes ``n`` distinct keys, one
        document each, and every document with a held-out key leaves the corpus, so nothing
        trained on repeats what is held out. Returns the rest (same components, same weights)
        and the held-out documents.

        Raises:
            CorpusError: fewer than ``n`` distinct eligible keys, or a component (or the whole
                corpus) left without documents.
        """
        keyed = key or (lambda document: document.text)
        first: dict[Any, int] = {}  # one document per key, in corpus order
        for index, document in enumerate(self.documents):
            if eligible is None or eligible(document):
                first.setdefault(keyed(document), index)
        if n < 0 or len(first) < n:
            raise CorpusError(f"corpus {self.name!r} has {len(first)} documents that can be "
                              f"held out; {n} were asked for")
        rng = np.random.default_rng([seed, 104])
        chosen = sorted(int(i) for i in rng.choice(list(first.values()), size=n, replace=False))
        held = [self.documents[i] for i in chosen]
        keys = {keyed(d) for d in held}
        keep = [i for i, d in enumerate(self.documents) if keyed(d) not in keys]
        if not keep:
            raise CorpusError(f"holding out {n} documents leaves corpus {self.name!r} empty")
        position = {old: new for new, old in enumerate(keep)}
        components = [(cname, [position[int(i)] for i in indices if int(i) in position], weight)
                      for cname, indices, weight in self.components]
        emptied = [cname for cname, indices, weight in components if not indices and weight > 0]
        if emptied:
            raise CorpusError(f"holding out {n} documents leaves no document in "
                              f"{', '.join(map(repr, emptied))} of corpus {self.name!r}")
        rest = Corpus([self.documents[i] for i in keep], name=self.name, stats=self.stats,
                      components=components)
        return rest, held

    def sample_indices(self, rng: np.random.Generator, n: int) -> list[int]:
        """Draw ``n`` document indices (with replacement) using ``rng``."""
        out: list[int] = []
        for _ in range(n):  # one draw at a time: the stream does not depend on batch sizes
            indices = self.components[int(rng.choice(len(self.components), p=self.weights))][1]
            out.append(int(indices[rng.integers(len(indices))]))
        return out

    def sampler(self, seed: int | None = 0) -> CorpusSampler:
        """A seeded stream of documents whose position can be saved and restored."""
        return CorpusSampler(self, seed)


class CorpusSampler:
    """Uniform (per-component weighted) sampling of documents with a resumable generator."""

    def __init__(self, corpus: Corpus, seed: int | Sequence[int] | None = 0) -> None:
        self.corpus = corpus
        self.rng = np.random.default_rng(seed)

    def reseed(self, seed: int | Sequence[int] | None) -> None:
        """Restart the stream from ``seed``."""
        self.rng = np.random.default_rng(seed)

    def sample(self, n: int = 1) -> list[Document]:
        """The next ``n`` documents of the stream."""
        return [self.corpus.documents[i] for i in self.corpus.sample_indices(self.rng, n)]

    def state_dict(self) -> dict[str, Any]:
        """The generator state (JSON-serialisable), to save with a checkpoint."""
        return {"bit_generator": self.rng.bit_generator.state, "corpus_size": len(self.corpus)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue the stream exactly where :meth:`state_dict` left it."""
        if state.get("corpus_size", len(self.corpus)) != len(self.corpus):
            raise ValueError(
                f"sampler state was saved for a corpus of {state['corpus_size']} documents, "
                f"this corpus has {len(self.corpus)}"
            )
        self.rng.bit_generator.state = dict(state["bit_generator"])


# --- building -----------------------------------------------------------------------------------


def _documents_from_records(
    records: Iterable[Record], max_tokens: int, count: TokenCounter, stats: CorpusStats,
    seen: set[str],
) -> list[Document]:
    docs: list[Document] = []
    records = iter(records)
    while chunk := list(itertools.islice(records, _SEGMENT_CHUNK)):
        usable = [(record, text) for record in chunk
                  if (text := _usable_text(record, stats)) is not None]
        # the texts of a chunk are counted together: one tokenizer call for many texts
        segmented = segment_texts([text for _, text in usable], max_tokens, count)
        for (record, _), pieces in zip(usable, segmented, strict=True):
            if len(pieces) > 1:
                stats.segmented += 1
            # a name or label with a lone surrogate is kept with U+FFFD: logs must write it
            source = writable(record.source)
            labels = {writable(str(k)): writable(v) if isinstance(v, str) else v
                      for k, v in record.metadata.items()}
            for index, piece in enumerate(pieces):
                meta = dict(labels)
                if len(pieces) > 1:
                    meta["segment"] = index
                doc = Document.from_text(piece, source, meta)
                if doc.id in seen:
                    stats.duplicates_skipped += 1
                    continue
                seen.add(doc.id)
                docs.append(doc)
    stats.documents += len(docs)
    return docs


_SEGMENT_CHUNK = 64


def _usable_text(record: Record, stats: CorpusStats) -> str | None:
    """The record's text, NUL characters removed and stripped; ``None`` (counted) for a text
    that is not a string, not valid Unicode or empty."""
    if not isinstance(record.text, str):
        stats.malformed_skipped += 1
        kind = type(record.text).__name__
        stats.record_error(f"{record.source}: text is {kind}, not a string")
        return None
    text = record.text.replace("\x00", "").strip()
    if not valid_unicode(text):  # a lone surrogate: no tokenizer or log can write it
        stats.malformed_skipped += 1
        stats.record_error(f"{record.source}: text is not valid Unicode (a lone surrogate)")
        return None
    if not text:
        stats.empty_skipped += 1
        return None
    return text


def _records_for(spec: Any, text_field: str | None, limit: int | None, stats: CorpusStats,
                 caps: ReadLimits | None = None) -> tuple[Iterable[Record], str]:
    """The records of one source (at most ``limit`` of them) and its name."""
    records, name = _source_records(spec, text_field, limit, stats, caps or ReadLimits())
    return (records if limit is None else itertools.islice(records, limit)), name


def _source_records(spec: Any, text_field: str | None, limit: int | None, stats: CorpusStats,
                    caps: ReadLimits) -> tuple[Iterable[Record], str]:
    if is_entry(spec):
        entry = as_entry(spec)
        return read_entry(entry, text_field, limit, stats), entry.label
    if isinstance(spec, Path):
        return read_path(spec, text_field, stats, caps), str(spec)
    if isinstance(spec, str):
        if not spec.strip():
            raise CorpusError("the corpus spec is empty; use 'embedded', a path, "
                              "'hf:<dataset id>[:split]', a list, or a {spec: weight} mapping")
        if spec == "embedded" or spec.startswith("embedded:"):
            from spice_env.assets import AssetError, embedded_corpus_file

            part = spec.partition(":")[2]
            try:
                path = embedded_corpus_file(part)  # type: ignore[arg-type]
            except AssetError as exc:
                raise CorpusError(str(exc)) from exc
            stats.files_read += 1
            return read_jsonl(path, "text", stats), spec
        if spec.startswith("hf:"):
            return read_hf(spec, text_field, limit, stats), spec
        scheme = re.match(r"^([a-zA-Z][a-zA-Z0-9+.\-]*)://", spec)
        if scheme:
            raise CorpusError(
                f"unknown corpus spec scheme {scheme.group(1)!r} in {spec!r}; use 'embedded', "
                "a local path, 'hf:<dataset id>[:split]', a list, or a {spec: weight} mapping"
            )
        return read_path(Path(spec).expanduser(), text_field, stats, caps), spec
    if isinstance(spec, Sequence):
        return rows_to_records(spec, "memory", text_field, stats), "memory"
    raise CorpusError(f"cannot load a corpus from a {type(spec).__name__}")


def load_corpus(
    spec: CorpusSpec | Corpus,
    *,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    tokenizer: Any | None = None,
    text_field: str | None = None,
    limit: int | None = None,
    max_file_bytes: int | None = DEFAULT_MAX_FILE_BYTES,
    max_record_bytes: int | None = DEFAULT_MAX_RECORD_BYTES,
) -> Corpus:
    """Load, segment and de-duplicate a corpus.

    Args:
        spec: what to load (see the module docstring); a :class:`Corpus` is returned as is.
        max_tokens: the maximum segment length in tokens (the paper's 5,992 by default).
        tokenizer: count tokens exactly with this tokenizer (``encode``); otherwise estimate.
        text_field: the record field holding the text; by default the first of
            :data:`TEXT_FIELDS` present.
        limit: read at most this many records from each source.
        max_file_bytes: skip (and count) local files larger than this, unopened (None: no cap).
        max_record_bytes: skip (and count) JSON Lines and CSV lines and plain-text files larger
            than this, never holding more of them (None: no cap).

    Raises:
        CorpusError: for a missing path, a FIFO, socket or device file, an unknown spec, or a
            corpus without usable documents.
    """
    if isinstance(spec, Corpus):
        return spec
    if spec == "embedded":
        spec = {"embedded:math": 0.5, "embedded:general": 0.5}
    options: dict[str, Any] = {"max_tokens": max_tokens, "tokenizer": tokenizer,
                               "text_field": text_field, "limit": limit,
                               "max_file_bytes": max_file_bytes,
                               "max_record_bytes": max_record_bytes}
    if isinstance(spec, Mapping) and not is_entry(spec):
        return _load_mixture(list(spec.items()), **options)
    if _entries(spec):
        parsed = [as_entry(e) for e in spec]  # type: ignore[union-attr]
        return _load_mixture([(e, e.weight) for e in parsed], **options)
    stats = CorpusStats()
    caps = ReadLimits(max_file_bytes, max_record_bytes)
    records, name = _records_for(spec, text_field, limit, stats, caps)
    docs = _documents_from_records(records, max_tokens, token_counter(tokenizer), stats, set())
    if not docs:
        detail = f"; first problems: {stats.errors[:3]}" if stats.errors else ""
        raise CorpusError(f"corpus {name!r} has no usable document ({stats.summary()}){detail}")
    if stats.has_problems:
        logger.warning("corpus %r: %s", name, stats.summary())
    return Corpus(docs, name=name, stats=stats)


@dataclass(frozen=True)
class SourcePeek:
    """The first records of one source of a corpus spec.

    Attributes:
        name: the source (its spec).
        weight: its share of the mixture (1.0 for a single source).
        records: how many records were read.
        documents: how many of them gave a usable document.
        first: the start of the first usable document's text.
    """

    name: str
    weight: float
    records: int
    documents: int
    first: str


def peek_corpus(spec: CorpusSpec, *, records: int = 8, text_field: str | None = None,
                max_file_bytes: int | None = DEFAULT_MAX_FILE_BYTES,
                max_record_bytes: int | None = DEFAULT_MAX_RECORD_BYTES) -> list[SourcePeek]:
    """Read only the first ``records`` records of every source of ``spec``, to check it early.

    The same checks as :func:`load_corpus` (paths, schemes, mixture weights, fields), at the cost
    of a few records per source: a spec that passes here can still hold bad records further on,
    which loading skips and counts.

    ``max_file_bytes`` and ``max_record_bytes`` are :func:`load_corpus`'s caps.

    Raises:
        CorpusError: a source that cannot be read or whose first records hold no usable text.
    """
    if spec == "embedded":
        spec = {"embedded:math": 0.5, "embedded:general": 0.5}
    parts: list[tuple[Any, float, str]] | None = None
    if isinstance(spec, Mapping) and not is_entry(spec):
        parts = [(part, weight, str(part)) for part, weight in spec.items()]
    elif _entries(spec):
        entries = [as_entry(e) for e in spec]  # type: ignore[union-attr]
        parts = [(_entry_spec(e), e.weight, e.label) for e in entries]
    caps = ReadLimits(max_file_bytes, max_record_bytes)
    if parts is not None:
        return _peek_mixture(parts, records=records, text_field=text_field, caps=caps)
    stats = CorpusStats()
    found, name = _records_for(spec, text_field, records, stats, caps)
    head = list(itertools.islice(found, records))
    docs = _documents_from_records(head, DEFAULT_MAX_TOKENS, approx_token_count, stats, set())
    if not docs:
        detail = f": {stats.errors[0]}" if stats.errors else ""
        read = f"first {len(head)} records" if len(head) != 1 else "first record"
        raise CorpusError(f"corpus {name!r}: its {read} hold no usable text{detail}")
    return [SourcePeek(name, 1.0, len(head), len(docs), docs[0].text[:80])]


def _peek_mixture(parts: Sequence[tuple[Any, float, str]], *, records: int,
                  text_field: str | None, caps: ReadLimits) -> list[SourcePeek]:
    if not parts:
        raise CorpusError("a corpus mixture needs at least one component")
    for _, weight, label in parts:
        _check_weight(label, weight)
    shares = mixture_shares([float(weight) for _, weight, _ in parts])
    if not shares:
        raise CorpusError("the corpus mixture's weights are all 0")
    out = []
    for (part, _, label), share in zip(parts, shares, strict=True):
        for inner in peek_corpus(part, records=records, text_field=text_field,
                                 max_file_bytes=caps.max_file_bytes,
                                 max_record_bytes=caps.max_record_bytes):
            out.append(SourcePeek(f"{label}/{inner.name}" if inner.name != label else label,
                                  share * inner.weight, inner.records,
                                  inner.documents, inner.first))
    return out


def _check_weight(part: Any, weight: Any) -> None:
    if not valid_weight(weight):
        raise CorpusError(
            f"mixture weight of {part!r} must be a finite number >= 0, got {weight!r}")


def _entries(spec: Any) -> bool:
    """Whether ``spec`` is a list of dataset entries (a weighted mixture of them)."""
    return (isinstance(spec, Sequence) and not isinstance(spec, str) and bool(spec)
            and all(is_entry(item) for item in spec))


def _load_mixture(parts: Sequence[tuple[Any, float]], **kwargs: Any) -> Corpus:
    if not parts:
        raise CorpusError("a corpus mixture needs at least one component")
    docs: list[Document] = []
    components: list[tuple[str, list[int], float]] = []
    stats = CorpusStats()
    for part, weight in parts:
        _check_weight(part, weight)
        entry = part if isinstance(part, DatasetEntry) else None
        corpus = load_corpus(_entry_spec(entry) if entry else part, **kwargs)
        part = entry.label if entry else part
        stats.merge(corpus.stats)
        offset = len(docs)
        nested = len(corpus.components) > 1
        for (inner, indices, _), share in zip(corpus.components, corpus.weights, strict=True):
            # an inner mixture keeps its own proportions within this part's weight
            name = f"{part}/{inner}" if nested else str(part)
            components.append((name, [offset + int(i) for i in indices], weight * float(share)))
        docs.extend(corpus.documents)
    name = " + ".join(f"{w:g}*{p.label if isinstance(p, DatasetEntry) else p}" for p, w in parts)
    return Corpus(docs, name=name, stats=stats, components=components)


def _entry_spec(entry: DatasetEntry) -> dict[str, Any]:
    """A parsed entry as the mapping that loads it alone."""
    return {"hf": entry.source, "config": entry.config, "split": entry.split,
            "text": entry.text, "max_records": entry.max_records}
