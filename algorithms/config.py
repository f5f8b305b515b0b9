"""The configuration of a training run: sections, YAML files and ``dotted.key=value`` overrides.

A run is described by one :class:`TrainConfig` with the sections ``model``, ``rollout``, ``game``
(the environment's :class:`spice_env.game.GameConfig`), ``challenger`` and ``reasoner`` (sampling),
``algorithm`` (the settings of the algorithm its ``name`` picks in
:data:`algorithms.registry.ALGORITHMS`),
``optimizer``, ``trainer`` and ``evaluation``. Every section refuses unknown keys.

:func:`load_config` reads a YAML file, or a shipped config by name (``cpu-demo``,
``paper-qwen3-4b``, ...: :func:`shipped_configs`), applies overrides such as
``trainer.iterations=20`` or ``algorithm.name=grpo`` (values are parsed as YAML scalars), and
validates. Any problem raises :class:`ConfigError`, whose one-line message names the file, the
dotted key and what is wrong with it (with the closest known key for a misspelt one).
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationError,
    field_validator,
    model_validator,
)

from agents.base import SamplingConfig
from algorithms.base import AlgorithmConfigBase
from algorithms.config_files import (
    ConfigError,
    parse_yaml,
    plain,
    preview,
    read_yaml,
    shipped_configs,
)
from algorithms.drgrpo import DrGRPOConfig
from algorithms.registry import ALGORITHMS, algorithm_config, algorithm_config_class
from spice_env.files import DEFAULT_MAX_FILE_BYTES, DEFAULT_MAX_RECORD_BYTES
from spice_env.game import GameConfig
from spice_env.text import valid_unicode


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ModelConfig(_Section):
    """The policy: which model, in which precision, generating with which backend."""

    name: str = Field(default="qwen2.5-coder-0.5b-instruct", description="A shipped short "
                      "name, a transformers folder or a hub id.")
    backend: Literal["hf", "vllm"] = Field(default="hf", description="The generation backend: "
                                           "the trainer's own module (hf) or a vLLM engine "
                                           "whose weights are reloaded after each update.")
    backend_options: dict[str, Any] = Field(default_factory=dict, description="Keyword "
                                            "arguments of the backend's class.")
    template: Literal["auto", "chat", "plain"] = Field(default="auto", description="Chat "
                                                       "template or plain prompts.")
    trust_remote_code: bool = Field(default=False, description="Run code from the model's "
                                    "repository (off unless asked).")
    frozen_challenger: str | None = Field(default=None, description="Another model (name, "
                                          "folder, hub id) that writes the questions and does "
                                          "not train: the Strong Challenger baseline.")
    frozen_challenger_endpoint: str | None = Field(default=None, description="An "
                                                   "OpenAI-compatible base URL serving "
                                                   "frozen_challenger.")


class RolloutConfig(_Section):
    """What one iteration samples (Algorithm 1's B and N; G is ``game.group_size``)."""

    corpus: str | dict[str, Any] | list[dict[str, Any]] = Field(
        default="embedded:math", description="A corpus spec (`embedded`, `embedded:math`, a "
        "file or folder, `hf:<dataset id>[:split]`), a weighted mixture `{spec: weight}`, a "
        "dataset entry `{hf: <hub id or folder>, config, split, text: <field or template such "
        "as '{question}\\n\\n{reference_answer}'>, weight, max_records}`, or a list of entries "
        "(a mixture by their weights).")
    batch_size: int = Field(default=8, ge=1, description="B: documents per iteration and "
                            "process (the global batch is B × processes).")
    attempts: int = Field(default=8, ge=1, description="N: Challenger attempts per document.")
    max_document_tokens: int = Field(default=5992, ge=16, description="Segment length of the "
                                     "corpus documents.")
    max_records: int | None = Field(default=None, ge=1, description="Read at most this many "
                                    "records from each corpus source (None: all).")
    text_field: str | None = Field(default=None, description="The record field holding the "
                                   "text (default: the first of the usual names present).")
    max_file_bytes: int | None = Field(
        default=DEFAULT_MAX_FILE_BYTES, ge=1, description="Skip (and count) local corpus files "
        "larger than this many bytes, unopened (None: no cap).")
    max_record_bytes: int | None = Field(
        default=DEFAULT_MAX_RECORD_BYTES, ge=1, description="Skip (and count) JSON Lines and CSV "
        "lines, and plain-text files, longer than this many bytes (None: no cap).")

    @field_validator("corpus", mode="before")
    @classmethod
    def _corpus_form(cls, value: Any) -> Any:
        from spice_env.corpus import CorpusError
        from spice_env.readers import DatasetEntry, is_entry

        entries = value if isinstance(value, list) else [value] if isinstance(value, dict) \
            and is_entry(value) else []
        if isinstance(value, list) and not value:
            raise ValueError("a list of corpus entries needs at least one entry")
        if not isinstance(value, str | dict | list):
            raise ValueError("give a corpus spec, a {spec: weight} mapping, a dataset entry or a "
                             "list of entries")
        try:
            for entry in entries:
                if not isinstance(entry, dict) or not is_entry(entry):
                    raise CorpusError(f"each corpus list item is an entry with an 'hf' key, got "
                                      f"{preview(entry)}")
                DatasetEntry.parse(entry)
        except CorpusError as error:
            raise ValueError(str(error)) from None
        if isinstance(value, dict) and not entries:
            bad = {k: w for k, w in value.items() if isinstance(w, bool)
                   or not isinstance(w, int | float)}
            if bad:
                raise ValueError(f"a mixture maps specs to numeric weights; got {preview(bad)} (a "
                                 "dataset entry needs an 'hf' key)")
        return value

    def corpus_spec(self) -> Any:
        """The corpus as :func:`spice_env.corpus.load_corpus` takes it (plain copies)."""
        value = self.corpus
        if isinstance(value, list):
            return [dict(entry) for entry in value]
        return dict(value) if isinstance(value, dict) else value


class OptimizerConfig(_Section):
    """AdamW with a constant learning rate (the paper's 1e-6)."""

    lr: float = Field(default=1e-6, gt=0, description="Learning rate.")
    weight_decay: float = Field(default=0.0, ge=0, description="AdamW weight decay.")
    betas: tuple[float, float] = Field(default=(0.9, 0.999), description="AdamW betas.")
    grad_clip: float | None = Field(default=1.0, gt=0, description="Gradient norm clip "
                                    "(None: no clipping).")
    warmup_iterations: int = Field(default=0, ge=0, description="Iterations of linear "
                                   "learning-rate warm-up before the constant rate.")


LoggerName = Literal["csv", "tensorboard", "wandb"]


def _default_loggers() -> list[LoggerName]:
    return ["csv", "tensorboard"]


class TrainerConfig(_Section):
    """How the loop runs: length, hardware, micro-batching, checkpoints, logs."""

    iterations: int = Field(default=640, ge=1, description="Iterations of Algorithm 1.")
    valid_rate_warning: float = Field(
        default=0.05, ge=0, le=1, description="Warn when challenger/valid_rate stays under this "
        "for `valid_rate_patience` iterations in a row (0: never).")
    valid_rate_patience: int = Field(default=5, ge=1, description="Iterations in a row under "
                                     "`valid_rate_warning` before the warning.")
    output_dir: str = Field(default="runs/spice", description="The run folder: metrics, "
                            "rollouts, checkpoints, plots.")
    seed: int = Field(default=0, description="Seed of sampling, corpus order and init.")
    accelerator: Literal["auto", "cpu", "cuda", "gpu", "mps"] = Field(default="auto",
                                                                      description="Fabric "
                                                                      "accelerator.")
    strategy: Literal["auto", "ddp", "fsdp"] = Field(default="auto", description="Fabric "
                                                     "strategy: ddp replicates the policy on "
                                                     "every process; fsdp shards its "
                                                     "parameters, gradients and optimiser state "
                                                     "over them (FSDP2, sharded checkpoints).")
    devices: int | Literal["auto"] = Field(default="auto", description="Processes/devices.")
    num_nodes: int = Field(default=1, ge=1, description="Machines.")
    precision: Literal["auto", "bf16-true", "bf16-mixed", "32-true", "16-mixed"] = Field(
        default="auto", description="auto: bf16 on GPUs and on CPUs with bf16 units, else 32.")
    micro_batch_size: int = Field(default=4, ge=1, description="Sequences per forward/backward; "
                                  "gradients accumulate over the iteration's batch.")
    train_roles: Literal["both", "challenger", "reasoner"] = Field(default="both",
                                                                   description="Which roles' "
                                                                   "samples update the policy.")
    activation_checkpointing: bool = Field(default=False, description="Recompute activations "
                                           "in the backward pass to save memory.")
    freeze_input_embeddings: bool = Field(default=False, description="Leave the input "
                                          "embedding table untrained where the model has its "
                                          "own (untied from the output layer): no gradient and "
                                          "no AdamW state for it, three times its float32 size "
                                          "saved. A table the output layer shares stays "
                                          "trained (freezing it would freeze the output "
                                          "layer); the dry run says which applies.")
    share_prompts: bool = Field(default=True, description="Compute a prompt that several "
                                "completions of a micro-batch share (the G answers of a group) "
                                "once, in a packed row with a block attention mask, instead of "
                                "once per completion; the gradient is the same. Needs an "
                                "attention that takes an explicit mask (sdpa, eager); others "
                                "use one padded row per completion.")
    skip_inert_samples: bool = Field(default=True, description="Leave samples that cannot "
                                     "change the gradient (advantage exactly 0 under Dr. GRPO "
                                     "or GRPO with beta 0) out of the forward and backward; the "
                                     "loss still divides by the whole batch, so the step is the "
                                     "same. Off: every sample is run, and the entropy and ratio "
                                     "metrics cover them all.")
    lora_rank: int | None = Field(default=None, ge=1, description="Train LoRA adapters of this "
                                  "rank instead of all weights (needs peft).")
    save_every: int = Field(default=10, ge=1, description="Checkpoint every k iterations (and "
                            "at the end).")
    loggers: list[LoggerName] = Field(default_factory=_default_loggers,
                                      description="Metric loggers.")
    wandb_project: str = Field(default="spice-env", description="The W&B project when "
                               "'wandb' is among the loggers.")
    wandb_entity: str | None = Field(default=None, description="The W&B entity (team or user); "
                                     "your default entity when unset.")
    wandb_name: str | None = Field(default=None, description="The W&B run's display name (the "
                                   "run folder's name when unset).")
    wandb_tags: list[str] = Field(default_factory=list, description="Tags of the W&B run.")
    keep_checkpoints: int = Field(default=2, ge=1, description="How many of the newest "
                                  "checkpoints to keep.")
    log_rollouts: bool = Field(default=True, description="Write every iteration's questions, "
                               "answers and rewards to rollouts.jsonl.")
    progress: bool = Field(default=True, description="Show a progress bar on rank 0.")
    overwrite: bool = Field(default=False, description="Start afresh in an output_dir that "
                            "holds an earlier run, deleting its checkpoints, metrics and "
                            "rollouts (otherwise such a start is refused; --resume continues "
                            "it). Only a folder marked by a run (spice-run.json) is cleared.")
    export_model: bool = Field(default=True, description="Save the trained model and "
                               "tokenizer as a transformers folder (model/) at the end.")


class EvaluationConfig(_Section):
    """Greedy evaluation of the policy inside the training loop: before the first update, every
    ``every`` iterations and after the last (on when there is a held-out set or a benchmark).

    The held-out set is drawn from the training corpus before training starts and never sampled
    for training: documents whose records carry a question and its gold answer (the embedded
    math problems do). Benchmark subsets (``gsm8k``, ``math500``, ...) can be added; the
    Reasoner prompt is the game's. Metrics are logged as ``eval/<set>/accuracy``,
    ``eval/<set>/boxed_rate`` (answers with a ``\\boxed{}``), ``eval/<set>/accuracy_given_boxed``
    (correct among those: reasoning apart from format), ``eval/<set>/stderr``,
    ``eval/<set>/truncated_rate`` and ``eval/<set>/mean_tokens``; every answer goes to
    ``evaluations.jsonl``.
    """

    every: int = Field(default=0, ge=0, description="Evaluate every k iterations as well as "
                       "before the first and after the last; 0: only before and after.")
    heldout: int = Field(default=0, ge=0, description="Documents set aside from the training "
                         "corpus (never sampled for training) whose question and gold answer "
                         "are evaluated; 0: no held-out set.")
    question_field: str = Field(default="question", description="The record field with a "
                                "held-out document's question.")
    answer_field: str = Field(default="answer", description="The record field with its gold "
                              "answer.")
    heldout_answers: Literal["numeric", "any"] = Field(
        default="numeric", description="Which documents can be held out: `numeric`, those whose "
        "gold answer is a number (units allowed), checked as a number; `any`, any answer of at "
        "most 200 characters, non-numbers checked as expressions by Math-Verify.")
    benchmarks: list[str] = Field(default_factory=list, description="Benchmark subsets to "
                                  "evaluate as well (names of `spice eval --list`), answered "
                                  "greedily once per question (also those that `spice eval` "
                                  "samples, such as AIME).")
    benchmark_limit: int = Field(default=50, ge=1, description="Items per benchmark (a seeded "
                                 "random subset).")
    max_new_tokens: int | None = Field(default=None, ge=1, description="Answer length limit "
                                       "(None: the Reasoner's max_new_tokens).")
    batch_size: int = Field(default=64, ge=1, description="Questions generated at once.")
    seed: int = Field(default=0, description="Seed of the held-out draw and the benchmark "
                      "subsets (the same seed gives the same items in every run).")

    @property
    def enabled(self) -> bool:
        """Whether there is anything to evaluate."""
        return bool(self.heldout or self.benchmarks)


class TrainConfig(_Section):
    """A whole training run."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    game: GameConfig = Field(default_factory=GameConfig)
    challenger: SamplingConfig = Field(default_factory=lambda: SamplingConfig(
        temperature=1.0, max_new_tokens=512, n=1))
    reasoner: SamplingConfig = Field(default_factory=lambda: SamplingConfig(
        temperature=1.0, max_new_tokens=512, n=8), description="The Reasoner's sampling; its "
        "`n` is G, taken from game.group_size.")
    algorithm: SerializeAsAny[AlgorithmConfigBase] = Field(
        default_factory=DrGRPOConfig, description="The algorithm's settings; `name` picks it "
        "among the registered ones (`drgrpo`, `grpo`, `ppo`, or one you registered).")
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)

    def to_yaml(self) -> str:
        """The whole config as YAML, every setting written out (a run folder's ``config.yaml``,
        which :func:`load_config` reads back to the same config)."""
        import yaml

        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    @model_validator(mode="before")
    @classmethod
    def _group_size_once(cls, data: Any) -> Any:
        """G is ``game.group_size``: the Reasoner's ``n`` follows it, and an ``n`` set to
        another value is refused."""
        if not isinstance(data, Mapping):
            return data
        game, reasoner = data.get("game"), data.get("reasoner")
        if isinstance(game, GameConfig):
            group = game.group_size
        elif isinstance(game, Mapping) and "group_size" in game:
            group = game["group_size"]
        else:
            group = GameConfig.model_fields["group_size"].default
        defaults: dict[str, Any] = {}
        if reasoner is None:  # the section's own defaults (those of the field's factory)
            reasoner, defaults = {}, {"temperature": 1.0, "max_new_tokens": 512}
        if isinstance(reasoner, SamplingConfig):
            given = reasoner.n if "n" in reasoner.model_fields_set else None
            reasoner = reasoner.model_dump(exclude_unset=True)
        elif isinstance(reasoner, Mapping):
            given = reasoner.get("n")
        else:
            return data
        if given is not None and isinstance(group, int) and given != group:
            raise ValueError(f"reasoner.n ({given}) differs from game.group_size (G={group}): "
                             "G is set once, in game.group_size; drop reasoner.n")
        return {**data, "reasoner": {**defaults, **dict(reasoner), "n": group}}

    @field_validator("algorithm", mode="wrap")
    @classmethod
    def _algorithm(cls, value: Any, handler: Any) -> AlgorithmConfigBase:
        return algorithm_config(value)

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if self.rollout.attempts < self.game.group_size:
            raise ValueError(f"rollout.attempts (N={self.rollout.attempts}) must be at least "
                             f"game.group_size (G={self.game.group_size})")
        if self.model.frozen_challenger_endpoint and not self.model.frozen_challenger:
            raise ValueError("model.frozen_challenger_endpoint needs model.frozen_challenger "
                             "(the served model's name)")
        section = self.evaluation
        if section.heldout and self.rollout.text_field in (section.question_field,
                                                           section.answer_field):
            raise ValueError(f"rollout.text_field {self.rollout.text_field!r} is also a "
                             "held-out field (evaluation.question_field/answer_field): the "
                             "text field is the document, not one of its fields")
        if self.model.frozen_challenger and self.trainer.train_roles == "both":
            raise ValueError("a frozen challenger does not train: set trainer.train_roles to "
                             "'reasoner'")
        if self.trainer.strategy == "fsdp" and self.trainer.precision == "16-mixed":
            raise ValueError("trainer.strategy=fsdp takes precision bf16-mixed, bf16-true or "
                             "32-true, not 16-mixed")
        return self


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Set ``dotted.key=value`` in ``data`` (the value parsed as a YAML scalar)."""
    key, sep, raw = assignment.partition("=")
    key = key.strip()
    shown = preview(assignment, 80)
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {shown} is not of the form dotted.key=value")
    if not valid_unicode(assignment):  # bytes that are not UTF-8 on the command line
        raise ConfigError(f"override {shown} is not valid Unicode (a lone surrogate)")
    value = plain(parse_yaml(raw, f"override {shown}"), f"override {shown}") \
        if raw.strip() else ""
    *parents, last = key.split(".")
    node = data
    for depth, part in enumerate(parents):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            where = ".".join(parents[: depth + 1])
            raise ConfigError(f"override {shown}: {where} is a value, not a section")
        node = child
    if last == "name" and parents == ["algorithm"]:
        # switching algorithm: settings of the previous one would be unknown keys
        node.clear()
    node[last] = value


def build_config(data: Mapping[str, Any] | None, overrides: Sequence[str] = (),
                 source: str = "<config>") -> TrainConfig:
    """Validate ``data`` (plus overrides) into a :class:`TrainConfig`."""
    if data is not None and not isinstance(data, Mapping):
        raise ConfigError(f"{source}: the top level must be a mapping of sections")
    merged: dict[str, Any] = plain(data or {}, source)
    for assignment in overrides:
        apply_override(merged, assignment)
    algorithm = merged.get("algorithm")
    if isinstance(algorithm, dict):
        algorithm.setdefault("name", "drgrpo")  # settings without a name tune the default
    try:
        return TrainConfig.model_validate(merged)
    except ValidationError as error:
        raise ConfigError(_explain(error, source, merged)) from None


def config_summary(path: Path) -> str:
    """The first comment line of a config file (what it is for), or ``""``."""
    try:
        lines = path.read_text("utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return ""
    for line in lines:
        if line.startswith("#"):
            return line.lstrip("#").strip()
        if line.strip():
            break
    return ""


def resolve_config(spec: str | os.PathLike[str]) -> Path:
    """The file a ``--config`` value names: an existing path, else a shipped config's name.

    Raises:
        ConfigError: when it is neither (with the closest shipped names).
    """
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    if path.exists():
        raise ConfigError(f"config {path} is a folder, not a YAML file")
    shipped = shipped_configs()
    name = str(spec).removesuffix(".yaml").removesuffix(".yml")
    if name in shipped:
        return shipped[name]
    close = difflib.get_close_matches(name, list(shipped), n=3, cutoff=0.5)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    raise ConfigError(f"no config file {spec} and no shipped config of that name; {hint}"
                      "`spice configs` lists the shipped ones")


def load_config(path: str | os.PathLike[str] | None, overrides: Sequence[str] = ()
                ) -> TrainConfig:
    """Read a YAML file or shipped config (or start from the defaults with ``None``) and
    apply overrides.

    A file may start from another: a top-level ``extends: other.yaml`` (relative to the file, or
    a shipped config's name) loads that one first and merges this file's sections over it, key
    by key.
    """
    if path is None:
        return build_config({}, overrides)
    file = resolve_config(path)
    return build_config(read_yaml(file), overrides, source=str(file))


def _explain(error: ValidationError, source: str, data: Mapping[str, Any]) -> str:
    """Every problem on one line: ``source: key: what (got value); key: unknown key (did you
    mean other?)``."""
    problems = []
    for problem in error.errors():
        location = [str(part) for part in problem["loc"]]
        key = ".".join(location) or "(top level)"
        if problem["type"] == "extra_forbidden":
            known = _known_keys(problem["loc"][:-1], data)
            close = difflib.get_close_matches(location[-1], known, n=1, cutoff=0.6)
            prefix = ".".join(location[:-1] + close[:1])
            hint = f" (did you mean {prefix}?)" if close else (
                f" (known: {', '.join(known)})" if known else "")
            problems.append(f"{key}: unknown key{hint}")
        else:
            got = problem.get("input")
            cause = problem.get("ctx", {}).get("error") if problem["type"] == "value_error" \
                else None
            if cause is not None:  # our own validators' messages, without pydantic's prefix
                problem = {**problem, "msg": str(cause)}
            problems.append(f"{key}: {problem['msg']} (got {preview(got)})")
    return f"{source}: " + "; ".join(problems)


def _known_keys(location: Sequence[int | str], data: Mapping[str, Any]) -> list[str]:
    """The keys a section of :class:`TrainConfig` accepts, found by walking its location (the
    ``algorithm`` section's by the algorithm its ``name`` picks in ``data``)."""
    model: type[BaseModel] | None = TrainConfig
    for part in location:
        if model is None:
            return []
        if model is TrainConfig and str(part) == "algorithm":
            section = data.get("algorithm")
            name = section.get("name", "drgrpo") if isinstance(section, Mapping) else "drgrpo"
            model = algorithm_config_class(name) if name in ALGORITHMS else None
            continue
        field = model.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None)
        model = annotation if isinstance(annotation, type) and issubclass(
            annotation, BaseModel) else None
    return sorted(model.model_fields) if model is not None else []
