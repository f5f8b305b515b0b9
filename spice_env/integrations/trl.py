"""This library's verifier as a reward function for TRL's ``GRPOTrainer``.

``GRPOTrainer(reward_funcs=[verifier_reward()], ...)`` calls the function with the prompts, the
completions and every other dataset column, one value per completion::

    reward(prompts=[...], completions=[...], answer=[...], answer_type=[...], **other_columns)

Completions may be strings or chat messages (the last assistant message counts). The gold answer
is read from the ``answer`` column and its type from ``answer_type`` (names configurable); a row
without an answer type gets one from its gold (``mcq_letter`` when the row has ``options``,
``integer`` for a bare integer, else ``expression``). A row without a gold answer gets ``None``,
which TRL reads as "this reward does not apply". The reward is 1.0 for a correct answer, else 0.0
(plus ``format_weight`` for a boxed one). Nothing of TRL is imported here: any trainer that calls
reward functions this way can use it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, get_args

from spice_env.tasks import LETTERS, AnswerType, Task
from spice_env.verify import Verifier, VerifierConfig

ANSWER_TYPES: tuple[str, ...] = get_args(AnswerType)


def completion_text(completion: Any) -> str:
    """The text of one completion: a string, or chat messages (the last assistant message's
    content; a content given as parts keeps its text parts)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Mapping):
        completion = [completion]
    if isinstance(completion, Sequence):
        messages = [m for m in completion if isinstance(m, Mapping)]
        spoken = [m for m in messages if m.get("role", "assistant") == "assistant"] or messages
        if spoken:
            content = spoken[-1].get("content", "")
            if isinstance(content, str):
                return content
            if isinstance(content, Sequence):
                return "".join(str(part.get("text", "")) for part in content
                               if isinstance(part, Mapping))
    return ""


def _options(value: Any) -> dict[str, str] | None:
    if isinstance(value, Mapping) and value:
        return {str(k).strip().upper(): str(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str) and value:
        letters = LETTERS if len(value) <= len(LETTERS) else [chr(65 + i) for i in range(10)]
        return {letter: str(text) for letter, text in zip(letters, value, strict=False)}
    return None


def infer_answer_type(gold: str, options: Mapping[str, str] | None = None) -> AnswerType:
    """The answer type of a row that names none: ``mcq_letter`` with options, ``integer`` for a
    bare integer, else ``expression``."""
    if options:
        return "mcq_letter"
    return "integer" if re.fullmatch(r"\s*[+-]?\d+\s*", gold) else "expression"


def gold_task(gold: str, answer_type: Any = None, options: Any = None, *, row: int | None = None
              ) -> Task:
    """A question-less :class:`~spice_env.tasks.Task` that checks answers against ``gold``: its
    ``answer_type`` as given, else inferred (:func:`infer_answer_type`); ``options`` as a
    mapping by letter or a list. ``row`` names the row in the error for an unknown type."""
    choices = _options(options)
    kind = (str(answer_type).strip().lower() if answer_type not in (None, "")
            else infer_answer_type(gold, choices))
    if kind not in ANSWER_TYPES:
        where = f"row {row}: " if row is not None else ""
        raise ValueError(f"{where}answer_type {answer_type!r} is not one of "
                         f"{', '.join(ANSWER_TYPES)}")
    if kind == "mcq_letter":
        return Task(kind="mcq", question="", answer=gold.strip().upper(),
                    answer_type="mcq_letter", options=choices)
    return Task(kind="free_form", question="", answer=gold, answer_type=kind)


class VerifierReward:
    """A TRL-style reward function backed by a :class:`~spice_env.verify.Verifier`; see the
    module docstring. Close it (or use it as a context manager) to stop the verifier's workers
    when it created them."""

    def __init__(self, verifier: Verifier | None = None, *, answer_column: str = "answer",
                 answer_type_column: str = "answer_type", options_column: str = "options",
                 format_weight: float = 0.0, name: str = "spice_verifier",
                 config: VerifierConfig | None = None) -> None:
        if format_weight < 0:
            raise ValueError(f"format_weight must be >= 0, got {format_weight}")
        self._verifier = verifier
        self._config = config
        self._owns = verifier is None
        self.answer_column, self.answer_type_column = answer_column, answer_type_column
        self.options_column, self.format_weight = options_column, format_weight
        self.__name__ = name  # TRL logs each reward function under its name

    @property
    def verifier(self) -> Verifier:
        """The verifier (created on first use when none was given)."""
        if self._verifier is None:
            self._verifier = Verifier(self._config)
        return self._verifier

    def __call__(self, prompts: Sequence[Any] | None = None,
                 completions: Sequence[Any] | None = None, **columns: Any
                 ) -> list[float | None]:
        if completions is None:
            raise TypeError("the reward function needs completions=[...]")
        count = len(completions)
        golds = self._column(columns, self.answer_column, count, required=True)
        types = self._column(columns, self.answer_type_column, count)
        options = self._column(columns, self.options_column, count)
        pairs: list[tuple[Task, str]] = []
        where: list[int] = []
        for index, completion in enumerate(completions):
            gold = golds[index]
            if gold is None or not str(gold).strip():
                continue
            pairs.append((gold_task(str(gold), types[index], options[index], row=index),
                          completion_text(completion)))
            where.append(index)
        rewards: list[float | None] = [None] * count
        for index, verdict in zip(where, self.verifier.verify_many(pairs), strict=True):
            bonus = self.format_weight if verdict.outcome != "no_answer" else 0.0
            rewards[index] = (1.0 if verdict.correct else 0.0) + bonus
        return rewards

    @staticmethod
    def _column(columns: Mapping[str, Any], name: str, count: int, *, required: bool = False
                ) -> list[Any]:
        if name not in columns or columns[name] is None:
            if required:
                given = ", ".join(sorted(k for k in columns if not k.startswith("trainer")))
                raise KeyError(f"the dataset has no {name!r} column with the gold answers "
                               f"(columns given: {given or 'none'}); name it with "
                               "answer_column=...")
            return [None] * count
        values = list(columns[name])
        if len(values) != count:
            raise ValueError(f"column {name!r} has {len(values)} values for {count} completions")
        return values

    def close(self) -> None:
        """Stop the verifier's workers if this reward created the verifier."""
        if self._owns and self._verifier is not None:
            self._verifier.close()

    def __enter__(self) -> VerifierReward:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def verifier_reward(verifier: Verifier | None = None, **settings: Any) -> VerifierReward:
    """A reward function for ``GRPOTrainer(reward_funcs=[...])`` (see :class:`VerifierReward`
    for the settings: the column names, ``format_weight``, ``name``, a ``VerifierConfig``)."""
    return VerifierReward(verifier, **settings)
