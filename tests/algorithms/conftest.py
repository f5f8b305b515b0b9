"""Fixtures of the trainer tests: runs on two CPU processes (gloo), shared between the DDP and
the FSDP tests."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

SCRIPT = """
import faulthandler
import sys

# a rank still running after this long prints where every thread is and exits: a hang shows
# in the test's output instead of running into its timeout
faulthandler.dump_traceback_later(STACKS_AFTER_S, exit=True)

from agents.scripted import ScriptedTextAgent
from algorithms.config import load_config
from algorithms.trainer import train

arguments = [a for a in sys.argv[1:] if a != "--resume"]
train(load_config(None, arguments), resume="--resume" in sys.argv,
      agent_wrapper=ScriptedTextAgent)
"""

RunFn = Callable[..., subprocess.CompletedProcess[str]]
STACKS_AFTER_S = 200


@pytest.fixture(scope="session")
def run_two_processes(tmp_path_factory: pytest.TempPathFactory) -> RunFn:
    """``run(out, *overrides)`` trains ``trainer.devices=2`` CPU processes in a subprocess
    (scripted texts, see :mod:`agents.scripted`) and returns it finished, exit code 0."""
    script = tmp_path_factory.mktemp("script") / "run.py"
    script.write_text(textwrap.dedent(SCRIPT).replace("STACKS_AFTER_S", str(STACKS_AFTER_S)))

    def run(out: Path, *overrides: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        command = [sys.executable, str(script), f"trainer.output_dir={out}",
                   "trainer.devices=2", "trainer.accelerator=cpu", "trainer.progress=false",
                   *overrides]
        # the output goes to files (rank 1 inherits them: pipes would keep the call waiting
        # for it), and the processes get a session of their own, ended whole on a timeout
        with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
            process = subprocess.Popen(command, env=env, stdout=stdout, stderr=stderr,
                                       text=True, start_new_session=True)
            started = time.monotonic()
            try:
                process.wait(timeout=STACKS_AFTER_S + 40)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            finally:
                with contextlib.suppress(ProcessLookupError):  # a rank left behind
                    os.killpg(process.pid, signal.SIGKILL)
            stdout.seek(0)
            stderr.seek(0)
            done = subprocess.CompletedProcess(command, process.returncode, stdout.read(),
                                               stderr.read())
        took = time.monotonic() - started
        assert done.returncode == 0, (f"exit code {done.returncode} after {took:.0f} s\n"
                                      + done.stderr[-6000:])
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
