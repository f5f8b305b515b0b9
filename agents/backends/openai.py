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

The API key is read from an environment variable (``OPENAI_API_KEY`` by default) when a request is
sent; it is never stored on the object, printed or put in an error. Connection failures, time-outs,
rate limits (429), server errors (5xx) and malformed responses are retried with exponential
back-off (honouring ``Retry-After``); other client errors, or running out of attempts, raise
:class:`EndpointError` with the URL, the status and the server's message.
"""

from __future__ import annotations

import json
import os
import random
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

from agents.base import ChatPrompt, FinishReason, Generation, SamplingConfig

Api = Literal["chat", "completions"]
RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


class EndpointError(RuntimeError):
    """The endpoint could not be used: unreachable, refused the request, or answered nonsense."""


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
        timeout_s: time limit of one HTTP request.
        max_retries: extra attempts after a retryable failure.
        backoff_s: the first back-off; it doubles on each retry (with jitter), up to 30 s.
        max_concurrency: requests in flight at once.
        extra_body: more JSON fields for every request (server-specific options).
    """

    def __init__(self, model: str, base_url: str = "http://127.0.0.1:8000/v1", *,
                 api: Api = "chat", api_key_env: str = "OPENAI_API_KEY",
                 tokenizer: Any = None, prefill: bool = False, timeout_s: float = 120.0,
                 max_retries: int = 4, backoff_s: float = 1.0, max_concurrency: int = 8,
                 extra_body: Mapping[str, Any] | None = None) -> None:
        if api not in ("chat", "completions"):
            raise ValueError(f"api must be 'chat' or 'completions', got {api!r}")
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
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
            reply = self._post("/chat/completions", {**body, **self.extra_body})
            return [self._chat_choice(choice, prompt) for choice in _choices(reply, n)]
        if isinstance(prompt, ChatPrompt):
            raise TypeError("api='completions' generates from token ids")
        ids = [int(t) for t in prompt]
        body.update(prompt=ids, logprobs=1, return_tokens_as_token_ids=True)
        reply = self._post("/completions", {**body, **self.extra_body})
        return [self._completion_choice(choice, ids) for choice in _choices(reply, n)]

    def _chat_choice(self, choice: Mapping[str, Any], prompt: ChatPrompt) -> Generation:
        message = choice.get("message")
        content = message.get("content") if isinstance(message, Mapping) else None
        if content is not None and not isinstance(content, str):
            raise EndpointError(f"{self.base_url}: a chat choice's content is not text")
        text = content or ""
        if not self.prefill and prompt.assistant_prefix:
            stripped = text.lstrip()
            if stripped.startswith(prompt.assistant_prefix):  # written by the model itself
                text = stripped[len(prompt.assistant_prefix):]
        return Generation(text=text, prompt_ids=(), completion_ids=(), logprobs=(),
                          finish_reason=_finish(choice.get("finish_reason")))

    def _completion_choice(self, choice: Mapping[str, Any], prompt: list[int]) -> Generation:
        text = choice.get("text")
        if not isinstance(text, str):
            raise EndpointError(f"{self.base_url}: a completion choice has no text")
        ids, logprobs = _token_logprobs(choice.get("logprobs"))
        return Generation(text=text, prompt_ids=tuple(prompt), completion_ids=ids,
                          logprobs=logprobs, finish_reason=_finish(choice.get("finish_reason")))

    def update_weights(self, named_tensors: Any) -> None:
        """A remote endpoint's weights cannot be changed from here: it serves frozen agents."""
        raise NotImplementedError("the openai backend serves frozen agents; its weights are "
                                  "managed by the server")

    def close(self) -> None:
        """Nothing to release (no connection is kept open)."""

    # -- HTTP ---------------------------------------------------------------------------------

    def _post(self, path: str, body: Mapping[str, Any]) -> Any:
        url = self.base_url + path
        data = json.dumps(body).encode("utf-8")
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = os.environ.get(self.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        problem, wait = "", 0.0
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(wait or self._backoff(attempt))
            wait = 0.0
            request = urllib.request.Request(url, data=data, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    raw = response.read()
            except urllib.error.HTTPError as error:
                message = _server_message(error)
                if error.code not in RETRY_STATUS:
                    raise EndpointError(f"POST {url} failed with HTTP {error.code}: {message}"
                                        ) from None
                problem = f"HTTP {error.code}: {message}"
                wait = _retry_after(error)
                continue
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as error:
                problem = f"unreachable ({getattr(error, 'reason', error)})"
                continue
            try:
                return json.loads(raw)
            except (UnicodeDecodeError, json.JSONDecodeError):
                problem = f"malformed JSON in the response: {raw[:200]!r}"
        raise EndpointError(f"POST {url} failed after {self.max_retries + 1} attempts: {problem}")

    def _backoff(self, attempt: int) -> float:
        base = min(self.backoff_s * 2 ** (attempt - 1), 30.0)
        return float(base * (0.5 + random.random() / 2))


def _retry_after(error: urllib.error.HTTPError) -> float:
    """The server's ``Retry-After`` in seconds (capped at 60), or 0 when absent or a date."""
    value = error.headers.get("Retry-After") if error.headers else None
    try:
        return min(max(float(value), 0.0), 60.0) if value else 0.0
    except ValueError:
        return 0.0


def _choices(reply: Any, n: int) -> list[Mapping[str, Any]]:
    """Up to ``n`` choices of a reply, in index order (some servers ignore ``n`` and send one);
    anything else is an :class:`EndpointError`."""
    choices = reply.get("choices") if isinstance(reply, Mapping) else None
    if not isinstance(choices, list) or not all(isinstance(c, Mapping) for c in choices):
        raise EndpointError(f"the response has no list of choices: {str(reply)[:200]}")
    if not choices or len(choices) > n:
        raise EndpointError(f"asked for {n} choices, the response has {len(choices)}")
    return sorted(choices, key=lambda c: c.get("index", 0) if isinstance(c.get("index"), int)
                  else 0)


def _finish(reason: Any) -> FinishReason:
    return "length" if reason == "length" else "stop"


def _token_logprobs(block: Any) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """Token ids and log-probs of a completions choice when the server sent ids (vLLM does)."""
    if not isinstance(block, Mapping):
        return (), ()
    tokens, values = block.get("tokens"), block.get("token_logprobs")
    if not isinstance(tokens, list) or not isinstance(values, list) or len(tokens) != len(values):
        return (), ()
    ids: list[int] = []
    for token in tokens:
        if not (isinstance(token, str) and token.startswith("token_id:")):
            return (), ()
        try:
            ids.append(int(token.removeprefix("token_id:")))
        except ValueError:
            return (), ()
    if not all(isinstance(v, int | float) for v in values):
        return (), ()
    return tuple(ids), tuple(float(v) for v in values)


def _server_message(error: urllib.error.HTTPError) -> str:
    try:
        raw = error.read()[:2000]
    except OSError:
        return error.reason if isinstance(error.reason, str) else ""
    try:
        payload = json.loads(raw)
        inner = payload.get("error", payload) if isinstance(payload, dict) else payload
        message = inner.get("message", inner) if isinstance(inner, dict) else inner
        return str(message)[:500]
    except (UnicodeDecodeError, json.JSONDecodeError):
        return raw.decode("utf-8", "replace")[:500]
