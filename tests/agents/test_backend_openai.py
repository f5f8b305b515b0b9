"""The OpenAI-compatible backend: against a real local vLLM server, and against broken ones."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import torch

from agents.backends.hf import HFBackend
from agents.backends.openai import EndpointError, OpenAIBackend
from agents.base import ChatPrompt, SamplingConfig
from agents.self_play import SelfPlayAgent
from agents.tiny import save_tiny_model

CHAT = [ChatPrompt(({"role": "user", "content": "What is 6 times 7?"},), "<question>")]
GREEDY = SamplingConfig(temperature=0, max_new_tokens=12)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# -- a real OpenAI-compatible server: vLLM serving a tiny model on loopback --------------------

@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("served") / "model", seed=4, hidden=128)


@pytest.fixture(scope="module")
def server(folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    pytest.importorskip("vllm")
    port = free_port()
    log = (tmp_path_factory.mktemp("log") / "server.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(folder),
         "--served-model-name", "tiny", "--dtype", "float32", "--host", "127.0.0.1",
         "--port", str(port), "--max-model-len", "2048", "--enforce-eager",
         "--kv-cache-memory-bytes", str(2**30)],
        stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 240
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    raise RuntimeError("the vLLM server did not start: "
                                       + Path(log.name).read_text()[-3000:]) from None
                time.sleep(1)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def test_chat_against_a_real_server(server: str) -> None:
    backend = OpenAIBackend("tiny", server, prefill=True)
    assert backend.prompt_format == "messages"
    groups = backend.generate(CHAT * 2, SamplingConfig(max_new_tokens=8, seed=0), 3)
    assert [len(g) for g in groups] == [3, 3]
    assert all(g.finish_reason in ("stop", "length") for grp in groups for g in grp)


def test_completions_match_transformers(server: str, folder: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    reference = HFBackend(AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32),
                          tokenizer)
    backend = OpenAIBackend("tiny", server, api="completions", tokenizer=str(folder))
    prompt = tokenizer.encode("What is 12 + 30?", add_special_tokens=False)
    (ours,), = backend.generate([prompt], GREEDY, 1)
    (theirs,), = reference.generate([prompt], GREEDY, 1)
    assert ours.completion_ids == theirs.completion_ids
    assert ours.prompt_ids == tuple(prompt) and ours.finish_reason == theirs.finish_reason
    assert max(abs(a - b) for a, b in zip(ours.logprobs, theirs.logprobs, strict=True)) < 1e-3


def test_an_episode_through_gym_make(
        server: str, play_random_model_episodes: Callable[[SelfPlayAgent], None]) -> None:
    agent = SelfPlayAgent("openai", "tiny", backend_options={"base_url": server, "prefill": True},
                          challenger=SamplingConfig(max_new_tokens=16, seed=0),
                          reasoner=SamplingConfig(max_new_tokens=8, n=4, seed=1))
    play_random_model_episodes(agent)


def test_an_unknown_model_is_a_clear_error(server: str) -> None:
    backend = OpenAIBackend("no-such-model", server, max_retries=0)
    with pytest.raises(EndpointError, match="HTTP 404"):
        backend.generate(CHAT, GREEDY, 1)


# -- broken servers -----------------------------------------------------------------------------

Reply = Callable[[int, dict[str, Any], dict[str, str]], tuple[int, dict[str, str], bytes]]


@pytest.fixture()
def fake() -> Iterator[Callable[[Reply], str]]:
    """Start a loopback HTTP server answering each POST with ``reply(attempt, body, headers)``."""
    servers: list[ThreadingHTTPServer] = []

    def start(reply: Reply) -> str:
        calls = {"n": 0}

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                calls["n"] += 1
                status, headers, payload = reply(calls["n"], body, dict(self.headers))
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=http.serve_forever, daemon=True).start()
        servers.append(http)
        return f"http://127.0.0.1:{http.server_address[1]}/v1"

    yield start
    for http in servers:
        http.shutdown()


def good(n: int) -> bytes:
    return json.dumps({"choices": [{"index": i, "message": {"content": f"<question>q{i}"},
                                    "finish_reason": "stop"} for i in range(n)]}).encode()


def test_a_down_server_fails_clearly_after_retries() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    backend = OpenAIBackend("m", url, max_retries=2, backoff_s=0.01)
    with pytest.raises(EndpointError, match=r"after 3 attempts: unreachable"):
        backend.generate(CHAT, GREEDY, 1)


def test_malformed_json_is_retried_then_reported(fake: Callable[[Reply], str]) -> None:
    url = fake(lambda attempt, body, headers: (200, {}, b"{not json"))
    backend = OpenAIBackend("m", url, max_retries=1, backoff_s=0.01)
    with pytest.raises(EndpointError, match="malformed JSON"):
        backend.generate(CHAT, GREEDY, 1)


def test_a_response_without_choices_is_an_error(fake: Callable[[Reply], str]) -> None:
    url = fake(lambda attempt, body, headers: (200, {}, b'{"object": "list"}'))
    with pytest.raises(EndpointError, match="no list of choices"):
        OpenAIBackend("m", url, max_retries=0).generate(CHAT, GREEDY, 1)


def test_transient_failures_are_retried_with_retry_after(fake: Callable[[Reply], str]) -> None:
    def reply(attempt: int, body: dict[str, Any], headers: dict[str, str]
              ) -> tuple[int, dict[str, str], bytes]:
        if attempt == 1:
            return 503, {}, b'{"error": {"message": "warming up"}}'
        if attempt == 2:
            return 429, {"Retry-After": "0"}, b"slow down"
        return 200, {}, good(body["n"])

    backend = OpenAIBackend("m", fake(reply), max_retries=3, backoff_s=0.01)
    (group,) = backend.generate(CHAT, GREEDY, 2)
    assert [g.text for g in group] == ["q0", "q1"]  # the model's own <question> is taken off


def test_a_server_that_ignores_n_is_asked_again(fake: Callable[[Reply], str]) -> None:
    asked: list[int] = []

    def reply(attempt: int, body: dict[str, Any], headers: dict[str, str]
              ) -> tuple[int, dict[str, str], bytes]:
        asked.append(body["n"])
        return 200, {}, good(1)  # one choice, whatever n was

    (group,) = OpenAIBackend("m", fake(reply)).generate(CHAT, GREEDY, 3)
    assert len(group) == 3 and asked == [3, 2, 1]


def test_empty_or_surplus_choices_are_errors(fake: Callable[[Reply], str]) -> None:
    url = fake(lambda attempt, body, headers: (200, {}, b'{"choices": []}'))
    with pytest.raises(EndpointError, match="has 0"):
        OpenAIBackend("m", url).generate(CHAT, GREEDY, 1)
    url = fake(lambda attempt, body, headers: (200, {}, good(3)))
    with pytest.raises(EndpointError, match="asked for 2 choices, the response has 3"):
        OpenAIBackend("m", url).generate(CHAT, GREEDY, 2)


def test_client_errors_are_not_retried_and_the_key_stays_secret(
        fake: Callable[[Reply], str], monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []

    def reply(attempt: int, body: dict[str, Any], headers: dict[str, str]
              ) -> tuple[int, dict[str, str], bytes]:
        seen.append(headers.get("Authorization", ""))
        return 401, {}, b'{"error": {"message": "invalid api key"}}'

    monkeypatch.setenv("SPICE_TEST_KEY", "sk-secret-123")
    backend = OpenAIBackend("m", fake(reply), api_key_env="SPICE_TEST_KEY", max_retries=3)
    with pytest.raises(EndpointError, match="HTTP 401: invalid api key") as error:
        backend.generate(CHAT, GREEDY, 1)
    assert seen == ["Bearer sk-secret-123"]  # sent once, not retried
    assert "sk-secret" not in str(error.value) and "sk-secret" not in repr(backend)
    assert "sk-secret" not in json.dumps(vars(backend), default=str)


def test_bad_configuration_is_refused() -> None:
    with pytest.raises(ValueError, match="http"):
        OpenAIBackend("m", "localhost:8000")
    with pytest.raises(ValueError, match="tokenizer"):
        OpenAIBackend("m", api="completions")
    with pytest.raises(NotImplementedError, match="frozen"):
        OpenAIBackend("m").update_weights({})
    assert os.environ.get("SPICE_TEST_KEY") is None
