"""The co-evolution probe: does each role get harder to beat as training goes on?

The SPICE paper freezes one role at a checkpoint and sweeps the other across later checkpoints on
a fixed pool of documents. Against a frozen Reasoner, later Challengers' questions should be
answered less often (their pass rate falls); against a frozen Challenger, later Reasoners should
answer more often (their pass rate rises).

:func:`run_probe` does this for a run folder. The probe points are the base model (iteration 0)
and every checkpoint the run kept. A pool of distinct documents is drawn once from the run's
corpus (with its mixture weights) and a fixed seed, each with a task format; every Challenger
writes ``questions_per_document`` questions for each document, and each valid question gets G
Reasoner answers (the run's group size). All sampling uses the run's temperatures and one seed,
so points differ by their weights only.

Two sweeps, against the frozen point F:

* *frozen Reasoner*: the questions of the Challenger at each point ≥ F, answered by F;
* *frozen Challenger*: the questions of F, answered by the Reasoner at each point ≥ F.

``spice bench coevolution --run runs/<run>`` writes JSON, Markdown and a PNG.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from agents.base import Generation
from algorithms.config import TrainConfig
from algorithms.run_folder import RunFolder, checkpoint_iteration
from spice_env.corpus import Document, load_corpus
from spice_env.game import GameConfig, SpiceGame
from spice_env.tasks import Task
from spice_env.types import TaskFormat
from spice_env.verify import Verifier


class ProbeSettings(BaseModel):
    """What the probe samples."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    documents: int = Field(default=16, ge=1, description="Documents in the fixed pool (the paper "
                           "used 128).")
    questions_per_document: int = Field(default=2, ge=1, description="Challenger samples per "
                                        "document.")
    group_size: int | None = Field(default=None, ge=1, description="Reasoner answers per "
                                   "question; the run's G when None.")
    freeze: int | None = Field(default=None, ge=0, description="Iteration of the frozen point "
                               "(0: the base model); the earliest point when None.")
    seed: int = Field(default=0, description="Seed of the pool and of all sampling.")
    device: str = Field(default="cpu", description="Where the models run.")
    trust_remote_code: bool = Field(default=False, description="Run the Python code shipped "
                                    "with the run's base model (its auto_map modules). The "
                                    "run's own model.trust_remote_code is not honoured: a run "
                                    "folder may come from someone else.")


@dataclass(frozen=True)
class ProbePoint:
    """A model along the run: the base model (iteration 0) or a checkpoint."""

    iteration: int
    source: str

    @property
    def label(self) -> str:
        return "base" if self.iteration == 0 else f"iter {self.iteration}"


def probe_points(run: str | Path) -> tuple[TrainConfig, list[ProbePoint]]:
    """The run's config and its probe points (base model first, then checkpoints by iteration)."""
    folder = RunFolder(run)
    config = folder.config()
    points = [ProbePoint(0, config.model.name)]
    points += [ProbePoint(checkpoint_iteration(p), str(p)) for p in folder.checkpoints()]
    return config, points


PlayerFactory = Callable[[ProbePoint, TrainConfig, ProbeSettings], Any]
"""Makes the player of a probe point: an object with ``generate(observations, n)`` (as
:class:`~agents.self_play.SelfPlayAgent`) and ``close()``."""


def model_player(point: ProbePoint, config: TrainConfig, settings: ProbeSettings) -> Any:
    """The point's weights behind a :class:`~agents.self_play.SelfPlayAgent` with the run's
    sampling (both roles seeded with ``settings.seed``); the model's own code runs only with
    ``settings.trust_remote_code``, whatever the run's config says."""
    from agents import SelfPlayAgent
    from agents.backends.hf import HFBackend
    from algorithms.checkpoints import load_policy

    loaded = load_policy(point.source, device=settings.device,
                         trust_remote_code=settings.trust_remote_code)
    return SelfPlayAgent(HFBackend(loaded.model, loaded.tokenizer),
                         challenger=config.challenger.model_copy(update={"seed": settings.seed}),
                         reasoner=config.reasoner.model_copy(update={"seed": settings.seed}),
                         template=config.model.template)


