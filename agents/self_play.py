"""The shared-weight self-play agent: one policy, two roles.

:class:`SelfPlayAgent` turns SPICE observations into token ids (the tokenizer's chat template for
instruct models, the plain "User: … Assistant:" template otherwise, plus the assistant prefix the
prompt style asks for), samples with the role's settings, and returns
:class:`~agents.base.Generation` objects carrying token ids, log-probabilities and finish reasons.
It plugs into ``gym.make("SpiceCorpus-v0")`` through :meth:`act` and into
:class:`spice_env.runner.SpiceRunner` through :meth:`generate`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from agents.base import Backend, ChatPrompt, Generation, Observation, Role, SamplingConfig

Template = Literal["auto", "chat", "plain"]
BackendName = Literal["hf", "vllm", "openai"]
BACKENDS: tuple[BackendName, ...] = ("hf", "vllm", "openai")

DEFAULT_CHALLENGER = SamplingConfig(temperature=1.0, max_new_tokens=512, n=1)
DEFAULT_REASONER = SamplingConfig(temperature=1.0, max_new_tokens=256, n=8)


def encode_observation(tokenizer: Any, observation: Observation, template: Template = "auto"
                       ) -> list[int]:
    """The prompt token ids of an observation.

    ``chat`` applies the tokenizer's chat template to ``observation["messages"]`` and appends
    ``assistant_prefix``; ``plain`` encodes ``observation["prompt"]`` (the base-model template);
    ``auto`` picks ``chat`` when the tokenizer has a chat template.

    The messages' text (documents, the Challenger's questions) is never read as control
    tokens: a ``<|im_end|>`` written inside a question is encoded as the characters it is made
    of, so it cannot close a turn or open another; only the template's own tokens are special.
    """
    use_chat = template == "chat" or (template == "auto" and getattr(tokenizer, "chat_template",
                                                                     None))
    if not use_chat:  # the plain template holds no control token of its own
        return _encode_text(tokenizer, observation["prompt"])
    messages = [dict(m) for m in observation["messages"]]
    prefix = observation.get("assistant_prefix", "")
    controls = control_strings(tokenizer)
    if not any(c in str(m.get("content", "")) for m in messages for c in controls):
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                             tokenize=False)
        return list(tokenizer.encode(text + prefix, add_special_tokens=False))
    return _encode_untrusted_chat(tokenizer, messages, prefix, controls)


def control_strings(tokenizer: Any) -> tuple[str, ...]:
    """The strings a tokenizer reads as one added token (``<|im_start|>``, ``<|im_end|>``,
    ``<|endoftext|>``, ...) wherever they appear in the text it encodes."""
    decoder = getattr(tokenizer, "added_tokens_decoder", None) or {}
    found = {str(getattr(token, "content", token)) for token in decoder.values()}
    found.update(str(t) for t in getattr(tokenizer, "all_special_tokens", ()) or ())
    return tuple(sorted(t for t in found if t))


def _encode_text(tokenizer: Any, text: str) -> list[int]:
    """``text`` as ordinary characters: added tokens written in it are not parsed."""
    return list(tokenizer.encode(text, add_special_tokens=False, split_special_tokens=True))


_SLOT = re.compile("\ue000(\\d+)\ue001")


def _encode_untrusted_chat(tokenizer: Any, messages: list[dict[str, Any]], prefix: str,
                           controls: tuple[str, ...]) -> list[int]:
    """The chat prompt of messages whose text holds control strings: the template is rendered
    with a placeholder per message, its pieces are encoded with their special tokens and the
    messages' text without. A template that changes the text it inserts gets the text with
    each control string broken by a zero-width space instead."""
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    slots = [{**m, "content": f"\ue000{i}\ue001"} for i, m in enumerate(messages)]
    rendered = tokenizer.apply_chat_template(slots, add_generation_prompt=True, tokenize=False)
    pieces = _SLOT.split(rendered)
    contents = [str(m.get("content", "")) for m in messages]
    for inserted in (contents, [c.strip() for c in contents]):
        parts = [inserted[int(p)] if i % 2 else p for i, p in enumerate(pieces)]
        if "".join(parts) == text:
            ids: list[int] = []
            for i, part in enumerate(parts):
                ids += _encode_text(tokenizer, part) if i % 2 else \
                    list(tokenizer.encode(part, add_special_tokens=False))
            return ids + list(tokenizer.encode(prefix, add_special_tokens=False))
    broken = [{**m, "content": _break_controls(str(m.get("content", "")), controls)}
              for m in messages]
    text = tokenizer.apply_chat_template(broken, add_generation_prompt=True, tokenize=False)
    return list(tokenizer.encode(text + prefix, add_special_tokens=False))


def _break_controls(text: str, controls: tuple[str, ...]) -> str:
    for control in sorted(controls, key=len, reverse=True):
        text = text.replace(control, control[:1] + "\u200b" + control[1:])
    return text


def _role(observation: Observation) -> Role:
    role = observation.get("role")
    if role not in ("challenger", "reasoner"):
        raise ValueError(f"an agent acts on challenger or reasoner observations, got role {role!r}")
    return "challenger" if role == "challenger" else "reasoner"


class SelfPlayAgent:
    """One policy playing both SPICE roles with role-specific sampling.

    Args:
        backend: ``"hf"`` (transformers), ``"vllm"`` (an in-process vLLM engine), ``"openai"``
            (an OpenAI-compatible HTTP endpoint) or a ready :class:`~agents.base.Backend`.
        model: a shipped short name, a transformers folder or a hub id; for ``"openai"`` the
            model name the endpoint serves.
        challenger: sampling of the Challenger (default: T=1.0, 512 new tokens, 1 sample).
        reasoner: sampling of the Reasoner (default: T=1.0, 256 new tokens, 8 samples = G).
        template: how prompts are rendered (see :func:`encode_observation`).
        dtype, device, trust_remote_code: how the model is loaded (``device`` is for ``"hf"``).
        backend_options: further keyword arguments of the backend's class
            (:class:`~agents.backends.hf.HFBackend`, :class:`~agents.backends.vllm.VLLMBackend`,
            :class:`~agents.backends.openai.OpenAIBackend`), e.g. ``base_url`` for ``"openai"``.
    """

    def __init__(self, backend: BackendName | Backend = "hf",
                 model: str = "qwen2.5-coder-0.5b-instruct", *,
                 challenger: SamplingConfig | None = None, reasoner: SamplingConfig | None = None,
                 template: Template = "auto", dtype: Any = None, device: str = "cpu",
                 trust_remote_code: bool = False,
                 backend_options: Mapping[str, Any] | None = None) -> None:
        self.sampling: dict[Role, SamplingConfig] = {
            "challenger": challenger or DEFAULT_CHALLENGER,
            "reasoner": reasoner or DEFAULT_REASONER,
        }
        self.template: Template = template
        if isinstance(backend, str):
            self.backend = _make_backend(backend, model, dtype=dtype, device=device,
                                         trust_remote_code=trust_remote_code,
                                         options=backend_options or {})
        else:
            self.backend = backend
        self.tokenizer = self.backend.tokenizer

    def encode(self, observation: Observation) -> list[int]:
        """The prompt token ids of ``observation``."""
        return encode_observation(self.tokenizer, observation, self.template)

    def generate(self, observations: Sequence[Observation], n: int | None = None
                 ) -> list[list[Generation]]:
        """``n`` samples per observation (default: the role's ``n``); all of one role."""
        if not observations:
            return []
        roles = {_role(o) for o in observations}
        if len(roles) != 1:
            raise ValueError("generate() takes observations of one role at a time")
        sampling = self.sampling[roles.pop()]
        if getattr(self.backend, "prompt_format", "tokens") == "messages":
            chats = [ChatPrompt(tuple(dict(m) for m in o["messages"]),
                                o.get("assistant_prefix", "")) for o in observations]
            return self.backend.generate(chats, sampling, n or sampling.n)  # type: ignore[arg-type]
        prompts = [self.encode(o) for o in observations]
        return self.backend.generate(prompts, sampling, n or sampling.n)

    def act(self, observation: Observation, info: Mapping[str, Any] | None = None
            ) -> str | list[str]:
        """One text for a challenger observation; the role's ``n`` texts for a reasoner one."""
        role = _role(observation)
        samples = self.generate([observation])[0]
        if role == "challenger":
            return samples[0].text
        return [s.text for s in samples]

    def close(self) -> None:
        """Release the backend."""
        self.backend.close()


def _make_backend(name: str, model: str, *, dtype: Any, device: str, trust_remote_code: bool,
                  options: Mapping[str, Any]) -> Backend:
    if name == "hf":
        from agents.backends.hf import HFBackend
        from agents.models import load_model

        loaded = load_model(model, dtype=dtype, device=device,
                            trust_remote_code=trust_remote_code)
        return HFBackend(loaded.model, loaded.tokenizer, **options)
    if name == "vllm":
        from agents.backends.vllm import VLLMBackend

        name_of_dtype = None if dtype is None else str(dtype).removeprefix("torch.")
        return VLLMBackend(model, dtype=name_of_dtype, trust_remote_code=trust_remote_code,
                           **options)
    if name == "openai":
        from agents.backends.openai import OpenAIBackend

        return OpenAIBackend(model=model, **options)
    raise ValueError(f"unknown backend {name!r}; valid: {', '.join(BACKENDS)} "
                     "(or pass a Backend instance)")
