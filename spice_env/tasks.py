"""Tasks written by the Challenger, and the parser that validates its raw output.

:func:`parse_challenger_output` never raises on model output: it returns a :class:`ParseResult`
holding either a valid :class:`Task` or a reason code from :data:`REASONS` (plus a human detail).

Two output formats are accepted:

* **JSON**, the paper's format — MCQ fields ``multiple_choice_question`` (options ``A) … D)``
  inline, or a separate ``options`` object/list) and ``multiple_choice_correct``; free-form fields
  ``question``, ``answer`` and ``answer_type``. The object may sit inside a fenced code block or
  have text around it.
* **Tags**, the compact format for small models —
  ``<question>…</question><answer>…</answer>`` with optional ``<answer_type>…</answer_type>``;
  MCQ options inline in the question (``A) … B) … C) … D) …``) or in ``<options>…</options>``.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Mapping
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from spice_env.numeric import parse_float, parse_integer
from spice_env.payload import from_tags, json_objects
from spice_env.text import valid_unicode
from spice_env.types import TaskFormat

AnswerType = Literal["mcq_letter", "integer", "float", "expression", "string", "boolean"]
FREE_FORM_TYPES: tuple[str, ...] = ("integer", "float", "expression", "string", "boolean")
LETTERS = ("A", "B", "C", "D")
MAX_STRING_WORDS = 3
MAX_QUESTION_CHARS = 4000
MAX_ANSWER_CHARS = 300
MAX_OUTPUT_CHARS = 65536

Reason = Literal[
    "empty",
    "no_json",
    "bad_json",
    "missing_field",
    "question_not_string",
    "wrong_kind",
    "bad_letter",
    "not_four_options",
    "duplicate_options",
    "answer_not_scalar",
    "bad_answer_type",
    "wrong_answer_type",
    "type_mismatch",
    "string_too_long",
    "refers_to_document",
    "too_long",
    "bad_unicode",
    "answer_not_finite",
    "answer_no_content",
]
REASONS: tuple[str, ...] = get_args(Reason)
"""Every reason code a rejected Challenger output can carry."""


class Task(BaseModel):
    """A question with a verifiable gold answer, grounded in one document."""

    model_config = ConfigDict(frozen=True)

    kind: TaskFormat = Field(description="`mcq` (four options A-D) or `free_form` (typed answer).")
    question: str = Field(description="The question text, without the MCQ options.")
    answer: str = Field(description="The gold answer: the correct letter for MCQ, else the value.")
    answer_type: AnswerType = Field(description="How the answer is checked by the verifier.")
    options: dict[str, str] | None = Field(
        default=None, description="MCQ options keyed by letter A-D; None for free-form tasks."
    )
    document_id: str | None = Field(default=None, description="Id of the grounding document.")
    raw: str = Field(default="", description="The Challenger's raw output this task came from.")
    metadata: dict[str, Any] = Field(
        default_factory=dict, description="Other fields of the output (difficulty, solution, ...)."
    )

    def reasoner_question(self) -> str:
        """The question as the Reasoner sees it: MCQ options inline, one per line."""
        if self.kind != "mcq" or not self.options:
            return self.question
        lines = [self.question.rstrip()] + [f"{k}) {v}" for k, v in self.options.items()]
        return "\n".join(lines)


class ParseResult(BaseModel):
    """The outcome of parsing one Challenger output: a task, or why there is none."""

    model_config = ConfigDict(frozen=True)

    task: Task | None = Field(default=None, description="The valid task, if any.")
    reason: Reason | None = Field(default=None, description="Reason code when invalid.")
    detail: str = Field(default="", description="A human-readable explanation of the reason.")

    @property
    def valid(self) -> bool:
        """Whether a valid task was found."""
        return self.task is not None


def _reject(reason: Reason, detail: str) -> ParseResult:
    return ParseResult(task=None, reason=reason, detail=detail)


# --- options and field checks -----------------------------------------------------------------

_EXTRA_OPTION = re.compile(r"(?:^|(?<=\s))\(?([E-He-h])[\)\.:]\s*", re.MULTILINE)
_OPTION = re.compile(r"(?:^|(?<=\s))\(?([A-Da-d])[\)\.:]\s*", re.MULTILINE)


def split_inline_options(text: str) -> tuple[str, dict[str, str]]:
    """Split ``"Question? A) x B) y C) z D) w"`` into the stem and ``{"A": "x", ...}``.

    Recognises ``A)``, ``(A)``, ``A.`` and ``A:`` markers. Returns the whole text and no options
    when the markers are not A, B, C, D in order.
    """
    marks = list(_OPTION.finditer(text))
    styles = {_marker_style(m) for m in marks}
    # markers of one style ("(A)" ... "(D)") reading A, B, C, D in a row; the latest such run wins
    runs = [run for style in styles for run in _abcd_runs([m for m in marks
                                                           if _marker_style(m) == style])]
    if not runs:
        return text.strip(), {}
    chosen = max(runs, key=lambda run: run[0].start())
    style = _marker_style(chosen[0])
    after = text[chosen[-1].end():]
    if any(_marker_style(m) == style for m in _EXTRA_OPTION.finditer(after)):
        return text.strip(), {}  # an E) (or later) option follows: not a four-option question
    options = {}
    for j, m in enumerate(chosen):
        end = chosen[j + 1].start() if j + 1 < 4 else len(text)
        options[m.group(1).upper()] = text[m.end() : end].strip()
    return text[: chosen[0].start()].strip(), options


def _abcd_runs(marks: list[re.Match[str]]) -> list[list[re.Match[str]]]:
    return [marks[i : i + 4] for i in range(len(marks) - 3)
            if [m.group(1).upper() for m in marks[i : i + 4]] == list(LETTERS)]


def _marker_style(match: re.Match[str]) -> str:
    marker = match.group(0).strip()
    return re.sub(r"[a-h]", "x", re.sub(r"[A-H]", "X", marker))


def _options_from(value: Any) -> dict[str, str] | None:
    if isinstance(value, Mapping):
        if not all(_scalar_text(v) for v in value.values()):
            return None  # an option that is not text (null, a list, an object)
        return {str(k).strip().strip("()").upper(): str(v).strip() for k, v in value.items()}
    if isinstance(value, list):
        if not all(_scalar_text(v) for v in value):
            return None
        options: dict[str, str] = {}
        for index, item in enumerate(value):
            _stem, inline = split_inline_options(str(item))
            if len(inline) == 0:
                match = re.match(r"^\(?([A-Da-d])[\)\.:]\s*(.*)$", str(item).strip(), re.DOTALL)
                key, text = (match.group(1).upper(), match.group(2)) if match else (
                    LETTERS[index] if index < 4 else str(index), str(item))
                options[key] = text.strip()
            else:
                options.update(inline)
        return options
    if isinstance(value, str):
        _, inline = split_inline_options(value)
        return inline or None
    return None


_DOC_REFERENCE = re.compile(
    r"\b(?:the|this|that|above|given|provided|following|attached|accompanying)\s+"
    r"(?:document|passage|excerpt|paragraph|source\s+text|"
    r"text(?!\s+(?:editor|message|box|file|field|book))|"
    r"article(?!\s+of\b)|context(?!\s+of\b))s?\b"
    r"|\baccording\s+to\s+the\s+(?:author|writer|study|report|passage|text|document|article)\b"
    r"|\bbased\s+on\s+the\s+(?:information|data|details|facts)\s+"
    r"(?:given|provided|above|presented|described)\b"
    r"|\b(?:described|mentioned|stated|discussed|given)\s+(?:above|earlier|previously)\b"
    r"|\bin\s+the\s+(?:study|experiment|story|paper|report|survey)\s+"
    r"(?:described|mentioned|discussed)\b",
    re.IGNORECASE,
)
_BOOLEAN = {"true", "false", "yes", "no"}


def refers_to_document(question: str) -> bool:
    """Whether a question points at a source text the Reasoner will not see."""
    return bool(_DOC_REFERENCE.search(question))


def _balanced(text: str) -> bool:
    depth = {"(": 0, "[": 0, "{": 0}
    closing = {")": "(", "]": "[", "}": "{"}
    for char in text:
        if char in depth:
            depth[char] += 1
        elif char in closing:
            depth[closing[char]] -= 1
            if depth[closing[char]] < 0:
                return False
    return all(v == 0 for v in depth.values())


_MATH_WORDS = frozenset([
    "sin", "cos", "tan", "cot", "sec", "csc", "sinh", "cosh", "tanh", "arcsin", "arccos",
    "arctan", "log", "exp", "sqrt", "max", "min", "gcd", "lcm", "mod", "det", "deg", "lim", "sgn",
    "abs", "floor", "ceil", "erf", "inf", "sup"
])


def expression_is_wellformed(value: str) -> bool:
    """A cheap, safe syntactic check that ``value`` looks like one math expression.

    Non-empty, balanced brackets, at most :data:`MAX_ANSWER_CHARS` characters, at least one letter
    or digit, no two operators in a row and no trailing operator, and no plain word of three or
    more letters other than function names (``sin``, ``log``, ``gcd``, ...) outside ``\\text{}``.
    It is a check of form, not a full parse; nothing is evaluated.
    """
    text = value.strip().strip("$").strip()
    if not text or len(text) > MAX_ANSWER_CHARS or not _balanced(text):
        return False
    if not re.search(r"[A-Za-z0-9]", text):
        return False
    if re.search(r"[+*/^=<>]\s*[*/^=<>]|[+\-*/^=]\s*$|^\s*[*/^=]", text.replace("**", "^")):
        return False  # two operators in a row, or an expression ending in an operator
    plain = re.sub(r"\\(?:text|mathrm|operatorname)\s*\{[^{}]*\}|\\[A-Za-z]+", " ", text)
    words = re.findall(r"[A-Za-z]{3,}", plain)
    return all(w.lower() in _MATH_WORDS for w in words)


def check_answer_type(answer: str, answer_type: str) -> Reason | None:
    """``None`` when ``answer`` is a well-formed value of ``answer_type``, else the reason code."""
    text = answer.strip()
    if answer_type == "integer":
        return None if parse_integer(text) is not None else "type_mismatch"
    if answer_type == "float":
        return None if parse_float(text) is not None else "type_mismatch"
    if answer_type == "boolean":
        return None if text.lower().strip(".") in _BOOLEAN else "type_mismatch"
    if answer_type == "string":
        return "string_too_long" if len(text.split()) > MAX_STRING_WORDS else None
    if answer_type == "expression":
        return None if expression_is_wellformed(text) else "type_mismatch"
    return "bad_answer_type"


# --- the parser ---------------------------------------------------------------------------------

_MCQ_QUESTION_KEYS = ("multiple_choice_question", "mcq_question")
_MCQ_ANSWER_KEYS = ("multiple_choice_correct", "correct_answer", "correct_option")
_METADATA_KEYS = (
    "identified_answer", "answer_quote", "hardening_process", "self_test_solution",
    "question_difficulty", "identified_information", "relevant_quotes",
    "step_by_step_solution", "difficulty_level",
)


def _first(payload: Mapping[str, Any], keys: tuple[str, ...]) -> Any:
    for key in keys:
        if key in payload:
            return payload[key]
    return None


def _scalar_text(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return str(value)
    return None


def _letter_of(text: str) -> str:
    """The option letter a Challenger's answer names: ``B``, ``(B)``, ``B)``, ``B) 42``."""
    stripped = text.strip()
    match = re.match(r"^\(?([A-Da-d])(?:[\).:](?:\s.*)?)?$", stripped, re.DOTALL)
    return match.group(1).upper() if match else stripped.upper()


