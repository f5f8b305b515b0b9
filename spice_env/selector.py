"""The task-type selector: the paper's optional first Challenger step, which reads the document and
says which kind of question it supports.

With ``game.format_choice="selector"`` every document starts with this step (a Challenger turn of
its own); its answer picks the task format of the document's questions:

* only one format judged suitable: that format;
* both suitable: one of the two at random (the runner's or environment's generator);
* neither suitable, or an output that does not parse: an invalid choice — the selector step earns
  ρ, as an invalid question does, and the document gets no question.

Two output forms are accepted, one per prompt style: the paper style's JSON
``{suitable_for_mcq, suitable_for_free_form, best_answer_type, reason}``, and the compact style's
tags ``<mcq>yes</mcq><free_form>no</free_form><answer_type>integer</answer_type>`` (the prompt
prefills ``<mcq>``). ``best_answer_type`` is recorded, not enforced: the free-form prompt leaves the
answer type to the Challenger.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from spice_env.payload import find_json_object, tag
from spice_env.tasks import MAX_OUTPUT_CHARS, AnswerType
from spice_env.types import TaskFormat

SelectorReason = Literal["empty", "too_long", "no_json", "missing_field", "bad_answer_type",
                         "no_suitable_format"]
SELECTOR_REASONS: tuple[str, ...] = get_args(SelectorReason)
"""Every reason code an invalid selector output can carry."""

SELECTOR_FORMAT = "select"
"""The ``task_format`` of the selector step's observation."""

_YES, _NO = ("true", "yes", "y"), ("false", "no", "n")


class TaskTypeSelection(BaseModel):
    """The task-type selector's judgement of a document."""

    model_config = ConfigDict(frozen=True)

    suitable_for_mcq: bool = Field(description="Whether the document supports a good MCQ.")
    suitable_for_free_form: bool = Field(description="Whether it supports a free-form question.")
    best_answer_type: AnswerType | None = Field(
        default=None, description="The free-form answer type the document suits best."
    )
    reason: str = Field(default="", description="The selector's short justification.")

    @property
    def formats(self) -> tuple[TaskFormat, ...]:
        """The task formats judged suitable, MCQ first."""
        found: list[TaskFormat] = []
        if self.suitable_for_mcq:
            found.append("mcq")
        if self.suitable_for_free_form:
            found.append("free_form")
        return tuple(found)


class SelectionResult(BaseModel):
    """The outcome of parsing a selector output: a selection, or why there is none."""

    model_config = ConfigDict(frozen=True)

    selection: TaskTypeSelection | None = None
    reason: SelectorReason | None = None
    detail: str = ""

    @property
    def valid(self) -> bool:
        """Whether the output parsed and judged at least one format suitable."""
        return self.selection is not None and bool(self.selection.formats)


def _as_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        word = value.strip().strip(".").strip().lower()
        if word in _YES or word in _NO:
            return word in _YES
    return None


def _payload(text: str) -> dict[str, Any] | None:
    """The selector's fields, from a JSON object or from the compact style's tags."""
    found = find_json_object(text, required=("suitable_for_mcq",)) if "{" in text else None
    if found is not None:
        return found
    mcq, free = tag(text, "mcq", implicit_open=True), tag(text, "free_form")
    if mcq is None and free is None:
        return None
    payload: dict[str, Any] = {"suitable_for_mcq": mcq, "suitable_for_free_form": free}
    for name, key in (("answer_type", "best_answer_type"), ("reason", "reason")):
        value = tag(text, name)
        if value is not None:
            payload[key] = value.strip()
    return payload


def parse_task_type_selection(text: Any) -> SelectionResult:
    """Parse a selector output (JSON or tags, see the module docstring); never raises on model
    output. Both formats judged unsuitable is the invalid ``no_suitable_format``."""
    if not isinstance(text, str) or not text.strip():
        return SelectionResult(reason="empty", detail="the output is empty")
    if len(text) > MAX_OUTPUT_CHARS:
        return SelectionResult(reason="too_long", detail=f"the output has {len(text)} characters")
    payload = _payload(text)
    if payload is None:
        return SelectionResult(reason="no_json",
                               detail="no JSON object and no <mcq>/<free_form> tags found")
    mcq = _as_bool(payload.get("suitable_for_mcq"))
    free = _as_bool(payload.get("suitable_for_free_form"))
    if mcq is None or free is None:
        return SelectionResult(reason="missing_field",
                               detail="suitable_for_mcq / suitable_for_free_form must be booleans")
    best = str(payload.get("best_answer_type") or "").strip().lower() or None
    if best is not None and best not in get_args(AnswerType):
        return SelectionResult(reason="bad_answer_type",
                               detail=f"unknown answer type {best[:40]!r}")
    selection = TaskTypeSelection(suitable_for_mcq=mcq, suitable_for_free_form=free,
                                  best_answer_type=best,
                                  reason=str(payload.get("reason", ""))[:1000])
    if not selection.formats:
        return SelectionResult(selection=selection, reason="no_suitable_format",
                               detail="neither format was judged suitable")
    return SelectionResult(selection=selection)


def chosen_format(result: SelectionResult, rng: np.random.Generator) -> TaskFormat | None:
    """The task format a selector output picks (None for an invalid choice): the one format
    judged suitable, or one of the two at random when both are."""
    if not result.valid or result.selection is None:
        return None
    formats = result.selection.formats
    return formats[0] if len(formats) == 1 else ("mcq" if rng.random() < 0.5 else "free_form")
