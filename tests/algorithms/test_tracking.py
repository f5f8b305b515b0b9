"""algorithms.tracking: the config as hyperparameters, W&B resumed into the same run, and the
rollouts as a W&B table — against the real wandb package in offline mode."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agents.scripted import ScriptedTextAgent
from agents.tiny import save_tiny_model
from algorithms.config import build_config
from algorithms.run_folder import RunFolder
from algorithms.tracking import hyperparameters, log_config, wandb_run_id
from algorithms.trainer import train


def test_hyperparameters_are_flat_and_plain() -> None:
    config = build_config({"trainer": {"wandb_tags": ["a", "b"]}})
    flat = hyperparameters(config)
    assert flat["game.group_size"] == config.game.group_size
    assert flat["optimizer.lr"] == config.optimizer.lr
    assert json.loads(flat["trainer.wandb_tags"]) == ["a", "b"]
    assert all(isinstance(v, bool | int | float | str) for v in flat.values())


def test_the_wandb_id_is_read_back_on_resume(tmp_path: Path) -> None:
    run = RunFolder(tmp_path)
    first = wandb_run_id(run, resume=False)
    assert first.isalnum() and not run.wandb_id_file.exists()  # kept once the run owns it
    run.wandb_id_file.write_text(first + "\n")
    assert wandb_run_id(run, resume=True) == first
    assert wandb_run_id(run, resume=False) != first  # a fresh start is a new W&B run
    run.wandb_id_file.write_text("../../etc\n")
    assert wandb_run_id(run, resume=True).isalnum()  # a damaged id is replaced


def test_a_logger_without_hyperparameters_is_skipped() -> None:
    class NoParams:
        def log_hyperparams(self, params: Any) -> None:
            raise NotImplementedError

    class Keeps:
        def __init__(self) -> None:
            self.params: dict[str, Any] = {}

        def log_hyperparams(self, params: Any) -> None:
            self.params = dict(params)

    keeps = Keeps()
    log_config([NoParams(), keeps], build_config({"trainer": {"output_dir": "unused"}}))
    assert "rollout.batch_size" in keeps.params


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_wandb_offline_gets_the_config_resumes_the_same_run_and_a_rollout_table(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    folder = save_tiny_model(tmp_path / "tiny", seed=0)
    out = tmp_path / "run"

    def config(iterations: int) -> Any:
        return build_config({
            "model": {"name": str(folder)},
            "rollout": {"corpus": "embedded:math", "batch_size": 2, "attempts": 2,
                        "max_document_tokens": 128},
            "game": {"group_size": 2}, "challenger": {"max_new_tokens": 8},
            "reasoner": {"max_new_tokens": 8},
            "trainer": {"iterations": iterations, "output_dir": str(out), "save_every": 1,
                        "progress": False, "loggers": ["csv", "tensorboard", "wandb"],
                        "wandb_tags": ["test"], "wandb_name": "tiny-run"}})

    train(config(1), agent_wrapper=ScriptedTextAgent)
    run_id = RunFolder(out).wandb_id_file.read_text().strip()
    train(config(2), resume=True, agent_wrapper=ScriptedTextAgent)
    assert RunFolder(out).wandb_id_file.read_text().strip() == run_id
    runs = sorted((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and all(r.name.endswith(f"-{run_id}") for r in runs)  # one W&B run
    logged = (runs[0] / f"run-{run_id}.wandb").read_bytes()  # offline: the run's record log
    assert b"game.group_size" in logged and b"optimizer.lr" in logged and b"tiny-run" in logged
    tables = list(runs[0].glob("files/media/table/rollouts_*.table.json"))
    assert tables and "question" in json.loads(tables[0].read_text())["columns"]
    events = b"".join(p.read_bytes() for p in (out / "tensorboard").glob("events.out.*"))
    assert b"game.group_size" in events  # TensorBoard's hyperparameters
