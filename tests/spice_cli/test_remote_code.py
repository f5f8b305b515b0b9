"""A run folder's ``model.trust_remote_code`` is not honoured: a model's own Python code runs
only with ``--trust-remote-code``, and then a warning names whose code it is."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import yaml

from agents.tiny import save_tiny_model, tiny_model
from algorithms.config import build_config
from algorithms.run_folder import RunFolder
from spice_cli.main import main

pytestmark = pytest.mark.slow

CONFIGURATION = '''import os
from pathlib import Path

from transformers import Qwen2Config

Path(os.environ["SPICE_TEST_MARKER"]).write_text("ran")


class MarkerConfig(Qwen2Config):
    pass
'''

MODELING = '''from transformers import Qwen2ForCausalLM

from .configuration_marker import MarkerConfig


class MarkerForCausalLM(Qwen2ForCausalLM):
    config_class = MarkerConfig
'''


def forget_dynamic_modules() -> None:
    for name in [n for n in sys.modules if n.split(".")[0] == "transformers_modules"]:
        del sys.modules[name]


@pytest.fixture
def marker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The file the model's code writes when it is imported; transformers' copies of such code
    go under ``tmp_path`` and are forgotten after the test."""
    import transformers.dynamic_module_utils as dynamic

    modules = tmp_path / "hf-modules"
    monkeypatch.setenv("HF_MODULES_CACHE", str(modules))
    monkeypatch.setattr(dynamic, "HF_MODULES_CACHE", str(modules))  # read at import
    monkeypatch.setattr(sys, "path", list(sys.path))
    path = tmp_path / "marker"
    monkeypatch.setenv("SPICE_TEST_MARKER", str(path))
    forget_dynamic_modules()
    yield path
    forget_dynamic_modules()


def shared_run(root: Path) -> tuple[Path, Path]:
    """A run folder whose config asks for remote code, of a tiny base model that ships code
    (a Qwen2 model with an ``auto_map``), with one checkpoint: ``(run, base model)``. The base
    model's folder is named after ``root``, so that each test imports its own module."""
    base = save_tiny_model(root / f"base-{root.name}", seed=0)
    (base / "configuration_marker.py").write_text(CONFIGURATION)
    (base / "modeling_marker.py").write_text(MODELING)
    config_file = base / "config.json"
    config_json = json.loads(config_file.read_text())
    config_json["auto_map"] = {"AutoConfig": "configuration_marker.MarkerConfig",
                               "AutoModelForCausalLM": "modeling_marker.MarkerForCausalLM"}
    config_file.write_text(json.dumps(config_json))
    config = build_config({
        "model": {"name": str(base), "trust_remote_code": True},
        "rollout": {"corpus": "embedded:math", "batch_size": 1, "max_document_tokens": 64},
        "game": {"group_size": 1, "prompt_style": "compact"},
        "challenger": {"max_new_tokens": 4},
        "reasoner": {"max_new_tokens": 4, "n": 1},
        "trainer": {"output_dir": str(root / "run"), "progress": False},
    })
    run = RunFolder(root / "run")
    run.write_config(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    run.checkpoints_dir.mkdir()
    torch.save({"model": tiny_model(seed=1)[0].state_dict()},
               run.checkpoints_dir / "iter-000001.ckpt")
    return run.path, base


def probe(run: Path, out: Path, *extra: str) -> int:
    return main(["bench", "coevolution", "--run", str(run), "--documents", "1",
                 "--questions-per-document", "1", "--output", str(out), *extra])


def test_coevolution_does_not_run_code_a_run_folder_asks_for(
        tmp_path: Path, marker: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run, _ = shared_run(tmp_path)
    assert probe(run, tmp_path / "probe.json") == 0
    assert not marker.exists()
    err = capsys.readouterr().err
    assert "model.trust_remote_code: true, which is not honoured" in err
    assert "--trust-remote-code" in err and "will be executed" not in err
    report = json.loads((tmp_path / "probe.json").read_text())
    assert report["settings"]["trust_remote_code"] is False


def test_coevolution_runs_the_code_with_the_flag_and_says_so(
        tmp_path: Path, marker: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run, base = shared_run(tmp_path)
    assert probe(run, tmp_path / "probe.json", "--trust-remote-code") == 0
    assert marker.read_text() == "ran"
    lines = [line for line in capsys.readouterr().err.splitlines() if "will be executed" in line]
    assert len(lines) == 1 and str(base) in lines[0]
    assert lines[0].startswith("warning: --trust-remote-code")


def test_eval_of_a_shared_checkpoint(tmp_path: Path, marker: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    run, base = shared_run(tmp_path)
    checkpoint = str(run / "checkpoints" / "iter-000001.ckpt")
    options = ["--suite", "offline", "--limit", "1", "--max-new-tokens", "2", "--no-progress"]
    assert main(["eval", "--model", checkpoint, *options]) == 0
    assert not marker.exists()
    assert "not honoured" in capsys.readouterr().err
    assert main(["eval", "--model", checkpoint, "--trust-remote-code", *options]) == 0
    assert marker.exists()
    err = capsys.readouterr().err
    assert f"warning: --trust-remote-code: Python code from {base}" in err
