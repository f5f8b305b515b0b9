"""Agreement with established math graders on their own test cases.

``data/peer_equivalence.jsonl`` holds equivalence cases copied from the test suites of other
graders — Math-Verify, MARIO_EVAL, OlympiadBench, NeMo-Skills, DART-Math, rLLM and the MATH
dataset's own checker — each with the repository, file, test and commit it comes from
(``source``, ``commit``) and the label that test expects (``equivalent``). The labels are the
graders' own: where they disagree with each other (``10 weeks`` is ``10`` for one and ``10cm`` is
not ``10`` for the same), no checker can agree with all of them.

The comparison feeds the same strings to :class:`spice_env.verify.Verifier` and to plain
Math-Verify (``verify(parse(gold), parse(response))`` with its default extraction settings):

* the gold answer is the case's gold with one pair of enclosing math delimiters (``$…$``,
  ``\\(…\\)``) or one enclosing ``\\boxed{}`` taken off; the verifier's answer type follows it as
  the evaluation benchmarks infer it (``integer`` for a bare integer, else ``expression``);
* the response is the prediction as written when it holds a ``\\boxed{}`` (extracting the box is
  part of what is compared), else the bare prediction put in one ``\\boxed{}``;
* a case whose gold or prediction is prose (a whole solution, or an answer inside a sentence with
  no box) is left out and counted: the Reasoner's protocol boxes its final answer, and reading an
  answer out of free text is not what either checker is asked here.

:func:`agreement` returns the share of cases on which each checker gives the expected label,
with every disagreement listed. The verifier runs with a time budget of :data:`TIMEOUT_S`, ten
times what the slowest ordinary case needs, so that a busy machine does not turn a verdict into a
timeout and change the figure; the cases that time out even so are counted (``peer_timeouts``).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spice_env.tasks import Task
from spice_env.verify import BOX, Verdict, Verifier, last_boxes

CASES_FILE = Path(__file__).parent / "data" / "peer_equivalence.jsonl"

TIMEOUT_S = 30.0
"""The verifier's ``timeout_s`` here: Math-Verify's own limit is then 10 s per step, where the
slowest case that does not time out takes about 1 s on a 2-core CPU."""

_DELIMITERS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))
_WORD = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{3,}")
_PROSE_WORDS = 3


@dataclass(frozen=True)
class PeerCase:
    """One equivalence case of another grader's test suite."""

    gold: str
    prediction: str
    equivalent: bool
    source: str
    commit: str
    notes: str = ""


def load_cases(path: Path = CASES_FILE) -> list[PeerCase]:
    """The cases of ``path`` (one JSON object per line)."""
    with path.open(encoding="utf-8") as handle:
        return [PeerCase(**json.loads(line)) for line in handle if line.strip()]


def _without_delimiters(text: str) -> str:
    text = text.strip()
    for opening, closing in _DELIMITERS:
        if (text.startswith(opening) and text.endswith(closing)
                and len(text) >= len(opening) + len(closing)):
            inner = text[len(opening):len(text) - len(closing)]
            if "$" not in inner.replace("\\$", ""):
                return inner.strip()
    return text


def _is_prose(text: str) -> bool:
    outside_text = re.sub(r"\\text\{[^{}]*\}", "", text)
    math_signs = text.replace("\\$", "").count("$")
    return math_signs >= 2 or len(_WORD.findall(outside_text)) >= _PROSE_WORDS


def bare_answer(text: str) -> str | None:
    """The single answer ``text`` states: its boxes' contents (joined by ``", "`` when there are
    several), or the text without enclosing delimiters; None when it is prose or empty."""
    count = len(BOX.findall(text))
    if count:
        boxes = last_boxes(text, count)
        return ", ".join(boxes) if boxes and all(boxes) else None
    answer = _without_delimiters(text)
    return None if not answer or _is_prose(answer) else answer


def comparison_input(case: PeerCase) -> tuple[str, str] | None:
    """``(gold, response)`` as both checkers get them, or None for a case left out."""
    gold = bare_answer(case.gold)
    if gold is None:
        return None
    if BOX.search(case.prediction):
        return gold, case.prediction
    if not case.prediction.strip():
        return gold, "\\boxed{}"
    answer = bare_answer(case.prediction)
    return None if answer is None else (gold, "\\boxed{" + answer + "}")


def answer_type(gold: str) -> str:
    """The verifier's answer type for a gold answer, as the evaluation benchmarks infer it."""
    return "integer" if re.fullmatch(r"[+-]?\d+", gold) else "expression"