@dataclass
class _Pool:
    documents: list[Document]
    formats: list[TaskFormat]


def _text(sample: Generation | str) -> str:
    return sample if isinstance(sample, str) else sample.text


class _Probe:
    def __init__(self, config: TrainConfig, settings: ProbeSettings, verifier: Verifier) -> None:
        self.settings = settings
        self.group = settings.group_size or config.game.group_size
        game = config.game.model_dump()
        game["group_size"] = self.group
        self.game = SpiceGame(GameConfig(**game), verifier)

    def ask(self, player: Any, pool: _Pool) -> tuple[list[Task], int]:
        """The valid questions a Challenger writes for the pool, and how many it wrote."""
        observations = [self.game.challenger_observation(d, f)
                        for d, f in zip(pool.documents, pool.formats, strict=True)]
        outputs = player.generate(observations, self.settings.questions_per_document)
        tasks = []
        for document, fmt, samples in zip(pool.documents, pool.formats, outputs, strict=True):
            for sample in samples:
                parsed = self.game.parse(_text(sample), document, fmt)
                if parsed.task is not None:
                    tasks.append(parsed.task)
        return tasks, len(pool.documents) * self.settings.questions_per_document

    def answer(self, player: Any, tasks: Sequence[Task]) -> list[float]:
        """Each question's pass rate over G Reasoner answers."""
        if not tasks:
            return []
        outputs = player.generate([self.game.reasoner_observation(t) for t in tasks],
                                  self.group)
        rates = []
        for task, samples in zip(tasks, outputs, strict=True):
            verdicts = self.game.verifier.verify_many([(task, _text(s)) for s in samples])
            rates.append(sum(v.correct for v in verdicts) / len(verdicts))
        return rates


def _row(point: ProbePoint, written: int, tasks: Sequence[Task], rates: Sequence[float]
         ) -> dict[str, Any]:
    n = len(rates)
    mean = sum(rates) / n if n else None
    spread = (math.sqrt(sum((r - mean) ** 2 for r in rates) / (n - 1) / n)
              if mean is not None and n > 1 else None)
    return {"iteration": point.iteration, "label": point.label, "questions_written": written,
            "valid_questions": len(tasks), "valid_rate": len(tasks) / written if written else None,
            "pass_rate": mean, "pass_rate_se": spread,
            "frontier_share": (sum(0 < r < 1 for r in rates) / n) if n else None}


def run_probe(run: str | Path, settings: ProbeSettings | None = None, *,
              player_factory: PlayerFactory = model_player, progress: bool = True
              ) -> dict[str, Any]:
    """Run the probe on a run folder and return the report (a JSON-ready dict)."""
    settings = settings or ProbeSettings()
    config, points = probe_points(run)
    if len(points) < 2:
        raise ValueError(f"{run} has no checkpoints to compare with the base model")
    iterations = [p.iteration for p in points]
    freeze = iterations[0] if settings.freeze is None else settings.freeze
    if freeze not in iterations:
        raise ValueError(f"no probe point at iteration {freeze}; the run has "
                         f"{', '.join(map(str, iterations))}")
    frozen_point = points[iterations.index(freeze)]
    sweep = [p for p in points if p.iteration >= freeze]
    corpus = load_corpus(config.rollout.corpus_spec(),
                         max_tokens=config.rollout.max_document_tokens,
                         text_field=config.rollout.text_field, limit=config.rollout.max_records,
                         max_file_bytes=config.rollout.max_file_bytes,
                         max_record_bytes=config.rollout.max_record_bytes)
    rng = np.random.default_rng([settings.seed, 2025])
    indices = _distinct_documents(corpus, rng, settings.documents)
    with Verifier() as verifier:
        probe = _Probe(config, settings, verifier)
        pool = _Pool([corpus[i] for i in indices],
                     [probe.game.choose_format(rng) for _ in indices])
        say = print if progress else (lambda *_: None)
        frozen_reasoner: list[dict[str, Any]] = []
        frozen_challenger: list[dict[str, Any]] = []
        say(f"frozen point: {frozen_point.label}")
        frozen = player_factory(frozen_point, config, settings)
        try:
            frozen_tasks, written = probe.ask(frozen, pool)
            rates = probe.answer(frozen, frozen_tasks)
            frozen_reasoner.append(_row(frozen_point, written, frozen_tasks, rates))
            frozen_challenger.append(_row(frozen_point, written, frozen_tasks, rates))
            for point in sweep:
                if point == frozen_point:
                    continue
                say(f"probing {point.label}")
                player = player_factory(point, config, settings)
                try:
                    tasks, written_c = probe.ask(player, pool)
                    frozen_challenger.append(_row(point, written, frozen_tasks,
                                                  probe.answer(player, frozen_tasks)))
                finally:
                    player.close()
                    del player  # before the next point's model is loaded
                    _release()
                frozen_reasoner.append(_row(point, written_c, tasks, probe.answer(frozen, tasks)))
        finally:
            frozen.close()
    return {
        "run": str(run),
        "frozen_iteration": freeze,
        "points": [{"iteration": p.iteration, "source": p.source} for p in points],
        "settings": settings.model_dump(),
        "group_size": probe.group,
        "pool": [{"document_id": d.id, "task_format": f}
                 for d, f in zip(pool.documents, pool.formats, strict=True)],
        "frozen_reasoner": frozen_reasoner,
        "frozen_challenger": frozen_challenger,
    }


