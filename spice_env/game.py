"""The rules of one SPICE episode, shared by the Gymnasium env, the PettingZoo view and the
batched runner: build observations, parse the Challenger, score the Reasoner."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from spice_env.corpus import Document
from spice_env.prompting import (
    PromptStyle,
    RenderedPrompt,
    challenger_prefix,
    challenger_prompt,
    reasoner_prompt,
)
from spice_env.rewards import (
    DEFAULT_RHO,
    ChallengerReward,
    checked_reward,
    get_challenger_reward,
    reasoner_reward,
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

    @field_validator("challenger_reward")
    @classmethod
    def _known_reward(cls, value: str | ChallengerReward) -> str | ChallengerReward:
        get_challenger_reward(value)  # raises with the list of valid names
        return value


@dataclass(frozen=True)
class ReasonerOutcome:
    """The scored answers of the Reasoner to one valid question."""

    verdicts: tuple[Verdict, ...]
    correct: tuple[bool, ...]
    pass_rate: float
    challenger_reward: float
    reasoner_rewards: tuple[float, ...]


class SpiceGame:
    """Observations, parsing and scoring for SPICE episodes under one :class:`GameConfig`."""

    def __init__(self, config: GameConfig, verifier: Verifier) -> None:
        self.config = config
        self.verifier = verifier
        self.reward_fn = get_challenger_reward(config.challenger_reward)

    def choose_format(self, rng: np.random.Generator) -> TaskFormat:
        """The task format for a new document."""
        if self.config.task_formats == "both":
            return "mcq" if rng.random() < 0.5 else "free_form"
        return self.config.task_formats

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
        prefix = challenger_prefix(self.config.prompt_style)
        if isinstance(text, str) and text.strip() and prefix and not text.lstrip().startswith(
                prefix):
            text = prefix + text
        return parse_challenger_output(text, kind=task_format, document_id=document.id)

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
        verdicts = self.verifier.verify_many([(task, a) for a in answers])
        return self.outcome(verdicts)

    def outcome(self, verdicts: Sequence[Verdict]) -> ReasonerOutcome:
        """Rewards from verdicts already computed."""
        correct = tuple(v.correct for v in verdicts)
        rewards = tuple(
            reasoner_reward(v.correct, well_formed=v.outcome != "no_answer",
                            format_weight=self.config.reasoner_format_weight)
            for v in verdicts
        )
        return ReasonerOutcome(
            verdicts=tuple(verdicts), correct=correct,
            pass_rate=sum(correct) / len(correct),
            challenger_reward=checked_reward(self.reward_fn, correct),
            reasoner_rewards=rewards,
        )


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
