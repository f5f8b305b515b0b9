"""The Math-Verify worker pool: separate processes that run Math-Verify with a hard per-call
timeout, replaced when they hang or die (used by :class:`spice_env.verify.Verifier`)."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import wait
from typing import TYPE_CHECKING

from spice_env import _verify_worker

if TYPE_CHECKING:
    from spice_env.verify import Outcome

logger = logging.getLogger("spice_env.verify")


@dataclass(eq=False)  # identity hashing: workers are watched in a set
class _Worker:
    process: subprocess.Popen[str]
    ready: bool = False
    job: int | None = None
    deadline: float = 0.0
    started: float = 0.0

    def fileno(self) -> int:  # lets multiprocessing.connection.wait watch the worker's output
        assert self.process.stdout is not None
        return self.process.stdout.fileno()


class MathVerifyPool:
    """Worker processes running Math-Verify with a hard per-call timeout.

    Workers are separate Python processes running ``_verify_worker.py`` (JSON lines over pipes;
    the caller's main module is never re-imported, so no ``__main__`` guard is needed).

    * Math-Verify's own limit (a third of ``timeout_s`` per parse / verify step, whole seconds,
      at least 1) stops most slow inputs inside the worker, which reports ``timeout`` and lives on.
    * A call still running at ``timeout_s`` has its worker killed and replaced: ``timeout``.
    * A worker that dies during a call is replaced and the call is tried once more on another
      worker; a second death makes it ``error``.

    Other calls keep running on the other workers meanwhile.
    """

    def __init__(self, workers: int = 2, timeout_s: float = 5.0, start_timeout_s: float = 120.0
                 ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.size = workers
        self.timeout_s = timeout_s
        self.start_timeout_s = start_timeout_s
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()
        self.restarts = 0
        self.start_failures = 0
        self._retried: set[int] = set()  # jobs of the current run already retried once

    def _spawn(self) -> _Worker:
        # Math-Verify's own limit (whole seconds, per parse / verify step) ends most slow inputs
        # inside the worker, which lives on; the hard kill at timeout_s is the backstop
        inner = str(max(1, math.floor(self.timeout_s / 3)))
        process = subprocess.Popen(
            # -P: the worker's own folder is not put on sys.path (its modules must not shadow
            # the standard library's)
            [sys.executable, "-P", _verify_worker.__file__, inner],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True, encoding="utf-8", errors="replace", bufsize=1,
        )
        return _Worker(process=process, started=time.monotonic())

    def _ensure_started(self) -> None:
        while len(self._workers) < self.size:
            self._workers.append(self._spawn())

    def _replace(self, index: int) -> None:
        self._stop(self._workers[index])
        self.restarts += 1
        self._workers[index] = self._spawn()

    @staticmethod
    def _stop(worker: _Worker) -> None:
        if worker.process.poll() is None:
            worker.process.kill()
        worker.process.wait(timeout=5)
        for stream in (worker.process.stdin, worker.process.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()

    def run(self, jobs: Sequence[tuple[str, str]]) -> list[Outcome]:
        """Compare each ``(gold, prediction)``; returns one outcome per job, in order."""
        with self._lock:
            return self._run(jobs)

    def _run(self, jobs: Sequence[tuple[str, str]]) -> list[Outcome]:
        results: list[Outcome | None] = [None] * len(jobs)
        pending = list(range(len(jobs)))[::-1]
        self._retried = set()
        if jobs:
            self._ensure_started()
        while pending or any(w.job is not None for w in self._workers):
            for index, worker in enumerate(self._workers):
                if worker.ready and worker.job is None and pending:
                    if worker.process.poll() is not None:  # died while idle: just replace it
                        self._replace(index)
                        continue
                    self._send(index, pending.pop(), jobs, pending)
            self._receive(results, pending)
        return [r if r is not None else "error" for r in results]

    def _send(self, index: int, job: int, jobs: Sequence[tuple[str, str]], pending: list[int]
              ) -> None:
        worker = self._workers[index]
        gold, prediction = jobs[job]
        worker.job, worker.deadline = job, time.monotonic() + self.timeout_s
        try:
            assert worker.process.stdin is not None
            worker.process.stdin.write(json.dumps({"id": job, "gold": gold, "pred": prediction})
                                       + "\n")
            worker.process.stdin.flush()
        except (OSError, ValueError):  # the worker died before taking the job: run it elsewhere
            worker.job = None
            pending.append(job)
            self._replace(index)

    def _receive(self, results: list[Outcome | None], pending: list[int]) -> None:
        now = time.monotonic()
        deadlines = [w.deadline for w in self._workers if w.job is not None]
        deadlines += [w.started + self.start_timeout_s for w in self._workers if not w.ready]
        wait_s = max(0.0, min(deadlines) - now) if deadlines else 0.0
        ready = set(wait(self._workers, timeout=wait_s))  # type: ignore[arg-type]
        now = time.monotonic()
        for index, worker in enumerate(self._workers):
            if worker in ready:
                assert worker.process.stdout is not None
                line = worker.process.stdout.readline()
                try:
                    message = json.loads(line)
                except ValueError:  # EOF or garbage: the worker died
                    if worker.ready and worker.job is None:
                        self._replace(index)
                    else:
                        self._fail(index, results, pending, "error")
                    continue
                if message.get("ready"):
                    worker.ready = True
                elif worker.job is not None and message.get("id") == worker.job:
                    results[worker.job] = message.get("outcome", "error")
                    worker.job = None
            elif worker.job is not None and now >= worker.deadline:
                self._fail(index, results, pending, "timeout")
            elif not worker.ready and now >= worker.started + self.start_timeout_s:
                self._fail(index, results, pending, "error")

    def _fail(self, index: int, results: list[Outcome | None], pending: list[int],
              outcome: Outcome) -> None:
        worker = self._workers[index]
        if worker.job is not None and outcome == "error" and worker.job not in self._retried:
            self._retried.add(worker.job)  # the worker died under it: one more try elsewhere
            pending.append(worker.job)
        elif worker.job is not None:
            results[worker.job] = outcome
        elif not worker.ready:
            self.start_failures += 1
            logger.error("a Math-Verify worker failed to start (is math-verify installed?)")
            if self.start_failures >= 3 * self.size:  # workers cannot start at all: give up
                while pending:
                    results[pending.pop()] = "error"
        worker.job = None
        self._replace(index)

    def close(self) -> None:
        """Stop every worker."""
        for worker in self._workers:
            if worker.process.stdin is not None:
                with contextlib.suppress(OSError, ValueError):
                    worker.process.stdin.close()  # EOF: the worker exits by itself
        deadline = time.monotonic() + 1.0
        for worker in self._workers:
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            self._stop(worker)
        self._workers = []
