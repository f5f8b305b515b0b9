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


def test_eval_of_a_run_uses_the_runs_prompt_style_template_and_dtype(tmp_path: Path) -> None:
    import json

    import yaml

    from algorithms.config import build_config

    run = tmp_path / "run"
    save_tiny_model(run / "model")
    config = build_config({"model": {"name": str(run / "model"), "template": "plain"},
                           "game": {"prompt_style": "compact"},
                           "trainer": {"precision": "32-true", "output_dir": str(run)}})
    (run / "config.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json")))
    common = ["--suite", "gsm8k", "--limit", "1", "--max-new-tokens", "4", "--no-progress"]

    def settings(model: Path, *extra: str) -> dict[str, object]:
        out = tmp_path / f"report-{len(list(tmp_path.glob('report-*')))}.json"
        assert main(["eval", "--model", str(model), *common, *extra, "--output", str(out)]) == 0
        report = json.loads(out.read_text())
        assert report["settings"]["template"] in out.with_suffix(".md").read_text()
        return report["settings"]  # type: ignore[no-any-return]

    from_run = settings(run)
    assert (from_run["prompt_style"], from_run["template"], from_run["dtype"],
            from_run["from_run"]) == ("compact", "plain", "float32", True)
    told = settings(run / "model", "--prompt-style", "paper", "--dtype", "bfloat16")
    assert (told["prompt_style"], told["template"], told["dtype"]) == ("paper", "plain",
                                                                       "bfloat16")
    plain = settings(save_tiny_model(tmp_path / "other"))
    assert (plain["prompt_style"], plain["template"], plain["from_run"]) == ("paper", "auto",
                                                                            False)