def _distinct_documents(corpus: Any, rng: np.random.Generator, count: int) -> list[int]:
    """``count`` different documents drawn as training draws them (mixture weights included);
    fewer when the corpus has fewer."""
    chosen: list[int] = []
    for _ in range(50):
        for index in corpus.sample_indices(rng, count):
            if index not in chosen and len(chosen) < count:
                chosen.append(index)
        if len(chosen) == count:
            break
    return chosen


def _release() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def markdown(report: dict[str, Any]) -> str:
    """The probe's two sweeps as Markdown tables."""
    frozen = "base" if report["frozen_iteration"] == 0 else f"iter {report['frozen_iteration']}"
    settings = report["settings"]
    lines = [f"# Co-evolution probe of `{report['run']}`", ""]
    if report.get("command"):
        lines += [f"`{report['command']}`", ""]
    lines += [f"A pool of {settings['documents']} documents, {settings['questions_per_document']}"
              f" Challenger samples each, G = {report['group_size']} Reasoner answers per valid "
              f"question, seed {settings['seed']}; frozen point: {frozen}.", ""]
    for key, title, moving in (("frozen_reasoner", f"Reasoner frozen at {frozen}", "Challenger"),
                               ("frozen_challenger", f"Challenger frozen at {frozen}",
                                "Reasoner")):
        lines += [f"## {title}", "",
                  f"| {moving} at | valid questions | pass rate % | ± s.e. | 0<p<1 % |",
                  "|---|---|---|---|---|"]
        for row in report[key]:
            lines.append(f"| {row['label']} | {row['valid_questions']}/{row['questions_written']}"
                         f" | {_pct(row['pass_rate'])} | {_pct(row['pass_rate_se'])} | "
                         f"{_pct(row['frontier_share'])} |")
        lines.append("")
    return "\n".join(lines)


def plot(report: dict[str, Any], path: str | Path) -> Path:
    """Pass rate against the moving role's iteration, one line per sweep."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6.4, 4.0))
    for key, label in (("frozen_reasoner", "Challenger varies, Reasoner frozen"),
                       ("frozen_challenger", "Reasoner varies, Challenger frozen")):
        rows = [r for r in report[key] if r["pass_rate"] is not None]
        xs = [r["iteration"] for r in rows]
        ys = [100 * r["pass_rate"] for r in rows]
        errors = [100 * (r["pass_rate_se"] or 0.0) for r in rows]
        axis.errorbar(xs, ys, yerr=errors, marker="o", capsize=3, label=label)
    axis.set_xlabel("iteration of the role that varies")
    axis.set_ylabel("pass rate (%)")
    axis.set_title(f"Co-evolution probe (frozen at iteration {report['frozen_iteration']})")
    axis.legend()
    axis.grid(alpha=0.3)
    figure.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=120)
    plt.close(figure)
    return out
