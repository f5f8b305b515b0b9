"""The OpenAI-compatible HTTP backend, for frozen agents served elsewhere.

Any server that speaks the OpenAI API works: a vLLM server of a local folder, a hosted API. Two
request kinds are supported:

* ``api="chat"`` (default): ``/chat/completions`` with the observation's chat messages. The
  server applies its own chat template. With ``prefill=True`` the assistant prefix of the prompt
  style (``<question>`` for compact prompts) is sent as a partial assistant turn that the model
  continues (vLLM's ``continue_final_message``); otherwise the model writes it itself and the
  environment accepts the output either way.
* ``api="completions"``: ``/completions`` with the prompt's token ids (needs the model's
  tokenizer here, and a server that accepts token prompts, as vLLM does). With a vLLM server the
  sampled token ids and their log-probabilities come back too.

Requests go through `httpx <https://www.python-httpx.org>`_. The API key is read from an
environment variable (``OPENAI_API_KEY`` by default) when a request is sent; it is never stored on
the object, printed or put in an error. Redirects are not followed: the key never travels to
another address, and a redirect is an :class:`EndpointError` naming where it pointed.

Every request has time limits: ``timeout_s`` bounds one attempt as a whole (connecting, sending,
and reading the whole answer, so a server that trickles bytes is cut off too), and ``deadline_s``
bounds all attempts of one request together with the waits between them. Answers larger than
``max_response_bytes`` are refused without being held in memory.

Connection failures, time-outs, rate limits (429), server errors (5xx) and bodies that are not
JSON are retried with exponential back-off (honouring ``Retry-After``). Other client errors, JSON
of the wrong shape (a ``message`` that is no object, ``content`` that is no text, ...), oversized
answers, or running out of attempts or time raise :class:`EndpointError` with the URL, the status
and the server's message.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any, Literal

import httpx

from agents.base import ChatPrompt, FinishReason, Generation, SamplingConfig

Api = Literal["chat", "completions"]
RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
MAX_ERROR_BYTES = 2000
"""How much of an error answer is read for its message."""


class EndpointError(RuntimeError):
    """The endpoint could not be used: unreachable, refused the request, or answered nonsense."""


class _Retry(Exception):
    """A failure worth another attempt; ``wait`` is the server's ``Retry-After`` (0 if none)."""

    def __init__(self, problem: str, wait: float = 0.0) -> None:
        super().__init__(problem)
        self.wait = wait


class _Malformed(ValueError):
    """JSON of the wrong shape."""


