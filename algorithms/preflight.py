"""Checks that run before a training run loads anything heavy, and the plan they print.

:func:`preflight` validates, in this order and without loading model weights: the run folder
(``trainer.output_dir``), the optional packages the config asks for, the corpus (its first
records), the model (its configuration and tokenizer, when they can be reached) and a frozen
Challenger's endpoint. A problem raises :class:`PreflightError` with one line that says what is
wrong and how to fix it, so a mistake costs seconds instead of a model start-up.

The :class:`RunPlan` it returns describes the run: processes, documents per process, B/N/G, the
generations and trained samples of one iteration, and an estimate of the memory per device
(``spice train --dry-run`` prints it).
"""

from __future__ import annotations

import importlib.util
import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from algorithms.config import ConfigError, TrainConfig
from algorithms.integrity import verify_checkpoint
from algorithms.run_folder import RunFolder, unowned_message


class PreflightError(ConfigError):
    """A run that cannot start; the message says what to change."""


@dataclass(frozen=True)
class ModelFacts:
    """What is known about the policy without loading its weights."""

    source: str
    parameters: int | None = None
    layers: int | None = None
    hidden_size: int | None = None
    vocab_size: int | None = None
    tied_embeddings: bool | None = None
    note: str = ""


@dataclass
class RunPlan:
    """What a training run will do, per iteration and per device (from :func:`preflight`)."""

    config: TrainConfig
    accelerator: str
    processes: int
    precision: str
    corpus: list[Any]
    model: ModelFacts
    memory_gb: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def documents_per_iteration(self) -> int:
        """B over all processes."""
        return self.config.rollout.batch_size * self.processes

    def describe(self) -> str:
        """The plan as a few aligned lines of text."""
        cfg = self.config
        b, n, g = cfg.rollout.batch_size, cfg.rollout.attempts, cfg.game.group_size
        lines = [
            f"run folder      {cfg.trainer.output_dir}",
            f"processes       {self.processes} ({self.accelerator}, "
            f"{cfg.trainer.strategy} strategy, precision {self.precision})",
            f"per iteration   B={b} documents per process ({self.documents_per_iteration} in "
            f"all), N={n} Challenger attempts each, G={g} kept; up to {b * g * g} Reasoner "
            f"answers and {2 * b * g} trained samples per process",
            f"iterations      {cfg.trainer.iterations} ({cfg.trainer.iterations * b} documents "
            "per process)",
            f"algorithm       {cfg.algorithm.name}, lr {cfg.optimizer.lr:g}, backend "
            f"{cfg.model.backend}",
        ]
        section = cfg.evaluation
        if section.enabled:
            sets = ([f"{section.heldout} held-out corpus documents"] if section.heldout else []
                    ) + [f"{name} ({section.benchmark_limit} items)"
                         for name in section.benchmarks]
            when = f"every {section.every} iterations and " if section.every else ""
            lines.append(f"evaluation      greedy on {', '.join(sets)}: {when}before the first "
                         "and after the last iteration")
        for source in self.corpus:
            lines.append(f"corpus          {source.name} (weight {source.weight:.2f}): "
                         f"{source.documents} usable documents in its first {source.records} "
                         "records")
        facts = self.model
        size = f"{facts.parameters / 1e9:.2f}B parameters" if facts.parameters else "size unknown"
        lines.append(f"model           {cfg.model.name} -> {facts.source} ({size})")
        if self.memory_gb:
            total = sum(self.memory_gb.values())
            parts = ", ".join(f"{k} {v:.1f}" for k, v in self.memory_gb.items())
            lines.append(f"memory/device   about {total:.1f} GB ({parts}; an estimate of "
                         "training, before the extra a checkpoint save or the export takes)")
        lines.extend(f"note            {note}" for note in self.notes + (
            [facts.note] if facts.note else []))
        return "\n".join(lines)


