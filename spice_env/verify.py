"""Checking Reasoner answers against gold answers.

The Reasoner's final answer is the content of its last ``\\boxed{…}`` (see :func:`extract_boxed`).
It is compared by answer type:

========== =========================================================================================
type       rule
========== =========================================================================================
mcq_letter ``B``, ``(B)``, ``B)``, ``\\text{B}``, ``B) <option text>``, or an option's text when it
           names exactly one option
integer    exact after dropping thousands separators, LaTeX spaces, ``$``, trailing units and
           ``.0``; an answer not written as one whole number goes to Math-Verify
float      numerically close (``float_rel_tol`` / ``float_abs_tol``); non-decimal forms go to
           Math-Verify
expression Math-Verify ``verify(gold, prediction)`` (gold first), in worker processes with a hard
           timeout; identical normalised strings and equal plain numbers are decided without it
string     exact after lower-casing and removing punctuation, articles and extra spaces
boolean    yes/true vs no/false
========== =========================================================================================

A percent is its value or its value in hundredths (``10\\%`` answers ``0.1`` and ``10``); a
multi-part gold (``2, 5``, or a set ``\\{2, 5\\}``) takes one box per part
(``\\boxed{2}, \\boxed{5}``); scientific notation (``3.54 \\times 10^{-7}``, ``3.54e-07``) is
read as the decimal it writes; a decimal comma (``1000,99``) answers a gold that is one number.

Model output is never executed or evaluated. Every check ends in a :class:`Verdict` whose
``outcome`` tells *why*: ``correct``, ``wrong``, ``no_answer`` (no box), ``too_long`` (answer over
the length cap), ``timeout`` (Math-Verify exceeded its time) or ``error`` (Math-Verify failed).
"""

from __future__ import annotations

import logging
import math
import re
import weakref
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from spice_env.numeric import (
    decimal_comma,
    normalize_number_text,
    parse_float,
    parse_integer,
    plain_scientific,
    strip_text_commands,
)
from spice_env.tasks import LETTERS, Task
from spice_env.verify_pool import MathVerifyPool

logger = logging.getLogger(__name__)

Outcome = Literal["correct", "wrong", "no_answer", "too_long", "timeout", "error"]
OUTCOMES: tuple[Outcome, ...] = ("correct", "wrong", "no_answer", "too_long", "timeout", "error")


# --- extracting the boxed answer ----------------------------------------------------------------

BOX = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
"""Where a ``\\boxed{…}`` (or ``\\fbox{…}``) answer starts."""
_FALLBACK = re.compile(
    r"(?:final answer|the answer)\s*(?:is|:)\s*[:\s]*\$?([^\n$]{1,200}?)\$?\s*\.?\s*$",
    re.IGNORECASE,
)


def _braced(text: str, open_index: int) -> str | None:
    depth = 0
    i = open_index
    while i < len(text):
        char = text[i]
        if char == "\\":
            i += 2  # an escaped character (\{, \}) does not group
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return text[open_index + 1 : i]
        i += 1
    return None


def _brace_pairs(text: str) -> dict[int, int]:
    """Position of each ``{`` -> its matching ``}``, in one pass (escaped braces skipped)."""
    pairs: dict[int, int] = {}
    stack: list[int] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char == "\\":
            i += 2
            continue
        if char == "{":
            stack.append(i)
        elif char == "}" and stack:
            pairs[stack.pop()] = i
        i += 1
    return pairs


def _box_content(text: str, start: int, pairs: dict[int, int] | None = None) -> str | None:
    i = start
    while i < len(text) and text[i] == " ":
        i += 1
    if i < len(text) and text[i] == "{":
        if pairs is None:
            return _braced(text, i)
        close = pairs.get(i)
        return text[i + 1 : close] if close is not None else None
    match = re.match(r"[^\s$]+", text[i:])  # \boxed 5 (no braces)
    return match.group(0) if match and i > start else None


