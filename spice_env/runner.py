"""The batched runner: one SPICE iteration's rollouts (Algorithm 1, steps 1-2) for B documents.

For each of B documents the Challenger makes N attempts; G of them are kept so that the
valid:invalid ratio of the N is preserved; every kept valid question gets G Reasoner answers,
which give the Challenger its reward; one kept valid question per document is chosen at random
and its G answers become the Reasoner's training group.

Generation is supplied by the caller as functions ``generate(observations, n) -> n samples per
observation`` (the same observation dicts as ``SpiceCorpusEnv``'s); a sample is a string or any
object with a ``text`` attribute (e.g. an agent's output carrying token ids and
log-probabilities), kept untouched in the records for the trainer.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from spice_env.corpus import (
    DEFAULT_MAX_TOKENS,
    Corpus,
    CorpusSampler,
    CorpusSpec,
    Document,
    load_corpus,
)
from spice_env.game import GameConfig, SpiceGame
from spice_env.repetition import repetition_penalties
from spice_env.selector import SelectionResult
from spice_env.tasks import ParseResult, Task
from spice_env.types import Observation, TaskFormat
from spice_env.verify import Verdict, Verifier


class HasText(Protocol):
    """A generated sample: anything with the generated ``text``."""

    text: str


Sample = str | HasText
GenerateFn = Callable[[Sequence[Observation], int], Sequence[Sequence[Sample]]]
"""``generate(observations, n)`` returns, for each observation, ``n`` sampled completions."""


def sample_text(sample: Sample) -> str:
    """The text of a sample (a string, or an object's ``text``)."""
    return sample if isinstance(sample, str) else str(sample.text)


def ratio_preserving_subsample(valid: Sequence[bool], keep: int, rng: np.random.Generator
                               ) -> list[int]:
    """Indices of ``keep`` attempts whose valid:invalid ratio matches that of all attempts.

    The number of valid attempts kept is ``round(keep * valid / total)`` (halves round up),
    moved as little as needed when one class has too few members. With ``total <= keep`` every
    attempt is kept.
    """
    total = len(valid)
    if total <= keep:
        return list(range(total))
    valid_idx = [i for i, v in enumerate(valid) if v]
    invalid_idx = [i for i, v in enumerate(valid) if not v]
    n_valid = min(len(valid_idx), math.floor(keep * len(valid_idx) / total + 0.5))
    n_invalid = min(len(invalid_idx), keep - n_valid)
    n_valid = keep - n_invalid
    chosen = list(rng.choice(valid_idx, size=n_valid, replace=False)) if n_valid else []
    chosen += list(rng.choice(invalid_idx, size=n_invalid, replace=False)) if n_invalid else []
    return sorted(int(i) for i in chosen)


@dataclass
class ReasonerAnswer:
    """One Reasoner sample for a question, with its verdict and reward."""

    sample: Sample
    verdict: Verdict
    reward: float

    @property
    def text(self) -> str:
        """The answer's text."""
        return sample_text(self.sample)


@dataclass
class ChallengerAttempt:
    """One Challenger sample for a document and what became of it."""

    sample: Sample
    parse: ParseResult
    kept: bool = False
    reward: float | None = None
    pass_rate: float | None = None
    answers: list[ReasonerAnswer] = field(default_factory=list)
    majority: str | None = None  # the majority answer, with game.label_source="majority"
    repetition_penalty: float | None = None  # subtracted from reward (game.repetition_penalty)

    @property
    def text(self) -> str:
        """The Challenger output's text."""
        return sample_text(self.sample)

    @property
    def task(self) -> Task | None:
        """The valid task, or None when the output was invalid."""
        return self.parse.task


@dataclass
class SelectorTurn:
    """The selector step of one document (``format_choice="selector"``) and its reward: ρ for an
    invalid choice, else the mean reward of the document's kept attempts."""

    sample: Sample
    result: SelectionResult
    task_format: TaskFormat | None
    reward: float | None = None

    @property
    def text(self) -> str:
        """The selector output's text."""
        return sample_text(self.sample)


@dataclass
class DocumentRollout:
    """Everything that happened to one document in an iteration (no attempts, and no task
    format, after an invalid selector choice)."""

    document: Document
    task_format: TaskFormat | None
    challenger_observation: Observation
    attempts: list[ChallengerAttempt]
    reasoner_choice: int | None = None
    reasoner_observation: Observation | None = None
    selection: SelectorTurn | None = None

    @property
    def kept(self) -> list[ChallengerAttempt]:
        """The G attempts kept for the Challenger's training group."""
        return [a for a in self.attempts if a.kept]

    @property
    def reasoner_group(self) -> list[ReasonerAnswer]:
        """The G answers forming the Reasoner's training group (empty if no valid question)."""
        if self.reasoner_choice is None:
            return []
        return self.attempts[self.reasoner_choice].answers


@dataclass
class IterationRollout:
    """The rollouts of one iteration, ready for advantage computation."""

    documents: list[DocumentRollout]

    def metrics(self) -> dict[str, float]:
        """Summary numbers: validity, pass rates, rewards, answer formats."""
        attempts = [a for d in self.documents for a in d.attempts]
        kept = [a for d in self.documents for a in d.kept]
        scored = [a for a in kept if a.pass_rate is not None]
        answers = [r for a in scored for r in a.answers]
        groups = [d.reasoner_group for d in self.documents if d.reasoner_group]
        out: dict[str, float] = {
            "challenger/valid_rate": _mean([a.parse.valid for a in attempts]),
            "challenger/kept_valid_rate": _mean([a.parse.valid for a in kept]),
            "challenger/reward": _mean([a.reward for a in kept if a.reward is not None]),
            "challenger/pass_rate": _mean([a.pass_rate for a in scored]),
            "challenger/frontier_share": _mean(
                [0.0 < (a.pass_rate or 0.0) < 1.0 for a in scored]),
            "reasoner/reward": _mean([r.reward for g in groups for r in g]),
            "reasoner/boxed_rate": _mean([r.verdict.outcome != "no_answer" for r in answers]),
            "documents_with_reasoner_group": float(len(groups)),
        }
        reasons = Counter(a.parse.reason for a in attempts if a.parse.reason)
        for reason, count in reasons.items():
            out[f"challenger/invalid/{reason}"] = count / max(1, len(attempts))
        for outcome, count in Counter(r.verdict.outcome for r in answers).items():
            out[f"verifier/{outcome}"] = count / max(1, len(answers))
        penalties = [a.repetition_penalty for a in scored if a.repetition_penalty is not None]
        if penalties:
            out["challenger/repetition_penalty"] = _mean(penalties)
        turns = [d.selection for d in self.documents if d.selection is not None]
        if turns:
            out["selector/valid_rate"] = _mean([t.task_format is not None for t in turns])
            out["selector/mcq_share"] = _mean([t.task_format == "mcq" for t in turns
                                               if t.task_format is not None])
            out["selector/reward"] = _mean([t.reward for t in turns])
            invalid = Counter(str(t.result.reason) for t in turns if t.task_format is None)
            for why, count in invalid.items():
                out[f"selector/invalid/{why}"] = count / len(turns)
        return out


def _mean(values: Sequence[float | bool | None]) -> float:
    present = [float(v) for v in values if v is not None]
    return sum(present) / len(present) if present else float("nan")


class SpiceRunner:
    """Plays B documents × N Challenger attempts and their Reasoner answers per call.

    Args:
        corpus: a spec or a loaded :class:`~spice_env.corpus.Corpus`.
        game: the episodes' settings (``group_size`` is G); or give its fields as keyword
            arguments (``**settings``), not both.
        batch_size: B, documents per iteration.
        attempts: N, Challenger samples per document (at least G).
        seed: seeds the document stream and the sub-sampling.
        max_tokens: segment length used when loading ``corpus`` from a spec.
        tokenizer: count segment tokens with this tokenizer instead of estimating.
        rank: this process's rank; only its shard of the corpus is sampled.
        world_size: the number of ranks the corpus is sharded over.
        verifier: shared verifier; one is created when omitted.
        **settings: :class:`~spice_env.game.GameConfig` fields, when ``game`` is not given.
    """

    def __init__(self, corpus: CorpusSpec | Corpus = "embedded", *,
                 game: GameConfig | None = None, batch_size: int = 8, attempts: int = 8,
                 seed: int = 0, max_tokens: int = DEFAULT_MAX_TOKENS,
                 tokenizer: Any | None = None, rank: int = 0, world_size: int = 1,
                 verifier: Verifier | None = None, **settings: Any) -> None:
        if game is not None and settings:
            raise TypeError(f"give the game's settings either as game= or as keyword "
                            f"arguments, not both (got {', '.join(sorted(settings))})")
        self.config = game if game is not None else GameConfig(**settings)
        if batch_size < 1:
            raise ValueError(f"batch_size (B) must be >= 1, got {batch_size}")
        if attempts < self.config.group_size:
            raise ValueError(f"attempts (N={attempts}) must be >= group_size "
                             f"(G={self.config.group_size}) so that G attempts can be kept")
        self.batch_size, self.attempts = batch_size, attempts
        self.corpus = load_corpus(corpus, max_tokens=max_tokens, tokenizer=tokenizer).shard(
            rank, world_size)
        self.sampler = CorpusSampler(self.corpus, seed=[seed, rank])
        self.rng = np.random.default_rng([seed, rank, 7])
        self._owns_verifier = verifier is None
        self.verifier = verifier or Verifier()
        self.game = SpiceGame(self.config, self.verifier)
        self.iteration = 0  # iterations run, for game.rho_schedule

    @property
    def rho(self) -> float:
        """ρ of the next iteration (``game.rho``, or its ``rho_schedule`` value)."""
        return self.config.rho_at(self.iteration)

    def run(self, challenger: GenerateFn, reasoner: GenerateFn | None = None) -> IterationRollout:
        """One iteration's rollouts. ``reasoner`` defaults to ``challenger`` (shared weights)."""
        reasoner = reasoner or challenger
        documents = self.sampler.sample(self.batch_size)
        rho = self.rho
        formats: list[TaskFormat | None]
        turns: list[SelectorTurn | None] = [None] * len(documents)
        selector_observations: list[Observation] = []
        if self.config.format_choice == "selector":
            selector_observations = [self.game.selector_observation(d) for d in documents]
            turns = list(self._selector_phase(selector_observations, challenger, rho))
            formats = [t.task_format if t else None for t in turns]
        else:
            formats = [self.game.choose_format(self.rng) for _ in documents]
        rollouts = self._challenger_phase(documents, formats, challenger, selector_observations)
        for rollout, turn in zip(rollouts, turns, strict=True):
            rollout.selection = turn
        self._reasoner_phase(rollouts, reasoner, rho)
        self.iteration += 1
        return IterationRollout(rollouts)

    def _selector_phase(self, observations: list[Observation], challenger: GenerateFn,
                        rho: float) -> list[SelectorTurn]:
        samples = _checked(challenger(observations, 1), len(observations), 1, "selector")
        turns = []
        for outs in samples:
            result, task_format = self.game.select(sample_text(outs[0]), self.rng)
            turns.append(SelectorTurn(outs[0], result, task_format,
                                      reward=rho if task_format is None else None))
        return turns

    def _challenger_phase(self, documents: list[Document], formats: list[TaskFormat | None],
                          challenger: GenerateFn, selector_observations: list[Observation]
                          ) -> list[DocumentRollout]:
        asked = [(d, f) for d, f in zip(documents, formats, strict=True) if f is not None]
        observations = [self.game.challenger_observation(d, f) for d, f in asked]
        samples = iter(_checked(challenger(observations, self.attempts), len(observations),
                                self.attempts, "challenger") if observations else [])
        obs_of = iter(observations)
        rollouts = []
        for index, (document, fmt) in enumerate(zip(documents, formats, strict=True)):
            if fmt is None:  # an invalid selector choice: no question for this document
                rollouts.append(DocumentRollout(document, None, selector_observations[index], []))
                continue
            attempts = [ChallengerAttempt(s, self.game.parse(sample_text(s), document, fmt))
                        for s in next(samples)]
            for index in ratio_preserving_subsample([a.parse.valid for a in attempts],
                                                    self.config.group_size, self.rng):
                attempts[index].kept = True
            rollouts.append(DocumentRollout(document, fmt, next(obs_of), attempts))
        return rollouts

    def _reasoner_phase(self, rollouts: list[DocumentRollout], reasoner: GenerateFn,
                        rho: float) -> None:
        questions = [(d, a) for d in rollouts for a in d.kept if a.task is not None]
        for d in rollouts:
            for a in d.kept:
                if a.task is None:
                    a.reward = rho
        if questions:
            self._answer(questions, reasoner)
            if self.config.repetition_penalty:
                scored = sum(len(d.kept) for d in rollouts)
                tasks = [a.task for _, a in questions if a.task is not None]
                for (_, attempt), penalty in zip(questions, repetition_penalties(
                        [t.reasoner_question() for t in tasks], scored), strict=True):
                    attempt.repetition_penalty = penalty
                    attempt.reward = (attempt.reward or 0.0) - penalty
        for d in rollouts:
            if d.selection is not None and d.selection.task_format is not None:
                rewards = [a.reward for a in d.kept if a.reward is not None]
                d.selection.reward = sum(rewards) / len(rewards) if rewards else rho

    def _answer(self, questions: list[tuple[DocumentRollout, ChallengerAttempt]],
                reasoner: GenerateFn) -> None:
        g = self.config.group_size
        observations = [self.game.reasoner_observation(a.task) for _, a in questions if a.task]
        samples = _checked(reasoner(observations, g), len(observations), g, "reasoner")
        scores = self.game.score_many([(a.task, [sample_text(s) for s in outs])
                                       for (_, a), outs in zip(questions, samples, strict=True)
                                       if a.task is not None])
        for scored, ((_, attempt), outs) in zip(scores, zip(questions, samples, strict=True),
                                                strict=True):
            attempt.reward = scored.challenger_reward
            attempt.pass_rate = scored.pass_rate
            attempt.answers = [ReasonerAnswer(s, v, r) for s, v, r in
                               zip(outs, scored.verdicts, scored.reasoner_rewards, strict=True)]
            attempt.majority = scored.majority
        for d, _ in questions:
            if d.reasoner_choice is not None:
                continue
            valid = [i for i, a in enumerate(d.attempts) if a.kept and a.task is not None]
            if valid:
                d.reasoner_choice = int(self.rng.choice(valid))
                task = d.attempts[d.reasoner_choice].task
                assert task is not None
                d.reasoner_observation = self.game.reasoner_observation(task)

    def state_dict(self) -> dict[str, Any]:
        """Sampler and sub-sampling RNG state, for resuming."""
        return {"sampler": self.sampler.state_dict(), "rng": self.rng.bit_generator.state,
                "iteration": self.iteration}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved."""
        self.sampler.load_state_dict(state["sampler"])
        self.rng.bit_generator.state = state["rng"]
        self.iteration = int(state.get("iteration", 0))

    def close(self) -> None:
        """Stop the verifier's workers if this runner created them."""
        if self._owns_verifier:
            self.verifier.close()


def _checked(samples: Sequence[Sequence[Sample]], prompts: int, n: int, role: str
             ) -> Sequence[Sequence[Sample]]:
    if len(samples) != prompts or any(len(s) != n for s in samples):
        shape = [len(s) for s in samples]
        raise ValueError(f"the {role} generate function must return {n} samples for each of "
                         f"{prompts} prompts, got {shape}")
    return samples