class OpenAIBackend:
    """Generation through an OpenAI-compatible endpoint.

    Args:
        model: the model name the endpoint serves.
        base_url: the API root, e.g. ``http://127.0.0.1:8000/v1`` or ``https://api.openai.com/v1``.
        api: ``"chat"`` (messages) or ``"completions"`` (token ids; needs ``tokenizer``).
        api_key_env: the environment variable holding the key; requests carry no key when it is
            unset (local servers need none).
        tokenizer: the served model's tokenizer (required for ``"completions"``; a name, folder or
            loaded tokenizer).
        prefill: continue a partial assistant turn holding the prompt's assistant prefix (vLLM
            servers); hosted APIs usually refuse this, so it is off by default.
        timeout_s: the time limit of one HTTP attempt as a whole: connecting, sending the request
            and reading the whole answer.
        max_retries: extra attempts after a retryable failure.
        backoff_s: the first back-off; it doubles on each retry (with jitter), up to 30 s.
        max_concurrency: requests in flight at once.
        extra_body: more JSON fields for every request (server-specific options).
        deadline_s: the time limit of one request over all its attempts and the waits between
            them; no new attempt starts, and no wait begins, that would end past it. ``None``
            (default) allows every attempt its full ``timeout_s`` plus a minute of waiting:
            ``timeout_s * (max_retries + 1) + 60``.
        max_response_bytes: the largest answer accepted (16 MiB by default); a larger one is an
            :class:`EndpointError` at once, and is not read beyond this size.
    """

    def __init__(self, model: str, base_url: str = "http://127.0.0.1:8000/v1", *,
                 api: Api = "chat", api_key_env: str = "OPENAI_API_KEY",
                 tokenizer: Any = None, prefill: bool = False, timeout_s: float = 120.0,
                 max_retries: int = 4, backoff_s: float = 1.0, max_concurrency: int = 8,
                 extra_body: Mapping[str, Any] | None = None, deadline_s: float | None = None,
                 max_response_bytes: int = 16 * 2**20) -> None:
        if api not in ("chat", "completions"):
            raise ValueError(f"api must be 'chat' or 'completions', got {api!r}")
        try:
            host = httpx.URL(base_url).host
        except httpx.InvalidURL as error:
            raise ValueError(f"base_url {base_url!r} is not a URL: {error}") from None
        if not base_url.startswith(("http://", "https://")) or not host:
            raise ValueError(f"base_url must be http:// or https:// and a host, got {base_url!r}")
        if not timeout_s > 0 or (deadline_s is not None and not deadline_s > 0):
            raise ValueError("timeout_s and deadline_s must be positive")
        if max_retries < 0 or max_response_bytes < 1:
            raise ValueError("max_retries must be at least 0 and max_response_bytes at least 1")
        if isinstance(tokenizer, str):
            from transformers import AutoTokenizer

            from agents.models import resolve_model

            tokenizer = AutoTokenizer.from_pretrained(resolve_model(tokenizer))
        if api == "completions" and tokenizer is None:
            raise ValueError("api='completions' sends token ids: pass the model's tokenizer")
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.api: Api = api
        self.api_key_env = api_key_env
        self.tokenizer = tokenizer
        self.prefill = prefill
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_concurrency = max_concurrency
        self.extra_body = dict(extra_body or {})
        self.deadline_s = timeout_s * (max_retries + 1) + 60 if deadline_s is None else deadline_s
        self.max_response_bytes = max_response_bytes
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()

    @property
    def prompt_format(self) -> Literal["tokens", "messages"]:
        """What :meth:`generate` takes: chat messages for ``"chat"``, token ids otherwise."""
        return "messages" if self.api == "chat" else "tokens"

    def __repr__(self) -> str:
        return f"OpenAIBackend(model={self.model!r}, base_url={self.base_url!r}, api={self.api!r})"

    # -- generation -------------------------------------------------------------------------

    def generate(self, prompts: Sequence[Sequence[int]] | Sequence[ChatPrompt],
                 sampling: SamplingConfig, n: int) -> list[list[Generation]]:
        """``n`` samples for each prompt (:class:`ChatPrompt` for chat, token ids otherwise)."""
        if not prompts:
            return []
        with ThreadPoolExecutor(max_workers=max(1, min(self.max_concurrency, len(prompts)))
                                ) as pool:
            return list(pool.map(lambda p: self._one(p, sampling, n), prompts))

    def _one(self, prompt: Sequence[int] | ChatPrompt, sampling: SamplingConfig, n: int
             ) -> list[Generation]:
        """``n`` samples of one prompt; servers that return fewer choices are asked again."""
        found: list[Generation] = []
        for attempt in range(n):
            found += self._request(prompt, sampling, n - len(found), attempt)
            if len(found) >= n:
                return found
        raise EndpointError(f"{self.base_url}: asked {n} times for {n} choices, got {len(found)}")

    def _request(self, prompt: Sequence[int] | ChatPrompt, sampling: SamplingConfig, n: int,
                 attempt: int) -> list[Generation]:
        body: dict[str, Any] = {"model": self.model, "n": n, "temperature": sampling.temperature,
                                "top_p": sampling.top_p, "max_tokens": sampling.max_new_tokens}
        if sampling.seed is not None:
            body["seed"] = sampling.seed + attempt
        if self.api == "chat":
            if not isinstance(prompt, ChatPrompt):
                raise TypeError("api='chat' generates from ChatPrompt objects")
            messages = [dict(m) for m in prompt.messages]
            if self.prefill and prompt.assistant_prefix:
                messages.append({"role": "assistant", "content": prompt.assistant_prefix})
                body.update(add_generation_prompt=False, continue_final_message=True)
            body["messages"] = messages
            path = "/chat/completions"
        else:
            if isinstance(prompt, ChatPrompt):
                raise TypeError("api='completions' generates from token ids")
            body.update(prompt=[int(t) for t in prompt], logprobs=1,
                        return_tokens_as_token_ids=True)
            path = "/completions"
        reply = self._post(path, {**body, **self.extra_body})
        try:
            if isinstance(prompt, ChatPrompt):
                return [self._chat_choice(choice, prompt) for choice in _choices(reply, n)]
            return [_completion_choice(choice, body["prompt"]) for choice in _choices(reply, n)]
        except _Malformed as error:
            raise EndpointError(f"POST {self.base_url}{path}: malformed response: {error}"
                                ) from None

    def _chat_choice(self, choice: Mapping[str, Any], prompt: ChatPrompt) -> Generation:
        message = choice.get("message")
        if not isinstance(message, Mapping):
            raise _Malformed(f"a chat choice's message is {_kind(message)}, not an object")
        content = message.get("content")
        if content is not None and not isinstance(content, str):
            raise _Malformed(f"a chat choice's content is {_kind(content)}, not text")
        text = content or ""
        if not self.prefill and prompt.assistant_prefix:
            stripped = text.lstrip()
            if stripped.startswith(prompt.assistant_prefix):  # written by the model itself
                text = stripped[len(prompt.assistant_prefix):]
        return Generation(text=text, prompt_ids=(), completion_ids=(), logprobs=(),
                          finish_reason=_finish(choice.get("finish_reason")))

    def update_weights(self, named_tensors: Any) -> None:
        """A remote endpoint's weights cannot be changed from here: it serves frozen agents."""
        raise NotImplementedError("the openai backend serves frozen agents; its weights are "
                                  "managed by the server")

    def close(self) -> None:
        """Close the HTTP client (a later request opens a new one)."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    # -- HTTP ---------------------------------------------------------------------------------

    def _http(self) -> httpx.Client:
        """The backend's HTTP client, made on first use (the threads of :meth:`generate` share
        it). Each attempt gets its own connection, so that a late one can be cut off."""
        with self._lock:
            if self._client is None:
                self._client = httpx.Client(
                    follow_redirects=False, limits=httpx.Limits(max_keepalive_connections=0))
            return self._client

    def _post(self, path: str, body: Mapping[str, Any]) -> Any:
        """POST ``body`` as JSON and return the decoded answer, retrying what is worth it."""
        url = self.base_url + path
        data = json.dumps(body).encode("utf-8")
        headers = {"Content-Type": "application/json", "Accept": "application/json",
                   "Accept-Encoding": "identity"}
        key = _api_key(self.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        end = time.monotonic() + self.deadline_s
        problem, wait, attempts = "no attempt could start", 0.0, 0
        while attempts <= self.max_retries:
            if attempts:
                pause = wait or self._backoff(attempts)
                if time.monotonic() + pause >= end:
                    break
                time.sleep(pause)
            left = end - time.monotonic()
            if left <= 0:
                break
            attempts += 1
            try:
                return self._attempt(url, data, headers, min(self.timeout_s, left))
            except _Retry as retry:
                problem, wait = _redact(str(retry), key), retry.wait
            except EndpointError as error:
                raise EndpointError(_redact(str(error), key)) from None
        ran_out = "" if attempts > self.max_retries else \
            f" (the {self.deadline_s:g} s deadline_s ran out)"
        raise EndpointError(f"POST {url} failed after {attempts} attempts{ran_out}: {problem}")

    def _attempt(self, url: str, data: bytes, headers: Mapping[str, str], limit: float) -> Any:
        """One HTTP attempt of at most ``limit`` seconds: the decoded JSON answer, or
        :class:`_Retry`, or :class:`EndpointError` for failures not worth retrying."""
        end = time.monotonic() + limit
        cutoff = _Cutoff(limit)
        try:
            with cutoff, self._http().stream(
                    "POST", url, content=data, headers=headers, timeout=httpx.Timeout(limit),
                    extensions={"trace": cutoff.trace}) as response:
                status, answer = response.status_code, response.headers
                if 200 <= status < 300 and answer.get("Content-Encoding", "identity").lower() \
                        not in ("", "identity"):
                    raise EndpointError(f"POST {url} answered in an unasked-for encoding: "
                                        f"{answer['Content-Encoding'][:50]}")
                cap = self.max_response_bytes if 200 <= status < 300 else MAX_ERROR_BYTES
                raw, whole = _read(response, end, cap)
        except (TimeoutError, httpx.TimeoutException):
            raise _Retry(f"timed out after {limit:g} s") from None
        except httpx.ConnectError as error:
            raise _Retry(f"unreachable ({error})") from None
        except httpx.HTTPError as error:
            if cutoff.fired:
                raise _Retry(f"timed out after {limit:g} s") from None
            raise _Retry(f"the connection failed ({type(error).__name__}: {error})") from None
        if 300 <= status < 400:
            where = answer.get("Location", "")[:500] or "no Location given"
            raise EndpointError(f"POST {url} was redirected (HTTP {status}) to {where}; "
                                "redirects are not followed: set base_url to the final address")
        if not 200 <= status < 300:
            message = _server_message(raw)
            if status in RETRY_STATUS:
                raise _Retry(f"HTTP {status}: {message}", _retry_after(answer.get("Retry-After")))
            raise EndpointError(f"POST {url} failed with HTTP {status}: {message}")
        if not whole:
            raise EndpointError(f"POST {url}: the response is larger than max_response_bytes="
                                f"{self.max_response_bytes}")
        return _decode(raw)

    def _backoff(self, attempt: int) -> float:
        base = min(self.backoff_s * 2 ** (attempt - 1), 30.0)
        return float(base * (0.5 + random.random() / 2))


class _Cutoff:
    """Shuts an attempt's connection down when its time is up.

    httpx's time-outs bound each read, so a server sending a byte now and then could hold an
    attempt for hours; this timer ends it, wherever it is (TLS handshake, headers or body). It
    keeps a duplicate of the connection's socket, caught through httpx's ``trace`` extension.
    """

    def __init__(self, seconds: float) -> None:
        self.fired = False
        self._over = False
        self._socket: socket.socket | None = None
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True

    def trace(self, event: str, info: Mapping[str, Any]) -> None:
        """httpx's trace hook: keep the socket of the connection just opened."""
        if event != "connection.connect_tcp.complete":
            return
        stream = info.get("return_value")
        found = stream.get_extra_info("socket") if stream is not None else None
        if isinstance(found, socket.socket):
            with self._lock:
                if self._socket is None and not self._over:
                    self._socket = found.dup()
                    self._cut()

    def _fire(self) -> None:
        with self._lock:
            self.fired = not self._over
            self._cut()

    def _cut(self) -> None:
        if self.fired and self._socket is not None:
            with contextlib.suppress(OSError):
                self._socket.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> _Cutoff:
        self._timer.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._timer.cancel()
        with self._lock:
            self._over = True
            if self._socket is not None:
                self._socket.close()
                self._socket = None


