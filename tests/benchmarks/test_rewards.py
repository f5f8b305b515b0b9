"""The Challenger-reward benchmark: curves, a run's questions, the seeded simulation, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.rewards import (
    CurriculumSettings,
    read_correctness,
    reward_curves,
    rollout_preferences,
    simulate_curriculum,
)
from spice_env.rewards import CHALLENGER_REWARDS, r_zero_reward, variance_reward


def test_curves_are_the_rewards_at_each_k() -> None:
    curves = reward_curves(CHALLENGER_REWARDS, (4, 8))
    assert curves["r_zero"][4] == [0.0, 0.5, 1.0, 0.5, 0.0]
    assert curves["threshold"][8] == [0.0] + [1.0] * 7 + [0.0]
    assert curves["variance"][8][4] == pytest.approx(1.0)
    assert curves["absolute_zero"][8][1] == pytest.approx(0.875)


def test_preferences_on_rollouts(tmp_path: Path) -> None:
    records = [{"iteration": 1, "attempts": [
        {"valid": True, "answers": [{"correct": c} for c in [True, False, True, False]]},
        {"valid": True, "answers": [{"correct": c} for c in [False] * 4]},
        {"valid": True, "answers": [{"correct": c} for c in [True, False, False, False]]},
        {"valid": False, "answers": []}]}]
    path = tmp_path / "rollouts.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n{not json\n")
    vectors = read_correctness(path)
    assert [sum(v) for v in vectors] == [2, 0, 1]
    found = rollout_preferences(vectors, {"r_zero": r_zero_reward,
                                          "variance": variance_reward}, top_share=0.3)
    assert found["r_zero"]["top_pass_rate"] == 0.5  # prefers the p = 0.5 question
    assert found["r_zero"]["share_rewarded"] == pytest.approx(2 / 3)
    assert found["variance"]["mean_reward"] > 0


def test_simulation_is_seeded_and_tracks_a_static_reasoner() -> None:
    settings = CurriculumSettings(steps=150, skill_rate=0.0, challenger_rate=2.0)
    first = simulate_curriculum(variance_reward, settings)
    assert first == simulate_curriculum(variance_reward, settings)
    other = simulate_curriculum(variance_reward, CurriculumSettings(steps=150, skill_rate=0.0,
                                                                    challenger_rate=2.0, seed=1))
    assert other != first
    # with a Reasoner that does not learn, the variance reward settles at pass rate 0.5, and
    # Absolute Zero's 1 − p prefers harder questions
    assert first.mean_pass_rate == pytest.approx(0.5, abs=0.08)
    hard = simulate_curriculum(CHALLENGER_REWARDS["absolute_zero"], settings)
    assert hard.mean_pass_rate < first.mean_pass_rate - 0.1
    learning = simulate_curriculum(variance_reward, CurriculumSettings(steps=150))
    assert learning.skill_growth > 0 and len(learning.skill) == 151


def test_spice_bench_rewards_writes_its_reports(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    from spice_cli.main import main

    output = tmp_path / "rewards.json"
    assert main(["bench", "rewards", "--steps", "20", "--output", str(output)]) == 0
    report = json.loads(output.read_text())
    assert set(report["rewards"]) >= {"variance", "r_zero", "absolute_zero", "threshold"}
    assert report["command"].startswith("spice bench rewards") and report["machine"]
    assert output.with_suffix(".png").stat().st_size > 10_000
    assert "Simulated curriculum" in output.with_suffix(".md").read_text()
    assert main(["bench", "rewards", "--rollouts", str(tmp_path / "missing.jsonl")]) == 2
    assert "no rollouts file" in capsys.readouterr().err