def preflight(config: TrainConfig, *, resume: bool = False, dry_run: bool = False) -> RunPlan:
    """Check everything a run needs that can be checked cheaply, in the order it is needed.

    Args:
        config: the run.
        resume: the run continues from the last checkpoint of its folder.
        dry_run: nothing will be trained: a hub model that cannot be reached now is a note in
            the plan instead of an error.

    Raises:
        PreflightError: the first problem found, as one line naming the fix.
    """
    check_output_dir(config, resume=resume)
    check_packages(config)
    corpus = check_corpus(config)
    model = check_model(config, unreachable_ok=dry_run)
    check_endpoint(config)
    accelerator, processes = _processes(config)
    from algorithms.launch import resolve_precision

    precision = resolve_precision(config.trainer.precision, config.trainer.accelerator)
    plan = RunPlan(config=config, accelerator=accelerator, processes=processes,
                   precision=precision, corpus=corpus, model=model)
    if model.parameters:
        plan.memory_gb = estimate_memory(config, model, precision, processes=processes)
    if config.trainer.freeze_input_embeddings and model.tied_embeddings:
        plan.notes.append("trainer.freeze_input_embeddings: this model's output layer shares "
                          "the input embedding table, so the table is trained as usual")
    return plan


# --- the single checks --------------------------------------------------------------------------

def nearest_existing(path: Path) -> Path:
    """``path`` itself when it exists, else its nearest existing parent (what creating it would
    write into)."""
    while not path.exists():
        path = path.parent
    return path


def check_output_dir(config: TrainConfig, *, resume: bool = False) -> None:
    """The run folder can be written, and holds an earlier run only when that is meant."""
    folder = Path(config.trainer.output_dir).expanduser()
    if folder.exists() and not folder.is_dir():
        raise PreflightError(f"trainer.output_dir {folder} is a file; choose a folder "
                             f"(trainer.output_dir=runs/<name>)")
    existing = nearest_existing(folder)
    if not existing.is_dir():
        raise PreflightError(f"trainer.output_dir {folder}: {existing} is a file, so the folder "
                             "cannot be created; choose another trainer.output_dir")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PreflightError(f"trainer.output_dir {folder} cannot be written ({existing} is not "
                             "writable); choose another trainer.output_dir")
    run = RunFolder(folder)
    if resume:
        latest = run.latest()
        if latest is None:
            raise PreflightError(f"nothing to resume: {run.checkpoints_dir} has no "
                                 "checkpoint (run without --resume to start)")
        check_checkpoint_strategy(config, latest)
        verify_checkpoint(latest, run.checkpoints())  # damaged: one line, before any load
    elif run.unowned_paths():
        raise PreflightError(unowned_message(run, run.unowned_paths()))
    elif run.has_history() and not config.trainer.overwrite:
        raise PreflightError(f"{folder} holds an earlier run: continue it with --resume, or set "
                             "trainer.overwrite=true to start afresh (its checkpoints, metrics "
                             "and rollouts are deleted), or choose another trainer.output_dir")


def check_checkpoint_strategy(config: TrainConfig, checkpoint: Path) -> None:
    """A sharded checkpoint resumes under FSDP only, a single-file one under the others."""
    from algorithms.sharding import is_sharded_checkpoint

    sharded, fsdp = is_sharded_checkpoint(checkpoint), config.trainer.strategy == "fsdp"
    if sharded != fsdp:
        written = "trainer.strategy=fsdp" if sharded else "a replicated strategy (ddp/auto)"
        raise PreflightError(f"{checkpoint.name} was written under {written}; resume it with "
                             f"the strategy it was written with (trainer.strategy="
                             f"{'fsdp' if sharded else 'ddp'})")


def check_packages(config: TrainConfig) -> None:
    """Optional packages that the config needs are installed."""
    needs = []
    if "wandb" in config.trainer.loggers:
        needs.append(("wandb", "the wandb logger (trainer.loggers)", "wandb"))
    if config.trainer.lora_rank:
        needs.append(("peft", "trainer.lora_rank", "lora"))
    if config.model.backend == "vllm":
        needs.append(("vllm", "model.backend=vllm", "vllm"))
    for module, setting, extra in needs:
        if importlib.util.find_spec(module) is None:
            raise PreflightError(f"{setting} needs the {module} package, which is not "
                                 f"installed: pip install 'spice-env[{extra}]' (or drop the "
                                 "setting)")
    from algorithms.registry import ALGORITHMS

    name = config.algorithm.name
    if config.trainer.lora_rank and ALGORITHMS[name].needs_value_head:
        raise PreflightError(f"trainer.lora_rank: the value head of algorithm {name!r} is not "
                             "supported with LoRA; use algorithm.name=drgrpo or drop "
                             "trainer.lora_rank")
    if config.trainer.strategy == "fsdp" and ALGORITHMS[name].needs_value_head:
        raise PreflightError(f"trainer.strategy=fsdp: the value head of algorithm {name!r} is "
                             "not sharded (a checkpoint holds one sharded module); use "
                             "trainer.strategy=ddp or algorithm.name=drgrpo")


