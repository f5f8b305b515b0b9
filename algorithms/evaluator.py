"""The in-loop evaluation of a run: which sets, what is held out, and answering them.

:class:`LoopEvaluator` owns the ``evaluation`` section's work inside the trainer: it checks the
sets it is given, sets the held-out documents aside before the corpus is sharded (and keeps a
digest of them, saved with each checkpoint), says when an evaluation is due, and answers every
set greedily with the current policy, split over the ranks, logging every answer to
``evaluations.jsonl``. What a question and a record are is :mod:`algorithms.evaluation`'s.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from typing import Any

from agents.base import Generation, SamplingConfig
from algorithms.config import ConfigError, TrainConfig
from algorithms.evaluation import (
    HELDOUT,
    EvalQuestion,
    answer_questions,
    heldout_eligible,
    heldout_questions,
    set_metrics,
)
from algorithms.launch import gather, release_memory
from algorithms.run_folder import RunFolder
from algorithms.runlog import append_jsonl, read_jsonl
from spice_env.corpus import Corpus
from spice_env.types import Observation


class LoopEvaluator:
    """The evaluation sets of a run and their answering.

    Args:
        config: the run (its ``evaluation`` section).
        fabric: the run's Fabric.
        run: the run folder.
        eval_sets: question sets by name (the held-out set is added by :meth:`hold_out`).

    Raises:
        ConfigError: a benchmark of ``evaluation.benchmarks`` has no set, or a name cannot
            be part of a metric name.
    """

    def __init__(self, config: TrainConfig, fabric: Any, run: RunFolder,
                 eval_sets: Mapping[str, Sequence[EvalQuestion]]) -> None:
        self.config, self.fabric, self.run = config, fabric, run
        self.sets = _checked(config, eval_sets)

    def __bool__(self) -> bool:
        return bool(self.sets)

    def hold_out(self, corpus: Corpus) -> Corpus:
        """Set the held-out documents aside (the same on every rank: before sharding); the
        rest of the corpus is returned."""
        section = self.config.evaluation
        if not section.heldout:
            return corpus
        from spice_env.corpus import CorpusError

        eligible = heldout_eligible(section.question_field, section.answer_field,
                                    section.heldout_answers)
        try:
            rest, held = corpus.hold_out(
                section.heldout, seed=section.seed, eligible=eligible,
                key=lambda d: str(d.metadata.get(section.question_field, d.text)))
        except CorpusError as error:
            raise ConfigError(f"evaluation.heldout: {error} (documents need the record fields "
                              f"{section.question_field!r} and {section.answer_field!r}"
                              + (", with a numeric answer" if section.heldout_answers ==
                                 "numeric" else "") + ")") from None
        self.sets = {HELDOUT: heldout_questions(held, section.question_field,
                                                section.answer_field), **self.sets}
        return rest

    def digest(self) -> str:
        """A digest of the held-out documents (empty without a held-out set): saved with each
        checkpoint, so that a resume cannot train on what the run held out."""
        questions = self.sets.get(HELDOUT, [])
        return hashlib.sha256("\n".join(q.id for q in questions).encode()).hexdigest()[:16] \
            if questions else ""

    def due(self, iteration: int) -> bool:
        """Whether the iteration just done is followed by an evaluation."""
        every, total = self.config.evaluation.every, self.config.trainer.iterations
        return bool(self.sets) and ((every and iteration % every == 0) or iteration == total)

    def start_recorded(self) -> bool:
        """Whether iteration 0's evaluation is already on record (a run resumed from 0)."""
        return any(int(r.get("iteration", -1)) == 0 for r in read_jsonl(self.run.metrics_file))

    def evaluate(self, engine: Any, runner: Any, iteration: int) -> dict[str, float]:
        """Answer every set greedily with the policy ``engine`` generates with (the questions
        split over the ranks); the ``eval/...`` metrics, and on rank 0 every answer appended to
        ``evaluations.jsonl`` under ``iteration``."""
        fabric = self.fabric
        begin = time.perf_counter()
        local = self._answer(engine, runner, fabric.global_rank, fabric.world_size)
        release_memory()
        metrics: dict[str, float] = {}
        rows: list[dict[str, Any]] = []
        parts = gather(fabric, {"sets": local, "seconds": time.perf_counter() - begin})
        for name in self.sets:
            records = [record for _, record in
                       sorted((pair for part in parts for pair in part["sets"][name]),
                              key=lambda pair: pair[0])]
            metrics.update(set_metrics(name, records))
            rows += [{"iteration": iteration, "set": name, **record} for record in records]
        if fabric.global_rank == 0:
            append_jsonl(self.run.evaluations_file, rows)
        metrics["time/eval"] = max(part["seconds"] for part in parts)  # the slowest rank
        return metrics

    def _answer(self, engine: Any, runner: Any, rank: int, world: int) -> dict[str, Any]:
        """This rank's share of every set, answered: ``{set: [(index, record)]}``."""
        section = self.config.evaluation
        limit = section.max_new_tokens or self.config.reasoner.max_new_tokens
        agent = engine.agent
        saved = agent.sampling["reasoner"]

        def generate(observations: list[Observation], sampling: SamplingConfig
                     ) -> Sequence[Sequence[Generation]]:
            agent.sampling["reasoner"] = sampling
            context = self.fabric.autocast() if engine.shares_module else nullcontext()
            with context:
                return agent.generate(observations, sampling.n)

        local: dict[str, Any] = {}
        engine.model.eval()
        try:
            for name, questions in self.sets.items():
                mine = list(range(rank, len(questions), world))
                records = answer_questions([questions[i] for i in mine], generate,
                                           runner.game.reasoner_observation, runner.verifier,
                                           max_new_tokens=limit, batch_size=section.batch_size,
                                           seed=section.seed)
                local[name] = list(zip(mine, records, strict=True))
        finally:
            agent.sampling["reasoner"] = saved
        return local


def _checked(config: TrainConfig, eval_sets: Mapping[str, Sequence[EvalQuestion]]
             ) -> dict[str, list[EvalQuestion]]:
    sets = {name: list(questions) for name, questions in eval_sets.items()}
    missing = [name for name in config.evaluation.benchmarks if name not in sets]
    if missing:
        raise ConfigError(f"evaluation.benchmarks: no questions were given for "
                          f"{', '.join(missing)}; `spice train` loads them, from Python pass "
                          "eval_sets=benchmarks.evaluation.benchmark_questions(...)")
    if HELDOUT in sets:
        raise ConfigError(f"eval_sets: {HELDOUT!r} is the held-out set's own name")
    for name in sets:
        if not name or "/" in name:
            raise ConfigError(f"eval_sets: {name!r} cannot name a set (metrics are "
                              "eval/<set>/<metric>: no empty name, no '/')")
    return sets
