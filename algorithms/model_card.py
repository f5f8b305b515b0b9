"""Exporting a trained policy as a transformers folder with a model card, and pushing it.

:func:`export_run` takes a run folder (its final ``model/``, or its newest checkpoint when the
run stopped early) or one checkpoint, and writes ``folder/`` with the weights and tokenizer, the
run's config (``spice_config.yaml``), its curves (``curves.png``) and a ``README.md`` model card:
the base model, the training settings, the last iteration's metrics and the in-loop evaluation
(first and last accuracy per set). :func:`push_to_hub` uploads such a folder with
``huggingface_hub``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from algorithms.config import TrainConfig
from algorithms.run_folder import RunFolder, is_checkpoint_reference, run_folder_of
from algorithms.runlog import eval_sets_in, read_jsonl

CARD_METRICS = ("challenger/valid_rate", "challenger/pass_rate", "challenger/reward",
                "challenger/frontier_share", "reasoner/reward", "train/loss", "train/entropy")
"""The metrics of the last iteration that the card shows, when the run logged them."""


def _source(path: Path) -> tuple[Path, RunFolder, Path | None]:
    """``(model or checkpoint, run, checkpoint or None)`` for a run folder or a checkpoint."""
    run = RunFolder(path)
    if run.is_run():
        if run.has_export():
            return run.export_dir, run, None
        newest = run.latest()
        if newest is None:
            raise FileNotFoundError(f"{path} has no exported model/ and no checkpoint to export")
        return newest, run, newest
    if is_checkpoint_reference(path):
        owner = run_folder_of(path)
        if owner is None:
            raise FileNotFoundError(f"{path}: a checkpoint outside a run folder (its config.yaml "
                                    "names the base model)")
        from algorithms.run_folder import resolve_checkpoint

        checkpoint = resolve_checkpoint(path)
        if checkpoint is None:
            raise FileNotFoundError(f"{path} points to no checkpoint")
        return checkpoint, owner, checkpoint
    raise FileNotFoundError(f"{path} is not a run folder or a checkpoint")


def _table(rows: Sequence[tuple[str, Any]]) -> str:
    lines = ["| | |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    return "\n".join(lines)


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def model_card(config: TrainConfig, history: Sequence[Mapping[str, Any]], *, name: str,
               checkpoint: Path | None = None, has_curves: bool = False) -> str:
    """The ``README.md`` of an exported policy (Hugging Face model card format)."""
    from agents.models import looks_like_path

    base = config.model.name
    front = ["---", "library_name: transformers", "pipeline_tag: text-generation",
             "tags:", "- spice-env", "- self-play", "- reinforcement-learning"]
    if "/" in base and not looks_like_path(base):
        front.insert(1, f"base_model: {base}")
    front.append("---")
    last = history[-1] if history else {}
    done = last.get("iteration", 0)
    game, rollout = config.game, config.rollout
    reward = game.challenger_reward if isinstance(game.challenger_reward, str) else "custom"
    settings = [
        ("base model", base), ("iterations trained", f"{done} of {config.trainer.iterations}"),
        ("algorithm", config.algorithm.name), ("Challenger reward", reward),
        ("B / N / G", f"{rollout.batch_size} per process / {rollout.attempts} / "
                      f"{game.group_size}"),
        ("learning rate", config.optimizer.lr), ("task formats", game.task_formats),
        ("grounding", game.grounding), ("labels", game.label_source),
        ("corpus", rollout.corpus if isinstance(rollout.corpus, str) else "several sources"),
    ]
    parts = ["\n".join(front), f"# {name}",
             f"A policy trained with SPICE self-play (spice-env): one model as Challenger, "
             f"writing questions from documents, and as Reasoner, answering them, from `{base}`."
             + (f" Exported from checkpoint `{checkpoint.name}`." if checkpoint else ""),
             "## Training", _table(settings)]
    shown = [(key, _number(last[key])) for key in CARD_METRICS if key in last]
    if shown:
        parts += [f"## Metrics at iteration {done}", _table(shown)]
    sets = eval_sets_in(history)
    if sets:
        rows = ["| set | first | last |", "|---|---|---|"]
        for name_of_set in sets:
            key = f"eval/{name_of_set}/accuracy"
            values = [(r["iteration"], r[key]) for r in history if key in r]
            rows.append(f"| {name_of_set} | {values[0][1]:.3f} (iteration {values[0][0]}) | "
                        f"{values[-1][1]:.3f} (iteration {values[-1][0]}) |")
        parts += ["## Evaluation during training", "\n".join(rows)]
    if has_curves:
        parts += ["## Curves", "![training curves](curves.png)"]
    parts += ["## Reproduce", "The run's whole config is `spice_config.yaml`:",
              "```bash\npip install spice-env\nspice train --config spice_config.yaml\n```"]
    return "\n\n".join(parts) + "\n"


def export_run(source: str | os.PathLike[str], folder: str | os.PathLike[str], *,
               overwrite: bool = False, trust_remote_code: bool = False) -> Path:
    """Write the policy of ``source`` (a run folder or a checkpoint) to ``folder`` with its
    model card, config and curves; see the module docstring. The folder appears complete or
    not at all."""
    from algorithms.checkpoints import export_policy

    target = Path(folder)
    if target.exists() and (not target.is_dir() or any(target.iterdir())) and not overwrite:
        raise FileExistsError(f"{target} exists and is not empty; choose another folder or "
                              "pass --overwrite")
    model, run, checkpoint = _source(Path(source))
    config = run.config()
    history = read_jsonl(run.metrics_file) if run.metrics_file.is_file() else []
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        with tempfile.TemporaryDirectory(dir=target.parent) as work:
            weights = Path(export_policy(model, work, trust_remote_code=trust_remote_code))
            shutil.copytree(weights, staging, dirs_exist_ok=True)
        shutil.copyfile(run.config_file, staging / "spice_config.yaml")
        curves = run.plots_dir / "curves.png"
        if curves.is_file():
            shutil.copyfile(curves, staging / "curves.png")
        (staging / "README.md").write_text(
            model_card(config, history, name=target.name, checkpoint=checkpoint,
                       has_curves=curves.is_file()), "utf-8")
        if target.exists():
            shutil.rmtree(target) if target.is_dir() else target.unlink()
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def push_to_hub(folder: str | os.PathLike[str], repo_id: str, *, private: bool = False,
                token: str | None = None) -> str:
    """Upload an exported folder to the Hugging Face Hub (the repository is created when
    missing); returns the commit's address."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model",
                             commit_message="Upload a policy trained with spice-env")
    return str(getattr(info, "commit_url", info))
