"""The Challenger-reward benchmark: how the built-in (and your registered) rewards differ.

Three views, for every reward in :data:`spice_env.rewards.CHALLENGER_REWARDS`:

1. **Curves.** The reward as a function of the number k of correct answers out of G, for
   G = 4, 8 and 16.
2. **A real run's questions.** On the correctness vectors in a training run's
   ``rollouts.jsonl``: each reward's mean, the share of questions it pays, and the mean pass rate
   of the questions it ranks highest (which questions it *prefers*).
3. **A simulated curriculum.** A Challenger chooses question difficulties (a softmax policy over
   difficulty bins, updated by a policy gradient on its reward); a Reasoner with skill ``s``
   answers a question of difficulty ``d`` right with probability ``sigmoid(s − d)`` and its skill
   grows with what it learns from each question, ``p(1 − p)`` (nothing from questions it always
   or never gets right). Evolved under each reward from the same seed, it reports the Reasoner's
   skill growth and the spread of the chosen questions' pass rates.

``spice bench rewards`` writes JSON, Markdown and a PNG (``benchmarks/results/rewards.*``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from algorithms.runlog import read_jsonl
from spice_env.rewards import CHALLENGER_REWARDS

Reward = Callable[[Sequence[bool]], float]


def labels(k: int, g: int) -> list[bool]:
    """G correctness labels with k correct."""
    return [True] * k + [False] * (g - k)


def reward_curves(rewards: Mapping[str, Reward], group_sizes: Sequence[int] = (4, 8, 16)
                  ) -> dict[str, dict[int, list[float]]]:
    """``{reward: {G: [reward at k = 0..G]}}``."""
    return {name: {g: [float(fn(labels(k, g))) for k in range(g + 1)] for g in group_sizes}
            for name, fn in rewards.items()}


def read_correctness(path: Path) -> list[list[bool]]:
    """The correctness vectors of every scored question in a ``rollouts.jsonl``."""
    return [[bool(a.get("correct")) for a in attempt["answers"]]
            for record in read_jsonl(path) for attempt in record.get("attempts", [])
            if attempt.get("valid") and attempt.get("answers")]


def rollout_preferences(vectors: Sequence[Sequence[bool]], rewards: Mapping[str, Reward],
                        top_share: float = 0.25) -> dict[str, dict[str, float]]:
    """Per reward: mean reward, share of questions with a positive reward, and the mean pass
    rate of the ``top_share`` of questions it rewards most (ties broken by order)."""
    out: dict[str, dict[str, float]] = {}
    if not vectors:
        return out
    rates = np.array([sum(v) / len(v) for v in vectors])
    top = max(1, math.ceil(top_share * len(vectors)))
    for name, fn in rewards.items():
        values = np.array([float(fn(list(v))) for v in vectors])
        order = np.argsort(-values, kind="stable")[:top]
        out[name] = {"mean_reward": float(values.mean()),
                     "share_rewarded": float((values > 0).mean()),
                     "top_pass_rate": float(rates[order].mean())}
    return out


@dataclass(frozen=True)
class CurriculumSettings:
    """The simulated curriculum (see the module docstring)."""

    steps: int = 300
    questions_per_step: int = 32
    group_size: int = 8
    bins: int = 13
    difficulty_range: tuple[float, float] = (-6.0, 6.0)
    start_skill: float = 0.0
    skill_rate: float = 0.02
    challenger_rate: float = 0.5
    seed: int = 0


@dataclass(frozen=True)
class CurriculumResult:
    """One reward's simulated run."""

    final_skill: float
    skill_growth: float
    skill: list[float]
    mean_pass_rate: float
    pass_rate_spread: float
    frontier_share: float