def _detect_kind(payload: Mapping[str, Any], requested: TaskFormat | None) -> TaskFormat:
    if requested is not None:
        return requested
    if _first(payload, _MCQ_QUESTION_KEYS) is not None or "options" in payload:
        return "mcq"
    if str(payload.get("answer_type", "")).strip().lower() in ("mcq", "mcq_letter", "letter"):
        return "mcq"
    question = payload.get("question")
    answer = _scalar_text(payload.get("answer"))
    letter_answer = answer is not None and _letter_of(answer) in LETTERS
    if isinstance(question, str) and letter_answer and len(split_inline_options(question)[1]) == 4:
        return "mcq"
    return "free_form"


def parse_challenger_output(
    text: Any,
    kind: TaskFormat | None = None,
    answer_type: AnswerType | None = None,
    *,
    document_id: str | None = None,
) -> ParseResult:
    """Validate a Challenger output and build its :class:`Task`, or say why it is invalid.

    Args:
        text: the raw model output (anything; non-strings are rejected as ``empty``).
        kind: the format asked of the Challenger; an output of the other format is ``wrong_kind``.
            ``None`` accepts either, detected from the fields.
        answer_type: the free-form answer type asked for; another declared type is
            ``wrong_answer_type``. ``None`` takes the declared type (``string`` if none).
        document_id: recorded on the task.
    """
    if not isinstance(text, str) or not text.strip():
        return _reject("empty", "the output is empty")
    if len(text) > MAX_OUTPUT_CHARS:
        return _reject("too_long", f"the output has {len(text)} characters")
    raw = text
    objects = json_objects(text)
    payload = next((o for o in objects if _has_task_fields(o)), None)
    if payload is None:
        payload = from_tags(text) or (objects[0] if objects else None)
    if payload is None and "{" in text:
        return _reject("bad_json", "a '{' is present but no JSON object could be decoded")
    if payload is None:
        return _reject("no_json", "no JSON object and no <question>/<answer> tags found")
    detected = _detect_kind(payload, None)
    if kind is not None and detected != kind and _has_task_fields(payload):
        return _reject("wrong_kind", f"asked for a {kind} task, the output is {detected}")
    final_kind = kind or detected
    result = _parse_mcq(payload) if final_kind == "mcq" else _parse_free_form(payload, answer_type)
    if isinstance(result, ParseResult):
        return result
    metadata = {k: payload[k] for k in _METADATA_KEYS if k in payload}
    return ParseResult(task=result.model_copy(
        update={"raw": raw, "document_id": document_id, "metadata": metadata}))


