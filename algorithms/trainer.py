"""The SPICE trainer: Algorithm 1 on Lightning Fabric.

:func:`train` is the entry point (``spice train`` calls it): it builds a
:class:`lightning.fabric.Fabric` from the ``trainer`` section, launches the processes, then
:meth:`SpiceTrainer.setup` builds a :class:`TrainState` (the policy and its optimiser, the
generation engine, the corpus runner; or all of them from a checkpoint with ``resume=True``) and
:meth:`SpiceTrainer.fit` runs the iterations.

One iteration on each rank (:meth:`SpiceTrainer.run_iteration`):

1. B documents of this rank's corpus shard × N Challenger attempts are generated and parsed; G are
   kept per document with the valid:invalid ratio of the N;
2. every kept valid question gets G Reasoner answers (the document is never shown), verified by
   Math-Verify in worker processes; the Challenger's rewards follow from the pass rates;
3. one valid question per document gives the Reasoner's group of G answers;
4. advantages per role group; the update (:meth:`SpiceTrainer.update`, :mod:`algorithms.learner`):
   the algorithm's loss in micro-batches with gradient accumulation (gradients are synchronised
   across ranks once, on the last micro-batch); clipping; one optimiser step;
5. the new weights reach the generation backend (:mod:`algorithms.engine`).

Metrics are gathered to rank 0 and logged (:mod:`algorithms.metrics`, :mod:`algorithms.tracking`);
the state (model, optimiser, scheduler, iteration, RNGs, corpus sampler) is saved atomically
every ``trainer.save_every`` iterations and at the end, into :mod:`algorithms.run_folder`.
"""

from __future__ import annotations

import json
import warnings
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from agents.base import Generation
from agents.self_play import SelfPlayAgent
from algorithms.config import TrainConfig
from algorithms.engine import PolicyEngine, generation_copy
from algorithms.evaluation import EvalQuestion
from algorithms.evaluator import LoopEvaluator
from algorithms.integrity import (
    check_sharded_index,
    refuse_nonfinite,
    tensors_only,
    verify_shared,
)
from algorithms.launch import (
    end_process_group,
    gather,
    make_fabric,
    release_memory,
    resolve_precision,
)
from algorithms.learner import Learner, freeze_input_embeddings
from algorithms.metrics import (
    MemoryWatch,
    Progress,
    Timer,
    ValidRateWatch,
    light,
    merge_iteration,
    reported_peaks,
)
from algorithms.preflight import check_checkpoint_strategy, check_output_dir, check_packages
from algorithms.registry import make_algorithm
from algorithms.run_folder import RunFolder
from algorithms.runlog import (
    append_jsonl,
    finite,
    nonfinite,
    plot_curves,
    read_jsonl,
    rollout_records,
)
from algorithms.samples import TrainingSample, assign_advantages, collect_samples
from algorithms.sharding import is_sharded_checkpoint
from algorithms.tracking import finish_loggers, log_config, log_rollouts
from algorithms.training_state import TrainingProgress
from spice_env.corpus import load_corpus
from spice_env.runner import SpiceRunner


@dataclass
class RunSummary:
    """What :meth:`SpiceTrainer.fit` leaves behind.

    Attributes:
        output_dir: the run folder.
        iterations: iterations completed (including those of a resumed run).
        history: the per-iteration metrics (rank 0; empty on other ranks).
        checkpoint: the last checkpoint written.
        plot: the curves' PNG (rank 0).
        memory: peak resident memory per phase in GB, largest rank (``setup``, ``generate``,
            ``verify``, ``train``, ``sync``, ``eval``, ``save``, ``export``, and ``other``
            for the time between them); empty where it cannot be measured (not Linux).
    """

    output_dir: Path
    iterations: int
    history: list[dict[str, Any]] = field(default_factory=list)
    checkpoint: Path | None = None
    plot: Path | None = None
    memory: dict[str, float] = field(default_factory=dict)


@dataclass
class TrainState:
    """What :meth:`SpiceTrainer.setup` builds on one rank.

    Attributes:
        learner: the trained policy, its optimiser and the update step.
        engine: the generation backend, the agents and the weight sync.
        runner: the corpus shard and the game (rollouts of B documents).
        tokenizer: the policy's tokenizer.
    """

    learner: Learner
    engine: PolicyEngine
    runner: SpiceRunner
    tokenizer: Any

    def close(self) -> None:
        """Release the generation engines and the verifier's workers."""
        self.runner.close()
        self.engine.close()