def extract_boxed(text: str, *, fallback: bool = False) -> str | None:
    """The content of the last complete ``\\boxed{…}`` (or ``\\fbox{…}``) in ``text``.

    Nested braces are matched; escaped braces do not count. A box left unclosed (a response cut
    off by the length limit) is ignored in favour of an earlier complete one. ``\\boxed 5`` (no
    braces) gives ``5``. With ``fallback=True``, a response without a box may still give an
    answer from a closing ``The final answer is X`` / ``Answer: X``. Returns ``None`` when there is
    no answer.
    """
    if not isinstance(text, str):
        return None
    boxes = list(BOX.finditer(text))
    if boxes:  # the last box is the usual case: scan it directly
        content = _box_content(text, boxes[-1].end())
        if content is not None:
            return content.strip()
    if len(boxes) > 1:  # it was left unclosed: match every brace once, then look boxes up
        pairs = _brace_pairs(text)
        for match in reversed(boxes[:-1]):
            content = _box_content(text, match.end(), pairs)
            if content is not None:
                return content.strip()
    if fallback:
        tail = text.strip()[-400:]
        found = _FALLBACK.search(tail) or re.search(r"^\s*answer\s*:\s*(.{1,200})$", tail,
                                                    re.IGNORECASE | re.MULTILINE)
        if found:
            return found.group(1).strip()
    return None


def last_boxes(text: str, count: int) -> list[str]:
    """The contents of the last ``count`` boxes of ``text``, in order, when all of them are
    complete (else ``[]``)."""
    boxes = list(BOX.finditer(text))[-count:] if count > 0 else []
    if len(boxes) < count:
        return []
    pairs = _brace_pairs(text)
    found = [_box_content(text, match.end(), pairs) for match in boxes]
    return [part.strip() for part in found if part is not None] if None not in found else []


def top_level_parts(text: str) -> list[str]:
    """``text`` split at the commas outside brackets, braces and parentheses."""
    parts, depth, start = [], 0, 0
    for index, char in enumerate(text):
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth = max(0, depth - 1)
        elif char == "," and depth == 0:
            parts.append(text[start:index])
            start = index + 1
    parts.append(text[start:])
    return [part.strip() for part in parts]


_SET_BRACES = (("\\left\\{", "\\right\\}"), ("\\{", "\\}"), ("{", "}"))


def _set_members(gold: str) -> str:
    """The inside of a gold answer written as a set (``{1,2,3}``, ``\\{1, 2\\}``), else the
    gold itself."""
    text = gold.strip().strip("$").strip()
    for opening, closing in _SET_BRACES:
        if text.startswith(opening) and text.endswith(closing) and len(text) > len(opening
                                                                                   + closing):
            inner = text[len(opening):-len(closing)]
            if opening != "{" or _braced(text, 0) == inner:
                return inner
    return gold


def _several_boxes(response: str, gold: str, last: str) -> str:
    """The answer of a response that boxes the parts of a multi-part gold one by one
    (``\\boxed{2}, \\boxed{5}`` for ``2, 5``, or for the set ``\\{2, 5\\}``): its last boxes
    joined with ``", "``, as many as the gold has parts; otherwise its last box."""
    count = len(top_level_parts(_set_members(gold)))
    if count < 2 or len(top_level_parts(last)) >= count or _plain_number(gold) is not None:
        return last
    parts = last_boxes(response, count)
    return ", ".join(parts) if len(parts) == count else last


# --- normalisation -------------------------------------------------------------------------------

_ARTICLES = re.compile(r"^(?:a|an|the)\s+")


def normalize_string(value: str) -> str:
    """Lower-case, unwrap LaTeX text commands, drop punctuation (not ``+`` or ``#``), a leading
    article and extra spaces."""
    text = strip_text_commands(value).replace("$", "").lower()
    text = re.sub(r"[^\w\s+#]", " ", text)
    text = _ARTICLES.sub("", text.strip())
    return " ".join(text.split())


def parse_boolean(value: str) -> bool | None:
    """``True`` for yes/true, ``False`` for no/false, else None."""
    text = normalize_string(value)
    if text in ("yes", "true", "y", "t"):
        return True
    if text in ("no", "false", "n", "f"):
        return False
    return None