def _has_task_fields(payload: Mapping[str, Any]) -> bool:
    return any(k in payload for k in ("question", "answer", *_MCQ_QUESTION_KEYS, *_MCQ_ANSWER_KEYS))


_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad"))


def has_content(answer: str) -> bool:
    """Whether an answer holds something to check: a character that is not whitespace, an
    invisible (zero-width) character, a control or format character (NUL, U+200E) or
    punctuation (``"."``, ``"-"``, ``"?!"``, ``"\\x00"`` hold none; ``"∞"`` and ``"π"`` do)."""
    visible = answer.translate(_INVISIBLE)
    return any(not ch.isspace() and unicodedata.category(ch) not in _NO_CONTENT
               for ch in visible)


# punctuation, and control, format, surrogate and unassigned code points (private use counts)
_NO_CONTENT = frozenset({"Pc", "Pd", "Ps", "Pe", "Pi", "Pf", "Po", "Cc", "Cf", "Cs", "Cn"})


def _check_question(question: Any) -> ParseResult | str:
    if question is None:
        return _reject("missing_field", "the question field is missing")
    if not isinstance(question, str):
        return _reject("question_not_string", f"the question is a {type(question).__name__}")
    question = question.strip()
    if not question:
        return _reject("missing_field", "the question is empty")
    if not valid_unicode(question):
        return _reject("bad_unicode", "the question holds a lone surrogate (an escape such as "
                       "\\ud83d without its pair)")
    if len(question) > MAX_QUESTION_CHARS:
        return _reject("too_long", f"the question has {len(question)} characters")
    if refers_to_document(question):
        return _reject("refers_to_document", "the question mentions a source text")
    return question