def _read(response: httpx.Response, end: float, cap: int) -> tuple[bytes, bool]:
    """Up to ``cap`` bytes of the body, and whether that was all of it; ``TimeoutError`` if it
    is still arriving at ``end`` (a :func:`time.monotonic` time)."""
    body = bytearray()
    for chunk in response.iter_raw():
        if time.monotonic() > end:
            raise TimeoutError
        if len(body) + len(chunk) > cap:
            body += chunk[:cap - len(body)]
            return bytes(body), False
        body += chunk
    return bytes(body), True


def _decode(raw: bytes) -> Any:
    """The JSON of an answer; a body that is not JSON (or nests too deeply) is retried."""
    try:
        return json.loads(raw)
    except RecursionError:
        raise _Retry("malformed JSON in the response: nested too deeply") from None
    except ValueError:
        raise _Retry(f"malformed JSON in the response: {raw[:200]!r}") from None


def _api_key(variable: str) -> str:
    """The key in ``variable`` (stripped), or ``""``; one that cannot go in a header is refused
    without being shown."""
    key = os.environ.get(variable, "").strip()
    if key and not (key.isascii() and key.isprintable()):
        raise EndpointError(f"${variable} holds characters that cannot go in an HTTP header")
    return key


def _redact(text: str, key: str) -> str:
    return text.replace(key, "<api key>") if key else text


