"""The SPICE trainer: Algorithm 1 on Lightning Fabric.

:func:`train` is the entry point (``spice train`` calls it): it builds a
:class:`lightning.fabric.Fabric` from the ``trainer`` section, launches the processes, then
:meth:`SpiceTrainer.setup` loads the policy, the generation backend, the corpus runner and the
optimiser (or a checkpoint with ``resume=True``) and :meth:`SpiceTrainer.fit` runs the iterations.

One iteration on each rank:

1. B documents of this rank's corpus shard × N Challenger attempts are generated and parsed; G are
   kept per document with the valid:invalid ratio of the N;
2. every kept valid question gets G Reasoner answers (the document is never shown), verified by
   Math-Verify in worker processes; the Challenger's rewards follow from the pass rates;
3. one valid question per document gives the Reasoner's group of G answers;
4. advantages per role group; the algorithm's loss in micro-batches with gradient accumulation
   (gradients are synchronised across ranks once, on the last micro-batch); clipping; one
   optimiser step;
5. the new weights reach the generation backend: nothing to do when it generates with the
   trained module itself, an in-place copy into the generation copy (mixed precision) or into the
   vLLM engine otherwise.

Metrics are gathered to rank 0 and logged; the state (model, optimiser, scheduler, iteration,
RNGs, corpus sampler) is saved atomically every ``trainer.save_every`` iterations and at the end.
"""

from __future__ import annotations

import copy
import math
import os
import random
import shutil
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import (
    AbstractContextManager,
    ExitStack,
    contextmanager,
    nullcontext,
    suppress,
)
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.base import Generation, SamplingConfig
from agents.models import cast_parameters
from agents.self_play import SelfPlayAgent
from algorithms.config import ConfigError, TrainConfig
from algorithms.evaluation import (
    HELDOUT,
    EvalQuestion,
    answer_questions,
    heldout_eligible,
    heldout_questions,
    set_metrics,
)
from algorithms.ppo import PPO, ValueHead
from algorithms.preflight import check_output_dir, check_packages
from algorithms.registry import make_algorithm
from algorithms.runlog import (
    CHECKPOINTS_DIR,
    EVALUATIONS_FILE,
    LAST_POINTER,
    METRICS_FILE,
    PLOTS_DIR,
    append_jsonl,
    finite,
    latest_checkpoint,
    plot_curves,
    read_jsonl,
    rollout_records,
    rollouts_file,
    truncate_jsonl,
)
from algorithms.samples import (
    TrainingSample,
    assign_advantages,
    collect_samples,
    learning_samples,
    policy_loss,
    prepare_ppo,
)
from spice_env.corpus import load_corpus
from spice_env.runner import (
    ChallengerAttempt,
    DocumentRollout,
    IterationRollout,
    ReasonerAnswer,
    SpiceRunner,
)

MIXED = ("bf16-mixed", "16-mixed")


def resolve_precision(precision: str, accelerator: str) -> str:
    """``auto`` becomes ``bf16-mixed`` on GPUs and on CPUs with bf16 units, else ``32-true``.

    Mixed precision keeps float32 master weights: with the paper's learning rate of 1e-6 an update
    is far below bfloat16's resolution, so pure bf16 weights (``bf16-true``) would barely move.
    """
    if precision != "auto":
        return precision
    from agents.models import cpu_has_bf16_units

    on_gpu = accelerator in ("auto", "cuda", "gpu") and torch.cuda.is_available()
    return "bf16-mixed" if on_gpu or (accelerator != "mps" and cpu_has_bf16_units()) \
        else "32-true"


def compute_dtype(precision: str) -> torch.dtype:
    """The dtype matrix products run in under ``precision``."""
    if precision.startswith("bf16"):
        return torch.bfloat16
    if precision.startswith("16"):
        return torch.float16
    return torch.float32


def make_adamw(parameters: list[torch.nn.Parameter], *, fused: bool = True, **options: Any
               ) -> torch.optim.AdamW:
    """AdamW with the fused kernel where every parameter's device and dtype support it (one
    pass over each tensor instead of several) and ``fused`` allows it, the multi-tensor one
    otherwise. (float16 training needs the unfused one: Fabric unscales its gradients before
    clipping.)"""
    fusable = fused and all(p.device.type in ("cpu", "cuda") and p.dtype in (
        torch.float32, torch.bfloat16, torch.float16) for p in parameters)
    if fusable:
        try:
            return torch.optim.AdamW(parameters, fused=True, **options)
        except (RuntimeError, ValueError):
            pass
    return torch.optim.AdamW(parameters, **options)


def make_fabric(config: TrainConfig, resume_iteration: int | None = None) -> Any:
    """A :class:`lightning.fabric.Fabric` for the ``trainer`` section, with its loggers
    (TensorBoard drops events after ``resume_iteration`` when a run resumes)."""
    from lightning.fabric import Fabric

    section = config.trainer
    return Fabric(accelerator=section.accelerator, strategy=section.strategy,
                  devices=section.devices, num_nodes=section.num_nodes,
                  precision=resolve_precision(section.precision, section.accelerator),  # type: ignore[arg-type]
                  loggers=_loggers(config, resume_iteration),
                  plugins=[_streaming_checkpoint_io()])


