"""The rules of one SPICE episode, shared by the Gymnasium env, the PettingZoo view and the
batched runner: build observations, parse the Challenger, score the Reasoner."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, field_validator, model_validator

from spice_env.corpus import Document
from spice_env.labels import majority_labels
from spice_env.prompting import (
    PromptStyle,
    RenderedPrompt,
    challenger_prefix,
    challenger_prompt,
    reasoner_prompt,
    selector_prefix,
    selector_prompt,
)
from spice_env.rewards import (
    DEFAULT_RHO,
    ChallengerReward,
    checked_reward,
    get_challenger_reward,
    reasoner_reward,
)
from spice_env.selector import (
    SELECTOR_FORMAT,
    SelectionResult,
    chosen_format,
    parse_task_type_selection,
)
from spice_env.tasks import ParseResult, Task, parse_challenger_output
from spice_env.types import Observation, TaskFormat, Turn
from spice_env.verify import Verdict, Verifier

TaskFormats = Literal["mcq", "free_form", "both"]


class GameConfig(BaseModel):
    """The settings of SPICE episodes (also the keyword arguments of ``SpiceCorpus-v0``)."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True,
                              allow_inf_nan=False)

    group_size: int = Field(default=8, ge=1, description="G: Reasoner answers per valid question.")
    challenger_reward: str | ChallengerReward = Field(
        default="variance",
        description="A name in `CHALLENGER_REWARDS` (`variance`, `absolute_zero`, `r_zero`, "
        "`threshold`, or one you registered) or a callable on the G correctness labels.",
    )
    rho: float = Field(default=DEFAULT_RHO, description="The Challenger's reward for an invalid "
                       "question (the paper's -0.1).")
    rho_schedule: tuple[tuple[NonNegativeInt, float], ...] = Field(
        default=(), description="ρ by iteration instead of the constant `rho`: `(iteration, ρ)` "
        "points, iterations increasing, linear in between and constant beyond the ends "
        "(e.g. `[[0, 0.0], [50, -0.1]]` phases the penalty in); `rho` must then be left at its "
        "default. Empty: `rho` throughout.")
    task_formats: TaskFormats = Field(
        default="both", description="Which task formats the Challenger is asked for: `mcq`, "
        "`free_form`, or `both` (one of the two at random per document).")
    prompt_style: PromptStyle = Field(
        default="paper", description="`paper` (8-step instruction, JSON output) or `compact` "
        "(tag format with a worked example, for small models).")
    grounding: bool = Field(
        default=True, description="Show the document to the Challenger; False is the "
        "ungrounded ablation (the Challenger writes from its own knowledge).")
    reasoner_format_weight: float = Field(
        default=0.0, ge=0, description="Extra Reasoner reward for a boxed answer (0 in the paper).")
    format_choice: Literal["random", "selector"] = Field(
        default="random", description="How a document's task format is picked: `random` (per "
        "`task_formats`), or `selector`: the paper's Step 0, a Challenger turn that reads the "
        "document and judges which formats it supports; an invalid choice earns ρ.")
    label_source: Literal["gold", "majority"] = Field(
        default="gold", description="What the Reasoner's answers are judged against: the "
        "Challenger's `gold` answer (SPICE), or the `majority` of the G answers (R-Zero: no gold; "
        "equivalence by the verifier, ties to the first answer).")
    repetition_penalty: bool = Field(
        default=False, description="R-Zero's repetition penalty: the valid questions of an "
        "iteration are clustered by BLEU similarity and each Challenger reward is reduced by "
        "its cluster's size over the number of Challenger outputs scored (runner only).")

    @field_validator("challenger_reward")
    @classmethod
    def _known_reward(cls, value: str | ChallengerReward) -> str | ChallengerReward:
        get_challenger_reward(value)  # raises with the list of valid names
        return value

    @model_validator(mode="after")
    def _consistent(self) -> GameConfig:
        if self.format_choice == "selector" and (self.task_formats != "both"
                                                 or not self.grounding):
            raise ValueError("format_choice='selector' reads the document to choose between "
                             "both formats: it needs task_formats='both' and grounding=True")
        points = [i for i, _ in self.rho_schedule]
        if any(b <= a for a, b in pairwise(points)):
            raise ValueError(f"rho_schedule iterations must increase, got {points}")
        if self.rho_schedule and self.rho != DEFAULT_RHO:
            raise ValueError(f"rho={self.rho} and a rho_schedule: give one (a schedule sets ρ "
                             "throughout)")
        return self

    def rho_at(self, iteration: int) -> float:
        """ρ at ``iteration`` (0-based): ``rho``, or the schedule's value there."""
        points = self.rho_schedule
        if not points:
            return self.rho
        if iteration <= points[0][0]:
            return float(points[0][1])
        for (start, low), (end, high) in pairwise(points):
            if iteration <= end:
                return float(low + (high - low) * (iteration - start) / (end - start))
        return float(points[-1][1])


@dataclass(frozen=True)
class ReasonerOutcome:
    """The scored answers of the Reasoner to one valid question."""

    verdicts: tuple[Verdict, ...]
    correct: tuple[bool, ...]
    pass_rate: float
    challenger_reward: float
    reasoner_rewards: tuple[float, ...]
    majority: str | None = None
    """The majority answer, when the answers are judged against it (``label_source="majority"``);
    ``correct`` then says which answers agree with it, and ``verdicts`` still compare each answer
    with the Challenger's gold answer."""


