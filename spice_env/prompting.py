"""Rendering the role prompts from the templates in ``spice_env/prompts/``.

Templates are plain text files with ``{{name}}`` placeholders; two styles exist:

* ``paper`` — the structure of the SPICE paper: an 8-step Challenger instruction answered in JSON,
  and the Reasoner's "reason step by step … \\boxed{}" suffix;
* ``compact`` — for small models: a short instruction, a worked example given as its own
  user/assistant exchange, the tag format, and the assistant turn prefilled with ``<question>``.

Prompts are rendered as chat messages (a list of ``{"role", "content"}``) plus an assistant prefix;
:func:`plain_text` gives the template for base models ("User: … Assistant:"). Agents apply their
tokenizer's chat template to the messages.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Literal

from spice_env.types import TaskFormat

PromptStyle = Literal["paper", "compact"]
PROMPT_STYLES: tuple[PromptStyle, ...] = ("paper", "compact")

Message = dict[str, str]


@dataclass(frozen=True)
class RenderedPrompt:
    """A prompt as chat messages, the text the assistant turn starts with, and plain text."""

    messages: tuple[Message, ...]
    assistant_prefix: str

    @property
    def text(self) -> str:
        """The plain ("User: … Assistant:") rendering, for base models."""
        return plain_text(self.messages, self.assistant_prefix)


@cache
def template(name: str) -> str:
    """The text of ``prompts/<name>.txt``."""
    return resources.files("spice_env").joinpath(f"prompts/{name}.txt").read_text("utf-8").strip()


def has_template(name: str) -> bool:
    """Whether ``prompts/<name>.txt`` exists."""
    return resources.files("spice_env").joinpath(f"prompts/{name}.txt").is_file()


def fill(text: str, **values: str) -> str:
    """Replace ``{{key}}`` placeholders; values are inserted verbatim (never re-expanded)."""
    pieces = text.split("{{")
    out = [pieces[0]]
    for piece in pieces[1:]:
        key, sep, rest = piece.partition("}}")
        if sep and key in values:
            out.append(values[key] + rest)
        else:
            out.append("{{" + piece)
    return "".join(out)


def _check_style(style: str) -> None:
    if style not in PROMPT_STYLES:
        raise ValueError(f"unknown prompt style {style!r}; valid: {', '.join(PROMPT_STYLES)}")


def challenger_prefix(style: PromptStyle) -> str:
    """The text the Challenger's assistant turn is prefilled with in ``style``."""
    return "<question>" if style == "compact" else ""


def challenger_prompt(document: str | None, task_format: TaskFormat, style: PromptStyle = "paper"
                      ) -> RenderedPrompt:
    """The Challenger's prompt for one document (``None``: the ungrounded ablation)."""
    _check_style(style)
    if task_format not in ("mcq", "free_form"):
        raise ValueError(f"unknown task format {task_format!r}; valid: mcq, free_form")
    if document is None:
        source = template("source_ungrounded")
    else:
        source = fill(template("source_grounded"), document=document)
    name = f"{style}_challenger_{task_format}"
    prefix = challenger_prefix(style)
    if not has_template(f"{name}_example"):
        body = fill(template(name), source_block=source)
        return RenderedPrompt(({"role": "user", "content": body},), prefix)
    # a worked example as its own exchange, then the real request
    return RenderedPrompt((
        {"role": "user", "content": template(name)},
        {"role": "assistant", "content": template(f"{name}_example")},
        {"role": "user", "content": fill(template(f"{style}_challenger_followup"),
                                         source_block=source)},
    ), prefix)


def reasoner_prompt(question: str, style: PromptStyle = "paper") -> RenderedPrompt:
    """The Reasoner's prompt: the question only (never the document)."""
    _check_style(style)
    body = fill(template(f"{style}_reasoner"), question=question)
    return RenderedPrompt(({"role": "user", "content": body},), "")


def selector_prompt(document: str, style: PromptStyle = "paper") -> RenderedPrompt:
    """The task-type selector's prompt (the paper's optional first step): JSON in the ``paper``
    style, tags with the assistant turn prefilled with ``<mcq>`` in the ``compact`` style."""
    _check_style(style)
    body = fill(template(f"{style}_selector"), document=document)
    return RenderedPrompt(({"role": "user", "content": body},), selector_prefix(style))


def selector_prefix(style: PromptStyle) -> str:
    """The text the selector's assistant turn is prefilled with in ``style``."""
    return "<mcq>" if style == "compact" else ""


def plain_text(messages: tuple[Message, ...] | list[Message], assistant_prefix: str = "") -> str:
    """Render messages with the plain template used for base models."""
    names = {"system": "System", "user": "User", "assistant": "Assistant"}
    turns = [f"{names.get(m['role'], m['role'].title())}: {m['content']}" for m in messages]
    return "\n\n".join([*turns, f"Assistant: {assistant_prefix}".rstrip(" ")])