def _streaming_checkpoint_io() -> Any:
    """Checkpoint I/O that writes straight to the file and maps it when reading.

    Fabric's default serialises a whole checkpoint into memory before writing it: for a model
    with AdamW state that is several GB on top of the training state, enough to run a small
    machine out of memory. The trainer makes saving atomic itself (temporary name, rename).
    """
    from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

    class StreamingCheckpointIO(TorchCheckpointIO):
        def save_checkpoint(self, checkpoint: dict[str, Any], path: Any,
                            storage_options: Any | None = None) -> None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            torch.save(checkpoint, path)

        def load_checkpoint(self, path: Any, map_location: Any = None,
                            weights_only: bool | None = None) -> dict[str, Any]:
            loaded: dict[str, Any] = torch.load(path, map_location="cpu", mmap=True,
                                                weights_only=bool(weights_only))
            return loaded

    return StreamingCheckpointIO()


def _loggers(config: TrainConfig, resume_iteration: int | None) -> list[Any]:
    section = config.trainer
    out = Path(section.output_dir)
    loggers: list[Any] = []
    for name in dict.fromkeys(section.loggers):
        if name == "csv":
            from lightning.fabric.loggers import CSVLogger

            loggers.append(CSVLogger(root_dir=str(out), name="logs", version=""))
        elif name == "tensorboard":
            from lightning.fabric.loggers import TensorBoardLogger

            extra: dict[str, Any] = ({} if resume_iteration is None
                                     else {"purge_step": resume_iteration + 1})
            loggers.append(TensorBoardLogger(root_dir=str(out), name="tensorboard", version="",
                                             **extra))
        elif name == "wandb":
            try:
                from lightning.pytorch.loggers import WandbLogger
            except ImportError as error:
                raise ConfigError("trainer.loggers: 'wandb' needs the wandb package "
                                  f"(pip install wandb): {error}") from None
            loggers.append(WandbLogger(project=section.wandb_project, save_dir=str(out),
                                       name=out.name))
    return loggers


@dataclass
class RunSummary:
    """What :meth:`SpiceTrainer.fit` leaves behind.

    Attributes:
        output_dir: the run folder.
        iterations: iterations completed (including those of a resumed run).
        history: the per-iteration metrics (rank 0; empty on other ranks).
        checkpoint: the last checkpoint written.
        plot: the curves' PNG (rank 0).
    """

    output_dir: Path
    iterations: int
    history: list[dict[str, Any]] = field(default_factory=list)
    checkpoint: Path | None = None
    plot: Path | None = None