def _retry_after(value: str | None) -> float:
    """A ``Retry-After`` value in seconds (capped at 60), or 0 when absent or a date."""
    try:
        seconds = float(value) if value else 0.0
    except ValueError:
        return 0.0
    return min(max(seconds, 0.0), 60.0) if math.isfinite(seconds) else 0.0


def _kind(value: Any) -> str:
    return "missing" if value is None else f"a {type(value).__name__}"


def _choices(reply: Any, n: int) -> list[Mapping[str, Any]]:
    """Up to ``n`` choices of a reply, in index order (some servers ignore ``n`` and send one);
    anything else is :class:`_Malformed`."""
    choices = reply.get("choices") if isinstance(reply, Mapping) else None
    if not isinstance(choices, list):
        error = _error_text(reply)
        raise _Malformed("no list of choices, " + (f"but an error: {error}" if error else
                                                   f"in {_outline(reply)}"))
    if not all(isinstance(c, Mapping) for c in choices):
        raise _Malformed("a choice is not an object")
    if not choices or len(choices) > n:
        raise _Malformed(f"asked for {n} choices, the response has {len(choices)}")
    index = [c.get("index") for c in choices]
    if not all(i is None or (isinstance(i, int) and not isinstance(i, bool)) for i in index):
        raise _Malformed("a choice's index is not an integer")
    return sorted(choices, key=lambda c: c.get("index") or 0)


