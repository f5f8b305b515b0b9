"""The OpenAI-compatible backend: against a real local vLLM server, and against broken ones."""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
import torch

from agents.backends.hf import HFBackend
from agents.backends.openai import EndpointError, OpenAIBackend
from agents.base import ChatPrompt, SamplingConfig
from agents.self_play import SelfPlayAgent
from agents.tiny import save_tiny_model
from tests.conftest import ServeFn

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
Handle = Callable[[BaseHTTPRequestHandler], None]


@pytest.fixture
def handled(serve: ServeFn) -> Callable[[Handle], str]:
    """``handled(handle)``: a loopback server (the suite's ``serve``) answering each request
    with ``handle(request)``; returns its ``/v1`` URL."""
    def start(handle: Handle) -> str:
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                with contextlib.suppress(OSError):  # the client hung up
                    handle(self)

            do_GET = do_POST

            def log_message(self, *args: Any) -> None:
                pass

        return serve(Handler) + "/v1"

    return start


@pytest.fixture()
def fake(handled: Callable[[Handle], str]) -> Callable[[Reply], str]:
    """Start a loopback HTTP server answering each POST with ``reply(attempt, body, headers)``."""
    def start(reply: Reply) -> str:
        calls = {"n": 0}
        lock = threading.Lock()

        def handle(request: BaseHTTPRequestHandler) -> None:
            body = json.loads(request.rfile.read(int(request.headers["Content-Length"])))
            with lock:
                calls["n"] += 1
                attempt = calls["n"]
            status, headers, payload = reply(attempt, body, dict(request.headers))
            request.send_response(status)
            for key, value in headers.items():
                request.send_header(key, value)
            request.send_header("Content-Length", str(len(payload)))
            request.end_headers()
            request.wfile.write(payload)

        return handled(handle)

    return start


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
    for url in ("http://", "http://[::1/v1"):
        with pytest.raises(ValueError, match="base_url"):
            OpenAIBackend("m", url)
    with pytest.raises(ValueError, match="positive"):
        OpenAIBackend("m", timeout_s=0)
    with pytest.raises(ValueError, match="max_response_bytes"):
        OpenAIBackend("m", max_response_bytes=0)
    with pytest.raises(ValueError, match="tokenizer"):
        OpenAIBackend("m", api="completions")
    with pytest.raises(NotImplementedError, match="frozen"):
        OpenAIBackend("m").update_weights({})
    assert os.environ.get("SPICE_TEST_KEY") is None


# -- hardening: redirects, time limits, body size, malformed answers ---------------------------