def mcq_letter(answer: str, options: dict[str, str] | None = None) -> str | None:
    """The option letter an answer names, or None when it names none (or several).

    The letters are those of ``options`` when given (benchmarks have up to ten, A-J), else A-D.
    """
    letters = "".join(k for k in (options or {}) if len(k) == 1 and k.isalpha()).upper()
    span = f"A-{max(letters)}" if letters else "A-D"
    text = strip_text_commands(answer).replace("$", "").strip().rstrip(".").strip()
    match = re.fullmatch(rf"\(?([{span}{span.lower()}])\)?[.:)]?", text)
    if match:
        return match.group(1).upper()
    if len(set(re.findall(rf"(?:^|[\s(])([{span}])\)", text))) > 1:
        return None  # several options listed: no single choice
    match = re.match(rf"^(?:option|choice|answer)?\s*\(?([{span}])[).:]\s+\S", text,
                     re.IGNORECASE)
    if match:
        return match.group(1).upper()
    match = re.fullmatch(rf"(?:option|choice|answer)\s*\(?([{span}{span.lower()}])\)?", text,
                         re.IGNORECASE)
    if match:
        return match.group(1).upper()
    if options:
        wanted = normalize_string(text)
        hits = [k for k, v in options.items() if normalize_string(v) == wanted and wanted]
        if len(hits) == 1 and (hits[0] in LETTERS or hits[0] in letters):
            return hits[0]
    return None


def _expression_key(value: str) -> str:
    text = value.strip().strip("$").strip()
    text = re.sub(r"\\left|\\right|\\displaystyle|\\!|\\,|\\;|\s+", "", text)
    text = re.sub(r"\\[dt]frac(?![A-Za-z])", r"\\frac", text)
    return text.rstrip(".")


# --- the verifier --------------------------------------------------------------------------------