def _parse_mcq(payload: Mapping[str, Any]) -> Task | ParseResult:
    question = _first(payload, _MCQ_QUESTION_KEYS)
    if question is None:
        question = payload.get("question")
    letter_value = _first(payload, _MCQ_ANSWER_KEYS)
    if letter_value is None:
        letter_value = payload.get("answer")
    if isinstance(question, str):
        stem, options = split_inline_options(question)
    else:
        stem, options = question, {}
    if "options" in payload:
        options = _options_from(payload["options"]) or {}
    checked = _check_question(stem)
    if isinstance(checked, ParseResult):
        return checked
    if letter_value is None:
        return _reject("missing_field", "the correct letter is missing")
    letter_text = _scalar_text(letter_value)
    if letter_text is None:
        return _reject("answer_not_scalar", "the correct letter is not a scalar")
    letter = _letter_of(letter_text)
    if sorted(options) != list(LETTERS) or any(not v for v in options.values()):
        return _reject("not_four_options", f"found options {sorted(options)}, need A, B, C, D")
    if not all(valid_unicode(v) for v in options.values()):
        return _reject("bad_unicode", "an option is not valid Unicode (a lone surrogate)")
    if any(refers_to_document(v) for v in options.values()):
        return _reject("refers_to_document", "an option mentions a source text")
    if len({v.strip().lower() for v in options.values()}) < 4:
        return _reject("duplicate_options", "two options have the same text")
    if letter not in LETTERS:
        return _reject("bad_letter", f"the correct answer {letter_text!r} is not one of A-D")
    return Task(kind="mcq", question=checked, answer=letter, answer_type="mcq_letter",
                options={k: options[k] for k in LETTERS})