def _outline(value: Any) -> str:
    if isinstance(value, Mapping):
        return "an object with keys " + ", ".join(sorted(map(str, value))[:10])[:200]
    return f"a JSON {type(value).__name__}"


def _completion_choice(choice: Mapping[str, Any], prompt: list[int]) -> Generation:
    text = choice.get("text")
    if not isinstance(text, str):
        raise _Malformed(f"a completion choice's text is {_kind(text)}, not text")
    ids, logprobs = _token_logprobs(choice.get("logprobs"))
    return Generation(text=text, prompt_ids=tuple(prompt), completion_ids=ids,
                      logprobs=logprobs, finish_reason=_finish(choice.get("finish_reason")))


def _finish(reason: Any) -> FinishReason:
    if reason is not None and not isinstance(reason, str):
        raise _Malformed(f"a choice's finish_reason is {_kind(reason)}, not text")
    return "length" if reason == "length" else "stop"


def _token_logprobs(block: Any) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """Token ids and log-probs of a completions choice when the server sent ids (vLLM does);
    none when it sent no log-probs or tokens as text. Anything inconsistent is malformed."""
    if block is None:
        return (), ()
    if not isinstance(block, Mapping):
        raise _Malformed(f"a choice's logprobs is {_kind(block)}, not an object")
    tokens, values = block.get("tokens"), block.get("token_logprobs")
    if tokens is None and values is None:
        return (), ()
    if not isinstance(tokens, list) or not isinstance(values, list) or len(tokens) != len(values):
        raise _Malformed("a choice's tokens and token_logprobs are not two lists of one length")
    if not all(isinstance(t, str) for t in tokens):
        raise _Malformed("a choice's tokens are not all text")
    marked = [t.startswith("token_id:") for t in tokens]
    if not any(marked):
        return (), ()  # tokens as text: there are no ids to give
    try:
        ids = [int(t.removeprefix("token_id:")) for t in tokens] if all(marked) else [-1]
    except ValueError:
        ids = [-1]
    if min(ids, default=0) < 0:
        raise _Malformed("a choice's tokens are not all token ids")
    if not all(isinstance(v, int | float) and not isinstance(v, bool) and not math.isnan(v)
               for v in values):
        raise _Malformed("a choice's token_logprobs are not all numbers")
    return tuple(ids), tuple(float(v) for v in values)


def _error_text(payload: Any) -> str | None:
    """The message of an OpenAI-style error object, if ``payload`` is one."""
    inner = payload.get("error", payload) if isinstance(payload, Mapping) else None
    message = inner.get("message") if isinstance(inner, Mapping) else inner
    return message[:500] if isinstance(message, str) else None


def _server_message(raw: bytes) -> str:
    """What an error answer says (bounded), from its JSON error object or its text."""
    try:
        payload = json.loads(raw)
    except (ValueError, RecursionError):
        payload = None
    return _error_text(payload) or raw.decode("utf-8", "replace").strip()[:500]
