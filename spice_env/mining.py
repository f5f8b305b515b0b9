"""Mining questions: the Challenger's valid questions over documents, as a dataset for any RLVR
trainer.

:func:`mine_questions` runs a :class:`~spice_env.runner.SpiceRunner` (the Challenger's attempts
on each document and G Reasoner answers to each valid question) until ``documents`` documents
have been played, and returns one record per valid, answered question:

``question`` (as the Reasoner sees it, options inline), ``prompt`` (the Reasoner's prompt as chat
messages), ``answer``, ``answer_type``, ``kind``, ``options``, ``document_id``, ``source``,
``pass_rate`` and ``correct`` (of the G answers), ``challenger_reward``, ``model`` and ``config``
(the game settings, as JSON).

The columns ``prompt``, ``answer``, ``answer_type`` and ``options`` are what
:func:`spice_env.integrations.trl.verifier_reward` reads, so a mined file trains a Reasoner with
TRL's ``GRPOTrainer`` as it is. :func:`write_questions` saves records as JSON lines or Parquet.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from spice_env.runner import GenerateFn, SpiceRunner

QUESTION_COLUMNS: tuple[str, ...] = (
    "question", "prompt", "answer", "answer_type", "kind", "options", "document_id", "source",
    "pass_rate", "correct", "challenger_reward", "model", "config")
"""The columns of a mined question, in order."""

FORMATS = (".jsonl", ".parquet")


def mine_questions(runner: SpiceRunner, challenger: GenerateFn, reasoner: GenerateFn | None = None,
                   *, documents: int, model: str = "",
                   progress: Callable[[int, int], None] | None = None) -> list[dict[str, Any]]:
    """Play ``documents`` documents (in batches of the runner's B) and return the valid questions
    that were answered (see the module docstring for the columns). ``progress(done, found)`` is
    called after each batch."""
    if documents < 1:
        raise ValueError(f"documents must be at least 1, got {documents}")
    settings = json.dumps(runner.config.model_dump(mode="json", exclude={"challenger_reward"})
                          | {"challenger_reward": _reward_name(runner.config.challenger_reward),
                             "attempts": runner.attempts}, sort_keys=True)
    found: list[dict[str, Any]] = []
    done = 0
    while done < documents:
        rollout = runner.run(challenger, reasoner)
        for document in rollout.documents[:documents - done]:
            for attempt in document.kept:
                task = attempt.task
                if task is None or attempt.pass_rate is None:
                    continue
                found.append({
                    "question": task.reasoner_question(),
                    "prompt": [dict(m) for m in runner.game.reasoner_rendered(task).messages],
                    "answer": task.answer, "answer_type": task.answer_type, "kind": task.kind,
                    "options": dict(task.options) if task.options else None,
                    "document_id": document.document.id, "source": document.document.source,
                    "pass_rate": attempt.pass_rate,
                    "correct": sum(a.verdict.correct for a in attempt.answers),
                    "challenger_reward": attempt.reward, "model": model, "config": settings})
        done = min(documents, done + len(rollout.documents))
        if progress is not None:
            progress(done, len(found))
    return found


def _reward_name(reward: Any) -> str:
    return reward if isinstance(reward, str) else getattr(reward, "__name__", repr(reward))


def write_questions(records: Sequence[dict[str, Any]], path: str | os.PathLike[str]) -> Path:
    """Write mined records to ``path``: JSON lines for ``.jsonl``, Parquet for ``.parquet``
    (written to a temporary file first, so a failed write leaves no partial file)."""
    target = Path(path)
    if target.suffix not in FORMATS:
        raise ValueError(f"{target}: the output must end in .jsonl or .parquet")
    partial = target.with_name(target.name + ".partial")
    if target.suffix == ".jsonl":
        with partial.open("w", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        columns = {name: [record.get(name) for record in records] for name in QUESTION_COLUMNS}
        pq.write_table(pa.table(columns), partial)
    partial.replace(target)
    return target