def _parse_free_form(payload: Mapping[str, Any], requested: AnswerType | None
                     ) -> Task | ParseResult:
    checked = _check_question(payload.get("question"))
    if isinstance(checked, ParseResult):
        return checked
    if "answer" not in payload or payload["answer"] is None:
        return _reject("missing_field", "the answer field is missing")
    raw = payload["answer"]
    if isinstance(raw, float) and not math.isfinite(raw):  # JSON NaN, Infinity or 1e999
        return _reject("answer_not_finite", f"the answer is the number {raw}")
    answer = _scalar_text(raw)
    if answer is None:
        return _reject("answer_not_scalar", f"the answer is a {type(raw).__name__}")
    answer = answer.strip()
    if not answer:
        return _reject("missing_field", "the answer is empty")
    if not valid_unicode(answer):
        return _reject("bad_unicode", "the answer holds a lone surrogate")
    if not has_content(answer):
        return _reject("answer_no_content", f"the answer {answer!r} is only punctuation or "
                       "invisible characters: nothing can be checked against it")
    if len(answer) > MAX_ANSWER_CHARS:
        return _reject("too_long", f"the answer has {len(answer)} characters")
    declared = str(payload.get("answer_type") or "").strip().lower() or None
    if declared is not None and declared not in FREE_FORM_TYPES:
        return _reject("bad_answer_type",
                       f"answer_type {declared!r} is not one of {', '.join(FREE_FORM_TYPES)}")
    if requested is not None and declared is not None and declared != requested:
        return _reject("wrong_answer_type",
                       f"asked for {requested}, the output declares {declared}")
    final_type = requested or declared or "string"
    problem = check_answer_type(answer, final_type)
    if problem is not None:
        return _reject(problem, f"{answer[:80]!r} is not a valid {final_type} answer")
    return Task(kind="free_form", question=checked, answer=answer,
                answer_type=final_type)
