"""algorithms.model_card and ``spice export``: a run's policy as a transformers folder with a
model card, from its model/ or from a checkpoint, and the push to the Hub up to the upload."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from agents.scripted import ScriptedTextAgent
from agents.tiny import save_tiny_model
from algorithms.config import build_config
from algorithms.model_card import model_card
from algorithms.trainer import train
from spice_cli.main import main


def test_the_card_shows_settings_metrics_and_evaluation() -> None:
    config = build_config({"model": {"name": "Qwen/Qwen3-4B-Base"},
                           "trainer": {"iterations": 3}})
    history = [{"iteration": 1, "eval/math/accuracy": 0.25, "challenger/valid_rate": 0.5},
               {"iteration": 3, "eval/math/accuracy": 0.375, "challenger/valid_rate": 0.75,
                "train/loss": 0.0123456}]
    card = model_card(config, history, name="my-policy", has_curves=True)
    assert card.startswith("---\nbase_model: Qwen/Qwen3-4B-Base\n")
    assert "# my-policy" in card and "| iterations trained | 3 of 3 |" in card
    assert "| math | 0.250 (iteration 1) | 0.375 (iteration 3) |" in card
    assert "| challenger/valid_rate | 0.75 |" in card and "| train/loss | 0.01235 |" in card
    assert "![training curves](curves.png)" in card
    local = model_card(build_config({"model": {"name": "./models/tiny"}}), [], name="x")
    assert "base_model" not in local and "## Metrics" not in local


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("export")
    folder = save_tiny_model(root / "tiny", seed=0)
    out = root / "run"
    train(build_config({
        "model": {"name": str(folder)},
        "rollout": {"corpus": "embedded:math", "batch_size": 2, "attempts": 2,
                    "max_document_tokens": 128},
        "game": {"group_size": 2}, "challenger": {"max_new_tokens": 8},
        "reasoner": {"max_new_tokens": 8}, "optimizer": {"lr": 1e-3},
        "trainer": {"iterations": 1, "output_dir": str(out), "save_every": 1,
                    "progress": False}}), agent_wrapper=ScriptedTextAgent)
    return out


def weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


@pytest.mark.slow
def test_spice_export_writes_a_loadable_folder_with_its_card(tiny_run: Path,
                                                             tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    out = tmp_path / "policy"
    assert main(["export", str(tiny_run), str(out)]) == 0
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "README.md", "spice_config.yaml",
            "curves.png"} <= names
    card = (out / "README.md").read_text()
    assert "| iterations trained | 1 of 1 |" in card and "challenger/valid_rate" in card
    AutoModelForCausalLM.from_pretrained(out)
    exported = weights(tiny_run / "model")
    assert all(torch.equal(exported[k], v) for k, v in weights(out).items())

    from_checkpoint = tmp_path / "from-ckpt"
    assert main(["export", str(tiny_run / "checkpoints" / "last"), str(from_checkpoint)]) == 0
    assert "checkpoint `iter-000001.ckpt`" in (from_checkpoint / "README.md").read_text()
    AutoModelForCausalLM.from_pretrained(from_checkpoint)


@pytest.mark.slow
def test_export_refuses_what_it_cannot_do(tiny_run: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    assert main(["export", str(tiny_run), str(full)]) == 2
    assert "not empty" in capsys.readouterr().err and (full / "keep.txt").exists()
    assert main(["export", str(tiny_run), str(full), "--overwrite"]) == 0
    assert not (full / "keep.txt").exists()
    assert main(["export", str(tmp_path / "nothing"), str(tmp_path / "x")]) == 2
    assert "not a run folder or a checkpoint" in capsys.readouterr().err
    assert main(["export", str(tiny_run), str(tmp_path / "y"), "--push-to-hub", "a b"]) == 2
    assert "not a repository id" in capsys.readouterr().err


@pytest.mark.slow
def test_push_goes_through_huggingface_hub_up_to_the_upload(
        tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    import huggingface_hub

    calls: list[tuple[str, dict[str, Any]]] = []

    def create_repo(self: Any, repo_id: str, **options: Any) -> None:
        calls.append(("create_repo", {"repo_id": repo_id, **options}))

    def upload_folder(self: Any, **options: Any) -> Any:
        calls.append(("upload_folder", options))
        names = sorted(p.name for p in Path(options["folder_path"]).iterdir())
        calls.append(("files", {"names": names}))
        return type("Info", (), {"commit_url": "https://hub.example/me/policy/commit/1"})()

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    out = tmp_path / "pushed"
    assert main(["export", str(tiny_run), str(out), "--push-to-hub", "me/policy",
                 "--private"]) == 0
    assert calls[0] == ("create_repo", {"repo_id": "me/policy", "repo_type": "model",
                                        "private": True, "exist_ok": True})
    assert calls[1][1]["repo_id"] == "me/policy" and calls[1][1]["folder_path"] == str(out)
    assert "README.md" in calls[2][1]["names"]
    assert "pushed to https://hub.example/me/policy/commit/1" in capsys.readouterr().out

    def refuse(self: Any, **options: Any) -> Any:
        raise RuntimeError("401 Client Error: Unauthorized\nmore lines")

    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", refuse)
    assert main(["export", str(tiny_run), str(tmp_path / "again"), "--push-to-hub",
                 "me/policy"]) == 2
    err = capsys.readouterr().err.strip()
    assert "401" in err and "\n" not in err and (tmp_path / "again" / "README.md").exists()
