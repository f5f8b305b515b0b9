"""Majority labels: the Reasoner's answers judged against their own most common answer.

R-Zero trains without gold answers: an answer counts as right when it agrees with the majority of
the G answers to the same question, and the Challenger's reward is computed from those labels
(``game.label_source="majority"``). :func:`majority_labels` does this for many questions at once:

1. the answers that give one (a box within the length cap) are grouped by their normalised text
   (for multiple choice, by the option letter they name);
2. the groups are merged when the verifier finds their answers equivalent — the earlier group's
   answer is taken as the gold one, as the verifier is not symmetric — with every comparison of
   every question in one batch (:meth:`~spice_env.verify.Verifier.verify_many`);
3. the largest group is the majority; a tie goes to the group whose first answer came first.

Answers without a usable box are never in the majority. When no answer gives one there is no
majority and every label is ``False``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from spice_env.numeric import parse_integer
from spice_env.tasks import Task
from spice_env.verify import Verdict, Verifier, mcq_letter, normalize_string


@dataclass(frozen=True)
class MajorityLabels:
    """The majority answer of one question's G answers and whether each answer agrees with it."""

    majority: str | None
    correct: tuple[bool, ...]

    @property
    def agreement(self) -> float:
        """The share of the answers in the majority (R-Zero's p̂)."""
        return sum(self.correct) / len(self.correct) if self.correct else 0.0


def _key(task: Task, answer: str) -> str | None:
    """A canonical text for grouping answers that are certainly the same."""
    if task.answer_type == "mcq_letter":
        return mcq_letter(answer, task.options)
    if task.answer_type == "integer":
        number = parse_integer(answer)
        if number is not None:
            return str(number)
    if task.answer_type in ("string", "boolean"):
        return normalize_string(answer) or None
    return " ".join(answer.split())


class _Groups:
    """Union-find over one question's answer groups."""

    def __init__(self, count: int) -> None:
        self.parent = list(range(count))

    def find(self, index: int) -> int:
        while self.parent[index] != index:
            self.parent[index] = self.parent[self.parent[index]]
            index = self.parent[index]
        return index

    def join(self, first: int, second: int) -> None:
        a, b = self.find(first), self.find(second)
        if a != b:
            self.parent[max(a, b)] = min(a, b)  # the earlier group names the union


def majority_labels(verifier: Verifier, questions: Sequence[tuple[Task, Sequence[Verdict]]]
                    ) -> list[MajorityLabels]:
    """Majority labels for each ``(task, verdicts)``; ``verdicts`` are the G answers' verdicts
    against the task's gold answer (their ``extracted`` answers are what is compared)."""
    plans = []  # per question: member indices per group, and each group's answer
    comparisons: list[tuple[Task, str]] = []
    where: list[tuple[int, int, int]] = []  # (question, earlier group, later group)
    for q, (task, verdicts) in enumerate(questions):
        members: dict[str, list[int]] = {}
        answers: dict[str, str] = {}
        for index, verdict in enumerate(verdicts):
            text = verdict.extracted
            if verdict.outcome in ("no_answer", "too_long") or not text or not text.strip():
                continue
            key = _key(task, text)
            if key is None:
                continue
            members.setdefault(key, []).append(index)
            answers.setdefault(key, key if task.answer_type == "mcq_letter" else text)
        keys = list(members)
        plans.append(([members[k] for k in keys], [answers[k] for k in keys]))
        if task.answer_type == "mcq_letter":
            continue  # letters are already canonical
        for later in range(1, len(keys)):
            for earlier in range(later):
                gold = task.model_copy(update={"answer": answers[keys[earlier]]})
                comparisons.append((gold, "\\boxed{" + answers[keys[later]] + "}"))
                where.append((q, earlier, later))
    same = verifier.verify_many(comparisons) if comparisons else []
    unions = [_Groups(len(groups)) for groups, _ in plans]
    for (q, earlier, later), verdict in zip(where, same, strict=True):
        if verdict.correct:
            unions[q].join(earlier, later)
    out = []
    for (_, verdicts), (groups, texts), union in zip(questions, plans, unions, strict=True):
        sizes: dict[int, list[int]] = {}
        for group, indices in enumerate(groups):
            sizes.setdefault(union.find(group), []).extend(indices)
        if not sizes:
            out.append(MajorityLabels(None, (False,) * len(verdicts)))
            continue
        root = max(sizes, key=lambda r: (len(sizes[r]), -min(sizes[r])))
        chosen = set(sizes[root])
        out.append(MajorityLabels(texts[root],
                                  tuple(i in chosen for i in range(len(verdicts)))))
    return out