def check_corpus(config: TrainConfig) -> list[Any]:
    """The corpus spec resolves and its first records hold text."""
    from spice_env.corpus import CorpusError, peek_corpus

    try:
        return peek_corpus(config.rollout.corpus_spec(), text_field=config.rollout.text_field,
                           max_file_bytes=config.rollout.max_file_bytes,
                           max_record_bytes=config.rollout.max_record_bytes)
    except CorpusError as error:
        raise PreflightError(f"rollout.corpus: {error}") from None


def check_model(config: TrainConfig, *, unreachable_ok: bool = False) -> ModelFacts:
    """The model's configuration and tokenizer load (no weights); its size is counted."""
    facts = model_facts(config.model.name, trust_remote_code=config.model.trust_remote_code,
                        setting="model.name", unreachable_ok=unreachable_ok)
    if config.model.frozen_challenger and not config.model.frozen_challenger_endpoint:
        model_facts(config.model.frozen_challenger,
                    trust_remote_code=config.model.trust_remote_code,
                    setting="model.frozen_challenger", unreachable_ok=unreachable_ok)
    return facts


def model_facts(name: str, *, trust_remote_code: bool = False, setting: str = "model",
                unreachable_ok: bool = False) -> ModelFacts:
    """Size and shape of a model from its configuration (no weights are read).

    A hub id whose configuration cannot be fetched raises, unless ``unreachable_ok``: then the
    facts say so.
    """
    from agents.models import SHIPPED_MODELS, looks_like_path, model_cache_dir

    if name in SHIPPED_MODELS:
        folder = model_cache_dir(name)
        if not (folder / "config.json").is_file():
            return ModelFacts(source=f"shipped {name} (not prepared yet)",
                              note=f"{name} is downloaded and converted on first use (about "
                              "a minute); `spice assets` prepares it ahead of time")
        source = str(folder)
    else:
        path = Path(name).expanduser()
        if path.exists():
            if not path.is_dir() or not (path / "config.json").is_file():
                raise PreflightError(f"{setting}: {path} is not a transformers model folder (no "
                                     "config.json); give a folder saved by save_pretrained, a "
                                     "shipped name or a hub id")
            source = str(path)
        elif looks_like_path(name):
            raise PreflightError(f"{setting}: no model folder {name}; give a transformers "
                                 "folder, a shipped name (spice-env ships "
                                 f"{', '.join(SHIPPED_MODELS)}) or a hub id")
        else:
            source = name
            problem = hub_problem()
            if problem:
                if unreachable_ok:
                    return ModelFacts(source=f"hub {name}", note=f"{setting}: {name} is a hub "
                                      f"id and {problem}; the run needs it")
                raise PreflightError(f"{setting}: {name} is neither a shipped name nor a local "
                                     f"folder, and as a hub id it cannot be fetched: {problem}")
    try:
        from transformers import AutoConfig, AutoTokenizer

        model_config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
        AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if unreachable_ok and source == name:
            return ModelFacts(source=f"hub {name}", note=f"{setting}: the configuration of "
                              f"{name} could not be fetched now ({first}); the run needs it")
        raise PreflightError(f"{setting}: cannot load the configuration or tokenizer of "
                             f"{name}: {first}") from None
    return ModelFacts(source=source, parameters=_count_parameters(model_config),
                      layers=getattr(model_config, "num_hidden_layers", None),
                      hidden_size=getattr(model_config, "hidden_size", None),
                      vocab_size=getattr(model_config, "vocab_size", None),
                      tied_embeddings=_tied(model_config))


def _tied(model_config: Any) -> bool | None:
    """Whether the output layer shares the input embedding table (None: not said)."""
    text = getattr(model_config, "get_text_config", lambda: model_config)()
    tied = getattr(text, "tie_word_embeddings", getattr(model_config, "tie_word_embeddings",
                                                        None))
    return None if tied is None else bool(tied)


def hub_problem() -> str | None:
    """Why models cannot be fetched from the Hugging Face Hub now, or ``None`` when they can
    (or when offline mode reads them from the local cache)."""
    from agents.models import hub_connection_problem

    for variable in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(variable, "").strip().lower() in ("1", "true", "yes", "on"):
            return None
    problem = hub_connection_problem()
    return f"{problem}; with the model in the local cache, set HF_HUB_OFFLINE=1" if problem \
        else None


