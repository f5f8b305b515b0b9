"""The types shared across the seam between the environment and the agents.

* :data:`Role` — the two roles that act: ``challenger`` and ``reasoner``;
* :data:`Turn` — what an observation's ``role`` field says: a role, or ``waiting`` / ``done``;
* :data:`TaskFormat` — the Challenger's task formats, ``mcq`` and ``free_form``;
* :class:`Observation` — the observation dict of both roles, whose fields the Gymnasium
  observation space and the conformance checker's required keys are derived from
  (:data:`OBSERVATION_KEYS`, :func:`observation_limits`).
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Literal, TypedDict

Role = Literal["challenger", "reasoner"]
"""A role that acts: the Challenger writes questions, the Reasoner answers them."""

Turn = Literal["challenger", "reasoner", "waiting", "done"]
"""Whose turn an observation is: a role's, or nobody's (``waiting`` in a two-agent view while the
other agent acts, ``done`` after the episode)."""

TaskFormat = Literal["mcq", "free_form"]
"""``mcq``: four options A-D, the answer a letter; ``free_form``: a typed answer."""

ROLES: tuple[Role, ...] = ("challenger", "reasoner")
TASK_FORMATS: tuple[TaskFormat, ...] = ("mcq", "free_form")


@dataclass(frozen=True)
class MaxLength:
    """The longest text an observation field may hold (its space's ``max_length``)."""

    characters: int


class Observation(TypedDict):
    """What both roles observe (every key is always present; fields that do not apply to a turn
    are empty)."""

    role: Annotated[Turn, MaxLength(16)]
    """Whose turn it is."""
    prompt: str
    """The prompt rendered as plain text (the base-model template)."""
    messages: tuple[Mapping[str, str], ...]
    """The prompt as chat messages (``{"role", "content"}``)."""
    assistant_prefix: Annotated[str, MaxLength(256)]
    """Text the assistant's turn starts with (the prompt style's prefill)."""
    document: str
    """The document (the Challenger's turn of a grounded game only)."""
    document_id: Annotated[str, MaxLength(128)]
    """The document's id (both turns)."""
    question: str
    """The question (the Reasoner's turn only)."""
    task_format: Annotated[str, MaxLength(16)]
    """``mcq`` or ``free_form`` (empty when no task is asked for)."""


OBSERVATION_KEYS: tuple[str, ...] = tuple(Observation.__annotations__)
"""The keys every observation carries, in order."""


def observation_limits() -> dict[str, int | None]:
    """Each observation field's maximum length (None: the text space's default)."""
    hints = typing.get_type_hints(Observation, include_extras=True)
    limits: dict[str, int | None] = {}
    for key in OBSERVATION_KEYS:
        found = [m.characters for m in getattr(hints[key], "__metadata__", ())
                 if isinstance(m, MaxLength)]
        limits[key] = found[0] if found else None
    return limits
