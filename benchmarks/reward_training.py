"""Challenger rewards compared by training: the same short learning run under each reward.

:mod:`benchmarks.rewards` compares the rewards on paper and in a simulation; this benchmark
trains. Every arm is the same config (same seed, so the same documents in the same order, the same
held-out set and the same initial policy) with only ``game.challenger_reward`` changed. Each arm
evaluates the held-out set before its first update and after its last, so the table reports per
reward: the held-out gain with its paired standard error, the valid-question rate, the share of
questions with 0 < p < 1 (the frontier the variance reward aims at), the Challenger's mean reward,
and the minutes it took::

    spice bench rewards --train --config cpu-learn --rewards variance,absolute_zero \\
        trainer.iterations=6 --output benchmarks/results/rewards_train.json

A reward of your own joins with ``--plugin my_rewards`` (a module that calls
:func:`spice_env.rewards.register_challenger_reward` when imported) and its name in
``--rewards``.
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from algorithms.config import TrainConfig
from algorithms.evaluation import EvalQuestion
from benchmarks.learning import heldout_records, paired

MEANS = ("challenger/valid_rate", "challenger/frontier_share", "challenger/reward",
         "challenger/pass_rate", "reasoner/reward", "time/iteration")


def arm_config(config: TrainConfig, reward: str, root: Path) -> TrainConfig:
    """``config`` under another Challenger reward, writing into ``root/<reward>``."""
    game = config.game.model_copy(update={"challenger_reward": reward})
    trainer = config.trainer.model_copy(update={"output_dir": str(root / reward),
                                                "overwrite": True})
    return config.model_copy(update={"game": game, "trainer": trainer})


def arm_summary(run: Path, history: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One arm's row: held-out before/after and paired gain, means of the self-play metrics."""
    answered = heldout_records(run)
    row: dict[str, Any] = {"run": str(run)}
    if answered:
        first, last = answered[min(answered)], answered[max(answered)]
        n = len(first)
        row["heldout"] = {"before": sum(r["correct"] for r in first) / n,
                          "after": sum(r["correct"] for r in last) / len(last), "n": n,
                          "paired": paired(first, last)}
    trained = [r for r in history if "challenger/valid_rate" in r]
    for key in MEANS:
        values = [float(r[key]) for r in trained if isinstance(r.get(key), int | float)
                  and math.isfinite(r[key])]
        row[key] = sum(values) / len(values) if values else None
    row["iterations"] = len(trained)
    row["curve"] = [{key: r[key] for key in ("iteration", "eval/heldout/accuracy",
                                             "challenger/frontier_share",
                                             "challenger/valid_rate") if key in r}
                    for r in history]
    return row


def compare_rewards(config: TrainConfig, rewards: Sequence[str], root: Path, *,
                    eval_sets: Mapping[str, Sequence[EvalQuestion]] | None = None,
                    agent_wrapper: Callable[[Any], Any] | None = None,
                    progress: Callable[[str], None] = print,
                    on_arm: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Train one arm per reward, one after another, and gather their rows; ``on_arm`` gets the
    report so far after each arm (to save it: an arm that fails loses no finished one)."""
    from algorithms.trainer import train

    if not config.evaluation.heldout:
        raise ValueError("the comparison needs a held-out set: set evaluation.heldout (the "
                         "cpu-learn config has one)")
    arms: dict[str, Any] = {}
    report = {"benchmark": "rewards_train", "rewards": list(rewards), "arms": arms,
              "config": config.model_dump(mode="json"), "complete": False}
    for reward in rewards:
        arm = arm_config(config, reward, root)
        started = time.perf_counter()
        summary = train(arm, agent_wrapper=agent_wrapper, eval_sets=eval_sets)
        row = arm_summary(Path(arm.trainer.output_dir), summary.history)
        row["minutes"] = round((time.perf_counter() - started) / 60, 1)
        arms[reward] = row
        held = row.get("heldout", {}).get("paired", {})
        progress(f"{reward}: held-out gain {held.get('gain', float('nan')):+.3f} ± "
                 f"{held.get('stderr', float('nan')):.3f}, {row['minutes']} min")
        del summary
        gc.collect()
        if on_arm is not None:
            on_arm(report)
    report["complete"] = True
    return report


def _num(value: float | None, scale: float = 1.0, sign: bool = False) -> str:
    if value is None or not math.isfinite(value):
        return "—"
    digits = 1 if scale != 1.0 else 2  # percentage points with one decimal, shares with two
    return f"{value * scale:+.{digits}f}" if sign else f"{value * scale:.{digits}f}"


def markdown(report: Mapping[str, Any]) -> str:
    """The comparison as a table."""
    config = report["config"]
    lines = ["# Challenger rewards compared by training", "",
             f"`{report.get('command', '')}`", "",
             f"Each arm: {config['trainer']['iterations']} iterations of the same config and "
             f"seed ({config['rollout']['batch_size']} documents per iteration, "
             f"G = {config['game']['group_size']}), only the Challenger reward changed; "
             f"held-out set of {config['evaluation']['heldout']} questions, greedy.", "",
             "| reward | held-out before | after | paired gain (points) | valid questions | "
             "0<p<1 share | Challenger reward | minutes |",
             "|---|---|---|---|---|---|---|---|"]
    for reward, row in report["arms"].items():
        held = row.get("heldout", {})
        pair = held.get("paired", {})
        gain = (f"{_num(pair.get('gain'), 100, True)} ± {_num(pair.get('stderr'), 100)}"
                if pair.get("n") else "—")
        lines.append(f"| {reward} | {_num(held.get('before'), 100)} | "
                     f"{_num(held.get('after'), 100)} | {gain} | "
                     f"{_num(row['challenger/valid_rate'])} | "
                     f"{_num(row['challenger/frontier_share'])} | "
                     f"{_num(row['challenger/reward'])} | {row.get('minutes', '—')} |")
    return "\n".join(lines) + "\n"


def plot(report: Mapping[str, Any], path: Path) -> Path:
    """Held-out accuracy and the 0<p<1 share per iteration, one line per reward."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    for reward, row in report["arms"].items():
        evaluated = [(r["iteration"], r["eval/heldout/accuracy"]) for r in row["curve"]
                     if "eval/heldout/accuracy" in r]
        if evaluated:
            axes[0].plot(*zip(*evaluated, strict=True), marker="o", label=reward)
        share = [(r["iteration"], r["challenger/frontier_share"]) for r in row["curve"]
                 if "challenger/frontier_share" in r]
        if share:
            axes[1].plot(*zip(*share, strict=True), marker=".", label=reward)
    axes[0].set_title("held-out accuracy (greedy)", fontsize=10)
    axes[1].set_title("share of questions with 0 < p < 1", fontsize=10)
    for axis in axes:
        axis.set_xlabel("iteration", fontsize=8)
        axis.set_ylim(-0.02, 1.02)
        axis.grid(alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=8)
        else:
            axis.text(0.5, 0.5, "no data", ha="center", va="center", transform=axis.transAxes)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