def test_redirects_are_not_followed_and_the_key_stays_home(
        handled: Callable[[Handle], str], monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[dict[str, str]] = []

    def elsewhere(request: BaseHTTPRequestHandler) -> None:
        seen.append(dict(request.headers))
        request.send_response(200)
        request.send_header("Content-Length", str(len(good(1))))
        request.end_headers()
        request.wfile.write(good(1))

    other = handled(elsewhere) + "/chat/completions"
    asked: list[str] = []

    def redirect(request: BaseHTTPRequestHandler) -> None:
        asked.append(request.command)
        status = 302 if len(asked) == 1 else 307
        request.send_response(status)
        request.send_header("Location", other)
        request.send_header("Content-Length", "0")
        request.end_headers()

    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-456")
    backend = OpenAIBackend("m", handled(redirect), max_retries=3, backoff_s=0.01)
    for status in (302, 307):
        with pytest.raises(EndpointError, match=f"redirected \\(HTTP {status}\\) to {other}"
                           ) as error:
            backend.generate(CHAT, GREEDY, 1)
        assert "sk-secret" not in str(error.value)
    assert asked == ["POST", "POST"]  # not retried
    assert seen == []  # the other server never heard of the key, nor of anything else


def trickle(request: BaseHTTPRequestHandler, head: bytes, *, every: float = 0.8) -> None:
    """Send ``head`` at once, then one byte every ``every`` seconds for half a minute."""
    request.wfile.write(head)
    request.wfile.flush()
    for _ in range(int(30 / every)):
        time.sleep(every)
        request.wfile.write(b" ")
        request.wfile.flush()


def test_a_trickling_body_is_cut_off_at_timeout_s(handled: Callable[[Handle], str]) -> None:
    head = b"HTTP/1.0 200 OK\r\nContent-Length: 100000\r\n\r\n{"
    url = handled(lambda request: trickle(request, head))
    backend = OpenAIBackend("m", url, timeout_s=1, max_retries=1, backoff_s=0.01)
    start = time.monotonic()
    with pytest.raises(EndpointError, match="after 2 attempts: timed out after 1 s"):
        backend.generate(CHAT, GREEDY, 1)
    assert time.monotonic() - start < 6


def test_trickling_headers_are_cut_off_too(handled: Callable[[Handle], str]) -> None:
    url = handled(lambda request: trickle(request, b"HTTP/1.0 200 OK\r\nX-Slow: "))
    backend = OpenAIBackend("m", url, timeout_s=1, max_retries=0)
    start = time.monotonic()
    with pytest.raises(EndpointError, match="timed out after 1 s"):
        backend.generate(CHAT, GREEDY, 1)
    assert time.monotonic() - start < 4


def test_deadline_s_bounds_all_attempts_and_waits(
        handled: Callable[[Handle], str], fake: Callable[[Reply], str]) -> None:
    head = b"HTTP/1.0 200 OK\r\nContent-Length: 100000\r\n\r\n"
    url = handled(lambda request: trickle(request, head, every=0.2))
    backend = OpenAIBackend("m", url, timeout_s=1, max_retries=50, backoff_s=0.01,
                            deadline_s=2.5)
    start = time.monotonic()
    with pytest.raises(EndpointError, match=r"after [23] attempts \(the 2.5 s deadline_s ran"):
        backend.generate(CHAT, GREEDY, 1)
    assert time.monotonic() - start < 4
    assert OpenAIBackend("m", timeout_s=10, max_retries=2).deadline_s == 90

    url = fake(lambda attempt, body, headers: (503, {"Retry-After": "30"}, b"busy"))
    start = time.monotonic()
    with pytest.raises(EndpointError, match=r"after 1 attempts .*deadline.*HTTP 503: busy"):
        OpenAIBackend("m", url, max_retries=3, deadline_s=5).generate(CHAT, GREEDY, 1)
    assert time.monotonic() - start < 3  # no 30 s wait that would end past the deadline


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "until-close"])
def test_an_oversized_answer_is_refused_unread(handled: Callable[[Handle], str],
                                               declared: bool) -> None:
    sent = {"requests": 0, "bytes": 0}
    size, piece = 50 * 2**20, b" " * 2**16

    def huge(request: BaseHTTPRequestHandler) -> None:
        sent["requests"] += 1
        length = f"Content-Length: {size}\r\n".encode() if declared else b""
        request.wfile.write(b"HTTP/1.0 200 OK\r\n" + length + b"\r\n")
        while sent["bytes"] < size:
            request.wfile.write(piece)
            sent["bytes"] += len(piece)

    backend = OpenAIBackend("m", handled(huge), max_response_bytes=10_000, max_retries=2)
    with pytest.raises(EndpointError, match="larger than max_response_bytes=10000"):
        backend.generate(CHAT, GREEDY, 1)
    assert sent["requests"] == 1
    time.sleep(0.2)
    assert sent["bytes"] < size  # the client hung up long before the end


@pytest.mark.parametrize("payload", [b"[" * 100_000, b"[" * 100_000 + b"]" * 100_000,
                                     b'{"choices": ' + b"[" * 50_000])
def test_deeply_nested_json_is_an_endpoint_error(fake: Callable[[Reply], str],
                                                 payload: bytes) -> None:
    url = fake(lambda attempt, body, headers: (200, {}, payload))
    with pytest.raises(EndpointError, match="malformed JSON in the response: nested too deeply"):
        OpenAIBackend("m", url, max_retries=1, backoff_s=0.01).generate(CHAT, GREEDY, 1)


def choice(**fields: Any) -> bytes:
    return json.dumps({"choices": [{"index": 0, "finish_reason": "stop", **fields}]}).encode()


BAD_CHAT = {
    "message is text": (choice(message="hello"), "message is a str, not an object"),
    "no message": (choice(), "message is missing"),
    "content is a list": (choice(message={"content": [{"type": "text", "text": "hi"}]}),
                          "content is a list, not text"),
    "content is a number": (choice(message={"content": 42}), "content is a int"),
    "finish_reason is a number": (choice(message={"content": "hi"}, finish_reason=7),
                                  "finish_reason is a int"),
    "finish_reason is a list": (choice(message={"content": "hi"}, finish_reason=["stop"]),
                                "finish_reason is a list"),
    "index is text": (choice(message={"content": "hi"}, index="0"), "index is not an integer"),
    "a choice is text": (b'{"choices": ["hi"]}', "a choice is not an object"),
    "choices is an object": (b'{"choices": {"0": {}}}', "no list of choices"),
    "the answer is a list": (b"[1, 2]", "no list of choices, in a JSON list"),
    "an error object": (b'{"error": {"message": "overloaded"}}', "but an error: overloaded"),
}
BAD_COMPLETIONS = {
    "text is a number": (choice(text=5), "text is a int, not text"),
    "no text": (choice(), "text is missing"),
    "logprobs is text": (choice(text="a", logprobs="x"), "logprobs is a str"),
    "lengths differ": (choice(text="a", logprobs={"tokens": ["token_id:1"],
                                                  "token_logprobs": []}), "one length"),
    "a log-prob is text": (choice(text="a", logprobs={"tokens": ["token_id:1"],
                                                      "token_logprobs": ["-1"]}), "numbers"),
    "a log-prob is NaN": (choice(text="a", logprobs={"tokens": ["token_id:1"],
                                                     "token_logprobs": [float("nan")]}),
                          "numbers"),
    "a token id is text": (choice(text="a", logprobs={"tokens": ["token_id:x", "token_id:2"],
                                                      "token_logprobs": [-1, -2]}), "token ids"),
    "ids and text mixed": (choice(text="a", logprobs={"tokens": ["token_id:1", "b"],
                                                      "token_logprobs": [-1, -2]}), "token ids"),
    "finish_reason is an object": (choice(text="a", finish_reason={}), "finish_reason is a dict"),
}


