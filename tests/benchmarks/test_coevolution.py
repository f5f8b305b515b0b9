"""The co-evolution probe on a tiny run's checkpoints, and loading policies from runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from agents.scripted import AnswerKey, ScriptedTextAgent
from agents.tiny import save_tiny_model
from algorithms.checkpoints import (
    checkpoint_iteration,
    export_policy,
    load_policy,
    resolve_checkpoint,
)
from algorithms.config import TrainConfig, build_config
from algorithms.run_folder import RunFolder
from algorithms.trainer import train
from benchmarks.coevolution import (
    ProbePoint,
    ProbeSettings,
    markdown,
    model_player,
    plot,
    probe_points,
    run_probe,
)
from spice_cli.main import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two iterations of a tiny run with both checkpoints kept."""
    root = tmp_path_factory.mktemp("coevolution")
    folder = save_tiny_model(root / "model", seed=0)
    config = build_config({
        "model": {"name": str(folder)},
        "rollout": {"corpus": "embedded:math", "batch_size": 2, "attempts": 2,
                    "max_document_tokens": 128},
        "game": {"group_size": 2, "prompt_style": "compact"},
        "challenger": {"max_new_tokens": 8},
        "reasoner": {"max_new_tokens": 8, "n": 2},
        "optimizer": {"lr": 1e-3},
        "trainer": {"iterations": 2, "output_dir": str(root / "run"), "save_every": 1,
                    "keep_checkpoints": 5, "progress": False},
    })
    train(config, agent_wrapper=ScriptedTextAgent)
    return root / "run"


def parameters(model: Any) -> dict[str, torch.Tensor]:
    return {k: v.float() for k, v in model.state_dict().items()}


def test_checkpoints_load_as_policies(tiny_run: Path, tmp_path: Path) -> None:
    found = RunFolder(tiny_run).checkpoints()
    assert [checkpoint_iteration(p) for p in found] == [1, 2]
    last = tiny_run / "checkpoints" / "last"
    assert resolve_checkpoint(last) == found[-1] and resolve_checkpoint(tiny_run) is None
    final = load_policy(last, dtype=torch.float32)
    exported = load_policy(tiny_run / "model", dtype=torch.float32)
    first = load_policy(found[0], dtype=torch.float32)
    a, b, c = parameters(final.model), parameters(exported.model), parameters(first.model)
    assert all(torch.equal(a[k], b[k]) for k in a)  # the last checkpoint is the export
    assert any(not torch.equal(a[k], c[k]) for k in a)  # iteration 1 differs
    assert "base" in final.source
    folder = Path(export_policy(found[0], tmp_path / "work"))
    assert folder.name.startswith("run-iter-000001-") and (folder / "config.json").is_file()
    assert export_policy(found[0], tmp_path / "work") == str(folder)  # exported once
    again = load_policy(folder, dtype=torch.float32)
    assert all(torch.equal(c[k], v) for k, v in parameters(again.model).items())
    assert export_policy("some/hub-id", tmp_path) == "some/hub-id"
    with pytest.raises(FileNotFoundError, match="is not a run folder"):
        probe_points(tmp_path)


def scripted_player(key: AnswerKey) -> Any:
    def factory(point: ProbePoint, config: TrainConfig, settings: ProbeSettings) -> Any:
        return ScriptedTextAgent(model_player(point, config, settings), p_valid=0.75,
                                 p_correct=0.5, answer_key=key)

    return factory


def test_probe_on_a_tiny_run(tiny_run: Path, tmp_path: Path) -> None:
    settings = ProbeSettings(documents=4, questions_per_document=2, seed=3)
    report = run_probe(tiny_run, settings, player_factory=scripted_player(AnswerKey()),
                       progress=False)
    assert report["frozen_iteration"] == 0 and report["group_size"] == 2
    assert [p["iteration"] for p in report["points"]] == [0, 1, 2]
    assert len(report["pool"]) == 4
    for key in ("frozen_reasoner", "frozen_challenger"):
        rows = report[key]
        assert [r["iteration"] for r in rows] == [0, 1, 2]
        for row in rows:
            assert row["questions_written"] == 8 and 0 < row["valid_questions"] <= 8
            assert 0.0 <= row["pass_rate"] <= 1.0
    # the frozen Challenger's questions are the same for every Reasoner
    assert len({r["valid_questions"] for r in report["frozen_challenger"]}) == 1
    again = run_probe(tiny_run, settings, player_factory=scripted_player(AnswerKey()),
                      progress=False)
    assert again == report  # seeded
    later = run_probe(tiny_run, settings.model_copy(update={"freeze": 1}),
                      player_factory=scripted_player(AnswerKey()), progress=False)
    assert [r["iteration"] for r in later["frozen_reasoner"]] == [1, 2]
    assert "Reasoner frozen at base" in markdown(report)
    assert plot(report, tmp_path / "probe.png").stat().st_size > 10_000
    with pytest.raises(ValueError, match="no probe point at iteration 7"):
        run_probe(tiny_run, settings.model_copy(update={"freeze": 7}),
                  player_factory=scripted_player(AnswerKey()), progress=False)


def test_spice_bench_coevolution_cli(tiny_run: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "coevolution.json"
    code = main(["bench", "coevolution", "--run", str(tiny_run), "--documents", "2",
                 "--questions-per-document", "1", "--output", str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    assert report["command"].startswith("spice bench coevolution") and report["machine"]
    # a random tiny model writes no valid question: reported as such, not as a zero
    assert all(r["pass_rate"] is None and r["valid_questions"] == 0
               for r in report["frozen_reasoner"])
    assert out.with_suffix(".md").is_file() and out.with_suffix(".png").is_file()
    assert main(["bench", "coevolution", "--run", str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err
