"""Fixtures shared by the whole suite."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ServeFn = Callable[[type[http.server.BaseHTTPRequestHandler]], str]


class _Loopback(http.server.ThreadingHTTPServer):
    block_on_close = False  # a handler still trickling bytes must not hold up the test's end


@pytest.fixture
def serve() -> Iterator[ServeFn]:
    """``serve(Handler)`` starts a threaded HTTP server on loopback and returns its base URL;
    every server started is shut down after the test (it checks for that every 50 ms)."""
    servers: list[_Loopback] = []

    def start(handler: type[http.server.BaseHTTPRequestHandler]) -> str:
        server = _Loopback(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    try:
        yield start
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


@pytest.fixture(scope="session")
def still_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny base model and a one-iteration run of it at lr 1e-30, whose update cannot move
    the weights, with a held-out set of 6 questions evaluated before and after:
    ``(base folder, run folder)``."""
    from agents.scripted import ScriptedTextAgent
    from agents.tiny import save_tiny_model
    from algorithms.config import build_config
    from algorithms.trainer import train

    root = tmp_path_factory.mktemp("neutral")
    base = save_tiny_model(root / "base", seed=3, hidden=64)
    config = build_config({
        "model": {"name": str(base)},
        "rollout": {"corpus": "embedded:math", "batch_size": 2, "attempts": 2,
                    "max_document_tokens": 128},
        "game": {"group_size": 2},
        "challenger": {"max_new_tokens": 8},
        "reasoner": {"max_new_tokens": 8, "n": 2},
        "optimizer": {"lr": 1e-30},
        "trainer": {"iterations": 1, "output_dir": str(root / "run"), "save_every": 1,
                    "progress": False, "precision": "bf16-mixed"},
        "evaluation": {"heldout": 6, "max_new_tokens": 8, "batch_size": 4},
    })
    train(config, agent_wrapper=ScriptedTextAgent)
    return base, root / "run"
