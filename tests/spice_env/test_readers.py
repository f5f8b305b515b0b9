"""Corpus entries as the paper's data needs them: hub-style dataset folders with several configs,
text templates, datasets objects, save_to_disk folders, mixtures of entries — all offline."""

from __future__ import annotations

import io
from dataclasses import fields
from pathlib import Path

import pytest

datasets = pytest.importorskip("datasets")

from spice_env.corpus import CorpusError, load_corpus  # noqa: E402
from spice_env.files import bounded_lines, numbered_lines  # noqa: E402
from spice_env.readers import CorpusStats, DatasetEntry, mixture_shares  # noqa: E402

PASSAGE = ("The tide rises twice a day because the moon pulls the oceans toward it, and the "
           "Earth turns beneath the bulge. ")


def dataset_folder(root: Path) -> Path:
    """A folder laid out like a hub dataset with configs ``3`` and ``4plus`` (parquet files and a
    README whose ``configs:`` section maps each config to its files)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    for config, count in (("3", 3), ("4plus", 5)):
        (root / config).mkdir(parents=True)
        table = pa.table({"text": [f"{config} document {i}. " + PASSAGE * 2 for i in range(count)],
                          "url": [f"https://example.org/{config}/{i}" for i in range(count)]})
        pq.write_table(table, root / config / "train-00000.parquet")
    (root / "README.md").write_text(
        "---\nconfigs:\n- config_name: '3'\n  data_files:\n  - split: train\n"
        "    path: 3/*.parquet\n- config_name: 4plus\n  data_files:\n  - split: train\n"
        "    path: 4plus/*.parquet\n---\n")
    return root


def reasoning_rows(n: int) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = [
        {"question": f"What is {i} + {i}? " + PASSAGE, "reference_answer": str(2 * i),
         "responses": [{"response": "..."}]} for i in range(n)]
    rows.append({"question": "A question without its answer. " + PASSAGE})  # missing field
    return rows


def test_a_dataset_folder_with_several_configs(tmp_path: Path) -> None:
    folder = dataset_folder(tmp_path / "nemotron-like")
    corpus = load_corpus({"hf": str(folder), "config": "4plus", "split": "train"})
    assert len(corpus) == 5 and all(d.text.startswith("4plus document") for d in corpus)
    assert corpus.documents[0].metadata["url"].startswith("https://example.org/4plus/")
    assert corpus.name == f"hf:{folder}/4plus:train"
    assert len(load_corpus({"hf": str(folder), "config": "3", "max_records": 2})) == 2
    with pytest.raises(CorpusError, match=r"could not load dataset .* config 'nine'"):
        load_corpus({"hf": str(folder), "config": "nine"})


def test_a_text_template_joins_fields_and_skips_records_without_them() -> None:
    dataset = datasets.Dataset.from_list(reasoning_rows(4))
    corpus = load_corpus({"hf": dataset, "text": "{question}\n\nAnswer: {reference_answer}"})
    assert len(corpus) == 4 and corpus.stats.malformed_skipped == 1
    assert corpus.documents[0].text.endswith("\n\nAnswer: 0")
    assert corpus.documents[1].metadata["reference_answer"] == "2"  # fields stay as metadata
    assert "reference_answer" in corpus.stats.errors[0]
    with pytest.raises(CorpusError, match="may only name fields"):
        load_corpus({"hf": dataset, "text": "{question.__class__}"})
    with pytest.raises(CorpusError, match="has no usable document"):
        load_corpus({"hf": dataset, "text": "nonexistent_field"})


def test_datasets_objects_streams_and_save_to_disk_folders(tmp_path: Path) -> None:
    rows = [{"text": f"passage {i}. " + PASSAGE} for i in range(6)]
    dataset = datasets.Dataset.from_list(rows)
    assert len(load_corpus(dataset)) == 6
    streamed = load_corpus(dataset.to_iterable_dataset(), limit=4)  # read lazily, cut at 4
    assert len(streamed) == 4
    splits = datasets.DatasetDict({"train": dataset, "test": dataset.select(range(2))})
    assert len(load_corpus({"hf": splits, "split": "test"})) == 2
    assert len(load_corpus(splits)) == 6  # train by default
    with pytest.raises(CorpusError, match="no split 'validation'; it has train, test"):
        load_corpus({"hf": splits, "split": "validation"})
    dataset.save_to_disk(str(tmp_path / "saved"))
    splits.save_to_disk(str(tmp_path / "saved-dict"))
    assert len(load_corpus({"hf": str(tmp_path / "saved")})) == 6
    assert len(load_corpus({"hf": str(tmp_path / "saved-dict"), "split": "test"})) == 2


def test_a_list_of_entries_is_a_weighted_mixture(tmp_path: Path) -> None:
    folder = dataset_folder(tmp_path / "math")
    reasoning = datasets.Dataset.from_list(reasoning_rows(4))
    corpus = load_corpus([
        {"hf": str(folder), "config": "4plus", "weight": 0.5},
        {"hf": reasoning, "text": "{question}", "weight": 0.5},
    ])
    assert len(corpus) == 10 and [len(c[1]) for c in corpus.components] == [5, 5]
    assert corpus.weights == pytest.approx([0.5, 0.5])
    shares = [sum(d.source.startswith("hf:Dataset") for d in corpus.sampler(seed).sample(40))
              for seed in range(3)]
    assert all(10 <= s <= 30 for s in shares)  # about half from each component


@pytest.mark.parametrize(("entry", "message"), [
    ({"hf": "x", "splitt": "train"}, "unknown key.*splitt"),
    ({"hf": ""}, "'hf' must name a dataset"),
    ({"hf": "x", "weight": -1}, "weight must be a finite number"),
    ({"hf": "x", "max_records": 0}, "max_records must be an integer >= 1"),
    ({"hf": "x", "config": 3}, "config must be a non-empty string"),
    ({"hf": "x", "text": "{a"}, "may only name fields"),
])
def test_bad_entries_name_the_problem(entry: dict[str, object], message: str) -> None:
    with pytest.raises(CorpusError, match=message):
        DatasetEntry.parse(entry)


# --- bounded reading, shares and stats ----------------------------------------------------------


class CountingBytes(io.BytesIO):
    """A binary handle that remembers the longest piece any read returned."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.longest = 0

    def readline(self, size: int | None = -1) -> bytes:
        line = super().readline(size)
        self.longest = max(self.longest, len(line))
        return line

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        self.longest = max(self.longest, len(data))
        return data


