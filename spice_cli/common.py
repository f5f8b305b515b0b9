"""What every ``spice`` command shares: user errors as one line, the package check, and the
checks of model and output arguments."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any


class UsageError(Exception):
    """A mistake of the user's: printed as one line, exit code 2."""


class PackageConflictError(UsageError):
    """An import name of ours resolves to another distribution's package."""


def require_ours(name: str) -> ModuleType:
    """Import spice-env's ``agents`` / ``algorithms`` and stop clearly if another one shadows it."""
    module = importlib.import_module(name)
    if not getattr(module, "SPICE_ENV_PACKAGE", False):
        where = getattr(module, "__file__", None) or "an unknown location"
        raise PackageConflictError(
            f"'import {name}' found a package at {where} that is not spice-env's. Another "
            f"installed distribution (for example the OpenAI Agents SDK for 'agents') uses the "
            f"same import name; install spice-env in a dedicated virtual environment."
        )
    return module


def user_errors() -> tuple[type[BaseException], ...]:
    """The exception types that mean a mistake in the input, not a bug."""
    from spice_env.assets import AssetError
    from spice_env.corpus import CorpusError

    kinds: list[type[BaseException]] = [UsageError, CorpusError, AssetError]
    try:
        from algorithms.config import ConfigError
        from algorithms.integrity import CheckpointError

        kinds += [ConfigError, CheckpointError]
    except ImportError:  # another package named algorithms: require_ours says so
        pass
    return tuple(kinds)


def one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 1500 else text[:1497] + "..."


def remote_code_warning(trusted: bool, source: str, *, run: str | os.PathLike[str] | None = None,
                        run_asks: bool = False) -> None:
    """Say on standard error whose Python code may run: with ``--trust-remote-code``, that the
    code shipped with ``source`` will be executed; without it, when the config of ``run`` (a
    run folder, which may come from someone else) asks for it, that the setting is not honoured.
    """
    if trusted:
        print(f"warning: --trust-remote-code: Python code from {source} (its auto_map modules) "
              "will be executed; give it only for models you trust", file=sys.stderr)
    elif run_asks:
        print(f"warning: {Path(run or '.') / 'config.yaml'} sets model.trust_remote_code: true, "
              "which is not honoured from a run folder; pass --trust-remote-code to let the "
              f"code of {source} run", file=sys.stderr)


def check_model_argument(model: str, option: str) -> None:
    """A model argument that names a local path must be a model folder (or a run, for eval)."""
    from agents.models import SHIPPED_MODELS, looks_like_path
    from algorithms.run_folder import is_checkpoint_reference

    path = Path(model).expanduser()
    if model in SHIPPED_MODELS:
        return
    if path.is_file() and not is_checkpoint_reference(path):
        raise UsageError(f"{option} {model} is a file; give a transformers model folder, a "
                         "run folder, a checkpoint (.ckpt or checkpoints/last), a shipped name "
                         f"({', '.join(SHIPPED_MODELS)}) or a hub id")
    if not path.exists() and looks_like_path(model):
        raise UsageError(f"{option} {model}: no such folder; give a transformers model folder, "
                         f"a shipped name ({', '.join(SHIPPED_MODELS)}) or a hub id")



def writable_output(output: Path) -> None:
    """Refuse an output path whose folder cannot be written, before any work."""
    if output.is_dir():
        raise UsageError(f"--output {output} is a folder; give a file name such as "
                         f"{output / 'report.json'}")
    require_ours("algorithms")
    from algorithms.preflight import nearest_existing

    existing = nearest_existing(output.parent)
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"--output {output}: {existing} cannot be written; choose another "
                         "place for the report")


def add_game_arguments(parser: Any, *, corpus: str = "embedded", group_size: int = 8,
                       prompt_style: str = "paper", selector: bool = False) -> None:
    """The game's flags shared by ``spice demo``, ``spice mine`` and ``spice serve``:
    ``--corpus``, ``--group-size``, ``--prompt-style``, ``--task-formats``,
    ``--challenger-reward`` (and ``--format-choice`` with ``selector``)."""
    parser.add_argument("--corpus", default=corpus,
                        help="a corpus spec: embedded, embedded:math, a file or folder, hf:<id>")
    parser.add_argument("--group-size", type=int, default=group_size,
                        help="G: Reasoner answers per question")
    parser.add_argument("--prompt-style", choices=["paper", "compact"], default=prompt_style,
                        help="the role prompts")
    parser.add_argument("--task-formats", choices=["both", "mcq", "free_form"], default="both",
                        help="which question formats the Challenger may write")
    parser.add_argument("--challenger-reward", default="variance",
                        help="a registered Challenger reward (variance, absolute_zero, r_zero, "
                        "threshold, ...)")
    if selector:
        parser.add_argument("--format-choice", choices=["random", "selector"], default="random",
                            help="pick each document's format at random or by the task-type "
                            "selector")
