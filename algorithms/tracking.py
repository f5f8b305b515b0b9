"""Experiment trackers: the run's loggers, its config as hyperparameters, and rollout tables.

:func:`make_loggers` builds the loggers ``trainer.loggers`` names (CSV, TensorBoard, W&B).
:func:`log_config` gives each the whole config, flattened to ``section.key`` hyperparameters.
A W&B run keeps one identity for the whole training run: its id is kept in the run folder
(``wandb-run-id``) once the run owns the folder, and read back by ``--resume``, which continues
the same W&B run instead of opening a new one. :func:`log_rollouts` adds an iteration's
questions to W&B as a table (other loggers have no tables and skip it).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from algorithms.config import ConfigError, TrainConfig
from algorithms.run_folder import RunFolder

ROLLOUT_COLUMNS = ("iteration", "rank", "document_id", "task_format", "question", "gold",
                   "answer_type", "pass_rate", "reward", "answers")
"""The columns of the W&B rollout table (one row per kept valid question)."""


def hyperparameters(config: TrainConfig) -> dict[str, Any]:
    """The config as flat ``section.key`` hyperparameters: numbers, strings and booleans as
    they are, anything else (lists, mappings, None) as JSON text."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping) and value:
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), inner)
        elif isinstance(value, bool | int | float | str):
            flat[prefix] = value
        else:
            flat[prefix] = json.dumps(value)

    walk("", config.model_dump(mode="json"))
    return flat


def wandb_run_id(run: RunFolder, *, resume: bool) -> str:
    """The W&B run id of this training run: the one kept in the run folder when resuming,
    else a new one (:func:`log_config` keeps it once the run owns the folder)."""
    path = run.wandb_id_file
    if resume and path.is_file():
        found = path.read_text("utf-8", errors="replace").strip()
        if found.isalnum() and len(found) <= 64:
            return found
    return secrets.token_hex(4)


def make_loggers(config: TrainConfig, resume_iteration: int | None) -> list[Any]:
    """The loggers of ``trainer.loggers`` (TensorBoard drops events after ``resume_iteration``
    when a run resumes; W&B resumes the same run)."""
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
            loggers.append(_wandb_logger(config, resume=resume_iteration is not None))
    return loggers


def _wandb_logger(config: TrainConfig, *, resume: bool) -> Any:
    try:
        from lightning.pytorch.loggers import WandbLogger
    except ImportError as error:
        raise ConfigError("trainer.loggers: 'wandb' needs the wandb package "
                          f"(pip install wandb): {error}") from None
    section = config.trainer
    out = Path(section.output_dir)
    run_id = wandb_run_id(RunFolder(out), resume=resume)
    return WandbLogger(project=section.wandb_project, entity=section.wandb_entity,
                       name=section.wandb_name or out.name, tags=list(section.wandb_tags),
                       save_dir=str(out), id=run_id, resume="allow")


def is_wandb(logger: Any) -> bool:
    """Whether ``logger`` is the W&B logger (the one that logs tables)."""
    return hasattr(logger, "log_table")


def log_config(loggers: Sequence[Any], config: TrainConfig) -> None:
    """Give every logger that takes them the run's config as hyperparameters."""
    params = hyperparameters(config)
    for logger in loggers:
        if is_wandb(logger):  # keep its run id for --resume
            RunFolder(config.trainer.output_dir).wandb_id_file.write_text(
                f"{logger.version}\n", "utf-8")
        try:
            logger.log_hyperparams(params)
        except NotImplementedError:  # Fabric's CSV logger: the run folder's config.yaml has it
            continue


def log_rollouts(loggers: Sequence[Any], records: Sequence[Mapping[str, Any]],
                 step: int) -> None:
    """An iteration's kept valid questions (``rollout_records``) as a W&B table."""
    tables = [logger for logger in loggers if is_wandb(logger)]
    if not tables:
        return
    rows = []
    for record in records:
        for attempt in record.get("attempts", ()):
            if attempt.get("kept") and attempt.get("valid"):
                answers = " | ".join(str(a.get("extracted")) for a in attempt.get("answers", ()))
                rows.append([record.get("iteration"), record.get("rank"),
                             record.get("document_id"), record.get("task_format"),
                             attempt.get("question"), attempt.get("gold"),
                             attempt.get("answer_type"), attempt.get("pass_rate"),
                             attempt.get("reward"), answers])
    for logger in tables:
        logger.log_table(key="rollouts", columns=list(ROLLOUT_COLUMNS), data=rows, step=step)


def finish_loggers(loggers: Sequence[Any]) -> None:
    """Flush every logger and end a W&B run this process started (so a later run in the same
    process, or a resume, is its own W&B process run of the same id)."""
    for logger in loggers:
        logger.finalize("success")
        experiment = getattr(logger, "_experiment", None) if is_wandb(logger) else None
        if experiment is not None and hasattr(experiment, "finish"):
            experiment.finish()
