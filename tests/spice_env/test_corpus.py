"""Tests of spice_env.corpus: loading every source kind, segmenting, de-duplication, bad input,
seeded and resumable sampling, and sharding."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import random
import socket
import stat
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from spice_env.corpus import (
    DEFAULT_MAX_TOKENS,
    Corpus,
    CorpusError,
    Document,
    approx_token_count,
    load_corpus,
    peek_corpus,
    segment_text,
    segment_texts,
    token_counter,
)

# --- helpers -------------------------------------------------------------------------------------


class WhitespaceTokenizer:
    """A tokenizer-like object: one token per whitespace-separated word (no special tokens)."""

    def encode(self, text: str) -> list[str]:
        return text.split()


class SpecialTokenTokenizer:
    """Like a Hugging Face tokenizer: adds a BOS token unless ``add_special_tokens=False``."""

    def __init__(self) -> None:
        self.calls: list[bool] = []

    def encode(self, text: str, add_special_tokens: bool = True) -> list[str]:
        self.calls.append(add_special_tokens)
        return (["<s>"] if add_special_tokens else []) + text.split()


def write_jsonl(path: Path, rows: list[object]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_parquet(path: Path, rows: list[dict[str, object]]) -> Path:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def texts(corpus: Corpus) -> list[str]:
    return [d.text for d in corpus]


def long_text(n_words: int = 2500, seed: int = 0) -> str:
    """Prose-like text with paragraphs and sentences, words of 1-12 letters."""
    rng = random.Random(seed)
    parts: list[str] = []
    for _ in range(n_words):
        parts.append("".join(rng.choice("abcdefghijklmnop") for _ in range(rng.randint(1, 12))))
        r = rng.random()
        parts.append("\n\n" if r < 0.02 else ". " if r < 0.12 else ", " if r < 0.15 else " ")
    return "".join(parts).strip()


# --- formats -------------------------------------------------------------------------------------


def test_jsonl_file(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "docs.jsonl", [
        {"text": "The first document.", "year": 2020, "lang": "en"},
        {"text": "The second document."},
        "A bare JSON string line is a document too.",
    ])
    corpus = load_corpus(path)
    assert texts(corpus) == [
        "The first document.", "The second document.",
        "A bare JSON string line is a document too.",
    ]
    assert corpus[0].metadata == {"year": 2020, "lang": "en"}
    assert str(path) in corpus[0].source
    assert corpus.stats.files_read == 1
    assert corpus.stats.records_read == 3
    assert corpus.stats.documents == 3
    # a string path works the same as a Path
    assert texts(load_corpus(str(path))) == texts(corpus)


def test_json_file_list(tmp_path: Path) -> None:
    path = tmp_path / "docs.json"
    path.write_text(json.dumps([{"text": "alpha beta"}, {"content": "gamma delta"}]))
    assert texts(load_corpus(path)) == ["alpha beta", "gamma delta"]


def test_json_file_documents_object(tmp_path: Path) -> None:
    path = tmp_path / "docs.json"
    path.write_text(json.dumps({"name": "x", "documents": [{"text": "one"}, {"text": "two"}]}))
    corpus = load_corpus(path)
    assert texts(corpus) == ["one", "two"]
    assert corpus.stats.records_read == 2


def test_parquet_file(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "docs.parquet", [
        {"text": "parquet one", "score": 1.5},
        {"text": "parquet two", "score": 2.5},
    ])
    corpus = load_corpus(path)
    assert texts(corpus) == ["parquet one", "parquet two"]
    assert corpus[1].metadata == {"score": 2.5}


def test_csv_file(tmp_path: Path) -> None:
    path = tmp_path / "docs.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "passage"])
        writer.writeheader()
        writer.writerow({"id": "1", "passage": "A passage, with a comma\nand a newline."})
        writer.writerow({"id": "2", "passage": "Another passage."})
    corpus = load_corpus(path)
    assert texts(corpus) == ["A passage, with a comma\nand a newline.", "Another passage."]
    assert corpus[0].metadata == {"id": "1"}


@pytest.mark.parametrize("suffix", [".txt", ".md"])
def test_plain_text_file_is_one_document(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"note{suffix}"
    path.write_text("# Title\n\nFirst paragraph.\n\nSecond paragraph.\n", encoding="utf-8")
    corpus = load_corpus(path)
    assert texts(corpus) == ["# Title\n\nFirst paragraph.\n\nSecond paragraph."]
    assert corpus[0].source == str(path)


def test_directory_of_mixed_files_is_read_recursively(tmp_path: Path) -> None:
    root = tmp_path / "corpus"
    write_jsonl(root / "a.jsonl", [{"text": "from jsonl"}])
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "b.json").write_text(json.dumps([{"text": "from json"}]))
    (root / "sub" / "deeper").mkdir()
    (root / "sub" / "deeper" / "c.md").write_text("from markdown")
    (root / "sub" / "d.txt").write_text("from text")
    with (root / "e.csv").open("w", newline="") as handle:
        handle.write("text\nfrom csv\n")
    write_parquet(root / "sub" / "deeper" / "f.parquet", [{"text": "from parquet"}])
    (root / "ignored.xml").write_text("<text>not read</text>")
    corpus = load_corpus(root)
    assert sorted(texts(corpus)) == sorted([
        "from jsonl", "from json", "from markdown", "from text", "from csv", "from parquet",
    ])
    assert corpus.stats.files_read == 6
    assert corpus.stats.unreadable_files == 0


def test_directory_without_supported_files_raises(tmp_path: Path) -> None:
    (tmp_path / "a.xml").write_text("<x/>")
    with pytest.raises(CorpusError, match="holds no"):
        load_corpus(tmp_path)


# --- in-memory sources and fields --------------------------------------------------------------


def test_list_of_strings() -> None:
    corpus = load_corpus(["first text", "second text"])
    assert texts(corpus) == ["first text", "second text"]
    assert corpus.name == "memory"


def test_list_of_dicts_default_text_fields() -> None:
    rows = [
        {"text": "from text", "content": "ignored: text comes first"},
        {"content": "from content"},
        {"passage": "from passage"},
        {"story": "from story", "source": "my-source"},
    ]
    corpus = load_corpus(rows)
    assert texts(corpus) == ["from text", "from content", "from passage", "from story"]
    assert corpus[3].source == "my-source"
    # the other short scalar fields become metadata
    assert corpus[0].metadata == {"content": "ignored: text comes first"}


def test_list_of_documents_keeps_source_and_metadata() -> None:
    docs = [
        Document.from_text("doc one", "origin-a", {"k": 1}),
        Document.from_text("doc two", "origin-b"),
    ]
    corpus = load_corpus(docs)
    assert texts(corpus) == ["doc one", "doc two"]
    assert [d.source for d in corpus] == ["origin-a", "origin-b"]
    assert corpus[0].metadata == {"k": 1}
    assert [d.id for d in corpus] == [d.id for d in docs]


def test_text_field_selects_the_field(tmp_path: Path) -> None:
    rows = [{"text": "not this", "abstract": "this one"}, {"abstract": "and this"}]
    corpus = load_corpus(rows, text_field="abstract")
    assert texts(corpus) == ["this one", "and this"]
    assert corpus[0].metadata == {"text": "not this"}
    path = write_jsonl(tmp_path / "x.jsonl", [*rows, {"text": "no abstract here"}])
    from_file = load_corpus(path, text_field="abstract")
    assert texts(from_file) == ["this one", "and this"]
    assert from_file.stats.malformed_skipped == 1
    assert any("abstract" in e for e in from_file.stats.errors)


def test_corpus_passes_through() -> None:
    corpus = load_corpus(["x y z"])
    assert load_corpus(corpus) is corpus


# --- ids, de-duplication, empty documents --------------------------------------------------------


def test_ids_are_stable_content_hashes(tmp_path: Path) -> None:
    text = "Some stable text."
    doc = Document.from_text(text, "a")
    assert doc.id == hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
    assert Document.from_text(text, "b", {"m": 1}).id == doc.id
    assert Document.from_text(text + " ", "a").id != doc.id
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": text}, {"text": "Other."}])
    first, second = load_corpus(path), load_corpus(path)
    assert [d.id for d in first] == [d.id for d in second]
    assert first[0].id == doc.id
    assert len({d.id for d in first}) == len(first)


def test_duplicates_are_dropped_and_counted() -> None:
    corpus = load_corpus(["same", "other", "same", "  same  ", {"text": "other"}])
    assert texts(corpus) == ["same", "other"]
    assert corpus.stats.duplicates_skipped == 3
    assert corpus.stats.documents == 2


def test_empty_and_whitespace_documents_are_dropped_and_counted() -> None:
    corpus = load_corpus(["", "   ", "\n\t\n", "\x00", {"text": ""}, "real"])
    assert texts(corpus) == ["real"]
    assert corpus.stats.empty_skipped == 5
    assert corpus.stats.records_read == 6


# --- segmenting -----------------------------------------------------------------------------------


def test_approx_token_count() -> None:
    assert approx_token_count("") == 0
    assert approx_token_count("one two three") == 4  # one token per four letters of a word
    assert approx_token_count("Hello, world!") == 6
    assert approx_token_count("a" * 13) == 4  # long words count as several pieces
    assert approx_token_count("3141592653") == 10  # every digit is a token
    assert approx_token_count("日本語の文章") == 6  # so is every CJK character
    text = long_text(300)
    assert approx_token_count(text) >= len(text.split())


def test_token_counter_uses_encode_without_special_tokens() -> None:
    tok = SpecialTokenTokenizer()
    count = token_counter(tok)
    assert count("a b c") == 3
    assert tok.calls == [False]
    assert token_counter(WhitespaceTokenizer())("a b c d") == 4  # encode() without the keyword
    assert token_counter(None) is approx_token_count


def test_short_text_is_not_segmented() -> None:
    assert segment_text("short text here", 10, approx_token_count) == ["short text here"]
    with pytest.raises(ValueError):
        segment_text("x", 0, approx_token_count)


@pytest.mark.parametrize("max_tokens", [7, 50, 400])
def test_segmenting_with_the_estimate(max_tokens: int) -> None:
    text = long_text()
    pieces = segment_text(text, max_tokens, approx_token_count)
    assert len(pieces) > 1
    assert all(approx_token_count(p) <= max_tokens for p in pieces)
    assert all(p == p.strip() and p for p in pieces)
    assert " ".join(pieces).split() == text.split()  # no text lost, order kept


@pytest.mark.parametrize("tokenizer", [WhitespaceTokenizer(), SpecialTokenTokenizer()])
@pytest.mark.parametrize("max_tokens", [1, 13, 100])
def test_segmenting_with_a_tokenizer(tokenizer: object, max_tokens: int) -> None:
    text = long_text(1200, seed=3)
    count = token_counter(tokenizer)
    pieces = segment_text(text, max_tokens, count)
    assert all(count(p) <= max_tokens for p in pieces)
    assert " ".join(pieces).split() == text.split()
    if max_tokens == 1:
        assert pieces == text.split()


def test_paragraph_boundaries_are_preferred() -> None:
    paragraphs = [" ".join(f"w{i}x{j}" for j in range(20)) + "." for i in range(6)]
    text = "\n\n".join(paragraphs)
    pieces = segment_text(text, 45, token_counter(WhitespaceTokenizer()))
    # two paragraphs (20 words each, plus one for the join) fit into 45 tokens
    assert pieces == ["\n\n".join(paragraphs[i : i + 2]) for i in range(0, 6, 2)]


def test_a_word_longer_than_the_limit_is_cut_by_characters() -> None:
    word = "x" * 120
    pieces = segment_text(f"hi {word} there", 5, approx_token_count)
    assert all(approx_token_count(p) <= 5 for p in pieces)
    assert "".join(pieces).replace(" ", "") == f"hi{word}there"


@pytest.mark.parametrize("max_tokens", [3, 40, 400])
def test_batched_counts_segment_exactly_as_one_text_at_a_time(max_tokens: int) -> None:
    from agents.tiny import tiny_tokenizer

    tokenizer = tiny_tokenizer()
    texts = [long_text(300 + 50 * i, seed=i) + "\n\n" + "x" * (40 * i) for i in range(6)]
    texts += ["short", "Two sentences. Here!", "\n\n".join(["a b c."] * 30)]
    batched = token_counter(tokenizer)
    one_by_one = [len(tokenizer.encode(t, add_special_tokens=False)) for t in texts]
    assert batched.many(texts) == one_by_one  # type: ignore[attr-defined]

    def single(text: str) -> int:  # a counter without ``many``: one call per text
        return len(tokenizer.encode(text, add_special_tokens=False))

    expected = [segment_text(t, max_tokens, single) for t in texts]
    assert segment_texts(texts, max_tokens, batched) == expected
    assert all(single(p) <= max_tokens for pieces in expected for p in pieces)


def test_segmenting_a_corpus_counts_many_texts_per_tokenizer_call() -> None:
    from agents.tiny import tiny_tokenizer

    tokenizer = tiny_tokenizer()
    calls: list[int] = []
    encode_many = tokenizer.__class__.__call__

    class Recording(tokenizer.__class__):  # type: ignore[misc,name-defined]
        def __call__(self, text: object, *args: object, **kwargs: object) -> object:
            calls.append(len(text) if isinstance(text, list) else 1)
            return encode_many(self, text, *args, **kwargs)

    tokenizer.__class__ = Recording
    texts = [long_text(200, seed=i) for i in range(100)]
    corpus = load_corpus(texts, max_tokens=64, tokenizer=tokenizer)
    assert len(corpus) > 100 and corpus.stats.segmented == 100
    assert sum(calls) > 4 * len(calls)  # texts per call, on average


def test_load_corpus_segments_long_documents() -> None:
    text = long_text()
    corpus = load_corpus([text, "a short one"], max_tokens=200)
    assert corpus.stats.segmented == 1
    segments = [d for d in corpus if "segment" in d.metadata]
    assert len(segments) == len(corpus) - 1 > 1
    assert [d.metadata["segment"] for d in segments] == list(range(len(segments)))
    assert all(approx_token_count(d.text) <= 200 for d in corpus)
    assert " ".join(d.text for d in segments).split() == text.split()


def test_load_corpus_segments_with_tokenizer() -> None:
    text = long_text(1000, seed=5)
    tok = WhitespaceTokenizer()
    corpus = load_corpus([text], max_tokens=64, tokenizer=tok)
    assert all(len(tok.encode(d.text)) <= 64 for d in corpus)
    assert " ".join(d.text for d in corpus).split() == text.split()
    assert len(corpus) >= 1000 // 64


def test_default_max_tokens_is_the_papers() -> None:
    assert DEFAULT_MAX_TOKENS == 5992
    text = " ".join(["word"] * 6500)
    corpus = load_corpus([text])
    assert len(corpus) == 2
    assert all(approx_token_count(d.text) <= DEFAULT_MAX_TOKENS for d in corpus)


# --- bad input ------------------------------------------------------------------------------------


def test_malformed_jsonl_lines_are_skipped_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "mixed.jsonl"
    path.write_text(
        '{"text": "good one"}\n'
        '{"text": "broken\n'
        "not json at all\n"
        "\n"
        "[1, 2, 3]\n"
        '{"no_text_field": "x"}\n'
        '{"text": "good two"}\n',
        encoding="utf-8",
    )
    corpus = load_corpus(path)
    assert texts(corpus) == ["good one", "good two"]
    assert corpus.stats.malformed_skipped == 4
    assert corpus.stats.records_read == 6  # the blank line is not a record
    assert len(corpus.stats.errors) == 4
    assert any(":2:" in e and "malformed JSON" in e for e in corpus.stats.errors)


def test_non_string_text_is_malformed() -> None:
    corpus = load_corpus([{"text": 5}, {"text": None}, {"text": ["a", "b"]},
                          {"text": {"x": 1}}, 42, None, {"text": "fine"}])
    assert texts(corpus) == ["fine"]
    assert corpus.stats.malformed_skipped == 6


def test_corrupt_parquet_among_good_files(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "a.jsonl", [{"text": "good jsonl"}])
    write_parquet(tmp_path / "b.parquet", [{"text": "good parquet"}])
    (tmp_path / "c.parquet").write_bytes(b"PAR1 this is not a parquet file at all")
    good = write_parquet(tmp_path / "tmp" / "t.parquet", [{"text": "truncated"}] * 50)
    (tmp_path / "d.parquet").write_bytes(good.read_bytes()[:-40])
    good.unlink()
    (tmp_path / "e.json").write_text("{ not json")
    corpus = load_corpus(tmp_path)
    assert sorted(texts(corpus)) == ["good jsonl", "good parquet"]
    assert corpus.stats.unreadable_files == 3
    assert corpus.stats.files_read == 2
    assert sum("unreadable" in e for e in corpus.stats.errors) == 3


def test_no_usable_document_raises_naming_the_source(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "empty_docs.jsonl", [{"text": ""}, {"text": "  "}, {"t": 1}])
    with pytest.raises(CorpusError, match=r"empty_docs\.jsonl") as info:
        load_corpus(str(path))
    assert "no usable document" in str(info.value)
    with pytest.raises(CorpusError, match="memory"):
        load_corpus(["", " "])
    with pytest.raises(CorpusError):
        load_corpus([])


def test_missing_path_raises(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="does not exist"):
        load_corpus(tmp_path / "nope.jsonl")
    with pytest.raises(CorpusError, match="does not exist"):
        load_corpus(str(tmp_path / "nope"))


@pytest.mark.parametrize("spec", ["s3://bucket/x", "https://example.com/data.jsonl", "gs://b/c"])
def test_unknown_scheme_raises(spec: str) -> None:
    with pytest.raises(CorpusError, match="scheme"):
        load_corpus(spec)


def test_unsupported_suffix_raises(tmp_path: Path) -> None:
    path = tmp_path / "docs.xml"
    path.write_text("<doc>text</doc>")
    with pytest.raises(CorpusError, match="unsupported"):
        load_corpus(path)


def test_unloadable_spec_types_raise() -> None:
    with pytest.raises(CorpusError):
        load_corpus(12345)  # type: ignore[arg-type]
    with pytest.raises(CorpusError):
        load_corpus("embedded:nonsense")


# --- Hugging Face datasets -----------------------------------------------------------------------


def test_hf_local_dataset_directory(tmp_path: Path) -> None:
    pytest.importorskip("datasets")
    data = tmp_path / "hfdata"
    write_jsonl(data / "data.jsonl", [
        {"text": "hf document one", "label": 1},
        {"text": "hf document two", "label": 0},
        {"text": "hf document three", "label": 1},
    ])
    corpus = load_corpus(f"hf:{data}:train")
    assert texts(corpus) == ["hf document one", "hf document two", "hf document three"]
    assert corpus[0].metadata == {"label": 1}
    assert all(d.source.startswith("hf:") for d in corpus)
    limited = load_corpus(f"hf:{data}:train", limit=2)
    assert texts(limited) == ["hf document one", "hf document two"]


def test_hf_errors_are_corpus_errors(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="empty dataset id"):
        load_corpus("hf:")
    pytest.importorskip("datasets")
    write_jsonl(tmp_path / "d" / "data.jsonl", [{"text": "x"}])
    with pytest.raises(CorpusError, match="could not load dataset"):
        load_corpus(f"hf:{tmp_path / 'd'}:no_such_split")


# --- mixtures and the embedded corpus ------------------------------------------------------------


@pytest.fixture
def two_sources(tmp_path: Path) -> tuple[str, str]:
    small = write_jsonl(tmp_path / "small.jsonl", [{"text": f"small {i}"} for i in range(5)])
    large = write_jsonl(tmp_path / "large.jsonl", [{"text": f"large {i}"} for i in range(50)])
    return str(small), str(large)


def test_mixture_weights_are_respected(two_sources: tuple[str, str]) -> None:
    small, large = two_sources
    corpus = load_corpus({small: 0.8, large: 0.2})
    assert len(corpus) == 55
    assert [(name, len(idx)) for name, idx, _ in corpus.components] == [(small, 5), (large, 50)]
    assert corpus.weights.tolist() == pytest.approx([0.8, 0.2])
    drawn = corpus.sampler(seed=1).sample(4000)
    share_small = sum(d.text.startswith("small") for d in drawn) / len(drawn)
    assert share_small == pytest.approx(0.8, abs=0.03)  # ~5 standard deviations
    # within a component, documents are uniform
    small_counts = Counter(d.text for d in drawn if d.text.startswith("small"))
    assert len(small_counts) == 5
    assert min(small_counts.values()) > 0.15 * share_small * len(drawn)


def test_mixture_weights_need_not_sum_to_one(two_sources: tuple[str, str]) -> None:
    small, large = two_sources
    corpus = load_corpus({small: 3, large: 1})
    assert corpus.weights.tolist() == pytest.approx([0.75, 0.25])
    zero = load_corpus({small: 1.0, large: 0.0})
    assert all(d.text.startswith("small") for d in zero.sampler(0).sample(300))


@pytest.mark.parametrize("weight", [-1.0, float("nan"), float("inf"), "heavy"])
def test_bad_mixture_weights_raise(two_sources: tuple[str, str], weight: object) -> None:
    small, large = two_sources
    with pytest.raises(CorpusError, match="weight"):
        load_corpus({small: 1.0, large: weight})  # type: ignore[dict-item]


def test_empty_mixture_and_all_zero_weights_raise(two_sources: tuple[str, str]) -> None:
    with pytest.raises(CorpusError):
        load_corpus({})
    with pytest.raises(CorpusError):
        load_corpus({two_sources[0]: 0.0})


def test_mixture_stats_are_merged(tmp_path: Path) -> None:
    a = write_jsonl(tmp_path / "a.jsonl", [{"text": "x"}, {"text": "x"}, {"text": ""}])
    b = write_jsonl(tmp_path / "b.jsonl", [{"text": "y"}, {"text": 3}])
    corpus = load_corpus({str(a): 1, str(b): 1})
    assert corpus.stats.files_read == 2
    assert corpus.stats.duplicates_skipped == 1
    assert corpus.stats.empty_skipped == 1
    assert corpus.stats.malformed_skipped == 1
    assert corpus.stats.documents == 2


@pytest.fixture(scope="module")
def embedded() -> Corpus:
    return load_corpus("embedded")


def test_embedded_is_a_5050_mixture(embedded: Corpus) -> None:
    names = [name for name, _, _ in embedded.components]
    sizes = {name: len(idx) for name, idx, _ in embedded.components}
    assert names == ["embedded:math", "embedded:general"]
    assert embedded.weights.tolist() == pytest.approx([0.5, 0.5])
    assert sizes["embedded:math"] > 1000
    assert sizes["embedded:general"] > 3000
    assert sum(sizes.values()) == len(embedded)
    math_idx = embedded.components[0][1]
    general_idx = embedded.components[1][1]
    assert all(embedded[int(i)].source.startswith("embedded:math") for i in math_idx[:200])
    assert all(embedded[int(i)].source.startswith("embedded:general") for i in general_idx[:200])
    drawn = embedded.sampler(seed=7).sample(2000)
    share_math = sum(d.source.startswith("embedded:math") for d in drawn) / 2000
    assert share_math == pytest.approx(0.5, abs=0.05)
    assert all(approx_token_count(d.text) <= DEFAULT_MAX_TOKENS for d in drawn)


# --- sampling -------------------------------------------------------------------------------------


@pytest.fixture
def hundred() -> Corpus:
    return load_corpus([f"document number {i}" for i in range(100)])


def test_sampler_is_deterministic_by_seed(hundred: Corpus) -> None:
    a = [d.id for d in hundred.sampler(seed=3).sample(50)]
    b = [d.id for d in hundred.sampler(seed=3).sample(50)]
    c = [d.id for d in hundred.sampler(seed=4).sample(50)]
    assert a == b
    assert a != c
    sampler = hundred.sampler(seed=3)
    first = [d.id for d in sampler.sample(50)]
    assert first == a
    assert [d.id for d in sampler.sample(50)] != a  # the stream moves on
    sampler.reseed(3)
    assert [d.id for d in sampler.sample(50)] == a


def test_sampler_is_uniform(hundred: Corpus) -> None:
    counts = Counter(d.id for d in hundred.sampler(seed=0).sample(20000))
    assert len(counts) == 100
    assert max(counts.values()) < 300 and min(counts.values()) > 120  # expected 200 each


def test_sampler_state_dict_resumes_identically(hundred: Corpus) -> None:
    sampler = hundred.sampler(seed=11)
    sampler.sample(17)
    state = json.loads(json.dumps(sampler.state_dict()))  # JSON-serialisable
    expected = [d.id for d in sampler.sample(40)]
    resumed = hundred.sampler(seed=999)
    resumed.load_state_dict(state)
    assert [d.id for d in resumed.sample(40)] == expected
    # the state is a snapshot: later draws do not change it
    again = hundred.sampler(seed=0)
    again.load_state_dict(state)
    assert [d.id for d in again.sample(40)] == expected


def test_sampler_state_for_another_corpus_size_raises(hundred: Corpus) -> None:
    state = hundred.sampler(seed=0).state_dict()
    other = load_corpus([f"doc {i}" for i in range(10)])
    with pytest.raises(ValueError, match="100"):
        other.sampler(0).load_state_dict(state)


def test_sample_indices_uses_the_given_generator(hundred: Corpus) -> None:
    a = hundred.sample_indices(np.random.default_rng(5), 30)
    b = hundred.sample_indices(np.random.default_rng(5), 30)
    assert a == b
    assert all(0 <= i < 100 for i in a)


# --- sharding -------------------------------------------------------------------------------------


@pytest.mark.parametrize("world_size", [1, 2, 3, 7])
def test_shards_partition_the_documents(hundred: Corpus, world_size: int) -> None:
    shards = [hundred.shard(rank, world_size) for rank in range(world_size)]
    ids = [{d.id for d in s} for s in shards]
    for i in range(world_size):
        for j in range(i + 1, world_size):
            assert not ids[i] & ids[j]
    assert set().union(*ids) == {d.id for d in hundred}
    assert sum(len(s) for s in shards) == len(hundred)
    assert max(len(s) for s in shards) - min(len(s) for s in shards) <= 1
    # each shard samples only its own documents
    assert {d.id for d in shards[-1].sampler(0).sample(200)} <= ids[-1]


def test_shards_of_a_mixture_keep_components(two_sources: tuple[str, str]) -> None:
    small, large = two_sources
    corpus = load_corpus({small: 0.8, large: 0.2})
    shards = [corpus.shard(r, 2) for r in range(2)]
    for shard in shards:
        assert [name for name, _, _ in shard.components] == [small, large]
        assert shard.weights.tolist() == pytest.approx([0.8, 0.2])
    union = [d.id for s in shards for d in s]
    assert sorted(union) == sorted(d.id for d in corpus)


@pytest.mark.parametrize(("rank", "world_size"), [(-1, 2), (2, 2), (5, 3), (0, 0), (0, -1)])
def test_bad_ranks_raise(hundred: Corpus, rank: int, world_size: int) -> None:
    with pytest.raises(ValueError):
        hundred.shard(rank, world_size)


def test_too_many_ranks_raise() -> None:
    corpus = load_corpus(["a b", "c d", "e f"])
    assert len(corpus.shard(2, 3)) == 1
    with pytest.raises(CorpusError, match="too few"):
        corpus.shard(3, 4)  # rank 3 of 4 would get no document


def test_nested_mixture_keeps_inner_weights(embedded: Corpus) -> None:
    nested = load_corpus({"embedded": 1.0})
    assert len(nested) == len(embedded)
    drawn = nested.sampler(seed=7).sample(2000)
    share_math = sum(d.source.startswith("embedded:math") for d in drawn) / 2000
    assert share_math == pytest.approx(0.5, abs=0.05)


def test_byte_order_mark_files_load(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text('{"text": "first line with a BOM"}\n', encoding="utf-8-sig")
    (tmp_path / "b.csv").write_text("text\nrow from a csv with a BOM\n", encoding="utf-8-sig")
    (tmp_path / "c.json").write_text('[{"text": "json with a BOM"}]', encoding="utf-8-sig")
    corpus = load_corpus(tmp_path)
    assert sorted(d.text for d in corpus) == ["first line with a BOM", "json with a BOM",
                                              "row from a csv with a BOM"]
    assert corpus.stats.malformed_skipped == 0 and corpus.stats.unreadable_files == 0


def test_sample_stream_does_not_depend_on_batch_size() -> None:
    corpus = load_corpus({"embedded:math": 0.5, "embedded:general": 0.5})
    batch, single = corpus.sampler(3), corpus.sampler(3)
    assert [d.id for d in batch.sample(20)] == [single.sample(1)[0].id for _ in range(20)]


def test_every_rank_refuses_a_too_small_shard() -> None:
    corpus = load_corpus(["one doc", "two docs", "three docs"])
    for rank in range(4):
        with pytest.raises(CorpusError, match="too few"):
            corpus.shard(rank, 4)


def test_an_empty_spec_is_an_error() -> None:
    for spec in ("", "   "):
        with pytest.raises(CorpusError, match="spec is empty"):
            load_corpus(spec)


# --- holding documents out -----------------------------------------------------------------------


def test_hold_out_sets_documents_aside_and_keeps_the_mixture(two_sources: tuple[str, str]
                                                             ) -> None:
    small, large = two_sources
    corpus = load_corpus({small: 0.8, large: 0.2})
    rest, held = corpus.hold_out(10, seed=1, eligible=lambda d: d.text.startswith("large"))
    assert len(held) == 10 and all(d.text.startswith("large") for d in held)
    assert len(rest) == 45 and not {d.id for d in held} & {d.id for d in rest}
    assert [(name, len(idx), w) for name, idx, w in rest.components] == [
        (small, 5, 0.8), (large, 40, 0.2)]
    again = corpus.hold_out(10, seed=1, eligible=lambda d: d.text.startswith("large"))[1]
    other = corpus.hold_out(10, seed=2, eligible=lambda d: d.text.startswith("large"))[1]
    assert [d.id for d in again] == [d.id for d in held]
    assert [d.id for d in other] != [d.id for d in held]
    sampled = {d.id for d in rest.sampler(0).sample(2000)}
    assert not sampled & {d.id for d in held}  # never drawn for training


def test_hold_out_removes_every_document_sharing_a_key() -> None:
    records = [{"text": f"problem {i % 5} solved, variant {i}", "question": f"q{i % 5}"}
               for i in range(20)]
    corpus = load_corpus(records)
    rest, held = corpus.hold_out(1, seed=0, key=lambda d: d.metadata["question"])
    question = held[0].metadata["question"]
    assert len(rest) == 16
    assert all(d.metadata["question"] != question for d in rest)


def test_hold_out_refuses_what_it_cannot_do(hundred: Corpus) -> None:
    with pytest.raises(CorpusError, match="3 documents that can be held out; 4"):
        hundred.hold_out(4, eligible=lambda d: d.text.endswith(("1", "2", "3")) and
                         len(d.text) == len("document number 1"))
    with pytest.raises(CorpusError, match="leaves corpus"):
        hundred.hold_out(100)
    rest, held = hundred.hold_out(0)
    assert held == [] and len(rest) == 100


def test_embedded_math_records_carry_their_problem_and_answer() -> None:
    corpus = load_corpus("embedded:math")
    document = corpus[0]
    assert document.metadata["question"] and document.metadata["answer"]
    assert document.text.startswith("Problem: " + document.metadata["question"])
    assert document.text.endswith("Answer: " + document.metadata["answer"])


def test_hold_out_draws_distinct_keys_and_keeps_every_component(
        two_sources: tuple[str, str]) -> None:
    records = [{"text": f"segment {i}", "question": f"q{i // 2}"} for i in range(10)]
    corpus = load_corpus(records)
    rest, held = corpus.hold_out(3, key=lambda d: d.metadata["question"])
    assert len({d.metadata["question"] for d in held}) == 3 and len(rest) == 4
    with pytest.raises(CorpusError, match="5 documents that can be held out; 6"):
        corpus.hold_out(6, key=lambda d: d.metadata["question"])
    with pytest.raises(CorpusError, match="leaves corpus"):
        corpus.hold_out(5, key=lambda d: d.metadata["question"])
    small, large = two_sources
    mixture = load_corpus({small: 0.5, large: 0.5})
    with pytest.raises(CorpusError, match="leaves no document in"):
        mixture.hold_out(5, eligible=lambda d: d.text.startswith("small"))


def test_the_record_limit_applies_to_every_source(tmp_path: Path) -> None:
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": f"Document number {k} about the sum {k} + {k}."})
                            + "\n" for k in range(10)), "utf-8")
    assert len(load_corpus(str(path), limit=3)) == 3
    assert len(load_corpus([{"text": f"row {k} with some words"} for k in range(6)],
                           limit=2)) == 2
    assert len(load_corpus("embedded:math", limit=5)) <= 5


def test_a_record_with_a_lone_surrogate_is_skipped_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "docs.jsonl"
    path.write_text('{"text": "The first document, about 2 + 2."}\n'
                    '{"text": "What is 6*7 \\ud83d? A broken emoji."}\n'
                    '{"text": "The third document, about 3 + 3."}\n', "utf-8")
    corpus = load_corpus(str(path))
    assert len(corpus) == 2 and corpus.stats.malformed_skipped == 1
    assert any("lone surrogate" in e for e in corpus.stats.errors)
    assert all("\ud83d" not in d.text for d in corpus.documents)


# --- hostile files --------------------------------------------------------------------------------


@pytest.mark.timeout(20)
def test_a_fifo_given_as_the_corpus_path_is_refused_unopened(tmp_path: Path) -> None:
    pipe = tmp_path / "corpus.jsonl"
    os.mkfifo(pipe)
    for spec in (pipe, str(pipe)):
        with pytest.raises(CorpusError, match=r"is a FIFO \(named pipe\).*not opened") as info:
            load_corpus(spec)
        assert "\n" not in str(info.value)
    with pytest.raises(CorpusError, match="FIFO"):
        peek_corpus(str(pipe))


@pytest.mark.timeout(20)
def test_fifos_sockets_and_devices_in_a_folder_are_skipped_unopened(tmp_path: Path) -> None:
    root = tmp_path / "c"
    write_jsonl(root / "a.jsonl", [{"text": "the only real document"}])
    os.mkfifo(root / "b.jsonl")
    (root / "to-fifo.jsonl").symlink_to(root / "b.jsonl")
    specials = 2
    with socket.socket(socket.AF_UNIX) as server:
        try:
            server.bind(str(root / "s.jsonl"))
            specials += 1
        except OSError:  # a path too long for a socket address
            pass
        try:
            os.mknod(root / "null.txt", stat.S_IFCHR | 0o600, os.makedev(1, 3))
            specials += 1
        except (PermissionError, OSError):  # device files need privileges
            pass
        corpus = load_corpus(root)
    assert texts(corpus) == ["the only real document"]
    assert corpus.stats.special_files_skipped == specials
    assert corpus.stats.files_read == 1 and corpus.stats.unreadable_files == 0
    assert any("FIFO" in e and "b.jsonl" in e for e in corpus.stats.errors)


def test_links_that_loop_or_lead_outside_the_folder_are_skipped(tmp_path: Path) -> None:
    root = tmp_path / "corpus"
    write_jsonl(root / "real.jsonl", [{"text": "a document inside the folder"}])
    write_jsonl(root / "store" / "shard.dat", [{"text": "read through a link inside"}])
    write_jsonl(tmp_path / "secret.jsonl", [{"text": "a document outside the folder"}])
    (tmp_path / "elsewhere").mkdir()
    write_jsonl(tmp_path / "elsewhere" / "more.jsonl", [{"text": "in a folder outside"}])
    (root / "a.jsonl").symlink_to(root / "b.jsonl")
    (root / "b.jsonl").symlink_to(root / "a.jsonl")
    (root / "self.jsonl").symlink_to(root / "self.jsonl")
    (root / "broken.jsonl").symlink_to(root / "missing.jsonl")
    (root / "out.jsonl").symlink_to(tmp_path / "secret.jsonl")
    (root / "out-dir").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (root / "store" / "up").symlink_to(root, target_is_directory=True)
    (root / "alias.jsonl").symlink_to("real.jsonl")
    os.link(root / "real.jsonl", root / "hard.jsonl")
    (root / "linked.jsonl").symlink_to(root / "store" / "shard.dat")
    corpus = load_corpus(root)
    assert sorted(texts(corpus)) == ["a document inside the folder", "read through a link inside"]
    assert corpus.stats.duplicates_skipped == 0  # every file is read once
    # a, b, self, broken, out, out-dir, store/up, alias and hard
    assert corpus.stats.links_skipped == 9
    assert corpus.stats.unknown_files_skipped == 1  # store/shard.dat itself
    assert corpus.stats.files_read == 2
    assert any("out.jsonl" in e and "outside the folder" in e for e in corpus.stats.errors)


def test_a_looping_or_broken_link_given_as_the_path_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "loop.jsonl").symlink_to(tmp_path / "loop.jsonl")
    (tmp_path / "broken.jsonl").symlink_to(tmp_path / "nothing.jsonl")
    with pytest.raises(CorpusError, match=r"loop\.jsonl cannot be used"):
        load_corpus(tmp_path / "loop.jsonl")
    with pytest.raises(CorpusError, match=r"does not exist: .*broken\.jsonl \(a broken link\)"):
        load_corpus(tmp_path / "broken.jsonl")


def test_files_of_unknown_type_in_a_folder_are_counted(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "a.jsonl", [{"text": "a document"}])
    (tmp_path / "README").write_text("about this corpus")
    (tmp_path / "notes.xml").write_text("<x/>")
    corpus = load_corpus(tmp_path)
    assert corpus.stats.unknown_files_skipped == 2 and corpus.stats.files_read == 1
    assert corpus.stats.errors == []  # counted, not reported as problems
    (tmp_path / "a.jsonl").unlink()
    with pytest.raises(CorpusError, match=r"holds no .*\(2 other entries skipped\)"):
        load_corpus(tmp_path)


def test_an_overlong_jsonl_line_is_skipped_and_the_records_after_it_kept(tmp_path: Path) -> None:
    path = tmp_path / "docs.jsonl"
    rows = [{"text": "the first document"}, {"text": "x" * 5000}, {"text": "the third document"},
            {"text": "y" * 990}]
    write_jsonl(path, rows)
    corpus = load_corpus(path, max_record_bytes=1000)
    assert texts(corpus) == ["the first document", "the third document"]
    assert corpus.stats.oversized_records_skipped == 2
    assert corpus.stats.records_read == 4 and corpus.stats.malformed_skipped == 0
    assert any(":2: line longer than 1000 bytes" in e for e in corpus.stats.errors)
    assert len(load_corpus(path, max_record_bytes=None)) == 4
    assert len(load_corpus(path)) == 4  # the default cap is far above these records


def test_overlong_csv_lines_and_plain_text_files_are_skipped(tmp_path: Path) -> None:
    (tmp_path / "table.csv").write_text(f"text,n\nshort row,1\n{'z' * 3000},2\nlast row,3\n")
    (tmp_path / "big.txt").write_text("w " * 1500)
    (tmp_path / "small.md").write_text("a short note")
    corpus = load_corpus(tmp_path, max_record_bytes=1000)
    assert sorted(texts(corpus)) == ["a short note", "last row", "short row"]
    assert corpus.stats.oversized_records_skipped == 2
    assert corpus.stats.files_read == 3


def test_files_over_the_file_cap_are_skipped_unopened(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "small.jsonl", [{"text": "a small file"}])
    (tmp_path / "big.json").write_text(json.dumps([{"text": f"row {i}"} for i in range(200)]))
    write_parquet(tmp_path / "big.parquet", [{"text": f"row {i} " * 50} for i in range(50)])
    corpus = load_corpus(tmp_path, max_file_bytes=1000)
    assert texts(corpus) == ["a small file"]
    assert corpus.stats.oversized_files_skipped == 2 and corpus.stats.unreadable_files == 0
    assert corpus.stats.files_read == 1
    with pytest.raises(CorpusError, match=r"no usable document .*1 oversized files") as info:
        load_corpus(tmp_path / "big.json", max_file_bytes=1000)
    assert "max_file_bytes" in str(info.value)
    assert len(load_corpus(tmp_path, max_file_bytes=None)) == 1 + 200 + 50


@pytest.mark.parametrize("caps", [{"max_file_bytes": 0}, {"max_record_bytes": -1},
                                  {"max_record_bytes": 1.5}, {"max_file_bytes": True}])
def test_bad_byte_caps_are_refused(tmp_path: Path, caps: dict[str, object]) -> None:
    path = write_jsonl(tmp_path / "a.jsonl", [{"text": "a document"}])
    with pytest.raises(ValueError, match="must be an integer >= 1 or None"):
        load_corpus(path, **caps)  # type: ignore[arg-type]


def test_new_counters_are_merged_and_summarised(tmp_path: Path) -> None:
    for name in ("one", "two"):
        write_jsonl(tmp_path / name / "a.jsonl", [{"text": f"{name}"}, {"text": "q" * 2000}])
        (tmp_path / name / "LICENSE").write_text("licence text")
        os.mkfifo(tmp_path / name / "pipe.jsonl")
    corpus = load_corpus({str(tmp_path / "one"): 1, str(tmp_path / "two"): 1},
                         max_record_bytes=1000)
    stats = corpus.stats
    assert (stats.unknown_files_skipped, stats.special_files_skipped,
            stats.oversized_records_skipped) == (2, 2, 2)
    summary = stats.summary()
    assert summary.startswith("4 records read; skipped: ")
    for words in ("2 oversized records", "2 special files", "2 files of unknown type"):
        assert words in summary
    assert stats.has_problems


def test_mixture_weights_near_the_float_maximum_sample(two_sources: tuple[str, str]) -> None:
    small, large = two_sources
    corpus = load_corpus({small: 1e308, large: 1e308})
    assert corpus.weights.tolist() == pytest.approx([0.5, 0.5])
    drawn = corpus.sampler(seed=0).sample(400)
    assert 120 < sum(d.text.startswith("small") for d in drawn) < 280
    skewed = load_corpus({small: 1.7e308, large: 1e-300})
    assert skewed.weights.tolist() == pytest.approx([1.0, 0.0])
    assert [p.weight for p in peek_corpus({small: 1e308, large: 1e308})] == pytest.approx(
        [0.5, 0.5])
