"""The offline assets: cache location, integrity checks, and the embedded corpus files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spice_env import assets


def test_cache_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SPICE_ENV_CACHE", str(tmp_path / "explicit"))
    assert assets.cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("SPICE_ENV_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert assets.cache_dir() == tmp_path / "xdg" / "spice-env"


def test_embedded_files_are_built_and_well_formed() -> None:
    for part, minimum, prefix in (("math", 7000, "embedded:math/"),
                                  ("general", 3000, "embedded:general/")):
        path = assets.embedded_corpus_file(part)  # type: ignore[arg-type]
        rows = [json.loads(line) for line in path.read_text("utf-8").splitlines()]
        assert len(rows) >= minimum
        assert all(r["text"].strip() and r["source"].startswith(prefix) for r in rows)
        assert len({r["text"] for r in rows}) == len(rows)
    math_row = json.loads(assets.embedded_corpus_file("math").read_text("utf-8").splitlines()[0])
    assert math_row["text"].startswith("Problem: ") and "\nAnswer: " in math_row["text"]


def test_unknown_part() -> None:
    with pytest.raises(assets.AssetError, match=r"valid: math, general"):
        assets.embedded_corpus_file("poetry")  # type: ignore[arg-type]