class SpiceGame:
    """Observations, parsing and scoring for SPICE episodes under one :class:`GameConfig`."""

    def __init__(self, config: GameConfig, verifier: Verifier) -> None:
        self.config = config
        self.verifier = verifier
        self.reward_fn = get_challenger_reward(config.challenger_reward)

    def choose_format(self, rng: np.random.Generator) -> TaskFormat:
        """The task format for a new document."""
        return choose_format(self.config, rng)

    def selector_observation(self, document: Document) -> Observation:
        """The observation of the selector step (``format_choice="selector"``): the document and
        the task-type selector's prompt; its ``task_format`` is ``select``."""
        rendered = selector_prompt(document.text, self.config.prompt_style)
        return observation("challenger", rendered, document_id=document.id,
                           task_format=SELECTOR_FORMAT, document=document.text)

    def select(self, text: Any, rng: np.random.Generator
               ) -> tuple[SelectionResult, TaskFormat | None]:
        """Parse a selector output (its prefilled prefix put back first) and the task format it
        picks; None for an invalid choice (see :mod:`spice_env.selector`)."""
        result = parse_task_type_selection(
            with_prefix(text, selector_prefix(self.config.prompt_style)))
        return result, chosen_format(result, rng)

    def challenger_rendered(self, document: Document, task_format: TaskFormat) -> RenderedPrompt:
        """The Challenger's prompt for ``document`` (no document when ungrounded)."""
        text = document.text if self.config.grounding else None
        return challenger_prompt(text, task_format, self.config.prompt_style)

    def challenger_observation(self, document: Document, task_format: TaskFormat
                               ) -> Observation:
        """The observation of the Challenger's turn."""
        rendered = self.challenger_rendered(document, task_format)
        return observation(
            "challenger", rendered, document_id=document.id, task_format=task_format,
            document=document.text if self.config.grounding else "",
        )

    def parse(self, text: Any, document: Document, task_format: TaskFormat) -> ParseResult:
        """Validate a Challenger output (the prefilled assistant prefix is put back first)."""
        return parse_challenger_output(
            with_prefix(text, challenger_prefix(self.config.prompt_style)), kind=task_format,
            document_id=document.id)

    def reasoner_rendered(self, task: Task) -> RenderedPrompt:
        """The Reasoner's prompt for ``task``: the question only."""
        return reasoner_prompt(task.reasoner_question(), self.config.prompt_style)

    def reasoner_observation(self, task: Task) -> Observation:
        """The observation of the Reasoner's turn (never any document text)."""
        return observation(
            "reasoner", self.reasoner_rendered(task), document_id=task.document_id or "",
            task_format=task.kind, question=task.reasoner_question(),
        )

    def score(self, task: Task, answers: Sequence[str]) -> ReasonerOutcome:
        """Verify the G answers and compute both roles' rewards."""
        return self.score_many([(task, answers)])[0]

    def score_many(self, questions: Sequence[tuple[Task, Sequence[str]]]
                   ) -> list[ReasonerOutcome]:
        """:meth:`score` for many questions, every verification in one batch."""
        pairs = [(task, answer) for task, answers in questions for answer in answers]
        flat = self.verifier.verify_many(pairs)
        grouped, start = [], 0
        for task, answers in questions:
            grouped.append((task, flat[start:start + len(answers)]))
            start += len(answers)
        if self.config.label_source == "gold":
            return [self.outcome(verdicts) for _, verdicts in grouped]
        labels = majority_labels(self.verifier, grouped)
        return [self.outcome(verdicts, label.correct, label.majority)
                for (_, verdicts), label in zip(grouped, labels, strict=True)]

    def outcome(self, verdicts: Sequence[Verdict], labels: Sequence[bool] | None = None,
                majority: str | None = None) -> ReasonerOutcome:
        """Rewards from verdicts already computed (against the gold answer), or from ``labels``
        (e.g. agreement with the ``majority`` answer) when given."""
        correct = tuple(v.correct for v in verdicts) if labels is None else tuple(labels)
        rewards = tuple(
            reasoner_reward(ok, well_formed=v.outcome != "no_answer",
                            format_weight=self.config.reasoner_format_weight)
            for v, ok in zip(verdicts, correct, strict=True)
        )
        return ReasonerOutcome(
            verdicts=tuple(verdicts), correct=correct,
            pass_rate=sum(correct) / len(correct),
            challenger_reward=checked_reward(self.reward_fn, correct),
            reasoner_rewards=rewards, majority=majority,
        )


def with_prefix(text: Any, prefix: str) -> Any:
    """A reply with the prompt's prefilled assistant ``prefix`` put back in front (a generation
    continues after the prefix, so it is missing from the reply); anything else as it is."""
    if isinstance(text, str) and text.strip() and prefix and not text.lstrip().startswith(prefix):
        return prefix + text
    return text


def choose_format(config: GameConfig, rng: np.random.Generator) -> TaskFormat:
    """The task format for a new document under ``config.task_formats`` (``both``: either, at
    random)."""
    if config.task_formats == "both":
        return "mcq" if rng.random() < 0.5 else "free_form"
    return config.task_formats


def observation(role: Turn, rendered: RenderedPrompt | None = None, *, document_id: str = "",
                task_format: str = "", document: str = "", question: str = "") -> Observation:
    """An :class:`~spice_env.types.Observation` (every key present)."""
    return Observation(
        role=role,
        prompt=rendered.text if rendered else "",
        messages=tuple(dict(m) for m in rendered.messages) if rendered else (),
        assistant_prefix=rendered.assistant_prefix if rendered else "",
        document=document,
        document_id=document_id,
        question=question,
        task_format=task_format,
    )
