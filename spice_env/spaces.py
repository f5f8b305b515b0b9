"""Gymnasium spaces for free text.

``gymnasium.spaces.Text`` only admits a fixed character set, which rejects ordinary prose
(punctuation, LaTeX, non-ASCII letters). :class:`Prose` admits any string up to a length, and
:class:`TextAction` admits one string or a sequence of strings (the env's two kinds of action).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium import spaces

_SAMPLE_ALPHABET = np.array(list("abcdefghijklmnopqrstuvwxyz ABCDEF0123456789.,?{}<>\\/()=+-"))


class Prose(spaces.Space[str]):
    """Any Python string of at most ``max_length`` characters."""

    def __init__(self, max_length: int = 1_000_000, seed: int | np.random.Generator | None = None
                 ) -> None:
        if max_length < 0:
            raise ValueError(f"max_length must be >= 0, got {max_length}")
        self.max_length = max_length
        super().__init__(dtype=str, seed=seed)

    @property
    def is_np_flattenable(self) -> bool:
        return False

    def sample(self, mask: Any = None, probability: Any = None) -> str:
        """A random string of up to 64 characters (for API tests; not meaningful text)."""
        length = int(self.np_random.integers(0, min(64, self.max_length) + 1))
        return "".join(self.np_random.choice(_SAMPLE_ALPHABET, size=length))

    def contains(self, x: Any) -> bool:
        return isinstance(x, str) and len(x) <= self.max_length

    def __repr__(self) -> str:
        return f"Prose(max_length={self.max_length})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Prose) and other.max_length == self.max_length

    def __hash__(self) -> int:
        return hash(("Prose", self.max_length))


class TextAction(spaces.Space[Any]):
    """A single string (the Challenger's output) or up to ``max_items`` strings (the Reasoner's)."""

    def __init__(self, max_items: int, max_length: int = 1_000_000,
                 seed: int | np.random.Generator | None = None) -> None:
        self.max_items = max_items
        self.text = Prose(max_length)
        super().__init__(dtype=object, seed=seed)

    @property
    def is_np_flattenable(self) -> bool:
        return False

    def seed(self, seed: int | None = None) -> Any:
        result = super().seed(seed)
        self.text.seed(None if seed is None else seed + 1)
        return result

    def sample(self, mask: Any = None, probability: Any = None) -> str:
        """A random single string."""
        return self.text.sample()

    def contains(self, x: Any) -> bool:
        if isinstance(x, str):
            return self.text.contains(x)
        return (isinstance(x, Sequence) and 0 < len(x) <= self.max_items
                and all(self.text.contains(item) for item in x))

    def __repr__(self) -> str:
        return f"TextAction(max_items={self.max_items})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TextAction) and other.max_items == self.max_items

    def __hash__(self) -> int:
        return hash(("TextAction", self.max_items))


def prose_sequence(max_length: int = 1_000_000) -> spaces.Sequence:
    """A variable-length tuple of strings."""
    return spaces.Sequence(Prose(max_length), stack=False)


def message_space() -> spaces.Sequence:
    """Chat messages: a tuple of ``{"role": str, "content": str}``."""
    return spaces.Sequence(spaces.Dict({"role": Prose(32), "content": Prose()}), stack=False)


def ensure_texts(action: Any, count: int) -> list[str]:
    """Validate the Reasoner's action: exactly ``count`` strings."""
    if isinstance(action, str) or not isinstance(action, Sequence):
        raise TypeError(
            f"the reasoner step takes a sequence of {count} strings (one per answer), "
            f"got {type(action).__name__}"
        )
    if len(action) != count:
        raise ValueError(f"the reasoner step takes {count} answers (group_size), got {len(action)}")
    for index, item in enumerate(action):
        if not isinstance(item, str):
            raise TypeError(f"answer {index} is a {type(item).__name__}, not a string")
    return list(action)