def simulate_curriculum(reward: Reward, settings: CurriculumSettings | None = None
                        ) -> CurriculumResult:
    """Evolve a Challenger's difficulty choice and a Reasoner's skill under ``reward``."""
    s = settings or CurriculumSettings()
    rng = np.random.default_rng(s.seed)
    centres = np.linspace(*s.difficulty_range, s.bins)
    preferences = np.zeros(s.bins)
    skill = s.start_skill
    trajectory, rates_seen = [skill], []
    for _ in range(s.steps):
        policy = np.exp(preferences - preferences.max())
        policy /= policy.sum()
        chosen = rng.choice(s.bins, size=s.questions_per_step, p=policy)
        difficulty = centres[chosen] + rng.uniform(-0.5, 0.5, size=chosen.shape) * (
            centres[1] - centres[0])
        p = 1.0 / (1.0 + np.exp(-(skill - difficulty)))
        correct = rng.random((s.questions_per_step, s.group_size)) < p[:, None]
        values = np.array([float(reward(list(row))) for row in correct])
        rates = correct.mean(axis=1)
        rates_seen.append(rates)
        advantage = values - values.mean()  # REINFORCE on the bin choice, mean baseline
        gradient = np.zeros(s.bins)
        np.add.at(gradient, chosen, advantage)
        gradient -= policy * advantage.sum()
        preferences += s.challenger_rate * gradient / s.questions_per_step
        # the Reasoner learns from questions it sometimes gets right
        skill += s.skill_rate * float((rates * (1 - rates)).mean()) * 4
        trajectory.append(skill)
    late = np.concatenate(rates_seen[len(rates_seen) // 2:])
    return CurriculumResult(final_skill=skill, skill_growth=skill - s.start_skill,
                            skill=[round(x, 4) for x in trajectory],
                            mean_pass_rate=float(late.mean()),
                            pass_rate_spread=float(late.std()),
                            frontier_share=float(((late > 0) & (late < 1)).mean()))


def run(rollouts: Path | None = None, settings: CurriculumSettings | None = None,
        rewards: Mapping[str, Reward] | None = None) -> dict[str, Any]:
    """All three views as one JSON-ready report."""
    chosen = dict(rewards or CHALLENGER_REWARDS)
    settings = settings or CurriculumSettings()
    report: dict[str, Any] = {
        "rewards": list(chosen),
        "curves": {name: {str(g): values for g, values in by_g.items()}
                   for name, by_g in reward_curves(chosen).items()},
        "curriculum_settings": asdict(settings),
        "curriculum": {name: asdict(simulate_curriculum(fn, settings))
                       for name, fn in chosen.items()},
    }
    if rollouts is not None:
        vectors = read_correctness(rollouts)
        report["rollouts"] = {"file": rollouts.name, "questions": len(vectors),
                              "preferences": rollout_preferences(vectors, chosen)}
    return report


def markdown(report: Mapping[str, Any]) -> str:
    """A readable summary of :func:`run`'s report."""
    lines = ["# Challenger rewards", ""]
    if "command" in report:
        lines += [f"`{report['command']}`, {report.get('date', '')}.", ""]
    lines += ["## Reward at k correct of G = 8", "",
              "| reward | " + " | ".join(str(k) for k in range(9)) + " |",
              "|---" * 10 + "|"]
    for name in report["rewards"]:
        values = report["curves"][name]["8"]
        lines.append(f"| {name} | " + " | ".join(f"{v:.3f}" for v in values) + " |")
    lines += ["", "## Simulated curriculum", "",
              "| reward | skill growth | mean pass rate | pass-rate spread | 0<p<1 share |",
              "|---|---|---|---|---|"]
    for name in report["rewards"]:
        c = report["curriculum"][name]
        lines.append(f"| {name} | {c['skill_growth']:.3f} | {c['mean_pass_rate']:.3f} | "
                     f"{c['pass_rate_spread']:.3f} | {c['frontier_share']:.3f} |")
    if "rollouts" in report:
        r = report["rollouts"]
        lines += ["", f"## On {r['questions']} questions of `{r['file']}`", "",
                  "| reward | mean reward | share rewarded | pass rate of its top quarter |",
                  "|---|---|---|---|"]
        for name, values in r["preferences"].items():
            lines.append(f"| {name} | {values['mean_reward']:.3f} | "
                         f"{values['share_rewarded']:.3f} | {values['top_pass_rate']:.3f} |")
    return "\n".join(lines) + "\n"


def plot(report: Mapping[str, Any], path: Path) -> Path:
    """Reward curves for each G and the simulated skill trajectories, in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted(int(g) for g in next(iter(report["curves"].values())))
    figure, axes = plt.subplots(1, len(sizes) + 1, figsize=(4.2 * (len(sizes) + 1), 3.6))
    for axis, g in zip(axes, sizes, strict=False):
        for name in report["rewards"]:
            values = report["curves"][name][str(g)]
            axis.plot([k / g for k in range(g + 1)], values, marker="o", markersize=3,
                      label=name)
        axis.set_title(f"G = {g}", fontsize=10)
        axis.set_xlabel("pass rate", fontsize=8)
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("Challenger reward", fontsize=8)
    axes[0].legend(fontsize=7)
    for name in report["rewards"]:
        axes[-1].plot(report["curriculum"][name]["skill"], label=name)
    axes[-1].set_title("simulated Reasoner skill", fontsize=10)
    axes[-1].set_xlabel("step", fontsize=8)
    axes[-1].grid(alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