class SpiceTrainer:
    """Shared-weight SPICE self-play training on one Fabric (any number of processes).

    Args:
        config: the run.
        fabric: a launched Fabric; :func:`train` makes one from ``config.trainer``.
        agent_wrapper: wraps each generating :class:`~agents.self_play.SelfPlayAgent` (the
            trained one and a frozen Challenger) before it plays, to filter, log or script what
            it generates; the wrapper keeps the agent's ``generate(observations, n)`` contract.
        eval_sets: question sets for the in-loop evaluation by name, among them those that
            ``evaluation.benchmarks`` names (see
            :func:`benchmarks.evaluation.benchmark_questions`); the held-out set is drawn from
            the corpus by the trainer itself.
    """

    def __init__(self, config: TrainConfig, fabric: Any,
                 agent_wrapper: Callable[[SelfPlayAgent], Any] | None = None,
                 eval_sets: Mapping[str, Sequence[EvalQuestion]] | None = None) -> None:
        self.config = config
        self.fabric = fabric
        self.agent_wrapper = agent_wrapper
        self.run = RunFolder(config.trainer.output_dir)
        self.evaluator = LoopEvaluator(config, fabric, self.run, eval_sets or {})
        self.precision = resolve_precision(config.trainer.precision, config.trainer.accelerator)
        self.algorithm = make_algorithm(config.algorithm)
        self.iteration = 0
        self.state: TrainState | None = None
        self._last_saved: Path | None = None
        self._watch = ValidRateWatch(config.trainer.valid_rate_warning,
                                     config.trainer.valid_rate_patience)
        self.memory = MemoryWatch()  # peak resident memory per phase

    # ------------------------------------------------------------------ setup
    def setup(self, resume: bool = False) -> TrainState:
        """Load the policy, the generation engine, the runner and the optimiser; with
        ``resume`` restore the last checkpoint of ``trainer.output_dir``. A setup that fails
        half-way releases what it started."""
        cfg, fabric = self.config, self.fabric
        check_packages(cfg)
        checkpoint = self.run.latest() if resume else None
        if resume and checkpoint is None:
            raise FileNotFoundError(f"nothing to resume: {self.run.checkpoints_dir} has no "
                                    "checkpoint (run without --resume to start)")
        if checkpoint is not None:  # a damaged checkpoint fails here, before any model load
            check_checkpoint_strategy(cfg, checkpoint)
            verify_shared(checkpoint, self.run.checkpoints(), rank=fabric.global_rank,
                          share=lambda problem: gather(fabric, problem))
        fabric.seed_everything(cfg.trainer.seed, verbose=False)
        if fabric.global_rank == 0:
            self.run.path.mkdir(parents=True, exist_ok=True)
        fabric.barrier()
        learner, tokenizer, source, generator = self._load_policy()
        # the corpus (and its held-out part) before the generation engines start: a corpus
        # that cannot give what the config asks fails before the expensive part
        corpus = self.evaluator.hold_out(load_corpus(
            cfg.rollout.corpus_spec(), max_tokens=cfg.rollout.max_document_tokens,
            tokenizer=tokenizer, text_field=cfg.rollout.text_field,
            limit=cfg.rollout.max_records, max_file_bytes=cfg.rollout.max_file_bytes,
            max_record_bytes=cfg.rollout.max_record_bytes))
        engine = PolicyEngine(cfg, fabric, learner.model, tokenizer, precision=self.precision,
                              source=source, generator=generator,
                              agent_wrapper=self.agent_wrapper)
        try:
            runner = SpiceRunner(corpus, game=cfg.game, batch_size=cfg.rollout.batch_size,
                                 attempts=cfg.rollout.attempts, seed=cfg.trainer.seed,
                                 max_tokens=cfg.rollout.max_document_tokens,
                                 tokenizer=tokenizer, rank=fabric.global_rank,
                                 world_size=fabric.world_size)
        except BaseException:
            engine.close()
            raise
        state = TrainState(learner=learner, engine=engine, runner=runner, tokenizer=tokenizer)
        try:
            self._restore(state, checkpoint)
        except BaseException:
            state.close()
            raise
        self.state = state
        return state

    def _load_policy(self) -> tuple[Learner, Any, str, Any]:
        """The policy (LoRA-wrapped, checkpointed as configured) inside its learner, its
        tokenizer, where its weights came from and, under FSDP, the full copy every rank
        generates from (made before the module is sharded; None otherwise)."""
        from agents.models import load_model

        cfg = self.config
        train_dtype = torch.bfloat16 if self.precision == "bf16-true" else torch.float32
        loaded = load_model(cfg.model.name, dtype=train_dtype, device="cpu",
                            trust_remote_code=cfg.model.trust_remote_code)
        tokenizer = loaded.tokenizer
        pad = tokenizer.pad_token_id
        module = loaded.model
        if cfg.trainer.lora_rank:
            from algorithms.lora import with_lora

            module = with_lora(module, cfg.trainer.lora_rank)
        if cfg.trainer.freeze_input_embeddings:
            freeze_input_embeddings(module)
        if cfg.trainer.activation_checkpointing:
            module.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False})
        generator = None
        if cfg.trainer.strategy == "fsdp":  # every rank generates from a full copy
            generator = generation_copy(cfg, module, self.precision, self.fabric.device)
        learner = Learner(cfg, self.fabric, module, self.algorithm, precision=self.precision,
                          pad_id=int(pad if pad is not None else tokenizer.eos_token_id))
        return learner, tokenizer, loaded.source, generator

    def _restore(self, state: TrainState, checkpoint: Path | None) -> None:
        """Continue from ``checkpoint``, or clear the folder for a fresh start; then write the
        run's config."""
        fabric = self.fabric
        if checkpoint is not None:
            self._resume(state, checkpoint)
        else:
            check_output_dir(self.config)  # an earlier run is not mixed in unless overwritten
            fabric.barrier()
            if fabric.global_rank == 0:
                self.run.clear()
            fabric.barrier()
        if fabric.global_rank == 0:
            self.run.mark()  # a run from before the marker existed gets one when resumed
            self.run.write_config(self.config.to_yaml())
            log_config(fabric.loggers, self.config)  # and keeps the W&B run's id for --resume
        fabric.barrier()

    def _resume(self, state: TrainState, path: Path) -> None:
        fabric = self.fabric
        stateful = self._stateful(state)
        restored = dict(stateful)
        if is_sharded_checkpoint(path):
            check_sharded_index(path)
        with tensors_only():  # tensors, numbers and strings; never pickled code
            fabric.load(path, restored, weights_only=True)
        for key, target in stateful.items():  # a sharded load hands some states back as dicts
            if restored[key] is not target and isinstance(restored[key], Mapping):
                target.load_state_dict(restored[key])
        refuse_nonfinite(path, state.learner.model, state.learner.optimizer,
                         any_rank=lambda bad: any(gather(fabric, bad)))
        state.engine.sync()
        kept = self.run.cut_back(self.iteration, fabric.global_rank, fabric.world_size)
        if fabric.global_rank == 0:
            from lightning.fabric.loggers import CSVLogger

            csv = [logger for logger in fabric.loggers if isinstance(logger, CSVLogger)]
            with warnings.catch_warnings():  # the CSV logger rewrites its file: replay it
                warnings.filterwarnings("ignore", message="Experiment logs directory")
                for record in read_jsonl(self.run.metrics_file)[:kept]:
                    step = int(record.pop("iteration"))
                    for logger in csv:  # TensorBoard keeps its events up to the checkpoint
                        logger.log_metrics(dict(finite(record)), step=step)
        fabric.print(f"resumed {path.name} at iteration {self.iteration}")

    # ------------------------------------------------------------------ fit
    def fit(self) -> RunSummary:
        """Run until ``trainer.iterations``; checkpoint every ``save_every`` and at the end."""
        state = self._ready()
        cfg, fabric = self.config, self.fabric
        total = cfg.trainer.iterations
        progress = Progress(total, self.iteration,
                            enabled=cfg.trainer.progress and fabric.global_rank == 0)
        try:
            with progress:
                if self.evaluator and self.iteration == 0 and not self.evaluator.start_recorded():
                    with self.memory.phase("eval"):
                        before = self.evaluate()  # the policy before any update: iteration 0
                    self._log(before)
                    progress.show(before)
                while self.iteration < total:
                    metrics = self.run_iteration()
                    self.iteration += 1
                    if self.evaluator.due(self.iteration):
                        with self.memory.phase("eval"):
                            metrics.update(self.evaluate())
                    self._log(metrics)
                    progress.advance(metrics)
                    if self.iteration % cfg.trainer.save_every == 0 or self.iteration == total:
                        with self.memory.phase("save"):
                            self.save_checkpoint()
        except KeyboardInterrupt:  # a half-done iteration is not saved: resume redoes it
            last = self.run.latest()
            fabric.print(f"interrupted in iteration {self.iteration + 1}; --resume continues "
                         f"from {last.name if last else 'the start'}")
            raise
        finally:
            for logger in fabric.loggers:
                logger.finalize("success")
        summary = RunSummary(self.run.path, self.iteration, checkpoint=self._last_saved)
        if fabric.global_rank == 0:
            summary.history = read_jsonl(self.run.metrics_file)
            summary.plot = plot_curves(summary.history, self.run.plots_dir)
        if cfg.trainer.export_model:
            with self.memory.phase("export"):
                state.engine.export(self.run.export_dir, state.tokenizer)
        summary.memory = self._memory_record()
        return summary

    def _memory_record(self) -> dict[str, float]:
        """The run's peak resident memory per phase in GB (largest rank), written to
        ``memory.json`` by rank 0."""
        self.memory.take()  # the reading since the last phase ended joins the run's peaks
        ranks = gather(self.fabric, reported_peaks(self.memory.run))
        peaks = {name: round(max(r.get(name, 0.0) for r in ranks), 3)
                 for name in sorted({n for r in ranks for n in r})}
        if self.fabric.global_rank == 0 and peaks:
            self.run.memory_file.write_text(json.dumps(peaks, indent=1) + "\n")
        return peaks

    def _ready(self) -> TrainState:
        if self.state is None:
            raise RuntimeError("call setup() before fit()")
        return self.state

    def _log(self, metrics: Mapping[str, float]) -> None:
        """The current iteration's metrics to metrics.jsonl and the loggers (rank 0)."""
        if self.fabric.global_rank == 0:
            record: dict[str, Any] = {"iteration": self.iteration, **finite(metrics)}
            if bad := nonfinite(metrics):  # reported, never dropped unsaid
                record["nonfinite"] = bad
            append_jsonl(self.run.metrics_file, [record])
            if warning := self._watch.check(self.iteration, metrics):
                self.fabric.print(warning)
            self.fabric.log_dict(finite(metrics), step=self.iteration)

    # ------------------------------------------------------------------ one iteration
    def run_iteration(self) -> dict[str, float]:
        """One iteration of Algorithm 1 on every rank; the gathered metrics (rank 0 logs them)."""
        state, fabric = self._ready(), self.fabric
        engine, timer = state.engine, Timer(self.memory)
        engine.seed_sampling(self.iteration)
        state.learner.model.eval()
        generated: Counter[str] = Counter()

        def role_generate(agent: Any, role: str) -> Any:
            def generate(observations: Sequence[Any], n: int) -> list[list[Generation]]:
                with timer.phase("generate"), engine.generation_context(agent):
                    out = agent.generate(observations, n)
                generated[role] += sum(len(g.completion_ids) for row in out for g in row)
                generated[f"{role}_samples"] += sum(len(row) for row in out)
                generated[f"{role}_truncated"] += sum(g.finish_reason == "length"
                                                      for row in out for g in row)
                return out
            return generate

        with timer.phase("rollout"):
            rollout = state.runner.run(role_generate(engine.challenger, "challenger"),
                                       role_generate(engine.player, "reasoner"))
        if self.config.trainer.log_rollouts:
            records = rollout_records(rollout, self.iteration + 1, fabric.global_rank)
            append_jsonl(self.run.rollouts_file(fabric.global_rank, fabric.world_size), records)
            log_rollouts(fabric.loggers, records, self.iteration + 1)
        collected = collect_samples(rollout, roles=self.config.trainer.train_roles)
        samples, stats = assign_advantages(collected.samples, self.algorithm)
        engine.rest()
        release_memory()  # generation's temporaries, before the update
        with timer.phase("train"):
            train_metrics = self.update(samples, sync=False)
        with timer.phase("sync"):
            engine.sync()
        release_memory()  # training's large temporaries, before the next generation
        local = {
            "rollout": light(rollout),
            "zero": {role: (s.groups, s.zero_variance_groups, s.dropped_samples)
                     for role, s in stats.items()},
            "train": train_metrics,
            "generated": dict(generated),
            "untrainable": collected.untrainable,
            "trained_tokens": sum(len(s.prompt_ids) + len(s.completion_ids)
                                  for s in state.learner.learning_samples(samples)[0]),
            "times": timer.totals(),
            "memory": timer.peaks(),
        }
        return merge_iteration(gather(fabric, local), self.config.game.group_size)

    def update(self, samples: list[TrainingSample], *, sync: bool = True) -> dict[str, float]:
        """One optimiser step on samples that carry their advantages (every rank calls it),
        then the weight sync to the generation backend unless ``sync`` is False.

        Samples that cannot contribute to the gradient (advantage 0 under Dr. GRPO or GRPO
        without a KL penalty, see :func:`~algorithms.samples.learning_samples`) are not run
        through the model unless ``trainer.skip_inert_samples`` is off; they still count in the
        batch size the loss is divided by, so the step is the same. The metrics (entropy, clip
        fraction, ratio) cover the samples run, and ``skipped_samples`` says how many were
        not."""
        state = self._ready()
        metrics = state.learner.update(samples)
        if sync:
            state.engine.sync()
            release_memory()
        return metrics

    # ------------------------------------------------------------------ evaluation
    @property
    def eval_sets(self) -> dict[str, list[EvalQuestion]]:
        """The evaluation sets by name (the held-out one first, once set up)."""
        return self.evaluator.sets

    def evaluate(self) -> dict[str, float]:
        """Answer every evaluation set greedily with the current policy (the questions split
        over the ranks); the ``eval/...`` metrics, and on rank 0 every answer appended to
        ``evaluations.jsonl`` under the current iteration."""
        state = self._ready()
        return self.evaluator.evaluate(state.engine, state.runner, self.iteration)

    # ------------------------------------------------------------------ checkpoints
    def _stateful(self, state: TrainState) -> dict[str, Any]:
        return {**state.learner.stateful(), "training": TrainingProgress(self, state.runner)}

    def save_checkpoint(self) -> Path:
        """Write the state atomically: to a temporary name, renamed, then the ``last`` pointer
        updated; older checkpoints beyond ``keep_checkpoints`` are removed."""
        state, fabric = self._ready(), self.fabric
        temporary = self.run.staging_path(self.iteration)
        if fabric.global_rank == 0:
            self.run.prepare_staging(temporary)
        fabric.barrier()
        fabric.save(temporary, self._stateful(state))
        if fabric.global_rank == 0:
            self.run.publish(temporary, self.iteration, keep=self.config.trainer.keep_checkpoints)
        fabric.barrier()
        self._last_saved = self.run.checkpoint_path(self.iteration)
        return self._last_saved

    def export_model(self, folder: Path) -> Path | None:
        """Save the policy (LoRA merged) and tokenizer as a transformers folder (rank 0)."""
        state = self._ready()
        return state.engine.export(folder, state.tokenizer)

    @property
    def model(self) -> Any:
        """The Fabric-wrapped policy being trained."""
        return self._ready().learner.model

    def close(self) -> None:
        """Release the generation engines and the verifier's workers; end the loggers' runs."""
        finish_loggers(self.fabric.loggers)
        if self.state is not None:
            self.state.close()

    def parameter_checksum(self) -> float:
        """The sum of all trained parameters (float64), to compare ranks."""
        return self._ready().learner.parameter_checksum()