def _count_parameters(model_config: Any) -> int | None:
    """Parameters of the model a configuration describes, built on the meta device."""
    import torch
    from transformers import AutoModelForCausalLM

    try:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(model_config)
    except Exception:  # an architecture this transformers cannot build: size unknown
        return None
    return sum(p.numel() for p in model.parameters())


def check_endpoint(config: TrainConfig) -> None:
    """A frozen Challenger's OpenAI-compatible endpoint answers."""
    url = config.model.frozen_challenger_endpoint
    if url:
        reason = endpoint_problem(url)
        if reason:
            raise PreflightError(f"model.frozen_challenger_endpoint {url} cannot be reached "
                                 f"({reason}); start the server or fix the URL")


def endpoint_problem(base_url: str, timeout: float = 5.0) -> str | None:
    """Why ``<base_url>/models`` does not answer, or ``None`` when it does."""
    target = base_url.rstrip("/") + "/models"
    if not target.startswith(("http://", "https://")):
        return "not an http(s) URL"
    headers = {"Accept": "application/json"}
    key = os.environ.get("OPENAI_API_KEY")
    if key:
        headers["Authorization"] = f"Bearer {key}"
    try:
        with urllib.request.urlopen(urllib.request.Request(target, headers=headers),
                                    timeout=timeout) as response:
            json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return None if error.code in (401, 403) else f"HTTP {error.code} from {target}"
    except (urllib.error.URLError, OSError) as error:
        return str(getattr(error, "reason", error))
    except ValueError:
        return f"{target} does not answer JSON"
    return None


def _processes(config: TrainConfig) -> tuple[str, int]:
    """The accelerator and the number of processes Fabric would launch."""
    import torch

    trainer = config.trainer
    accelerator = trainer.accelerator
    if accelerator == "auto":
        accelerator = "cuda" if torch.cuda.is_available() else "cpu"
    elif accelerator == "gpu":
        accelerator = "cuda"
    devices = trainer.devices
    if devices == "auto":
        devices = torch.cuda.device_count() if accelerator == "cuda" else 1
    return accelerator, max(1, int(devices)) * trainer.num_nodes


# --- memory -------------------------------------------------------------------------------------

def estimate_memory(config: TrainConfig, model: ModelFacts, precision: str, *,
                    processes: int = 1) -> dict[str, float]:
    """GB per device, by part: weights, gradients and optimiser state (split over the
    ``processes`` under FSDP), the generation copy, a reference model, a rough figure for the
    activations of one micro-batch and, under FSDP, the full weights gathered for a moment at
    each weight sync."""
    from algorithms.launch import MIXED

    assert model.parameters is not None
    p = float(model.parameters)
    gb = 1e9
    trainer = config.trainer
    shards = processes if trainer.strategy == "fsdp" else 1
    weight_bytes = 2 if precision == "bf16-true" else 4
    out: dict[str, float] = {"weights": weight_bytes * p / shards / gb}
    if trainer.lora_rank and model.layers and model.hidden_size:
        trainable = 7.0 * 2 * trainer.lora_rank * model.hidden_size * model.layers  # rough
    else:
        trainable = p
        if (trainer.freeze_input_embeddings and model.tied_embeddings is False
                and model.vocab_size and model.hidden_size):
            trainable -= model.vocab_size * model.hidden_size
    out["gradients+AdamW"] = trainable * 3 * weight_bytes / shards / gb
    # the copy is freed during the update, whose own compute-dtype casts take its place
    if config.model.backend == "hf" and (precision in MIXED or shards > 1):
        out["generation copy"] = (2 if precision in MIXED else weight_bytes) * p / gb
    elif config.model.backend == "vllm":
        out["vLLM weights"] = 2 * p / gb
    if config.algorithm.beta > 0:
        out["reference model"] = 2 * p / gb
    if model.layers and model.hidden_size and model.vocab_size:
        tokens = trainer.micro_batch_size * (
            config.rollout.max_document_tokens + config.challenger.max_new_tokens)
        per_layer = 2 * model.hidden_size * (1 if trainer.activation_checkpointing else 17)
        activations = tokens * (model.layers * per_layer + 2 * model.vocab_size)
        out["activations (rough)"] = activations / gb
    if shards > 1:
        out["gathered at sync (moment)"] = weight_bytes * p / gb
    return out