def our_verdicts(pairs: Sequence[tuple[str, str]], verifier: Verifier) -> list[Verdict]:
    """The verifier's verdict on each ``(gold, response)``."""
    tasks = [(Task(kind="free_form", question="(peer case)", answer=gold,
                   answer_type=answer_type(gold)), response)
             for gold, response in pairs]
    return verifier.verify_many(tasks)


PLAIN_MEMORY_BYTES = 4 * 2**30
"""The address-space limit of the process that runs plain Math-Verify: an input such as
``10^{10^{10^{10}}}`` can make SymPy build an integer too large for memory inside one C call,
where Math-Verify's signal-based time limit cannot stop it; past this limit the call fails with
``MemoryError`` (its verdict 'not equivalent') instead of taking the machine's memory."""


def math_verify_labels(pairs: Sequence[tuple[str, str]]) -> list[bool]:
    """Plain Math-Verify on each ``(gold, response)``: ``verify(parse(gold), parse(response))``
    with the default extraction settings (the gold in ``$…$``); a failure counts as not
    equivalent. Its expression extraction evaluates text with SymPy, which is why it runs here
    on the committed cases only, never on model output, and in a child process whose memory is
    capped at :data:`PLAIN_MEMORY_BYTES`."""
    child = subprocess.run(
        [sys.executable, "-m", "benchmarks.peer_graders", "--plain", str(PLAIN_MEMORY_BYTES)],
        input=json.dumps([list(pair) for pair in pairs]), capture_output=True, text=True,
        check=False, timeout=60 + 30 * len(pairs))
    if child.returncode != 0:
        raise RuntimeError(f"plain Math-Verify failed (exit {child.returncode}): "
                           f"{child.stderr.strip()[-500:]}")
    labels = json.loads(child.stdout)
    return [bool(label) for label in labels]


def _plain_labels(pairs: Sequence[Sequence[str]], memory_bytes: int) -> list[bool]:
    """The child's side of :func:`math_verify_labels`."""
    import logging
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    from math_verify import parse, verify

    logging.getLogger("math_verify").setLevel(logging.CRITICAL)
    out = []
    for gold, response in pairs:
        try:
            out.append(bool(verify(parse(f"${gold}$"), parse(response))))
        except Exception:  # a failure of the library is its verdict 'not equivalent'
            out.append(False)
    return out


def agreement(cases: Sequence[PeerCase] | None = None, verifier: Verifier | None = None
              ) -> dict[str, Any]:
    """Both checkers' agreement with the graders' labels, per source and overall."""
    cases = list(cases) if cases is not None else load_cases()
    used = [(case, pair) for case in cases if (pair := comparison_input(case)) is not None]
    pairs = [pair for _, pair in used]
    owned = verifier is None
    checker = verifier or Verifier(timeout_s=TIMEOUT_S)
    try:
        verdicts = our_verdicts(pairs, checker)
    finally:
        if owned:
            checker.close()
    ours = [verdict.correct for verdict in verdicts]
    plain = math_verify_labels(pairs)
    expected = [case.equivalent for case, _ in used]
    by_source: dict[str, Counter[str]] = {}
    misses = []
    for (case, (gold, response)), mine, theirs, label in zip(used, ours, plain, expected,
                                                             strict=True):
        repo = case.source.split(" ")[0]
        tally = by_source.setdefault(repo, Counter())
        tally.update(cases=1, ours=mine == label, math_verify=theirs == label)
        if mine != label or theirs != label:
            misses.append({"gold": gold, "response": response[:300], "expected": label,
                           "ours": mine, "math_verify": theirs, "source": case.source})
    count = len(used)
    return {
        "peer_agreement": round(sum(m == e for m, e in zip(ours, expected, strict=True))
                                / count, 4),
        "math_verify_agreement": round(sum(t == e for t, e in zip(plain, expected, strict=True))
                                       / count, 4),
        "peer_timeouts": sum(verdict.outcome == "timeout" for verdict in verdicts),
        "peer_cases": {"total": len(cases), "compared": count, "left_out": len(cases) - count,
                       "equivalent": sum(expected), "not_equivalent": count - sum(expected),
                       "file": "benchmarks/data/peer_equivalence.jsonl"},
        "peer_agreement_by_source": {
            repo: {"cases": t["cases"], "ours": round(t["ours"] / t["cases"], 4),
                   "math_verify": round(t["math_verify"] / t["cases"], 4)}
            for repo, t in sorted(by_source.items())},
        "peer_disagreements": misses,
    }


if __name__ == "__main__" and sys.argv[1:2] == ["--plain"]:
    json.dump(_plain_labels(json.load(sys.stdin), int(sys.argv[2])), sys.stdout)