class _TrainingState:
    """Everything of a run that is not a module or an optimiser, as one stateful object."""

    def __init__(self, trainer: SpiceTrainer) -> None:
        self.trainer = trainer

    def state_dict(self) -> dict[str, Any]:
        """The iteration and every rank's own sampler and RNG states (called on all ranks:
        rank 0 writes the file, so each rank's part is gathered into it)."""
        local: dict[str, Any] = {
            "runner": self.trainer.runner.state_dict(),
            "python_rng": random.getstate(),
            "numpy_rng": np.random.get_state(),
            "torch_rng": torch.get_rng_state(),
        }
        if torch.cuda.is_available():
            local["cuda_rng"] = torch.cuda.get_rng_state_all()
        return {"iteration": self.trainer.iteration,
                "world_size": self.trainer.fabric.world_size,
                "heldout": self.trainer.heldout_digest(),
                "ranks": self.trainer._gather(local)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        world = self.trainer.fabric.world_size
        if int(state.get("world_size", world)) != world:
            raise ValueError(f"the checkpoint was written by {state['world_size']} processes; "
                             f"this run has {world} (each owns a corpus shard)")
        saved, current = state.get("heldout"), self.trainer.heldout_digest()
        if saved is not None and saved != current:
            raise ConfigError("evaluation: the run was trained with another held-out set "
                              "(evaluation.heldout, seed, fields or corpus changed); resume "
                              "with the settings it started with, or start a new run")
        self.trainer.iteration = int(state["iteration"])
        local = state["ranks"][self.trainer.fabric.global_rank]
        self.trainer.runner.load_state_dict(local["runner"])
        random.setstate(local["python_rng"])
        np.random.set_state(local["numpy_rng"])
        torch.set_rng_state(local["torch_rng"])
        if "cuda_rng" in local and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(local["cuda_rng"])


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
        self.eval_sets: dict[str, list[EvalQuestion]] = {
            name: list(questions) for name, questions in (eval_sets or {}).items()}
        missing = [name for name in config.evaluation.benchmarks if name not in self.eval_sets]
        if missing:
            raise ConfigError(f"evaluation.benchmarks: no questions were given for "
                              f"{', '.join(missing)}; `spice train` loads them, from Python pass "
                              "eval_sets=benchmarks.evaluation.benchmark_questions(...)")
        if HELDOUT in self.eval_sets:
            raise ConfigError(f"eval_sets: {HELDOUT!r} is the held-out set's own name")
        for name in self.eval_sets:
            if not name or "/" in name:
                raise ConfigError(f"eval_sets: {name!r} cannot name a set (metrics are "
                                  "eval/<set>/<metric>: no empty name, no '/')")
        self.output_dir = Path(config.trainer.output_dir)
        self.precision = resolve_precision(config.trainer.precision,
                                           config.trainer.accelerator)
        self.algorithm = make_algorithm(config.algorithm)
        self.iteration = 0
        self._ready = False
        self._summary_checkpoint: Path | None = None

    # ------------------------------------------------------------------ setup
    def setup(self, resume: bool = False) -> None:
        """Load the policy, backends, runner and optimiser; with ``resume`` restore the last
        checkpoint of ``trainer.output_dir``."""
        from agents.models import load_model

        cfg, fabric = self.config, self.fabric
        self._check_setup()
        checkpoint = self.latest_checkpoint() if resume else None
        if resume and checkpoint is None:
            raise FileNotFoundError(f"nothing to resume: {self.checkpoint_dir()} has no "
                                    "checkpoint (run without --resume to start)")
        fabric.seed_everything(cfg.trainer.seed, verbose=False)
        if fabric.global_rank == 0:
            self.output_dir.mkdir(parents=True, exist_ok=True)
        fabric.barrier()
        train_dtype = torch.bfloat16 if self.precision == "bf16-true" else torch.float32
        loaded = load_model(cfg.model.name, dtype=train_dtype, device="cpu",
                            trust_remote_code=cfg.model.trust_remote_code)
        self.tokenizer = loaded.tokenizer
        pad = self.tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else self.tokenizer.eos_token_id)
        module = loaded.model
        if cfg.trainer.lora_rank:
            module = _with_lora(module, cfg.trainer.lora_rank)
        if cfg.trainer.activation_checkpointing:
            module.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False})
        self.reference = None
        if self.algorithm.config.beta > 0:
            self.reference = cast_parameters(copy.deepcopy(module), compute_dtype(
                self.precision), fabric.device).eval().requires_grad_(False)
        self.model = fabric.setup_module(module)
        self.value_head = None
        if isinstance(self.algorithm, PPO):  # zero-initialised: the same on every rank
            self.value_head = fabric.setup_module(ValueHead(loaded.model.config.hidden_size))
        parameters = [p for p in self.model.parameters() if p.requires_grad]
        if self.value_head is not None:
            parameters += list(self.value_head.parameters())
        opt = cfg.optimizer
        optimizer = make_adamw(parameters, fused=self.precision != "16-mixed", lr=opt.lr,
                               betas=opt.betas, weight_decay=opt.weight_decay)
        self.optimizer = fabric.setup_optimizers(optimizer)
        warmup = opt.warmup_iterations
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: min(1.0, (step + 1) / (warmup + 1)) if warmup else 1.0)
        # the corpus (and its held-out part) before the generation engines start: a corpus
        # that cannot give what the config asks fails before the expensive part
        corpus = load_corpus(cfg.rollout.corpus if isinstance(cfg.rollout.corpus, str)
                             else dict(cfg.rollout.corpus),
                             max_tokens=cfg.rollout.max_document_tokens,
                             tokenizer=self.tokenizer, text_field=cfg.rollout.text_field,
                             limit=cfg.rollout.max_records)
        corpus = self._hold_out(corpus)
        self._setup_generation(loaded.source)
        self.runner = SpiceRunner(
            corpus, batch_size=cfg.rollout.batch_size, attempts=cfg.rollout.attempts,
            seed=cfg.trainer.seed, max_tokens=cfg.rollout.max_document_tokens,
            tokenizer=self.tokenizer, rank=fabric.global_rank, world_size=fabric.world_size,
            **{name: getattr(cfg.game, name) for name in type(cfg.game).model_fields})
        self.state = _TrainingState(self)
        if checkpoint is not None:
            self._resume(checkpoint)
        else:
            self._start_fresh()
        if fabric.global_rank == 0:
            (self.output_dir / "config.yaml").write_text(_config_yaml(cfg), "utf-8")
        fabric.barrier()
        self._ready = True

    def _start_fresh(self) -> None:
        """Refuse to mix a new run into an earlier one's folder unless ``trainer.overwrite``."""
        check_output_dir(self.config)
        self.fabric.barrier()
        if self.fabric.global_rank == 0:
            _remove(self.checkpoint_dir())
            _remove(self.output_dir / METRICS_FILE)
            for logs in ("logs", "tensorboard", PLOTS_DIR, "model"):
                _remove(self.output_dir / logs)
            _remove(self.output_dir / "ranks.jsonl")
            _remove(self.output_dir / EVALUATIONS_FILE)
            for old in self.output_dir.glob("rollouts*.jsonl"):
                _remove(old)
        self.fabric.barrier()

    def _check_setup(self) -> None:
        check_packages(self.config)

    def heldout_digest(self) -> str:
        """A digest of the held-out documents (empty without a held-out set): saved with each
        checkpoint, so that a resume cannot train on what the run held out."""
        import hashlib

        questions = self.eval_sets.get(HELDOUT, [])
        return hashlib.sha256("\n".join(q.id for q in questions).encode()).hexdigest()[:16] \
            if questions else ""

    def _hold_out(self, corpus: Any) -> Any:
        """Set the held-out documents aside (the same on every rank: before sharding)."""
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
        self.eval_sets = {HELDOUT: heldout_questions(held, section.question_field,
                                                     section.answer_field), **self.eval_sets}
        return rest

    def _setup_generation(self, source: str) -> None:
        """The agent playing both roles (and the frozen Challenger, when there is one)."""
        cfg, fabric = self.config, self.fabric
        original = self.model.module
        dtype = compute_dtype(self.precision)
        self.shares_module = False
        if cfg.model.backend == "hf":
            from agents.backends.hf import HFBackend

            if self.precision in MIXED:  # generate in the compute dtype from a synced copy
                # parameters only: the buffers (rotary frequencies) stay as the trained
                # module has them, so the copy samples from the policy that is trained
                generator = cast_parameters(copy.deepcopy(original), dtype).eval(
                ).requires_grad_(False)
            else:
                generator, self.shares_module = original, True
            backend: Any = HFBackend(generator, self.tokenizer, **cfg.model.backend_options)
        else:
            from agents.backends.vllm import VLLMBackend

            options = {"seed": cfg.trainer.seed + fabric.global_rank,
                       **cfg.model.backend_options}
            dtype_name = str(dtype).removeprefix("torch.") if fabric.device.type == "cuda" \
                else None  # the backend's CPU default (float32) is the one known to be right
            backend = VLLMBackend(source, dtype=dtype_name,
                                  trust_remote_code=cfg.model.trust_remote_code, **options)
            if cfg.trainer.lora_rank:  # the engine starts from the base weights plus zero deltas
                backend.update_weights(self._export_weights())
        self.agent = SelfPlayAgent(backend, challenger=cfg.challenger, reasoner=cfg.reasoner,
                                   template=cfg.model.template)
        self.player: Any = self.agent_wrapper(self.agent) if self.agent_wrapper else self.agent
        self.frozen: SelfPlayAgent | None = None
        if cfg.model.frozen_challenger:
            if cfg.model.frozen_challenger_endpoint:
                self.frozen = SelfPlayAgent(
                    "openai", cfg.model.frozen_challenger, challenger=cfg.challenger,
                    template=cfg.model.template,
                    backend_options={"base_url": cfg.model.frozen_challenger_endpoint})
            else:
                device = "cuda" if fabric.device.type == "cuda" else "cpu"
                self.frozen = SelfPlayAgent(
                    "hf", cfg.model.frozen_challenger, challenger=cfg.challenger,
                    template=cfg.model.template, dtype=dtype, device=device,
                    trust_remote_code=cfg.model.trust_remote_code)
        self.frozen_player: Any = None
        if self.frozen is not None:
            self.frozen_player = (self.agent_wrapper(self.frozen) if self.agent_wrapper
                                  else self.frozen)

    # ------------------------------------------------------------------ resume
    def checkpoint_dir(self) -> Path:
        return self.output_dir / CHECKPOINTS_DIR

    def latest_checkpoint(self) -> Path | None:
        """The checkpoint the ``last`` pointer names, if any."""
        return latest_checkpoint(self.output_dir)

    def _stateful(self) -> dict[str, Any]:
        state: dict[str, Any] = {"model": self.model, "optimizer": self.optimizer,
                                 "scheduler": self.scheduler, "training": self.state}
        if self.value_head is not None:
            state["value_head"] = self.value_head
        return state

    def _resume(self, path: Path) -> None:
        self.fabric.load(path, self._stateful(), weights_only=False)
        self._sync_weights()
        rank, world = self.fabric.global_rank, self.fabric.world_size
        truncate_jsonl(rollouts_file(self.output_dir, rank, world), self.iteration)
        if rank == 0:
            truncate_jsonl(self.output_dir / EVALUATIONS_FILE, self.iteration)
            kept = truncate_jsonl(self.output_dir / METRICS_FILE, self.iteration)
            from lightning.fabric.loggers import CSVLogger

            csv = [logger for logger in self.fabric.loggers if isinstance(logger, CSVLogger)]
            with warnings.catch_warnings():  # the CSV logger rewrites its file: replay it
                warnings.filterwarnings("ignore", message="Experiment logs directory")
                for record in read_jsonl(self.output_dir / METRICS_FILE)[:kept]:
                    step = int(record.pop("iteration"))
                    for logger in csv:  # TensorBoard keeps its events up to the checkpoint
                        logger.log_metrics(dict(finite(record)), step=step)
        self.fabric.print(f"resumed {path.name} at iteration {self.iteration}")

    # ------------------------------------------------------------------ fit
    def fit(self) -> RunSummary:
        """Run until ``trainer.iterations``; checkpoint every ``save_every`` and at the end."""
        if not self._ready:
            raise RuntimeError("call setup() before fit()")
        cfg, fabric = self.config, self.fabric
        total = cfg.trainer.iterations
        progress = _Progress(total, self.iteration,
                             enabled=cfg.trainer.progress and fabric.global_rank == 0)
        evaluating = bool(self.eval_sets)
        try:
            with progress:
                if evaluating and self.iteration == 0 and not self._evaluated_start():
                    before = self.evaluate()  # the policy before any update: iteration 0
                    if fabric.global_rank == 0:
                        append_jsonl(self.output_dir / METRICS_FILE,
                                     [{"iteration": 0, **finite(before)}])
                        fabric.log_dict(finite(before), step=0)
                    progress.show(before)
                while self.iteration < total:
                    metrics = self.run_iteration()
                    self.iteration += 1
                    every = cfg.evaluation.every
                    if evaluating and ((every and self.iteration % every == 0)
                                       or self.iteration == total):
                        metrics.update(self.evaluate())
                    if fabric.global_rank == 0:
                        append_jsonl(self.output_dir / METRICS_FILE,
                                     [{"iteration": self.iteration, **finite(metrics)}])
                        fabric.log_dict(finite(metrics), step=self.iteration)
                    progress.advance(metrics)
                    if self.iteration % cfg.trainer.save_every == 0 or self.iteration == total:
                        self.save_checkpoint()
        except KeyboardInterrupt:  # a half-done iteration is not saved: resume redoes it
            last = self.latest_checkpoint()
            fabric.print(f"interrupted in iteration {self.iteration + 1}; --resume continues "
                         f"from {last.name if last else 'the start'}")
            raise
        finally:
            for logger in fabric.loggers:
                logger.finalize("success")
        summary = RunSummary(self.output_dir, self.iteration,
                             checkpoint=self._summary_checkpoint)
        if fabric.global_rank == 0:
            summary.history = read_jsonl(self.output_dir / METRICS_FILE)
            summary.plot = plot_curves(summary.history, self.output_dir / PLOTS_DIR)
        if cfg.trainer.export_model:
            self.export_model(self.output_dir / "model")
        return summary

    # ------------------------------------------------------------------ evaluation
    def evaluate(self) -> dict[str, float]:
        """Answer every evaluation set greedily with the current policy (the questions split
        over the ranks); the ``eval/...`` metrics, and on rank 0 every answer appended to
        ``evaluations.jsonl`` under the current iteration."""
        cfg, fabric = self.config, self.fabric
        begin = time.perf_counter()
        rank, world = fabric.global_rank, fabric.world_size
        section = cfg.evaluation
        limit = section.max_new_tokens or cfg.reasoner.max_new_tokens
        agent = self.agent
        saved = agent.sampling["reasoner"]

        def generate(observations: list[dict[str, Any]], sampling: SamplingConfig
                     ) -> Sequence[Sequence[Generation]]:
            agent.sampling["reasoner"] = sampling
            context = self.fabric.autocast() if self.shares_module else nullcontext()
            with context:
                return agent.generate(observations, sampling.n)

        local: dict[str, Any] = {}
        self.model.eval()
        try:
            for name, questions in self.eval_sets.items():
                mine = list(range(rank, len(questions), world))
                records = answer_questions([questions[i] for i in mine], generate,
                                           self.runner.game.reasoner_observation,
                                           self.runner.verifier, max_new_tokens=limit,
                                           batch_size=section.batch_size, seed=section.seed)
                local[name] = list(zip(mine, records, strict=True))
        finally:
            agent.sampling["reasoner"] = saved
        _release_memory()
        metrics: dict[str, float] = {}
        rows: list[dict[str, Any]] = []
        parts = self._gather({"sets": local, "seconds": time.perf_counter() - begin})
        for name in self.eval_sets:
            records = [record for _, record in
                       sorted((pair for part in parts for pair in part["sets"][name]),
                              key=lambda pair: pair[0])]
            metrics.update(set_metrics(name, records))
            rows += [{"iteration": self.iteration, "set": name, **record} for record in records]
        if rank == 0:
            append_jsonl(self.output_dir / EVALUATIONS_FILE, rows)
        metrics["time/eval"] = max(part["seconds"] for part in parts)  # the slowest rank
        return metrics

    def _evaluated_start(self) -> bool:
        """Whether iteration 0's evaluation is already on record (a run resumed from 0)."""
        return any(int(r.get("iteration", -1)) == 0
                   for r in read_jsonl(self.output_dir / METRICS_FILE))

    # ------------------------------------------------------------------ one iteration
    def run_iteration(self) -> dict[str, float]:
        """One iteration of Algorithm 1 on every rank; the gathered metrics (rank 0 logs them)."""
        cfg, fabric = self.config, self.fabric
        timer = _Timer()
        self._seed_sampling()
        self.model.eval()
        generated: Counter[str] = Counter()
        challenger = self.frozen_player or self.player

        def role_generate(agent: Any, role: str) -> Any:
            def generate(observations: Sequence[Any], n: int) -> list[list[Generation]]:
                with timer.phase("generate"), self._generation_context(agent):
                    out = agent.generate(observations, n)
                generated[role] += sum(len(g.completion_ids) for row in out for g in row)
                generated[f"{role}_samples"] += sum(len(row) for row in out)
                generated[f"{role}_truncated"] += sum(g.finish_reason == "length"
                                                      for row in out for g in row)
                return out
            return generate

        with timer.phase("rollout"):
            rollout = self.runner.run(role_generate(challenger, "challenger"),
                                      role_generate(self.player, "reasoner"))
        if cfg.trainer.log_rollouts:
            append_jsonl(rollouts_file(self.output_dir, fabric.global_rank, fabric.world_size),
                         rollout_records(rollout, self.iteration + 1, fabric.global_rank))
        collected = collect_samples(rollout, roles=cfg.trainer.train_roles)
        samples, stats = assign_advantages(collected.samples, self.algorithm)
        with timer.phase("train"):
            train_metrics = self.update(samples, sync=False)
        with timer.phase("sync"):
            self._sync_weights()
        _release_memory()  # training's large temporaries, before the next generation
        local = {
            "rollout": _light(rollout),
            "zero": {role: (s.groups, s.zero_variance_groups, s.dropped_samples)
                     for role, s in stats.items()},
            "train": train_metrics,
            "generated": dict(generated),
            "untrainable": collected.untrainable,
            "trained_tokens": sum(len(s.prompt_ids) + len(s.completion_ids)
                                  for s in self._learning_samples(samples)[0]),
            "times": timer.totals(),
        }
        return _merge(self._gather(local), self.config.game.group_size)

    def update(self, samples: list[TrainingSample], *, sync: bool = True) -> dict[str, float]:
        """One optimiser step on samples that carry their advantages (every rank calls it),
        then the weight sync to the generation backend unless ``sync`` is False.

        Samples that cannot contribute to the gradient (advantage 0 under Dr. GRPO or GRPO
        without a KL penalty, see :func:`~algorithms.samples.learning_samples`) are not run
        through the model unless ``trainer.skip_inert_samples`` is off; they still count in the
        batch size the loss is divided by, so the step is the same. The metrics (entropy, clip
        fraction, ratio) cover the samples run, and ``skipped_samples`` says how many were
        not."""
        learning, skipped = self._learning_samples(samples)
        metrics = self._update(learning, sum(self._gather(len(samples))))
        metrics["skipped_samples"] = float(skipped)
        if sync:
            self._sync_weights()
            _release_memory()
        return metrics

    def _learning_samples(self, samples: list[TrainingSample]
                          ) -> tuple[list[TrainingSample], int]:
        """The samples the update runs through the model, and how many it leaves out."""
        if not self.config.trainer.skip_inert_samples:
            return samples, 0
        return learning_samples(samples, self.algorithm)

    def _seed_sampling(self) -> None:
        """Per-iteration, per-rank, per-role sampling seeds: a resumed run samples the same."""
        for agent in filter(None, (self.agent, self.frozen)):
            for index, role in enumerate(("challenger", "reasoner")):
                seed = np.random.SeedSequence(
                    [self.config.trainer.seed, self.iteration, self.fabric.global_rank, index]
                ).generate_state(1)[0]
                current: SamplingConfig = agent.sampling[role]  # type: ignore[index]
                agent.sampling[role] = current.model_copy(update={"seed": int(seed)})  # type: ignore[index]

    def _generation_context(self, agent: Any) -> AbstractContextManager[Any]:
        if agent is self.player and self.shares_module:
            context: AbstractContextManager[Any] = self.fabric.autocast()
            return context
        return nullcontext()

    def _update(self, samples: list[TrainingSample], batch_total: int) -> dict[str, float]:
        """Micro-batched loss and backward, clipping and one optimiser step."""
        cfg, fabric = self.config, self.fabric
        self.optimizer.zero_grad(set_to_none=True)
        if batch_total == 0:  # no rank has anything to learn from: no step
            return {}
        self.model.train()
        if self.value_head is not None and samples:
            assert isinstance(self.algorithm, PPO)
            with fabric.autocast():
                samples = prepare_ppo(self.model.module, self.value_head.module, samples,
                                      self.algorithm, pad_id=self.pad_id,
                                      micro_batch_size=cfg.trainer.micro_batch_size,
                                      share_prompts=cfg.trainer.share_prompts)
        modules = [m for m in (self.model, self.value_head) if m is not None]

        def chunk_context(index: int, count: int) -> AbstractContextManager[Any]:
            stack = ExitStack()
            for module in modules:  # synchronise gradients on the last micro-batch only
                stack.enter_context(fabric.no_backward_sync(module, enabled=index < count - 1))
            return stack

        if samples:
            # one autocast region around all micro-batches: the bf16 casts of the weights are
            # made once per step instead of once per micro-batch
            with fabric.autocast():
                metrics = self._loss(samples, batch_total, chunk_context)
        else:  # take part in the gradient all-reduce with a zero contribution
            metrics = {}
            self._zero_backward()
        return self._step(metrics)

    def _loss(self, samples: list[TrainingSample], batch_total: int,
              chunk_context: Callable[[int, int], AbstractContextManager[Any]]
              ) -> dict[str, float]:
        fabric, world = self.fabric, self.fabric.world_size
        # the module behind Fabric's wrapper (DDP's, when there is one, so gradients still
        # synchronise): the caller's autocast region applies, and the vocabulary-sized logits
        # stay in bf16 instead of being copied to float32 by Fabric's output conversion
        forward = getattr(self.model, "_forward_module", self.model)
        return policy_loss(forward, samples, self.algorithm, pad_id=self.pad_id,
                           micro_batch_size=self.config.trainer.micro_batch_size,
                           backward=lambda loss: fabric.backward(loss * world),
                           value_head=self.value_head, reference=self.reference,
                           batch_total=batch_total, chunk_context=chunk_context,
                           share_prompts=self.config.trainer.share_prompts)

    def _step(self, metrics: dict[str, float]) -> dict[str, float]:
        """Clip, step the optimiser and the schedule, free the gradients."""
        cfg, fabric = self.config, self.fabric
        if cfg.optimizer.grad_clip is not None:  # over all the optimiser's parameters
            norm = fabric.clip_gradients(self.model, self.optimizer,
                                         max_norm=cfg.optimizer.grad_clip,
                                         error_if_nonfinite=False)
            if norm is not None:
                metrics["grad_norm"] = float(norm)
        metrics["lr"] = float(self.optimizer.param_groups[0]["lr"])  # the rate this step used
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)  # no gradient memory while generating
        self.model.eval()
        return metrics

    def _zero_backward(self) -> None:
        from algorithms.logprobs import completion_logprobs

        found = completion_logprobs(self.model, [[self.pad_id]], [[self.pad_id]], self.pad_id,
                                    with_hidden=self.value_head is not None)
        loss = found.logprobs.sum() * 0.0
        if self.value_head is not None and found.hidden is not None:
            loss = loss + self.value_head(found.hidden).sum() * 0.0
        self.fabric.backward(loss)

    # ------------------------------------------------------------------ weights
    def _export_weights(self) -> list[tuple[str, torch.Tensor]]:
        """The policy's weights under transformers names (LoRA deltas merged in)."""
        original = self.model.module
        if self.config.trainer.lora_rank:
            return _merged_lora_weights(original)
        return [(name, p.detach()) for name, p in original.named_parameters()]

    def _sync_weights(self) -> None:
        if self.shares_module:
            return
        with torch.no_grad():
            if self.config.model.backend == "hf":  # a copy of the trained module, adapters too
                self.agent.backend.update_weights(
                    [(n, p.detach()) for n, p in self.model.module.named_parameters()])
            else:
                self.agent.backend.update_weights(self._export_weights())

    def export_model(self, folder: Path) -> Path | None:
        """Save the policy (LoRA merged) and tokenizer as a transformers folder (rank 0)."""
        if self.fabric.global_rank != 0:
            self.fabric.barrier()
            return None
        original = self.model.module
        temporary = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(temporary, ignore_errors=True)
        if self.config.trainer.lora_rank:  # the merged weights, leaving the adapters in place
            base = original.get_base_model()
            base.save_pretrained(temporary, state_dict=dict(_merged_lora_weights(original)))
        else:
            original.save_pretrained(temporary)
        self.tokenizer.save_pretrained(temporary)
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(temporary, folder)
        self.fabric.barrier()
        return folder

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self) -> Path:
        """Write the state atomically: to a temporary name, renamed, then the ``last`` pointer
        updated; older checkpoints beyond ``keep_checkpoints`` are removed."""
        fabric = self.fabric
        folder = self.checkpoint_dir()
        name = f"iter-{self.iteration:06d}.ckpt"
        final, temporary = folder / name, folder / (name + ".tmp")
        if fabric.global_rank == 0:
            folder.mkdir(parents=True, exist_ok=True)
            _remove(temporary)
        fabric.barrier()
        fabric.save(temporary, self._stateful())
        if fabric.global_rank == 0:
            _remove(final)
            os.replace(temporary, final)
            pointer = folder / (LAST_POINTER + ".tmp")
            pointer.write_text(name, "utf-8")
            os.replace(pointer, folder / LAST_POINTER)
            existing = sorted(p for p in folder.glob("iter-*.ckpt"))
            for old in existing[: -self.config.trainer.keep_checkpoints]:
                _remove(old)
        fabric.barrier()
        self._summary_checkpoint = final
        return final

    def close(self) -> None:
        """Release the generation engines and the verifier's workers (those that were started:
        a setup that failed half-way is cleaned up too)."""
        for part in ("runner", "agent", "frozen"):
            started = getattr(self, part, None)
            if started is not None:
                started.close()

    def parameter_checksum(self) -> float:
        """The sum of all trained parameters (float64), to compare ranks."""
        with torch.no_grad():
            return float(sum(p.detach().double().sum() for p in self.model.parameters()))

    # ------------------------------------------------------------------ distributed
    def _gather(self, obj: Any) -> list[Any]:
        if self.fabric.world_size == 1:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.fabric.world_size
        dist.all_gather_object(out, obj)
        return out


