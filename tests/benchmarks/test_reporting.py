"""The report envelope and writer every benchmark and the CLI use."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks.reporting import envelope, write_report


def test_the_envelope_names_command_date_machine_and_versions() -> None:
    found = envelope("spice bench x", ["spice-env", "no-such-distribution"])
    assert list(found) == ["command", "date", "machine", "versions"]
    assert found["command"] == "spice bench x" and found["date"].endswith("+00:00")
    assert found["machine"]["cores"] >= 1 and "python" in found["versions"]
    assert found["versions"]["no-such-distribution"] == "not installed"


def test_write_report_writes_json_markdown_and_picture_side_by_side(tmp_path: Path) -> None:
    drawn: list[Path] = []

    def plot(report: Any, path: Path) -> None:
        path.write_bytes(b"png")
        drawn.append(path)

    out = tmp_path / "deep" / "r.json"
    report = {"name": "é", "value": 1.5}
    written = write_report(report, out, lambda r: f"# {r['name']}\n", plot)
    assert written == [out, out.with_suffix(".md"), out.with_suffix(".png")] and drawn
    assert json.loads(out.read_text("utf-8")) == report and "é" in out.read_text("utf-8")
    assert out.with_suffix(".md").read_text("utf-8") == "# é\n"
    assert write_report(report, tmp_path / "only.json") == [tmp_path / "only.json"]
