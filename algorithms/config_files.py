"""Reading configuration files: YAML text into plain, bounded data, the ``extends`` chain and
the shipped configurations.

YAML is untrusted input here. It is parsed with ``yaml.safe_load`` (no tags that build objects),
and the result is copied into plain dicts and lists under limits: an anchor that contains itself
or aliases that expand past :data:`MAX_CONFIG_VALUES` values (the "billion laughs") are refused,
as are numbers Python will not read and text that is not valid Unicode. Every problem is one
:class:`ConfigError`, never a ``RecursionError`` or a stalled process.
"""

from __future__ import annotations

import reprlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from spice_env.text import valid_unicode

MAX_CONFIG_VALUES = 100_000
"""The most values (mappings, lists and scalars, with every alias counted where it is used) a
configuration may hold once its YAML aliases are expanded."""

SHIPPED_CONFIG_DIR = Path(__file__).parent / "configs"
"""Where the shipped configurations live (inside the installed package)."""


class ConfigError(ValueError):
    """A configuration that cannot be used; the message is one line naming the problem."""


def shipped_configs() -> dict[str, Path]:
    """The shipped configurations by name (the file name without ``.yaml``), sorted."""
    return {path.stem: path for path in sorted(SHIPPED_CONFIG_DIR.glob("*.yaml"))}


def parse_yaml(text: str, where: str) -> Any:
    """``yaml.safe_load`` of ``text`` with every failure a one-line :class:`ConfigError` that
    starts with ``where``."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or "cannot be parsed"
        raise ConfigError(f"{where}: not valid YAML{at}: {problem}") from None
    except RecursionError:
        raise ConfigError(f"{where}: not valid YAML: nested too deeply") from None
    except ValueError as error:  # int() refuses numbers of more than 4300 digits
        reason = "a number with more digits than Python reads" if "digits" in str(error) \
            else str(error).splitlines()[0][:200]
        raise ConfigError(f"{where}: not valid YAML: {reason}") from None


def plain(data: Any, where: str) -> Any:
    """A copy of parsed YAML as plain dicts (string keys) and lists.

    Raises:
        ConfigError: an anchor that contains itself, more than :data:`MAX_CONFIG_VALUES` values
            once aliases are expanded, or text with a lone surrogate.
    """
    sizes: dict[int, int] = {}
    if _expanded_size(data, sizes, set(), where) > MAX_CONFIG_VALUES:
        raise ConfigError(f"{where}: its YAML aliases expand to more than {MAX_CONFIG_VALUES} "
                          "values; write the values out or use fewer aliases")
    return _copy(data)


def _expanded_size(node: Any, sizes: dict[int, int], open_nodes: set[int], where: str) -> int:
    """How many values ``node`` holds with its aliases expanded (shared nodes counted once per
    use, but measured once), refusing cycles and bad text on the way."""
    if isinstance(node, str):
        if not valid_unicode(node):
            raise ConfigError(f"{where}: the text {preview(node)} is not valid Unicode (a lone "
                              "surrogate)")
        return 1
    if not isinstance(node, Mapping | list):
        return 1
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in open_nodes:
        raise ConfigError(f"{where}: a YAML anchor contains itself (an alias inside the value "
                          "it names)")
    open_nodes.add(key)
    total = 1
    for child in (_children(node)):
        total += _expanded_size(child, sizes, open_nodes, where)
        if total > MAX_CONFIG_VALUES:
            break  # far enough: the caller refuses it
    open_nodes.discard(key)
    sizes[key] = total
    return total


def _children(node: Mapping[Any, Any] | list[Any]) -> list[Any]:
    if isinstance(node, list):
        return node
    return [item for pair in node.items() for item in pair]


def _copy(node: Any) -> Any:
    if isinstance(node, Mapping):
        return {str(k): _copy(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_copy(v) for v in node]
    return node


class _Preview(reprlib.Repr):
    """reprlib's bounded ``repr`` that also takes integers too long to print."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel, self.maxdict, self.maxlist, self.maxtuple, self.maxset = 3, 4, 4, 4, 4
        self.maxstring = self.maxother = self.maxlong = 60

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 4000:  # str() of it may be refused, and is long anyway
            return f"<an integer of about {int(x.bit_length() * 0.30103)} digits>"
        return super().repr_int(x, level)


_PREVIEW = _Preview()


def preview(value: Any, limit: int = 60) -> str:
    """A short ``repr`` of ``value`` (at most ``limit`` characters), made without walking the
    whole of a large or aliased structure."""
    shown = _PREVIEW.repr(value)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def read_yaml(file: Path, chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A config file as plain data, the file it ``extends`` (and that one's) merged under it."""
    try:
        text = file.read_text("utf-8")
    except OSError as error:
        raise ConfigError(f"cannot read config {file}: {error.strerror or error}") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"config {file} is not UTF-8 text (byte {error.start}); save it as "
                          "UTF-8") from None
    data = parse_yaml(text, str(file))
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{file}: the top level must be a mapping of sections")
    merged: dict[str, Any] = plain(data, str(file))
    parent = merged.pop("extends", None)
    if parent is None:
        return merged
    if not isinstance(parent, str):
        raise ConfigError(f"{file}: extends must be a file name, got {preview(parent)}")
    base = (file.parent / parent).resolve()
    if not base.exists() and parent.removesuffix(".yaml") in shipped_configs():
        base = shipped_configs()[parent.removesuffix(".yaml")].resolve()
    if base in chain or base == file.resolve():
        raise ConfigError(f"{file}: extends {parent} makes a cycle")
    return deep_merge(read_yaml(base, (*chain, file.resolve())), merged)


def deep_merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """Sections merged key by key; a key's value (a corpus mixture, backend options) replaced
    whole; an algorithm section naming another algorithm replaces the base's."""
    out = dict(base)
    for key, value in top.items():
        section = out.get(key)
        switches = (key == "algorithm" and isinstance(value, dict) and isinstance(section, dict)
                    and value.get("name", "drgrpo") != section.get("name", "drgrpo"))
        if isinstance(value, dict) and isinstance(section, dict) and not switches:
            out[key] = {**section, **value}
        else:
            out[key] = value
    return out