def test_bounded_lines_drop_overlong_lines_in_chunks_and_go_on() -> None:
    limit = 1000
    data = (b"a" * limit + b"\n" + b"b" * limit + b"\r\n" + b"c" * (limit + 1) + b"\n"
            + b"d" * (3 << 20) + b"\nshort\n" + b"e" * (limit + 1))
    handle = CountingBytes(data)
    lines = list(bounded_lines(handle, limit))
    assert [None if line is None else line[:1] for line in lines] == [
        b"a", b"b", None, None, b"s", None]
    assert lines[4] == b"short\n"
    assert handle.longest <= 1 << 20  # the 3 MiB line was never held whole
    assert list(bounded_lines(io.BytesIO(b"x\ny"), None)) == [b"x\n", b"y"]


def test_numbered_lines_decode_and_drop_the_byte_order_mark() -> None:
    data = b"\xef\xbb\xbf{}\n" + b"z" * 50 + b"\n\xff ok\n"
    assert list(numbered_lines(io.BytesIO(data), 10)) == [
        (1, "{}\n"), (2, None), (3, "\ufffd ok\n")]


def test_mixture_shares_do_not_overflow() -> None:
    assert mixture_shares([1e308, 1e308, 1e308]) == pytest.approx([1 / 3] * 3)
    assert mixture_shares([3.0, 1.0]) == pytest.approx([0.75, 0.25])
    assert mixture_shares([5e-324, 5e-324]) == pytest.approx([0.5, 0.5])
    assert mixture_shares([0.0, 0.0]) == [] and mixture_shares([]) == []
    assert mixture_shares([1.0, float("inf")]) == [] and mixture_shares([1.0, -1.0]) == []


def test_merge_adds_every_counter() -> None:
    counters = [f.name for f in fields(CorpusStats) if f.name != "errors"]
    assert {"special_files_skipped", "links_skipped", "unknown_files_skipped",
            "oversized_files_skipped", "oversized_records_skipped"} <= set(counters)
    one, two = CorpusStats(), CorpusStats()
    for index, name in enumerate(counters, start=1):
        setattr(one, name, index)
        setattr(two, name, 10 * index)
    one.merge(two)
    assert [getattr(one, name) for name in counters] == [
        11 * i for i in range(1, len(counters) + 1)]
    assert CorpusStats().summary() == "0 records read; skipped: nothing"
    assert not CorpusStats(empty_skipped=3, duplicates_skipped=1).has_problems
