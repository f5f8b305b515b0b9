"""Fixtures shared by the whole suite."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable, Iterator

import pytest

ServeFn = Callable[[type[http.server.BaseHTTPRequestHandler]], str]


@pytest.fixture
def serve() -> Iterator[ServeFn]:
    """``serve(Handler)`` starts a threaded HTTP server on loopback and returns its base URL;
    every server started is shut down after the test."""
    servers: list[http.server.ThreadingHTTPServer] = []

    def start(handler: type[http.server.BaseHTTPRequestHandler]) -> str:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    try:
        yield start
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()
