"""Pieces every token-level backend shares: stop tokens and turning sampled ids into results."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from agents.base import Generation


def stop_token_ids(*sources: Any) -> set[int]:
    """The end-of-sequence ids declared by any of ``sources`` (generation configs, tokenizers).

    Raises:
        ValueError: when none declares one (decoding would never stop on its own).
    """
    ids: set[int] = set()
    for source in sources:
        value = getattr(source, "eos_token_id", None)
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list | tuple):
            ids.update(int(v) for v in value)
    if not ids:
        raise ValueError("the model and tokenizer define no end-of-sequence token")
    return ids


def make_generation(tokenizer: Any, prompt: Sequence[int], tokens: Iterable[int],
                    logprobs: Iterable[float], stop_ids: set[int]) -> Generation:
    """A :class:`Generation` whose text is decoded the same way on every backend.

    The completion ends in ``stop`` when its last token is a stop token (that token stays in
    ``completion_ids`` and is left out of the text), otherwise in ``length``.
    """
    ids = tuple(int(t) for t in tokens)
    stopped = bool(ids) and ids[-1] in stop_ids
    visible = ids[:-1] if stopped else ids
    text = tokenizer.decode(list(visible), skip_special_tokens=True)
    return Generation(text=text, prompt_ids=tuple(int(t) for t in prompt), completion_ids=ids,
                      logprobs=tuple(float(x) for x in logprobs),
                      finish_reason="stop" if stopped else "length")
