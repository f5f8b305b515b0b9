"""Finding the structured part of a Challenger's output: JSON objects (fenced or surrounded by
text, with LaTeX backslashes repaired) and the compact format's tags."""

from __future__ import annotations

import json
import re
from typing import Any

_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.DOTALL)
_MAX_SCAN_OBJECTS = 64


def json_objects(text: str) -> list[dict[str, Any]]:
    """Every JSON object found in ``text``: those in fenced code blocks first, then the rest."""
    if "{" not in text:
        return []
    candidates: list[dict[str, Any]] = []
    for block in _FENCE.findall(text):
        candidates.extend(_objects_in(block))
    candidates.extend(_objects_in(text))
    return candidates


def find_json_object(text: str, required: tuple[str, ...] = ()) -> dict[str, Any] | None:
    """The first JSON object in ``text`` having all ``required`` keys, else the first at all."""
    candidates = json_objects(text)
    for obj in candidates:
        if all(k in obj for k in required):
            return obj
    return candidates[0] if candidates else None


# LaTeX commands whose first letter is also a JSON escape (\b \f \n \r \t \u): a model
# writing "\frac" in a JSON string almost always means the command, not a form feed + "rac"
_LATEX_WITH_ESCAPE_LETTER = frozenset([
    "bar", "beta", "bf", "big", "bigg", "binom", "bmod", "boldsymbol", "bot", "boxed", "bullet",
    "frac", "forall", "flat", "nabla", "ne", "neq", "neg", "ni", "not", "nu", "nolimits",
    "nonumber", "notin", "nmid", "rangle", "rceil", "rfloor", "rho", "right", "rightarrow", "rm",
    "tan", "tanh", "tau", "text", "textbf", "textit", "textrm", "theta", "tilde", "times", "to",
    "top", "triangle", "underline", "union", "uparrow"
])
_ESCAPE = re.compile(r"\\(\\|u[0-9a-fA-F]{4}|[A-Za-z]+|.)", re.DOTALL)


def repair_latex_escapes(text: str) -> str:
    r"""Double the backslashes of LaTeX written unescaped inside JSON strings.

    ``\frac``, ``\times``, ``\sqrt`` or ``\(`` in a JSON string are invalid escapes or decode to
    control characters; they are turned into ``\\frac`` etc. Valid escapes (``\\``, ``\"``,
    ``\n`` before a non-command, ``\u00e9``) are kept.
    """
    def fix(match: re.Match[str]) -> str:
        body = match.group(1)
        if body in ("\\", '"', "/") or (len(body) == 5 and body[0] == "u" and _is_hex(body[1:])):
            return match.group(0)
        if body[0].isalpha() and body[0] in "bfnrtu" and body not in _LATEX_WITH_ESCAPE_LETTER:
            return match.group(0)  # a real escape (\n, \t) followed by ordinary letters
        return "\\" + match.group(0)

    return _ESCAPE.sub(fix, text)


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in text)


_MAX_DECODE_ATTEMPTS = 256


def _objects_in(text: str) -> list[dict[str, Any]]:
    decoder = json.JSONDecoder()
    found: list[dict[str, Any]] = []
    repaired = repair_latex_escapes(text) if "\\" in text else text
    start = repaired.find("{")
    attempts = 0
    while start != -1 and len(found) < _MAX_SCAN_OBJECTS and attempts < _MAX_DECODE_ATTEMPTS:
        attempts += 1
        try:
            obj, end = decoder.raw_decode(repaired, start)
        except (ValueError, RecursionError):  # JSONDecodeError, or an integer too long to convert
            start = repaired.find("{", start + 1)
            continue
        if isinstance(obj, dict):
            found.append(obj)
        start = repaired.find("{", end)
    return found


def tag(text: str, name: str, implicit_open: bool = False) -> str | None:
    """The text inside ``<name>…</name>`` (tags matched case-insensitively), or None; with
    ``implicit_open`` a missing opening tag counts as prefilled: the text before the closing tag."""
    lower = text.lower()
    opening, closing = f"<{name}>", f"</{name}>"
    start = lower.find(opening)
    if start != -1:
        end = lower.find(closing, start + len(opening))
        if end != -1:
            return text[start + len(opening) : end]
    if implicit_open:  # the opening tag was prefilled in the prompt and is not in the output
        end = lower.find(closing)
        if end != -1 and (start == -1 or end < start):
            return text[:end]
    return None


def from_tags(text: str) -> dict[str, Any] | None:
    question = tag(text, "question", implicit_open=True)
    answer = tag(text, "answer")
    if question is None and answer is None:
        return None
    payload: dict[str, Any] = {}
    if question is not None:
        payload["question"] = question
    if answer is not None:
        payload["answer"] = answer
    for name in ("answer_type", "options"):
        value = tag(text, name)
        if value is not None:
            payload[name] = value
    if "answer_type" not in payload:
        # small models often close it with the wrong tag (<answer_type>integer</answer>): the
        # type is one word, so the word after the opening tag is taken
        loose = _LOOSE_TYPE.search(text)
        if loose is not None:
            payload["answer_type"] = loose.group(1)
    return payload


_LOOSE_TYPE = re.compile(r"<answer_type>\s*([A-Za-z_]+)\s*(?:<|$)", re.IGNORECASE)
