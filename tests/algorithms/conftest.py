"""Fixtures of the trainer tests: runs on two CPU processes (gloo), shared between the DDP and
the FSDP tests."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

SCRIPT = """
import sys
from agents.scripted import ScriptedTextAgent
from algorithms.config import load_config
from algorithms.trainer import train

arguments = [a for a in sys.argv[1:] if a != "--resume"]
train(load_config(None, arguments), resume="--resume" in sys.argv,
      agent_wrapper=ScriptedTextAgent)
"""

RunFn = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="session")
def run_two_processes(tmp_path_factory: pytest.TempPathFactory) -> RunFn:
    """``run(out, *overrides)`` trains ``trainer.devices=2`` CPU processes in a subprocess
    (scripted texts, see :mod:`agents.scripted`) and returns it finished, exit code 0."""
    script = tmp_path_factory.mktemp("script") / "run.py"
    script.write_text(textwrap.dedent(SCRIPT))

    def run(out: Path, *overrides: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        done = subprocess.run([sys.executable, str(script), f"trainer.output_dir={out}",
                               "trainer.devices=2", "trainer.accelerator=cpu",
                               "trainer.progress=false", *overrides],
                              env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        return done

    return run


@dataclass(frozen=True)
class TwoProcessRun:
    """A finished run on two processes: its base model, folder and settings."""

    base: Path
    folder: Path
    settings: tuple[str, ...]


@pytest.fixture(scope="session")
def ddp_run(tmp_path_factory: pytest.TempPathFactory, run_two_processes: RunFn
            ) -> TwoProcessRun:
    """Two iterations under DDP in float32, a checkpoint after each (the reference the FSDP
    test compares with; the DDP test resumes it)."""
    from agents.tiny import save_tiny_model

    base = save_tiny_model(tmp_path_factory.mktemp("tiny") / "model", seed=0)
    settings = (f"model.name={base}", "rollout.batch_size=2", "rollout.attempts=4",
                "rollout.max_document_tokens=128", "game.group_size=2",
                "challenger.max_new_tokens=12", "reasoner.max_new_tokens=12",
                "optimizer.lr=1e-3", "trainer.precision=32-true", "trainer.save_every=1",
                "trainer.keep_checkpoints=3")
    folder = tmp_path_factory.mktemp("ddp") / "run"
    run_two_processes(folder, *settings, "trainer.strategy=ddp", "trainer.iterations=2")
    return TwoProcessRun(base=base, folder=folder, settings=settings)
