"""Deterministic scripted agents for tests, demos and the environment checker.

* :class:`OracleChallenger` writes a valid task from the document in its observation (a
  fill-in-the-blank about a number or a word of the document), in the format the prompt asks
  for (JSON for the ``paper`` style, tags for ``compact``); at a task-type selector step it judges
  both formats suitable.
* :class:`NoisyReasoner` answers right with probability ``p_correct``. It reads the gold answer
  from an :class:`AnswerKey` shared with the oracle, or from ``info["task"]`` — a test double
  that looks at what a real Reasoner never sees.
* :class:`GarbageChallenger` emits malformed output of many kinds.

Every agent offers ``act(observation, info=None)`` for ``gym.make`` episodes and
``generate(observations, n)`` for :class:`spice_env.runner.SpiceRunner`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from spice_env.selector import SELECTOR_FORMAT
from spice_env.tasks import (
    LETTERS,
    Task,
    parse_challenger_output,
    refers_to_document,
)
from spice_env.types import Observation, TaskFormat


class AnswerKey:
    """Gold tasks by the question text the Reasoner will see."""

    def __init__(self) -> None:
        self._tasks: dict[str, Task] = {}

    def add(self, task: Task) -> None:
        """Remember ``task`` under its Reasoner-facing question."""
        self._tasks[task.reasoner_question()] = task

    def lookup(self, question: str) -> Task | None:
        """The task whose question is ``question``, if the oracle wrote it."""
        return self._tasks.get(question)


_NUMBER = re.compile(r"(?<![\d.,])\d{1,6}(?![\d.,]?\d)")
_WORD = re.compile(r"\b[A-Za-z]{5,12}\b")
_SENTENCE = re.compile(r"[^.!?\n]+[.!?]?")


class OracleChallenger:
    """Writes valid, document-grounded tasks (deterministic given ``seed``)."""

    def __init__(self, seed: int = 0, answer_key: AnswerKey | None = None) -> None:
        self.rng = np.random.default_rng(seed)
        self.answer_key = answer_key if answer_key is not None else AnswerKey()

    def act(self, observation: Observation, info: Mapping[str, Any] | None = None) -> str:
        """One Challenger output for a challenger observation (a selector step included)."""
        if observation.get("task_format") == SELECTOR_FORMAT:
            if observation.get("assistant_prefix") == "<mcq>":  # compact: the tag is prefilled
                return "yes</mcq><free_form>yes</free_form><answer_type>integer</answer_type>"
            return json.dumps({"suitable_for_mcq": True, "suitable_for_free_form": True,
                               "best_answer_type": "integer", "reason": "facts and numbers"})
        task_format: TaskFormat = "mcq" if observation.get("task_format") == "mcq" else "free_form"
        question, answer, answer_type, distractors = self._fact(str(observation.get("document")
                                                                    or ""))
        compact = observation.get("assistant_prefix") == "<question>"
        if task_format == "mcq":
            text = self._mcq(question, answer, distractors, compact)
        else:
            text = self._free_form(question, answer, answer_type, compact)
        full = "<question>" + text if compact else text
        parsed = parse_challenger_output(full, kind=task_format)
        if parsed.task is not None:
            self.answer_key.add(parsed.task)
        return text

    def generate(self, observations: Sequence[Observation], n: int) -> list[list[str]]:
        """``n`` outputs per observation (the runner's generate function)."""
        return [[self.act(obs) for _ in range(n)] for obs in observations]

    def _fact(self, document: str) -> tuple[str, str, str, list[str]]:
        sentences = [s.strip() for s in _SENTENCE.findall(document)
                     if 20 <= len(s.strip()) <= 300 and not refers_to_document(s)]
        self.rng.shuffle(sentences)
        for sentence in sentences:
            numbers = _NUMBER.findall(sentence)
            if numbers:
                value = numbers[int(self.rng.integers(len(numbers)))]
                blank = sentence.replace(value, "___", 1)
                number = int(value)
                candidates = (number + 1, number * 2 + 3, number + 10, number + 2, number + 5)
                wrong = [str(c) for c in dict.fromkeys(candidates) if c != number][:3]
                return (f'Which number fills the blank in: "{blank}"?', value, "integer", wrong)
        for sentence in sentences:
            words = list({w.lower(): w for w in _WORD.findall(sentence)}.values())
            if len(words) >= 4:
                word = words[int(self.rng.integers(len(words)))]
                others = [w for w in words if w != word][:3]
                blank = re.sub(rf"\b{re.escape(word)}\b", "___", sentence, count=1)
                return (f'Which word fills the blank in: "{blank}"?', word, "string", others)
        a, b = (int(x) for x in self.rng.integers(2, 99, size=2))
        total = a + b
        return (f"What is {a} + {b}?", str(total), "integer",
                [str(total + 1), str(total - 1), str(total + 10)])

    def _mcq(self, question: str, answer: str, distractors: list[str], compact: bool) -> str:
        options = [answer, *distractors[:3]]
        order = self.rng.permutation(4)
        shuffled = [options[i] for i in order]
        letter = LETTERS[shuffled.index(answer)]
        inline = " ".join(f"{k}) {v}" for k, v in zip(LETTERS, shuffled, strict=True))
        if compact:
            return f"{question} {inline}</question>\n<answer>{letter}</answer>"
        body = question + "\n" + "\n".join(f"{k}) {v}" for k, v in zip(LETTERS, shuffled,
                                                                        strict=True))
        return json.dumps({"hardening_process": "scripted", "multiple_choice_question": body,
                           "multiple_choice_correct": letter})

    @staticmethod
    def _free_form(question: str, answer: str, answer_type: str, compact: bool) -> str:
        if compact:
            return (f"{question}</question>\n<answer>{answer}</answer>\n"
                    f"<answer_type>{answer_type}</answer_type>")
        return json.dumps({"question": question, "answer": answer, "answer_type": answer_type,
                           "step_by_step_solution": "scripted"})


class NoisyReasoner:
    """Answers correctly with probability ``p_correct`` (needs the gold: see the module doc)."""

    def __init__(self, p_correct: float = 0.5, seed: int = 0, answer_key: AnswerKey | None = None
                 ) -> None:
        if not 0.0 <= p_correct <= 1.0:
            raise ValueError(f"p_correct must be in [0, 1], got {p_correct}")
        self.p_correct = p_correct
        self.rng = np.random.default_rng(seed)
        self.answer_key = answer_key

    def act(self, observation: Observation, info: Mapping[str, Any] | None = None,
            n: int | None = None) -> list[str]:
        """``n`` answers (default: the env's group size from ``info``, else 8)."""
        task = (info or {}).get("task")
        if task is None and self.answer_key is not None:
            task = self.answer_key.lookup(str(observation.get("question", "")))
        count = n or (len(info["rewards"]["reasoner"]) if info and "rewards" in info else 8)
        return [self._answer(task) for _ in range(count)]

    def generate(self, observations: Sequence[Observation], n: int) -> list[list[str]]:
        """``n`` answers per observation (the runner's generate function)."""
        return [self.act(obs, n=n) for obs in observations]

    def _answer(self, task: Task | None) -> str:
        right = task is not None and self.rng.random() < self.p_correct
        value = task.answer if (right and task is not None) else _wrong_answer(task)
        return f"Let me think step by step about this question.\nThe answer is \\boxed{{{value}}}."


def _wrong_answer(task: Task | None) -> str:
    if task is None:
        return "unknown"
    if task.answer_type == "mcq_letter":
        return next(x for x in LETTERS if x != task.answer)
    if task.answer_type == "integer":
        digits = re.sub(r"[^\d-]", "", task.answer) or "0"
        return str(int(digits) + 1)
    if task.answer_type == "boolean":
        return "no" if task.answer.lower() in ("yes", "true") else "yes"
    return "zzz wrong"


GARBAGE: tuple[str, ...] = (
    "",
    "   \n\t ",
    "I am not able to write a question for this.",
    '{"question": "unterminated',
    '{"question": ["a", "list"], "answer": 3}',
    '{"multiple_choice_question": "Pick one. A) x B) y", "multiple_choice_correct": "A"}',
    '{"multiple_choice_question": "Q? A) 1 B) 2 C) 3 D) 4", "multiple_choice_correct": "Z"}',
    '{"question": "What does the passage say?", "answer": "42", "answer_type": "integer"}',
    '{"question": "Name it.", "answer": "a far too long answer here", "answer_type": "string"}',
    '{"question": "How many?", "answer": "many", "answer_type": "integer"}',
    '{"question": "How many?", "answer": {"value": 1}, "answer_type": "integer"}',
    "<question></question><answer></answer>",
    "<answer>only an answer</answer>",
    "\x00\x01\x02 binary \udcff junk",
    "{" * 5000,
    "\\boxed{" * 200,
)
"""Malformed Challenger outputs covering the parser's rejection reasons."""


class GarbageChallenger:
    """Emits malformed Challenger output, cycling through :data:`GARBAGE` and random junk."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self._next = 0

    def act(self, observation: Observation, info: Mapping[str, Any] | None = None) -> str:
        """One malformed output."""
        self._next += 1
        if self._next % (len(GARBAGE) + 1) == 0:
            size = int(self.rng.integers(1, 400))
            return "".join(chr(int(c)) for c in self.rng.integers(32, 0x2FFF, size=size))
        return GARBAGE[self._next % (len(GARBAGE) + 1) - 1]

    def generate(self, observations: Sequence[Observation], n: int) -> list[list[str]]:
        """``n`` malformed outputs per observation."""
        return [[self.act(obs) for _ in range(n)] for obs in observations]


class ScriptedTextAgent:
    """A learning agent's samples with scripted texts: for testing training code with tiny models.

    A tiny random model never writes a parsable question, so every Challenger reward equals
    ``rho`` and nothing is learned. This wrapper keeps what the wrapped agent sampled (prompt
    ids, completion ids, log-probabilities) and replaces the *text* of some samples: a Challenger
    sample becomes a valid :class:`OracleChallenger` task with probability ``p_valid``; every
    Reasoner sample becomes a :class:`NoisyReasoner` answer (right with probability
    ``p_correct``). Rewards then vary within groups and the loss has a gradient.

    Draws are seeded from the wrapped agent's role seeds (``agent.sampling[role].seed``), so a
    run whose sampling seeds are fixed per iteration replays exactly. Wrappers of two agents
    (a Challenger and a Reasoner) share one ``answer_key``.
    """

    def __init__(self, agent: Any, p_valid: float = 0.5, p_correct: float = 0.5,
                 answer_key: AnswerKey | None = None) -> None:
        self.agent = agent
        self.p_valid = p_valid
        self.p_correct = p_correct
        self.answer_key = answer_key if answer_key is not None else AnswerKey()

    def __getattr__(self, name: str) -> Any:
        if name == "agent":  # not set yet (copying, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.agent, name)

    def generate(self, observations: Sequence[Observation], n: int | None = None
                 ) -> list[list[Any]]:
        """The wrapped agent's samples for ``observations``, texts replaced as described."""
        from dataclasses import replace

        samples = self.agent.generate(observations, n)
        if not observations:
            return samples
        role = "challenger" if observations[0].get("role") == "challenger" else "reasoner"
        seed = self.agent.sampling[role].seed
        rng = np.random.default_rng(seed)
        if role == "challenger":
            oracle = OracleChallenger(seed=int(rng.integers(2**31)), answer_key=self.answer_key)
            return [[replace(s, text=oracle.act(obs)) if rng.random() < self.p_valid else s
                     for s in row] for obs, row in zip(observations, samples, strict=True)]
        reasoner = NoisyReasoner(self.p_correct, seed=int(rng.integers(2**31)),
                                 answer_key=self.answer_key)
        return [[replace(s, text=text) for s, text in
                 zip(row, reasoner.act(obs, n=len(row)), strict=True)]
                for obs, row in zip(observations, samples, strict=True)]
