"""A MkDocs hook used only by the documentation build: configuration fields and metric names
as tables.

A page line ``<!-- fields: module:Class section -->`` becomes a Markdown table of the fields of
the pydantic model ``Class`` builds for ``section`` (key, type, default, description), with the
defaults ``Class()`` gives that section; without a section, of ``Class`` itself. The descriptions
are the ``Field(description=...)`` texts of the code, so the tables never drift from what the
config accepts. A line ``<!-- metrics -->`` becomes the table of the metrics a training run
logs (:data:`algorithms.metrics.METRICS`).
"""

from __future__ import annotations

import collections.abc
import importlib
import re
import types
import typing
from typing import Any

_METRICS_MARKER = re.compile(r"^<!-- metrics -->$", re.MULTILINE)
_MARKER = re.compile(r"^<!-- fields: (?P<target>[\w.]+:\w+)(?: (?P<section>\w+))? -->$",
                     re.MULTILINE)


def _type(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" if isinstance(a, str) else str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(_type(a) for a in args)
    if origin is typing.Annotated:
        return _type(args[0])
    if origin is collections.abc.Callable:
        return "callable"
    if origin is not None:
        inner = ", ".join(_type(a) for a in args)
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]"
    if annotation is type(None):
        return "None"
    return getattr(annotation, "__name__", str(annotation))


def _shown(value: Any) -> str:
    if hasattr(value, "model_dump"):
        return "(section)"
    if isinstance(value, tuple):
        value = list(value)
    text = value if isinstance(value, str) else repr(value)
    return f"`{text}`" if text else '`""`'


def fields_table(target: str, section: str | None) -> str:
    """The Markdown table of one model's fields (or of one section of it)."""
    module_name, _, class_name = target.partition(":")
    model = getattr(importlib.import_module(module_name), class_name)
    defaults = None
    if section and section in model.model_fields:  # a section of a config: its defaults there
        defaults = getattr(model(), section)
        model = type(defaults)
    rows = ["| key | type | default | what |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        key = f"{section}.{name}" if section else name
        value = getattr(defaults, name) if defaults is not None else (
            field.default_factory() if field.default_factory is not None else field.default)
        description = " ".join((field.description or "").split()).replace("|", "\\|")
        rows.append(f"| `{key}` | {_type(field.annotation)} | {_shown(value)} | "
                    f"{description} |")
    return "\n".join(rows)


def metrics_table() -> str:
    """The Markdown table of the metric names a run logs and what they mean."""
    from algorithms.metrics import METRICS

    rows = ["| key | meaning |", "|---|---|"]
    for metric in METRICS:
        rows.append(f"| `{metric.key}` | {metric.meaning.replace('|', chr(92) + '|')} |")
    return "\n".join(rows)


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    """Replace every fields marker of a page by its table, and the metrics marker by the
    metrics table."""
    markdown = _METRICS_MARKER.sub(lambda m: metrics_table(), markdown)
    return _MARKER.sub(lambda m: fields_table(m.group("target"), m.group("section")), markdown)
