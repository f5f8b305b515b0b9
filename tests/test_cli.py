"""The `spice` command line."""

from __future__ import annotations

import sys
import types

import pytest

from spice_cli.main import PackageConflictError, main, require_ours


def test_demo_plays_scripted_episodes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--episodes", "4", "--corpus", "embedded:math", "--group-size", "4"]) == 0
    out = capsys.readouterr().out
    assert out.count("question:") == 3  # the fourth episode shows an invalid question
    assert "invalid question" in out and "rewards: challenger" in out
    assert "pass rate" in out


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