def train(config: TrainConfig, *, resume: bool = False,
          agent_wrapper: Callable[[SelfPlayAgent], Any] | None = None,
          eval_sets: Mapping[str, Sequence[EvalQuestion]] | None = None) -> RunSummary:
    """Set up Fabric, launch its processes and run :class:`SpiceTrainer` (``setup`` → ``fit``).

    With ``resume`` the run continues from the last checkpoint of ``trainer.output_dir``;
    ``agent_wrapper`` and ``eval_sets`` are passed to :class:`SpiceTrainer`.
    """
    fabric = make_fabric(config, _checkpoint_iteration(config) if resume else None)
    fabric.launch()
    trainer = SpiceTrainer(config, fabric, agent_wrapper=agent_wrapper, eval_sets=eval_sets)
    try:
        trainer.setup(resume=resume)
        summary = trainer.fit()
        if fabric.world_size > 1:
            sums = trainer._gather(trainer.parameter_checksum())
            spread = max(sums) - min(sums)
            fabric.print(f"parameter checksums of the {len(sums)} ranks differ by {spread:.3g}")
            if fabric.global_rank == 0:
                append_jsonl(trainer.output_dir / "ranks.jsonl",
                             [{"iteration": trainer.iteration, "parameter_checksums": sums}])
            # every rank done before any leaves: a process group torn down at interpreter exit
            # while a peer still talks to it can abort the process
            fabric.barrier()
            _end_process_group()
        return summary
    finally:
        trainer.close()