@pytest.mark.parametrize("api, payload, problem",
                         [("chat", *v) for v in BAD_CHAT.values()]
                         + [("completions", *v) for v in BAD_COMPLETIONS.values()],
                         ids=[*BAD_CHAT, *BAD_COMPLETIONS])
def test_answers_of_the_wrong_shape_are_endpoint_errors(
        fake: Callable[[Reply], str], api: str, payload: bytes, problem: str) -> None:
    calls: list[int] = []

    def reply(attempt: int, body: dict[str, Any], headers: dict[str, str]
              ) -> tuple[int, dict[str, str], bytes]:
        calls.append(attempt)
        return 200, {}, payload

    url = fake(reply)
    backend = OpenAIBackend("m", url, api="chat" if api == "chat" else "completions",
                            tokenizer=object(), max_retries=2)  # no tokenizer call is made
    prompts: Any = CHAT if api == "chat" else [[1, 2, 3]]
    with pytest.raises(EndpointError, match="malformed response: .*" + re.escape(problem)):
        backend.generate(prompts, GREEDY, 1)
    assert calls == [1]  # well-formed JSON of the wrong shape is not asked for again


def test_well_formed_completions_still_parse(fake: Callable[[Reply], str]) -> None:
    logprobs = {"tokens": ["token_id:7", "token_id:8"], "token_logprobs": [-0.5, 0]}
    url = fake(lambda attempt, body, headers: (
        200, {}, choice(text="ab", logprobs=logprobs, finish_reason="length")))
    backend = OpenAIBackend("m", url, api="completions", tokenizer=object())
    (sample,), = backend.generate([[1, 2]], GREEDY, 1)
    assert (sample.text, sample.completion_ids, sample.logprobs, sample.finish_reason) == (
        "ab", (7, 8), (-0.5, 0.0), "length")
    url = fake(lambda attempt, body, headers: (200, {}, choice(text="ab", logprobs=None)))
    (sample,), = OpenAIBackend("m", url, api="completions", tokenizer=object()).generate(
        [[1, 2]], GREEDY, 1)
    assert sample.completion_ids == () and sample.finish_reason == "stop"


def test_the_key_is_kept_out_of_echoed_messages_and_bad_headers(
        fake: Callable[[Reply], str], monkeypatch: pytest.MonkeyPatch) -> None:
    url = fake(lambda attempt, body, headers: (
        400, {}, json.dumps({"error": {"message": f"bad key {headers['Authorization']}"}}
                            ).encode()))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-789\n")
    backend = OpenAIBackend("m", url, max_retries=0)
    with pytest.raises(EndpointError, match="HTTP 400: bad key Bearer <api key>") as error:
        backend.generate(CHAT, GREEDY, 1)
    assert "sk-secret" not in str(error.value)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret\r\nX-Evil: 1")
    with pytest.raises(EndpointError, match="cannot go in an HTTP header") as error:
        backend.generate(CHAT, GREEDY, 1)
    assert "sk-secret" not in str(error.value)


def test_the_client_is_shared_and_reopened_after_close(fake: Callable[[Reply], str]) -> None:
    url = fake(lambda attempt, body, headers: (200, {}, good(1)))
    backend = OpenAIBackend("m", url, max_concurrency=4)
    assert len(backend.generate(CHAT * 8, GREEDY, 1)) == 8
    backend.close()
    backend.close()
    assert backend.generate(CHAT, GREEDY, 1)[0][0].text == "q0"
    backend.close()


def test_an_unasked_for_encoding_is_refused(fake: Callable[[Reply], str]) -> None:
    seen: list[str] = []

    def reply(attempt: int, body: dict[str, Any], headers: dict[str, str]
              ) -> tuple[int, dict[str, str], bytes]:
        seen.append(headers.get("Accept-Encoding", ""))
        return 200, {"Content-Encoding": "gzip"}, gzip.compress(good(1))

    with pytest.raises(EndpointError, match="unasked-for encoding: gzip"):
        OpenAIBackend("m", fake(reply)).generate(CHAT, GREEDY, 1)
    assert seen == ["identity"]