class VerifierConfig(BaseModel):
    """Settings of a :class:`Verifier`."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    workers: int = Field(default=2, ge=1, description="Math-Verify worker processes.")
    timeout_s: float = Field(
        default=2.0, gt=0, description="Hard time limit of one Math-Verify comparison (seconds)."
    )
    max_answer_chars: int = Field(
        default=1000, ge=1, description="Extracted answers longer than this are `too_long`."
    )
    float_rel_tol: float = Field(default=1e-4, ge=0, description="Relative tolerance for floats.")
    float_abs_tol: float = Field(default=1e-8, ge=0, description="Absolute tolerance for floats.")
    allow_unboxed: bool = Field(
        default=False,
        description="Accept an unboxed 'The final answer is X' when no \\boxed{} is present.",
    )
    cache_size: int = Field(
        default=65536, ge=0,
        description="Math-Verify verdicts (correct or wrong) remembered per (gold, answer).",
    )


@dataclass(frozen=True)
class Verdict:
    """The result of checking one response: whether it is correct, and why."""

    correct: bool
    outcome: Outcome
    extracted: str | None


class Verifier:
    """Checks Reasoner responses against tasks; see the module docstring for the rules.

    Use as a context manager (or call :meth:`close`) to stop the worker processes; they start on
    the first expression check. ``counts`` tallies outcomes over the verifier's life.
    """

    def __init__(self, config: VerifierConfig | None = None, **overrides: Any) -> None:
        base = config or VerifierConfig()
        self.config = VerifierConfig(**{**base.model_dump(), **overrides}) if overrides else base
        self.pool = MathVerifyPool(self.config.workers, self.config.timeout_s)
        self.counts: Counter[str] = Counter()
        self._cache: OrderedDict[tuple[str, str], Outcome] = OrderedDict()
        self._finalizer = weakref.finalize(self, self.pool.close)

    def __enter__(self) -> Verifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the Math-Verify workers (a later expression check starts them again)."""
        self.pool.close()

    def check(self, task: Task, response: str) -> bool:
        """Whether ``response`` answers ``task`` correctly."""
        return self.verify(task, response).correct

    def check_many(self, pairs: Sequence[tuple[Task, str]]) -> list[bool]:
        """:meth:`check` for many ``(task, response)`` pairs; expressions run in parallel."""
        return [v.correct for v in self.verify_many(pairs)]

    def verify(self, task: Task, response: str) -> Verdict:
        """Check one response and say why it is right or wrong."""
        return self.verify_many([(task, response)])[0]

    def verify_many(self, pairs: Sequence[tuple[Task, str]]) -> list[Verdict]:
        """:meth:`verify` for many pairs; Math-Verify calls are batched across the workers."""
        verdicts: list[Verdict | None] = []
        deferred: dict[tuple[str, str], list[tuple[int, str]]] = {}
        for index, (task, response) in enumerate(pairs):
            extracted = extract_boxed(response, fallback=self.config.allow_unboxed)
            if extracted is not None and task.answer_type in ("expression", "string"):
                extracted = _several_boxes(response, task.answer, extracted)
            verdict, needs_math = self._decide(task, extracted)
            verdicts.append(verdict)
            if needs_math is not None:
                deferred.setdefault(needs_math, []).append((index, extracted or ""))
        if deferred:
            keys = list(deferred)
            for key, outcome in zip(keys, self._math_verify(keys), strict=True):
                for index, extracted in deferred[key]:
                    verdicts[index] = Verdict(outcome == "correct", outcome, extracted)
        final = [v if v is not None else Verdict(False, "error", None) for v in verdicts]
        self.counts.update(v.outcome for v in final)
        return final

    def _decide(self, task: Task, extracted: str | None
                ) -> tuple[Verdict | None, tuple[str, str] | None]:
        if extracted is None or not extracted.strip():
            return Verdict(False, "no_answer", extracted), None
        if len(extracted) > self.config.max_answer_chars:
            return Verdict(False, "too_long", extracted[:200]), None
        kind = task.answer_type
        gold_text, answer = task.answer, extracted  # the texts compared (numbers rewritten)
        if kind in ("integer", "float", "expression"):
            gold_text, answer = plain_scientific(gold_text), plain_scientific(extracted)
            if kind != "integer" and _plain_number(gold_text) is not None:
                answer = decimal_comma(answer) or answer
        if kind == "mcq_letter":
            ok = mcq_letter(answer, task.options) == task.answer.strip().upper()
        elif kind == "integer":
            got, gold = parse_integer(answer), parse_integer(gold_text)
            if got is None or gold is None:  # \frac{3}{3}, x \approx 11: Math-Verify decides
                return None, (gold_text, answer)
            # a percent is also read as hundredths: 1000% is 10
            ok = got == gold or ("%" in answer and got == 100 * gold)
        elif kind == "string":
            ok = normalize_string(answer) == normalize_string(task.answer)
        elif kind == "boolean":
            got_bool = parse_boolean(answer)
            ok = got_bool is not None and got_bool == parse_boolean(task.answer)
        elif kind == "float" and parse_float(answer) is not None:
            ok = any(math.isclose(gold, got, rel_tol=self.config.float_rel_tol,
                                  abs_tol=self.config.float_abs_tol)
                     for gold in _readings(gold_text) for got in _readings(answer))
        else:  # expression, or a float written in a non-decimal form
            quick = self._quick_expression(gold_text, answer)
            if quick is None:
                return None, (gold_text, answer)
            ok = quick
        return Verdict(ok, "correct" if ok else "wrong", extracted), None

    @staticmethod
    def _quick_expression(gold: str, prediction: str) -> bool | None:
        """Decide without Math-Verify when it is certain: same text, or two plain numbers."""
        if _expression_key(gold) == _expression_key(prediction):
            return True
        gold_num, pred_num = _plain_number(gold), _plain_number(prediction)
        if gold_num is not None and pred_num is not None:
            return math.isclose(gold_num, pred_num, rel_tol=1e-9, abs_tol=1e-12)
        return None

    def _math_verify(self, keys: list[tuple[str, str]]) -> list[Outcome]:
        known = {k: self._cache[k] for k in keys if k in self._cache}
        todo = [k for k in keys if k not in known]
        if todo:
            for key, outcome in zip(todo, self.pool.run(todo), strict=True):
                known[key] = outcome
                self._remember(key, outcome)
        return [known[k] for k in keys]

    def _remember(self, key: tuple[str, str], outcome: Outcome) -> None:
        if self.config.cache_size == 0 or outcome not in ("correct", "wrong"):
            return  # a timeout or error may not recur (a busy machine): never remember one
        self._cache[key] = outcome
        self._cache.move_to_end(key)
        while len(self._cache) > self.config.cache_size:
            self._cache.popitem(last=False)


def _readings(value: str) -> list[float]:
    """The numbers a decimal answer may mean: its value, and with a percent sign also that
    value in hundredths (``10\\%`` is 10 or 0.1), as Math-Verify reads percentages."""
    number = parse_float(value)
    if number is None:
        return []
    return [number, number / 100] if "%" in value else [number]


def _plain_number(value: str) -> float | None:
    text = normalize_number_text(value)
    if re.fullmatch(r"[+-]?(?:\d+\.?\d*|\.\d+)", text):
        number = float(text)
        return number if math.isfinite(number) else None
    return None