def _end_process_group() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


# ---------------------------------------------------------------------- helpers
class _Timer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.start = time.perf_counter()

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        begin = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - begin

    def totals(self) -> dict[str, float]:
        out: dict[str, float] = dict(self.seconds)
        out["verify"] = max(0.0, out.get("rollout", 0.0) - out.get("generate", 0.0))
        out["iteration"] = time.perf_counter() - self.start
        out.pop("rollout", None)
        return out


class _Progress:
    """A rich progress bar with the latest key numbers (rank 0)."""

    def __init__(self, total: int, done: int, *, enabled: bool) -> None:
        self.enabled = enabled
        self.last_eval = ""
        if enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(TextColumn("[bold]spice train"), BarColumn(),
                                MofNCompleteColumn(), TimeElapsedColumn(),
                                TimeRemainingColumn(), TextColumn("{task.fields[status]}"))
            self.task = self.bar.add_task("train", total=total, completed=done, status="")

    def __enter__(self) -> _Progress:
        if self.enabled:
            self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self.bar.stop()

    def advance(self, metrics: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        self.bar.update(self.task, advance=1, status=self._status(metrics))

    def show(self, metrics: Mapping[str, float]) -> None:
        """Show metrics without advancing (the evaluation before the first iteration)."""
        if self.enabled:
            self.bar.update(self.task, status=self._status(metrics))

    def _status(self, metrics: Mapping[str, float]) -> str:
        if any(key.startswith("eval/") for key in metrics):
            self.last_eval = "  ".join(
                f"{key.split('/')[1]} {metrics[key]:.2f}" for key in metrics
                if key.startswith("eval/") and key.endswith("/accuracy")
                and math.isfinite(metrics[key]))
        shown = [("valid", "challenger/valid_rate"), ("0<p<1", "challenger/frontier_share"),
                 ("R_c", "challenger/reward"), ("R_r", "reasoner/reward"),
                 ("s/it", "time/iteration")]
        status = "  ".join(f"{label} {metrics[key]:.2f}" for label, key in shown
                           if key in metrics and math.isfinite(metrics[key]))
        return f"{status}  eval: {self.last_eval}" if self.last_eval else status


def _light(rollout: IterationRollout) -> IterationRollout:
    """The rollout with samples reduced to their text (small enough to gather across ranks)."""
    documents = []
    for document in rollout.documents:
        attempts = [replace(a, sample=a.text, answers=[ReasonerAnswer(r.text, r.verdict, r.reward)
                                                       for r in a.answers])
                    for a in document.attempts]
        documents.append(DocumentRollout(document.document, document.task_format, {},
                                         attempts, document.reasoner_choice, None))
    return IterationRollout(documents)


def _merge(parts: Sequence[Mapping[str, Any]], group_size: int) -> dict[str, float]:
    """One iteration's metrics over all ranks."""
    rollout = IterationRollout([d for p in parts for d in p["rollout"].documents])
    out = rollout.metrics()
    scored: list[ChallengerAttempt] = [a for d in rollout.documents for a in d.kept
                                       if a.pass_rate is not None]
    for k in range(group_size + 1):  # pass-rate histogram: share of questions with k/G correct
        out[f"pass_rate_hist/{k}of{group_size}"] = (
            sum(round((a.pass_rate or 0.0) * group_size) == k for a in scored) / len(scored)
            if scored else float("nan"))
    for role in ("challenger", "reasoner"):
        groups, flat, dropped = (sum(column) for column in
                                 zip(*(p["zero"].get(role, (0, 0, 0)) for p in parts),
                                     strict=True))
        out[f"{role}/groups"] = float(groups)
        out[f"{role}/zero_variance_fraction"] = flat / groups if groups else float("nan")
        out[f"{role}/dropped_samples"] = float(dropped)
        samples = sum(p["generated"].get(f"{role}_samples", 0) for p in parts)
        tokens = sum(p["generated"].get(role, 0) for p in parts)
        out[f"{role}/completion_tokens"] = tokens / samples if samples else float("nan")
        out[f"{role}/truncated_rate"] = (sum(p["generated"].get(f"{role}_truncated", 0)
                                             for p in parts) / samples
                                         if samples else float("nan"))
    trained = [p["train"] for p in parts if p["train"].get("tokens")]
    tokens = sum(t["tokens"] for t in trained)
    keys = {k for t in trained for k in t} - {"tokens", "loss", "grad_norm", "lr",
                                               "skipped_samples"}
    for key in ("entropy", "clip_fraction", "ratio_mean"):  # present even when nothing ran
        out[f"train/{key}"] = float("nan")
    for key in sorted(keys):
        out[f"train/{key}"] = sum(t.get(key, 0.0) * t["tokens"] for t in trained) / tokens
    skipped = sum(p["train"].get("skipped_samples", 0.0) for p in parts)
    # nothing run because every sample had advantage 0: the loss is exactly 0
    out["train/loss"] = (sum(p["train"].get("loss", 0.0) for p in parts) if trained
                         else 0.0 if skipped else float("nan"))
    norms = [p["train"]["grad_norm"] for p in parts if "grad_norm" in p["train"]]
    out["train/grad_norm"] = norms[0] if norms else float("nan")
    out["train/completion_tokens"] = float(tokens)
    out["train/skipped_samples"] = float(skipped)
    rates = [p["train"]["lr"] for p in parts if "lr" in p["train"]]
    out["train/lr"] = rates[0] if rates else float("nan")
    out["untrainable_samples"] = float(sum(p["untrainable"] for p in parts))
    times = {key: max(p["times"].get(key, 0.0) for p in parts)
             for key in ("generate", "verify", "train", "sync", "iteration")}
    out.update({f"time/{key}": value for key, value in times.items()})
    generated = sum(p["generated"].get(r, 0) for p in parts for r in ("challenger", "reasoner"))
    out["throughput/generated_tokens_per_s"] = generated / times["generate"] \
        if times["generate"] else float("nan")
    out["throughput/trained_tokens_per_s"] = (sum(p["trained_tokens"] for p in parts)
                                              / times["train"]) if times["train"] \
        else float("nan")
    return out


def _with_lora(module: Any, rank: int) -> Any:
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise ConfigError("trainer.lora_rank needs peft: pip install 'spice-env[lora]'"
                          ) from None
    config = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0,
                        target_modules="all-linear", task_type="CAUSAL_LM")
    return get_peft_model(module, config)


