"""Named registries: one style for everything looked up by name (Challenger rewards, algorithms,
benchmarks, shipped models).

A :class:`Registry` is a read-mostly mapping from names to entries. :meth:`Registry.register`
adds an entry and refuses to replace one unless asked; looking up an unknown name raises
:class:`UnknownName`, whose message lists the valid names (it is both a ``KeyError`` and a
``ValueError``, so either ``except`` catches it).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Generic, TypeVar

T = TypeVar("T")


class UnknownName(KeyError, ValueError):
    """A name that no entry of a registry has; the message lists the valid ones."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class Registry(Mapping[str, T], Generic[T]):
    """Entries of one kind by name.

    Args:
        kind: what the entries are, for messages (``"Challenger reward"``).
        entries: the entries it starts with.
    """

    def __init__(self, kind: str, entries: Mapping[str, T] | None = None) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        for name, entry in (entries or {}).items():
            self.register(name, entry)

    def register(self, name: str, entry: T, *, overwrite: bool = False) -> T:
        """Add ``entry`` under ``name`` and return it.

        Raises:
            ValueError: ``name`` is empty or not a string, or taken and ``overwrite`` is False.
        """
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"a {self.kind} needs a non-empty string name, got {name!r}")
        if name in self._entries and not overwrite:
            raise ValueError(f"a {self.kind} named {name!r} exists; pass overwrite=True to "
                             "replace it")
        self._entries[name] = entry
        return entry

    def unregister(self, name: str) -> T:
        """Remove and return the entry of ``name``."""
        entry = self[name]
        del self._entries[name]
        return entry

    def unknown(self, name: object) -> UnknownName:
        """The error for a name that is not registered."""
        return UnknownName(f"unknown {self.kind} {name!r}; valid: {', '.join(self.names())}")

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._entries)

    def __getitem__(self, name: str) -> T:
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise self.unknown(name) from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._entries)})"
