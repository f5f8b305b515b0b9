"""The neutral-path check: a run that did not move answers like its base model on every path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.neutral import main, neutral_check

pytestmark = pytest.mark.slow


def test_an_unmoved_run_is_neutral_on_every_load_path(still_run: tuple[Path, Path],
                                                      tmp_path: Path) -> None:
    _, run = still_run
    out = tmp_path / "neutral.json"
    assert main(["--run", str(run), "--limit", "3", "--max-new-tokens", "6", "--output",
                 str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["neutral"] is True and report["items"] == 3
    for path in ("checkpoint file", "checkpoints/last", "run folder", "exported model/"):
        assert report["identical_to_base"][path] == 3, path
    assert "control: module-wide cast" in report["identical_to_base"]
    assert report["settings"]["dtype"] == "bfloat16" and report["settings"]["from_run"]
    table = out.with_suffix(".md").read_text()
    assert "**neutral**" in table and "| checkpoint file | 3/3 |" in table


def test_a_folder_that_is_no_run_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a run folder"):
        neutral_check(tmp_path)
