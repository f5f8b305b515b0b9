"""Every user error of the `spice` command: one line on stderr naming the fix, exit code 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agents.tiny import save_tiny_model
from spice_cli.main import build_parser, main


def _fails(argv: list[str], capsys: pytest.CaptureFixture[str], *needles: str) -> str:
    """Run ``spice argv``: it must fail with exit code 2 and one line mentioning ``needles``."""
    code = main(argv)
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert code == 2, (argv, captured.err)
    assert len(lines) == 1, lines
    assert "Traceback" not in captured.err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    broken = tmp_path / "broken.yaml"
    broken.write_text("trainer: [unclosed\n")
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("trainer:\n  output_dir: caf\xe9\n".encode("latin-1"))
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    empty = tmp_path / "empty.json"
    empty.write_text("{}")
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    return {"broken": broken, "latin": latin, "file": a_file, "empty": empty,
            "garbage": garbage, "tmp": tmp_path}


def test_config_files(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    _fails(["train", "--config", str(files["tmp"] / "missing.yaml")], capsys,
           "no config file", "spice configs")
    _fails(["train", "--config", "cpu-dmeo"], capsys, "did you mean cpu-demo")
    _fails(["train", "--config", str(files["broken"])], capsys, "not valid YAML", "line 2")
    _fails(["train", "--config", str(files["latin"])], capsys, "not UTF-8", "save it as UTF-8")
    _fails(["train", "--config", str(files["tmp"])], capsys, "is a folder")


def test_config_values(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    _fails(["train", "--config", "cpu-demo", "trainer.iteratons=3"], capsys,
           "trainer.iteratons: unknown key", "did you mean trainer.iterations?")
    _fails(["train", "trainer.iterations=0", "game.group_sise=4"], capsys,
           "trainer.iterations", "did you mean game.group_size?")
    _fails(["train", "trainer.iterations"], capsys, "dotted.key=value")
    out = f"trainer.output_dir={files['tmp'] / 'run'}"
    _fails(["train", "--config", "cpu-learn", "--dry-run", out,
            "evaluation.benchmarks=[gsm8k,gsm9k]"], capsys,
           "evaluation.benchmarks: unknown benchmark 'gsm9k'")
    _fails(["train", "--dry-run", out, "evaluation.heldout=5", "rollout.text_field=question"],
           capsys, "rollout.text_field 'question' is also a held-out field")


def test_run_folder(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    _fails(["train", "--config", "cpu-demo", f"trainer.output_dir={files['file']}",
            "--dry-run"], capsys, "is a file", "choose a folder")
    _fails(["train", "--config", "cpu-demo", f"trainer.output_dir={files['file']}/run",
            "--dry-run"], capsys, "cannot be created")
    _fails(["train", "--config", "cpu-demo", f"trainer.output_dir={files['tmp']}/none",
            "--resume", "--dry-run"], capsys, "nothing to resume", "without --resume")
    earlier = files["tmp"] / "earlier"
    earlier.mkdir()
    (earlier / "metrics.jsonl").write_text("{}\n")
    (earlier / "spice-run.json").write_text("{}\n")
    _fails(["train", "--config", "cpu-demo", f"trainer.output_dir={earlier}"], capsys,
           "holds an earlier run", "--resume", "trainer.overwrite=true")
    theirs = files["tmp"] / "theirs"
    (theirs / "model").mkdir(parents=True)
    _fails(["train", "--config", "cpu-demo", f"trainer.output_dir={theirs}",
            "trainer.overwrite=true", "--dry-run"], capsys, "holds model/ but no spice-run.json")
    assert (theirs / "model").is_dir()


def test_corpora(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    _fails(["train", "--config", "cpu-demo", f"rollout.corpus={files['tmp']}/none.jsonl",
            "--dry-run"], capsys, "rollout.corpus", "does not exist")
    _fails(["train", "--config", "cpu-demo", "rollout.corpus={embedded:math: -1}",
            "--dry-run"], capsys, "mixture weight", "finite number >= 0")
    _fails(["train", "--config", "cpu-demo", "rollout.corpus={}", "--dry-run"], capsys,
           "at least one component")
    _fails(["train", "--config", "cpu-demo", "rollout.corpus=ftp://host/x", "--dry-run"],
           capsys, "unknown corpus spec scheme")
    blank = files["tmp"] / "blank.jsonl"
    blank.write_text('{"text": ""}\n{"other": 1}\n')
    _fails(["train", "--config", "cpu-demo", f"rollout.corpus={blank}", "--dry-run"], capsys,
           "no usable text", "no text field")


def test_models_and_packages(files: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
                             capsys: pytest.CaptureFixture[str]) -> None:
    _fails(["train", "--config", "cpu-demo", f"model.name={files['tmp']}/no-such-model",
            "--dry-run"], capsys, "no model folder", "shipped name")
    _fails(["train", "--config", "cpu-demo", f"model.name={files['tmp']}", "--dry-run"],
           capsys, "not a transformers model folder")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    _fails(["train", "--config", "cpu-demo", "model.name=some-org/some-model"], capsys,
           "cannot be fetched", "HF_HUB_OFFLINE=1")
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "wandb" else real(name, *a))
    _fails(["train", "--config", "cpu-demo", "trainer.loggers=[csv,wandb]", "--dry-run"],
           capsys, "wandb package", "spice-env[wandb]")
    _fails(["train", "--config", "cpu-demo-ppo", "trainer.strategy=fsdp", "--dry-run"],
           capsys, "fsdp", "value head")
    _fails(["train", "--config", "cpu-demo", "trainer.strategy=fsdp",
            "trainer.precision=16-mixed", "--dry-run"], capsys, "fsdp", "bf16-mixed")


def test_endpoints(capsys: pytest.CaptureFixture[str]) -> None:
    _fails(["eval", "--model", "served", "--backend", "openai", "--base-url",
            "http://127.0.0.1:9/v1", "--suite", "gsm8k"], capsys, "cannot be reached",
           "--base-url")
    _fails(["train", "--config", "baseline-strong-challenger", "--dry-run",
            "model.frozen_challenger_endpoint=http://127.0.0.1:9/v1",
            "model.name=qwen2.5-coder-0.5b-instruct", "rollout.corpus=embedded:math",
            "model.backend=hf", "trainer.output_dir=runs/never-made"], capsys,
           "frozen_challenger_endpoint", "cannot be reached")


def test_eval_arguments(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    _fails(["eval", "--model", str(files["file"])], capsys, "is a file")
    _fails(["eval", "--model", str(files["tmp"] / "gone" / "model")], capsys, "no such folder")
    _fails(["eval", "--model", "x", "--output", str(files["file"] / "report.json")], capsys,
           "cannot be written")
    _fails(["eval", "--model", "x", "--output", str(files["tmp"])], capsys, "is a folder")
    _fails(["eval", "--suite", "math"], capsys, "--model is required")
    _fails(["eval", "--model", "x", "--suite", "nope"], capsys, "unknown suite")
    _fails(["eval", "--model", "x", "--limit", "0"], capsys, "--limit must be at least 1")
    _fails(["eval", "--compare", str(files["tmp"] / "a.json"), str(files["empty"])], capsys,
           "no report at")
    _fails(["eval", "--compare", str(files["empty"]), str(files["empty"])], capsys,
           "holds no benchmark results")
    _fails(["eval", "--compare", str(files["garbage"]), str(files["empty"])], capsys,
           "not JSON")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_eval_output_in_a_read_only_folder(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        _fails(["eval", "--model", "x", "--output", str(locked / "r.json")], capsys,
               "cannot be written")
    finally:
        locked.chmod(0o755)


def test_demo_arguments(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    _fails(["demo", "--agent", "scripted", "--episodes", "0"], capsys, "--episodes")
    _fails(["demo", "--agent", "scripted", "--group-size", "0"], capsys, "--group-size")
    _fails(["demo", "--agent", "scripted", "--p-correct", "1.5"], capsys, "--p-correct")
    _fails(["demo", "--temperature", "-1"], capsys, "--temperature")
    _fails(["demo", "--agent", "scripted", "--challenger-reward", "nope"], capsys,
           "choose one of", "variance")
    _fails(["demo", "--agent", "scripted", "--corpus", str(tmp_path / "none")], capsys,
           "does not exist")
    _fails(["demo", "--agent", "robot"], capsys, "invalid choice", "spice demo --help")
    _fails(["demo", "--model", str(tmp_path / "no" / "model")], capsys, "no such folder")


def test_parser_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    _fails(["frobnicate"], capsys, "invalid choice", "spice --help")
    _fails(["train", "--confg", "x"], capsys, "unrecognized arguments: --confg")
    _fails(["train", "--dry"], capsys, "unrecognized arguments: --dry")  # no abbreviations
    _fails(["eval", "--model", "x", "--limit", "many"], capsys, "invalid int value")
    _fails(["bench", "rewards", "--rollouts", "/nonexistent/rollouts.jsonl"], capsys,
           "no rollouts file")
    _fails(["bench", "coevolution", "--run", "/nonexistent/run"], capsys, "not a run folder")
    _fails(["assets", "--models", "gpt-5"], capsys, "no shipped model")


def test_help_is_plain_text_with_defaults() -> None:
    parser = build_parser()
    subcommands = next(a for a in parser._actions if a.dest == "command").choices
    assert isinstance(subcommands, dict)
    for name, sub in subcommands.items():
        text = sub.format_help()
        assert "``" not in text and ":func:" not in text and ":mod:" not in text, name
        for action in sub._actions:
            if action.dest not in ("help", "benchmark"):
                assert action.help, f"spice {name} {action.option_strings} has no help"
    train = subcommands["train"].format_help()
    assert "--dry-run" in train and "--print-config" in train
    evaluation = subcommands["eval"].format_help()
    assert "(default: 2048)" in evaluation and "(default: for a run, the style" in evaluation


def test_version_and_help_exit_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("spice-env ")
    assert main(["train", "--help"]) == 0


def test_a_real_user_error_through_the_console_script(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "spice_cli.main", "train", "--config",
                           str(tmp_path / "nope.yaml")], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


def test_a_last_pointer_is_a_model_argument(tmp_path: Path) -> None:
    from spice_cli.common import check_model_argument as _check_model_argument

    pointer = tmp_path / "run" / "checkpoints" / "last"
    pointer.parent.mkdir(parents=True)
    pointer.write_text("iter-000002.ckpt")
    (tmp_path / "run" / "checkpoints" / "iter-000002.ckpt").write_bytes(b"")
    _check_model_argument(str(pointer), "--model")
    _check_model_argument(str(pointer.parent / "iter-000002.ckpt"), "--model")


def test_eval_of_a_checkpoint_folder_that_is_no_model(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "half"
    folder.mkdir()
    (folder / "notes.txt").write_text("no model here")
    _fails(["eval", "--model", str(folder), "--suite", "gsm8k", "--limit", "1"], capsys,
           "not a transformers model folder")


def test_eval_warns_before_a_long_cpu_run(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks.evaluation import EvalSettings, cpu_eval_seconds, suite_benchmarks

    offline = suite_benchmarks("offline")
    paper, questions = cpu_eval_seconds(offline, EvalSettings(), 630_000_000)
    assert paper > 24 * 3600 and questions == 1319 + 500 + 14042 + 1172
    small, _ = cpu_eval_seconds(offline, EvalSettings(limit=5, max_new_tokens=384), None,
                                hub=False)
    assert small < 600
    folder = save_tiny_model(tmp_path / "tiny")
    out = tmp_path / "r.json"
    assert main(["eval", "--model", str(folder), "--suite", "gsm8k", "--limit", "1",
                 "--max-new-tokens", "4", "--no-progress", "--output", str(out)]) == 0
    assert "warning" not in capsys.readouterr().err
    report = json.loads(out.read_text())
    assert report["benchmarks"]["gsm8k"]["accuracy"] is not None


def test_the_long_cpu_evaluation_warning_names_the_levers(
        capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    import torch

    from benchmarks.evaluation import EvalSettings, suite_benchmarks
    from spice_cli.evaluate import warn_if_long as _warn_if_long

    class Backend:
        model = torch.nn.Linear(1000, 630, device="meta")  # 0.63M parameters: quick ...

    class Agent:
        backend = Backend()

    args = argparse.Namespace(backend="hf", device="cpu")
    _warn_if_long(args, Agent(), suite_benchmarks("gsm8k"), EvalSettings(limit=8))
    assert capsys.readouterr().err == ""
    Backend.model = torch.nn.Linear(1000, 630_000, device="meta")  # 0.63B on all GSM8K: not
    _warn_if_long(args, Agent(), suite_benchmarks("gsm8k"), EvalSettings())
    warning = capsys.readouterr().err
    assert warning.startswith("warning: on a CPU this evaluation may take up to about")
    assert "hours (1319 questions, up to 2048 new tokens each)" in warning
    assert "--limit" in warning and "--max-new-tokens" in warning
    _warn_if_long(argparse.Namespace(backend="hf", device="cuda"), Agent(),
                  suite_benchmarks("gsm8k"), EvalSettings())
    assert capsys.readouterr().err == ""  # only on a CPU