def _merged_lora_weights(model: Any) -> list[tuple[str, torch.Tensor]]:
    """Base weights with each LoRA layer's delta added, under the base model's names."""
    base = model.get_base_model()
    merged: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name, module in base.named_modules():
            if hasattr(module, "base_layer") and hasattr(module, "get_delta_weight"):
                adapters = [a for a in getattr(module, "active_adapters", []) if
                            a in getattr(module, "lora_A", {})]
                weight = module.base_layer.weight.detach().clone()
                for adapter in adapters:
                    weight += module.get_delta_weight(adapter).to(weight.dtype)
                merged[f"{name}.weight"] = weight
        out = []
        for name, parameter in base.named_parameters():
            if "lora_" in name:
                continue
            clean = name.replace(".base_layer.", ".")
            out.append((clean, merged.get(clean, parameter.detach())))
    return out


def _release_memory() -> None:
    """Collect garbage and hand freed heap pages back to the system (glibc keeps them
    otherwise, and a CPU run alternating training and generation grows until it is killed)."""
    import ctypes
    import gc

    gc.collect()
    with suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _checkpoint_iteration(config: TrainConfig) -> int | None:
    """The iteration of the checkpoint a resumed run would start from (by its name)."""
    path = latest_checkpoint(Path(config.trainer.output_dir))
    try:
        return int(path.name.removeprefix("iter-").removesuffix(".ckpt")) if path else None
    except ValueError:
        return None


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _config_yaml(config: TrainConfig) -> str:
    import yaml

    data = config.model_dump(mode="json")
    return yaml.safe_dump(data, sort_keys=False)
