"""``SpiceCorpus-v0``: the corpus as a two-turn Gymnasium environment.

One episode is one document:

1. ``reset()`` samples a document and returns the **Challenger's** observation (the document and
   its prompt).
2. ``step(challenger_text)`` parses the question. An invalid one ends the episode with reward
   ``rho``. A valid one returns the **Reasoner's** observation: the question only, never any
   document text.
3. ``step(reasoner_texts)`` takes the G answers, verifies them and ends the episode. The step
   reward is the Challenger's reward (the variance reward by default); ``info["rewards"]`` holds
   both roles' rewards: ``{"challenger": float, "reasoner": [G floats]}``.

With ``format_choice="selector"`` the episode starts one step earlier: ``reset()`` returns the
task-type selector's observation (``task_format`` ``"select"``), and ``step(selector_text)``
returns the Challenger's observation for the format it picked, or ends the episode with reward
``rho`` for an invalid choice (``info["invalid_reason"]`` from
:data:`~spice_env.selector.SELECTOR_REASONS`). ``rho`` follows ``game.rho_schedule`` at
:attr:`SpiceCorpusEnv.iteration` (set it from your training loop).

Observations are :class:`~spice_env.types.Observation` dicts, the same for both roles (every key
always present; the observation space is derived from that type).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from spice_env.corpus import (
    DEFAULT_MAX_TOKENS,
    Corpus,
    CorpusSampler,
    CorpusSpec,
    Document,
    load_corpus,
)
from spice_env.game import GameConfig, SpiceGame, observation
from spice_env.spaces import Prose, TextAction, ensure_texts, message_space
from spice_env.tasks import Task
from spice_env.types import Observation, TaskFormat, observation_limits
from spice_env.verify import Verifier


def observation_space() -> spaces.Dict:
    """The observation space shared by both roles: one entry per field of
    :class:`~spice_env.types.Observation` (chat messages, and text of each field's length)."""
    return spaces.Dict({key: message_space() if key == "messages" else
                        Prose(limit) if limit is not None else Prose()
                        for key, limit in observation_limits().items()})


class SpiceCorpusEnv(gym.Env[Observation, Any]):
    """SPICE self-play on a corpus: a Challenger turn, then a Reasoner turn with G answers.

    Args:
        corpus: a corpus spec for :func:`~spice_env.corpus.load_corpus` (default ``"embedded"``)
            or a loaded :class:`~spice_env.corpus.Corpus`.
        verifier: a shared :class:`~spice_env.verify.Verifier`; one is created (and closed with
            the env) when omitted.
        max_tokens: segment length used when loading ``corpus`` from a spec.
        tokenizer: count segment tokens with this tokenizer (``encode``) instead of estimating.
        **settings: the fields of :class:`~spice_env.game.GameConfig` — ``group_size``,
            ``challenger_reward``, ``rho``, ``rho_schedule``, ``task_formats``, ``prompt_style``,
            ``grounding``, ``reasoner_format_weight``, ``format_choice``, ``label_source``.
    """

    metadata: dict[str, Any] = {"render_modes": ["ansi"], "render_fps": 4}  # noqa: RUF012

    def __init__(
        self,
        corpus: CorpusSpec | Corpus = "embedded",
        *,
        verifier: Verifier | None = None,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        tokenizer: Any | None = None,
        render_mode: str | None = None,
        **settings: Any,
    ) -> None:
        self.config = GameConfig(**settings)
        if self.config.repetition_penalty:
            raise ValueError("repetition_penalty compares the questions of a batch; one episode "
                             "has one question: use spice_env.runner.SpiceRunner")
        if render_mode not in (None, "ansi"):
            raise ValueError(f"render_mode must be None or 'ansi', got {render_mode!r}")
        self.render_mode = render_mode
        self.corpus = load_corpus(corpus, max_tokens=max_tokens, tokenizer=tokenizer)
        self._owns_verifier = verifier is None
        self.verifier = verifier or Verifier()
        self.game = SpiceGame(self.config, self.verifier)
        self.observation_space = observation_space()  # type: ignore[assignment]
        self.action_space = TextAction(max_items=self.config.group_size)
        self.sampler = CorpusSampler(self.corpus, seed=None)
        self._document: Document | None = None
        self._format: TaskFormat = "free_form"
        self._task: Task | None = None
        self._phase = "done"
        self._selecting = False
        self._last_info: dict[str, Any] = {}
        self.iteration = 0
        """The training iteration, for ``rho_schedule`` (0 unless you set it)."""

    @property
    def phase(self) -> str:
        """Whose turn it is: ``challenger``, ``reasoner``, or ``done``."""
        return self._phase

    # -- the Gymnasium API ---------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[Observation, dict[str, Any]]:
        """Sample a document (``options={"document": Document}`` to choose one) and return the
        Challenger's observation (the selector's with ``format_choice="selector"``, unless
        ``options={"task_format": ...}`` names the format)."""
        super().reset(seed=seed)
        if seed is not None:  # an independent stream from the one choosing task formats
            self.sampler.reseed([seed, 1])
        options = options or {}
        chosen = options.get("document")
        self._document = chosen if isinstance(chosen, Document) else self.sampler.sample(1)[0]
        given = options.get("task_format")
        self._selecting = given is None and self.config.format_choice == "selector"
        self._format = given or self.game.choose_format(self.np_random)
        self._task = None
        self._phase = "challenger"
        if self._selecting:
            obs = self.game.selector_observation(self._document)
        else:
            obs = self.game.challenger_observation(self._document, self._format)
        info = {"document_id": self._document.id, "source": self._document.source,
                "task_format": obs["task_format"]}
        self._last_info = info
        return obs, info

    def step(self, action: Any) -> tuple[Observation, float, bool, bool, dict[str, Any]]:
        """Play the Challenger's text, then the Reasoner's G texts (see the module docstring)."""
        if self._phase == "challenger" and self._selecting:
            return self._selector_step(action)
        if self._phase == "challenger":
            return self._challenger_step(action)
        if self._phase == "reasoner":
            return self._reasoner_step(action)
        raise RuntimeError("the episode has ended; call reset() before step()")

    def _selector_step(self, action: Any
                       ) -> tuple[Observation, float, bool, bool, dict[str, Any]]:
        if not isinstance(action, str):
            raise TypeError(f"the selector step takes one string, got {type(action).__name__}")
        assert self._document is not None
        result, task_format = self.game.select(action, self.np_random)
        info: dict[str, Any] = {"document_id": self._document.id, "selection": result.selection,
                                "invalid_reason": result.reason, "detail": result.detail,
                                "task_format": task_format}
        self._selecting = False
        if task_format is None:
            rho = self.config.rho_at(self.iteration)
            self._phase = "done"
            info.update(rewards={"challenger": rho, "reasoner": []}, pass_rate=None)
            self._last_info = info
            return observation("done"), rho, True, False, info
        self._format = task_format
        self._last_info = info
        return (self.game.challenger_observation(self._document, task_format), 0.0, False, False,
                info)

    def _challenger_step(self, action: Any
                         ) -> tuple[Observation, float, bool, bool, dict[str, Any]]:
        if not isinstance(action, str):
            raise TypeError(f"the challenger step takes one string, got {type(action).__name__}")
        assert self._document is not None
        parsed = self.game.parse(action, self._document, self._format)
        info: dict[str, Any] = {"document_id": self._document.id, "task": parsed.task,
                                "invalid_reason": parsed.reason, "detail": parsed.detail}
        if parsed.task is None:
            rho = self.config.rho_at(self.iteration)
            self._phase = "done"
            info.update(rewards={"challenger": rho, "reasoner": []}, pass_rate=None)
            self._last_info = info
            return observation("done"), rho, True, False, info
        self._task = parsed.task
        self._phase = "reasoner"
        self._last_info = info
        return self.game.reasoner_observation(parsed.task), 0.0, False, False, info

    def _reasoner_step(self, action: Any
                       ) -> tuple[Observation, float, bool, bool, dict[str, Any]]:
        answers = ensure_texts(action, self.config.group_size)
        assert self._task is not None and self._document is not None
        scored = self.game.score(self._task, answers)
        self._phase = "done"
        info = {
            "document_id": self._document.id, "task": self._task, "invalid_reason": None,
            "rewards": {"challenger": scored.challenger_reward,
                        "reasoner": list(scored.reasoner_rewards)},
            "pass_rate": scored.pass_rate, "correct": list(scored.correct),
            "verdicts": list(scored.verdicts), "majority": scored.majority,
        }
        self._last_info = info
        return observation("done"), scored.challenger_reward, True, False, info

    def render(self) -> str | None:
        """A short text summary of the current episode (``render_mode="ansi"``)."""
        if self.render_mode != "ansi":
            return None
        lines = [f"phase: {self._phase}"]
        if self._document is not None:
            lines.append(f"document {self._document.id}: {self._document.text[:200]!r}")
        if self._task is not None:
            lines.append(f"question: {self._task.reasoner_question()!r} gold: {self._task.answer}")
        if "rewards" in self._last_info:
            lines.append(f"rewards: {self._last_info['rewards']}")
        return "\n".join(lines)

    def close(self) -> None:
        """Stop the verifier's workers if this env created them."""
        if self._owns_verifier:
            self.verifier.close()

    # -- resumable state -----------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The document sampler's and the env RNG's state, for resuming a run."""
        return {"sampler": self.sampler.state_dict(),
                "np_random": self.np_random.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved."""
        self.sampler.load_state_dict(state["sampler"])
        rng = np.random.default_rng()
        rng.bit_generator.state = state["np_random"]
        self._np_random = rng
