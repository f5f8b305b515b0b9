"""The `spice` command line."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from agents.tiny import save_tiny_model
from spice_cli.main import PackageConflictError, main, require_ours


def test_demo_plays_scripted_episodes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--agent", "scripted", "--episodes", "4", "--corpus", "embedded:math",
                 "--group-size", "4"]) == 0
    out = capsys.readouterr().out
    assert out.count("question:") == 3  # the fourth episode shows an invalid question
    assert "invalid question" in out and "rewards: challenger" in out
    assert "pass rate" in out and "reasoner answers:" in out


def test_demo_plays_model_episodes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # the real default is the embedded model (make demo); a tiny model keeps this test fast
    folder = save_tiny_model(tmp_path / "tiny")
    assert main(["demo", "--model", str(folder), "--episodes", "2", "--group-size", "2"]) == 0
    out = capsys.readouterr().out
    assert f"loading {folder}" in out
    assert out.count("invalid question") == 2  # a random model writes no valid question


def test_conflicting_agents_package_is_named(monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    impostor = types.ModuleType("agents")
    impostor.__file__ = "/elsewhere/agents/__init__.py"
    monkeypatch.setitem(sys.modules, "agents", impostor)
    with pytest.raises(PackageConflictError, match="OpenAI Agents SDK"):
        require_ours("agents")
    assert main(["demo", "--episodes", "1"]) == 2
    assert "dedicated virtual environment" in capsys.readouterr().err


def test_ours_is_accepted() -> None:
    assert require_ours("agents").SPICE_ENV_PACKAGE is True
    assert require_ours("algorithms").SPICE_ENV_PACKAGE is True