def train(config: TrainConfig, *, resume: bool = False,
          agent_wrapper: Callable[[SelfPlayAgent], Any] | None = None,
          eval_sets: Mapping[str, Sequence[EvalQuestion]] | None = None) -> RunSummary:
    """Set up Fabric, launch its processes and run :class:`SpiceTrainer` (``setup`` → ``fit``).

    With ``resume`` the run continues from the last checkpoint of ``trainer.output_dir``;
    ``agent_wrapper`` and ``eval_sets`` are passed to :class:`SpiceTrainer`.
    """
    fabric = make_fabric(config, RunFolder(config.trainer.output_dir).latest_iteration()
                         if resume else None)
    fabric.launch()
    trainer = SpiceTrainer(config, fabric, agent_wrapper=agent_wrapper, eval_sets=eval_sets)
    try:
        with trainer.memory.phase("setup"):
            trainer.setup(resume=resume)
        summary = trainer.fit()
        if fabric.world_size > 1:
            _compare_ranks(trainer)
        return summary
    finally:
        trainer.close()  # the engines first: a vLLM engine per rank tears down its groups
        if fabric.world_size > 1:
            end_process_group()


def _compare_ranks(trainer: SpiceTrainer) -> None:
    """Log how far the ranks' parameters drifted apart; every rank waits for the others."""
    fabric = trainer.fabric
    sums = gather(fabric, trainer.parameter_checksum())
    spread = max(sums) - min(sums)
    fabric.print(f"parameter checksums of the {len(sums)} ranks differ by {spread:.3g}")
    if fabric.global_rank == 0:
        append_jsonl(trainer.run.ranks_file,
                     [{"iteration": trainer.iteration, "parameter_checksums": sums}])
    # every rank waits: a process group torn down at exit while a peer still uses it can abort
    fabric.barrier()
