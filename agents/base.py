"""The small contracts every agent and backend follows."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from spice_env.types import Observation, Role

__all__ = ["Agent", "Backend", "ChatPrompt", "FinishReason", "Generation", "Observation", "Role",
           "SamplingConfig", "SleepingBackend", "TrainableSample"]

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class ChatPrompt:
    """A prompt as chat messages, for backends that apply the chat template themselves.

    Attributes:
        messages: ``{"role", "content"}`` dictionaries.
        assistant_prefix: text the assistant turn starts with (the prompt style's prefill).
    """

    messages: tuple[Mapping[str, str], ...]
    assistant_prefix: str = ""


@dataclass(frozen=True)
class Generation:
    """One sampled completion with what RL needs.

    Attributes:
        text: the decoded completion (without the stop token).
        prompt_ids: the prompt's token ids, as the model saw them (empty when a remote server
            applied its own chat template).
        completion_ids: the sampled token ids, including the stop token when there was one
            (empty when the backend cannot know them).
        logprobs: the log-probability of each sampled token under the model (raw logits, before
            temperature and top-p), one per ``completion_ids`` entry.
        finish_reason: ``stop`` (a stop token was sampled) or ``length`` (``max_new_tokens`` hit).
    """

    text: str
    prompt_ids: tuple[int, ...]
    completion_ids: tuple[int, ...]
    logprobs: tuple[float, ...]
    finish_reason: FinishReason


@runtime_checkable
class TrainableSample(Protocol):
    """What a sample needs to be trained on: the token ids the model saw and sampled, and the
    log-probability of each sampled token (a :class:`Generation` has them; a remote server's
    chat answer or a plain string does not)."""

    @property
    def prompt_ids(self) -> Sequence[int]: ...

    @property
    def completion_ids(self) -> Sequence[int]: ...

    @property
    def logprobs(self) -> Sequence[float]: ...


class SamplingConfig(BaseModel):
    """How one role samples."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    temperature: float = Field(default=1.0, ge=0, description="0 means greedy decoding.")
    top_p: float = Field(default=1.0, gt=0, le=1, description="Nucleus sampling mass.")
    max_new_tokens: int = Field(default=256, ge=1, description="Completion length limit.")
    n: int = Field(default=1, ge=1, description="Samples per prompt when the caller gives none.")
    seed: int | None = Field(default=None, description="Seed of the sampling generator.")


@runtime_checkable
class Agent(Protocol):
    """Anything that plays SPICE: acts on one observation, or generates for a batch.

    ``act`` returns one string for a challenger observation and a list of strings (the G answers)
    for a reasoner observation. ``generate`` is the batched form used by
    :class:`spice_env.runner.SpiceRunner`: ``n`` samples for each observation.
    """

    def act(self, observation: Observation, info: Mapping[str, Any] | None = None
            ) -> str | list[str]:
        ...

    def generate(self, observations: Sequence[Observation], n: int
                 ) -> Sequence[Sequence[Generation | str]]:
        ...


class Backend(Protocol):
    """A generation engine: token ids in, :class:`Generation` objects out.

    A backend whose ``prompt_format`` attribute is ``"messages"`` (a chat API that applies its own
    template) takes :class:`ChatPrompt` objects instead of token ids; ``tokenizer`` may then be
    ``None``.
    """

    tokenizer: Any

    def generate(self, prompts: Sequence[Sequence[int]], sampling: SamplingConfig, n: int
                 ) -> list[list[Generation]]:
        """``n`` samples for each prompt (lists of token ids)."""
        ...

    def update_weights(self, named_tensors: Any) -> None:
        """Load new weights (after an optimiser step)."""
        ...

    def close(self) -> None:
        """Release the engine's resources."""
        ...


@runtime_checkable
class SleepingBackend(Protocol):
    """The optional part of the backend contract: a backend that can free its generation
    memory while the trainer updates the weights (vLLM's sleep mode) follows it too."""

    def sleep(self) -> None:
        """Free generation memory until the next generation or weight update."""
        ...

    def wake(self) -> None:
        """Take the memory back (done by the backend itself when it is next used)."""
        ...
