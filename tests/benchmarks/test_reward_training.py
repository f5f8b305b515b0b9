"""Challenger rewards compared by training (``spice bench rewards --train``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from agents.tiny import save_tiny_model
from spice_cli.main import main

pytestmark = pytest.mark.slow


@pytest.fixture()
def tiny_learn_config(tmp_path: Path) -> Path:
    model = save_tiny_model(tmp_path / "tiny", seed=0)
    config = tmp_path / "tiny-learn.yaml"
    config.write_text(f"""
model: {{name: {model}}}
rollout: {{corpus: "embedded:math", batch_size: 2, attempts: 2, max_document_tokens: 128}}
game: {{group_size: 2}}
challenger: {{max_new_tokens: 8}}
reasoner: {{max_new_tokens: 8, n: 2}}
trainer: {{iterations: 1, output_dir: {tmp_path / 'unused'}, progress: false,
           precision: 32-true, loggers: [csv]}}
evaluation: {{heldout: 4, max_new_tokens: 6}}
""")
    return config


def test_two_rewards_and_a_registered_one_train_side_by_side(
        tiny_learn_config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    plugin = tmp_path / "plugins"
    plugin.mkdir()
    (plugin / "my_rewards.py").write_text(
        "from spice_env.rewards import register_challenger_reward\n"
        "register_challenger_reward('always_half', lambda correct: 0.5, overwrite=True)\n")
    monkeypatch.syspath_prepend(str(plugin))
    out = tmp_path / "bench" / "rewards_train.json"
    code = main(["bench", "rewards", "--train", "--config", str(tiny_learn_config),
                 "--rewards", "variance,absolute_zero,always_half", "--plugin", "my_rewards",
                 "trainer.iterations=1", "--runs-dir", str(tmp_path / "arms"),
                 "--output", str(out)])
    assert code == 0, capsys.readouterr().err
    report = json.loads(out.read_text())
    assert list(report["arms"]) == ["variance", "absolute_zero", "always_half"]
    for reward, arm in report["arms"].items():
        assert arm["iterations"] == 1
        assert arm["heldout"]["n"] == 4 and arm["heldout"]["paired"]["n"] == 4
        config = json.loads(json.dumps(report["config"]))
        assert config["trainer"]["iterations"] == 1
        run = Path(arm["run"])
        assert run == tmp_path / "arms" / reward
        assert (run / "evaluations.jsonl").is_file()
        written = (run / "config.yaml").read_text()
        assert f"challenger_reward: {reward}" in written
    # the same documents in every arm: only the reward differs
    documents = [[json.loads(line)["document_id"] for line in
                  (Path(arm["run"]) / "rollouts.jsonl").read_text().splitlines()]
                 for arm in report["arms"].values()]
    assert documents[0] == documents[1] == documents[2]
    table = out.with_suffix(".md").read_text()
    assert "| always_half |" in table and out.with_suffix(".png").stat().st_size > 1000
    assert report["command"].startswith("spice bench rewards --train") and report["complete"]
    sys.modules.pop("my_rewards", None)


@pytest.mark.parametrize(("arguments", "message"), [
    (["--rewards", "variance"], "go with --train"),
    (["--train", "--rewards", "variance,nope"], "--rewards: nope; registered:"),
    (["--train", "--rewards", "variance,variance"], "each reward once"),
    (["--train", "--plugin", "no_such_module_here"], "--plugin no_such_module_here: cannot be"),
    (["--train", "evaluation.heldout=0"], "needs a held-out set"),
    (["--train", "--seed", "3"], "with --train the config sets the seed"),
])
def test_bad_comparisons_are_one_line_errors(tiny_learn_config: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str],
                                             arguments: list[str], message: str) -> None:
    code = main(["bench", "rewards", "--config", str(tiny_learn_config), *arguments,
                 "--output", str(tmp_path / "r.json")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not Path("runs/bench/r-runs").exists()
