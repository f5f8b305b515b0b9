"""Throughput benchmark of :class:`spice_env.verify.Verifier` (a script, not a test).

Usage (from the repository root)::

    python benchmarks/perf/verifier.py [--items N] [--batch B] [--repeats R] [--output PATH]

It generates Reasoner responses deterministically (a seeded :class:`random.Random`): a few
thousand characters of step-by-step reasoning with LaTeX and intermediate numbers, sometimes an
earlier ``\\boxed{}`` that is then revised, ending in a ``\\boxed{…}`` final answer (or, for a
small share, in no box at all). Answer types come in training-like proportions; every task gets
``GROUP_SIZE`` rollouts (a GRPO group) whose answers are written in several equivalent or wrong
forms, so Math-Verify really runs and the cache only helps as much as it would in training.

Measured, through the public API only (``Verifier.verify_many``):

* worker start-up (the first call, which spawns the workers) and the cold first batch;
* steady-state verifications per second in batches of ``--batch`` pairs, with the default
  configuration, with ``cache_size=0``, and replaying the same batches (a hot cache);
* a breakdown by answer type;
* pathological answers (known slow Math-Verify inputs, an answer over ``max_answer_chars``, a
  degenerate response) alone and mixed into a normal batch.

Math-Verify jobs are counted by swapping in a :class:`CountingPool` (a ``MathVerifyPool`` that
records the jobs it is given); nothing else of the verifier is touched. Results are written as
JSON (``--output``) and as a Markdown summary next to it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import random
import statistics
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.perf.common import command_line, machine, package_versions, source_files
from spice_env.tasks import LETTERS, Task
from spice_env.verify import (
    MathVerifyPool,
    Outcome,
    Verdict,
    Verifier,
    VerifierConfig,
    extract_boxed,
)

TARGET_PER_S = 1000.0
DEFAULT_ITEMS = 4096
DEFAULT_BATCH = 256
DEFAULT_REPEATS = 5
DEFAULT_SEED = 1234
DEFAULT_OUTPUT = Path("benchmarks/results/verifier.json")
GROUP_SIZE = 8  # rollouts per task, as in a GRPO group
RESPONSE_CHARS = (1500, 4500)
P_NO_BOX = 0.05  # responses without a (complete) box
P_CORRECT = 0.55  # of boxed responses, those meant to be right
P_SAME_FORM = 0.4  # of right answers, those written exactly as the gold answer
P_REVISED = 0.2  # responses with an earlier, revised \boxed{}
SETTLE_S = 2.5  # pause letting a replaced worker finish starting before a timed call
KILL_TOLERANCE_S = 0.25  # detecting a timeout, killing the worker and spawning its replacement
TYPE_WEIGHTS: dict[str, float] = {
    "mcq_letter": 0.40, "integer": 0.20, "expression": 0.20,
    "float": 0.08, "string": 0.08, "boolean": 0.04,
}

# --- the workload ------------------------------------------------------------------------------


@dataclass(frozen=True)
class AnswerSpec:
    """A gold answer with right and wrong ways a Reasoner may write it (``right[0]`` is gold)."""

    gold: str
    right: tuple[str, ...]
    wrong: tuple[str, ...]
    options: dict[str, str] | None = None


@dataclass(frozen=True)
class Item:
    """One (task, response) pair with the label the generator meant it to have."""

    task: Task
    response: str
    answer_type: str
    intended: bool
    form: str  # identical / equivalent / wrong / no_box, or a pathological case's name


WORDS = (
    "photosynthesis", "mitochondria", "the Treaty of Paris", "carbon dioxide", "Marie Curie",
    "the Pacific Ocean", "nitrogen", "Napoleon", "the Silk Road", "plate tectonics", "inflation",
    "the Magna Carta", "glucose", "the Renaissance", "oxygen", "Isaac Newton", "the Nile",
    "supply and demand", "feudalism", "the Krebs cycle",
)
UNITS = ("cm", "kg", "people", "years", "dollars", "km")
SQUAREFREE = (2, 3, 5, 6, 7, 10, 11, 13, 14, 15, 17, 19, 21, 22, 23, 26, 29, 30)
YES_FORMS = ("yes", "Yes", "\\text{Yes}", "true", "True")
NO_FORMS = ("no", "No", "\\text{No}", "false", "False")


def _letter_forms(letter: str, options: dict[str, str]) -> tuple[str, ...]:
    return (letter, f"({letter})", f"\\text{{{letter}}}", f"{letter}) {options[letter]}",
            f"\\textbf{{{letter}}}", options[letter])


def gen_mcq(rng: random.Random) -> AnswerSpec:
    """A four-option question; answers as ``B``, ``(B)``, ``\\text{B}``, ``B) text``, text."""
    if rng.random() < 0.5:
        unit = rng.choice(UNITS)
        texts = [f"{value} {unit}" for value in rng.sample(range(2, 2000), 4)]
    else:
        texts = rng.sample(WORDS, 4)
    options = dict(zip(LETTERS, texts, strict=True))
    gold = rng.choice(LETTERS)
    wrong = tuple(form for letter in LETTERS if letter != gold
                  for form in _letter_forms(letter, options)[:4])
    return AnswerSpec(gold, _letter_forms(gold, options), wrong, options)


def gen_integer(rng: random.Random) -> AnswerSpec:
    """An integer of varied size; answers with commas, ``{,}``, units, ``.0`` or ``\\$``."""
    n = rng.choice((rng.randint(0, 99), rng.randint(100, 9_999), rng.randint(10_000, 5_000_000)))
    n = -n if rng.random() < 0.1 else n
    unit = rng.choice(UNITS)
    right = (str(n), f"{n:,}", f"{n} \\text{{ {unit}}}", f"{n}.0", f"{n:,}".replace(",", "{,}"),
             f"\\${n:,}")
    wrong = (str(n + rng.choice((-2, -1, 1, 3))), f"{n + rng.randint(5, 50):,}", str(10 * n + 7))
    return AnswerSpec(str(n), right, wrong)


def gen_float(rng: random.Random) -> AnswerSpec:
    """A decimal; answers padded, with units, or as a fraction (which goes to Math-Verify)."""
    places = rng.choice((1, 2, 3))
    value = round(rng.uniform(0.5, 500.0), places)
    step = 10.0**-places

    def fmt(x: float) -> str:
        return f"{x:.{places}f}"

    gold = fmt(value)
    right = (gold, f"{value:.{places + 2}f}", f"{gold} \\text{{ {rng.choice(UNITS)}}}",
             f"\\frac{{{round(value * 10**places)}}}{{{10**places}}}", f"{gold}0")
    wrong = (fmt(value * rng.uniform(1.01, 1.1) + step), fmt(value * 10), fmt(value / 2 - step))
    return AnswerSpec(gold, right, wrong)


def _signed(coefficient: int, suffix: str) -> str:
    """``+3x`` / ``-x`` / ``+7``: a term to append to a sum (empty for a zero coefficient)."""
    if coefficient == 0:
        return ""
    sign = "+" if coefficient > 0 else "-"
    size = abs(coefficient)
    return f"{sign}{'' if size == 1 and suffix else size}{suffix}"


def expr_fraction(rng: random.Random) -> AnswerSpec:
    """``\\frac{a}{b}`` vs ``\\dfrac``, ``a/b``, an unreduced fraction or a decimal."""
    a, b = 1, 1
    while b == 1:
        b = rng.randint(2, 64)
        a = rng.randint(1, 3 * b)
        a, b = a // math.gcd(a, b), b // math.gcd(a, b)
    k = rng.randint(2, 6)
    right = [f"\\frac{{{a}}}{{{b}}}", f"\\dfrac{{{a}}}{{{b}}}", f"{a}/{b}",
             f"\\frac{{{k * a}}}{{{k * b}}}"]
    if b == 2 ** _multiplicity(b, 2) * 5 ** _multiplicity(b, 5):
        right.append(repr(a / b))
    wrong = (f"\\frac{{{b}}}{{{a}}}", f"\\frac{{{a + 1}}}{{{b}}}", f"{a}/{b + 1}")
    return AnswerSpec(right[0], tuple(right), wrong)


def _multiplicity(n: int, p: int) -> int:
    count = 0
    while n % p == 0:
        n, count = n // p, count + 1
    return count


def expr_surd(rng: random.Random) -> AnswerSpec:
    """``c\\sqrt{d}`` vs ``\\sqrt{c^2 d}``, ``c \\cdot \\sqrt{d}``, ``\\sqrt{d}\\,c``."""
    c, d = rng.randint(2, 12), rng.choice(SQUAREFREE)
    right = (f"{c}\\sqrt{{{d}}}", f"\\sqrt{{{c * c * d}}}", f"{c} \\cdot \\sqrt{{{d}}}",
             f"\\sqrt{{{d}}}\\,{c}")
    wrong = (f"{c + 1}\\sqrt{{{d}}}", f"\\sqrt{{{c * d}}}", f"{c}\\sqrt{{{d + 1}}}")
    return AnswerSpec(right[0], right, wrong)


def expr_polynomial(rng: random.Random) -> AnswerSpec:
    """``x^2+5x+6`` vs ``(x+2)(x+3)``, reordered terms, ``x(x+5)+6``."""
    var = rng.choice(("x", "x", "y", "n"))
    p, q = (rng.choice([i for i in range(-9, 10) if i]) for _ in range(2))
    s, t = p + q, p * q
    gold = f"{var}^2{_signed(s, var)}{_signed(t, '')}"
    right = [gold, f"({var}{_signed(p, '')})({var}{_signed(q, '')})",
             f"{t}{_signed(s, var)}+{var}^2"]
    if s:
        right.append(f"{var}({var}{_signed(s, '')}){_signed(t, '')}")
    wrong = (f"({var}{_signed(-p, '')})({var}{_signed(q, '')})",
             f"{var}^2{_signed(s, var)}{_signed(-t, '')}", f"{var}^2{_signed(s + 1, var)}")
    return AnswerSpec(gold, tuple(right), wrong)


def expr_angle(rng: random.Random) -> AnswerSpec:
    """``\\frac{2\\pi}{3}`` vs ``2\\pi/3``, ``\\frac{2}{3}\\pi``."""
    m = rng.choice((2, 3, 4, 5, 6, 8, 12))
    k = rng.choice([i for i in range(1, 2 * m) if math.gcd(i, m) == 1])
    coef = "" if k == 1 else str(k)
    right = (f"\\frac{{{coef}\\pi}}{{{m}}}", f"{coef}\\pi/{m}", f"\\frac{{{k}}}{{{m}}}\\pi",
             f"\\pi \\cdot \\frac{{{k}}}{{{m}}}")
    wrong = (f"\\frac{{{coef}\\pi}}{{{m + 1}}}", f"\\frac{{{m}\\pi}}{{{k}}}", f"{coef}\\pi")
    return AnswerSpec(right[0], right, wrong)


def expr_power(rng: random.Random) -> AnswerSpec:
    """An integer gold (``1024``) answered as a power (``2^{10}``, ``4^{5}``)."""
    b, e = rng.randint(2, 9), rng.randint(3, 12)
    right = [str(b**e), f"{b}^{{{e}}}"]
    if e % 2 == 0:
        right.append(f"{b * b}^{{{e // 2}}}")
    wrong = (f"{b}^{{{e + 1}}}", str(b**e + 1), f"{b + 1}^{{{e}}}")
    return AnswerSpec(right[0], tuple(right), wrong)


def expr_quadratic_root(rng: random.Random) -> AnswerSpec:
    """``\\frac{1+\\sqrt{5}}{2}`` vs reordered or split forms."""
    a, b, d = rng.randint(1, 9), rng.randint(2, 6), rng.choice(SQUAREFREE)
    right = (f"\\frac{{{a}+\\sqrt{{{d}}}}}{{{b}}}", f"\\frac{{\\sqrt{{{d}}}+{a}}}{{{b}}}",
             f"\\frac{{{a}}}{{{b}}}+\\frac{{\\sqrt{{{d}}}}}{{{b}}}")
    wrong = (f"\\frac{{{a}-\\sqrt{{{d}}}}}{{{b}}}", f"\\frac{{{a}+\\sqrt{{{d}}}}}{{{b + 1}}}",
             f"{a}+\\sqrt{{{d}}}")
    return AnswerSpec(right[0], right, wrong)


EXPRESSION_FAMILIES: tuple[Callable[[random.Random], AnswerSpec], ...] = (
    expr_fraction, expr_surd, expr_polynomial, expr_angle, expr_power, expr_quadratic_root,
)


def gen_expression(rng: random.Random) -> AnswerSpec:
    """A symbolic answer from one of :data:`EXPRESSION_FAMILIES`."""
    return rng.choice(EXPRESSION_FAMILIES)(rng)


def gen_string(rng: random.Random) -> AnswerSpec:
    """A short name; answers in other case, with ``\\text{}``, articles or a full stop."""
    gold, other = rng.sample(WORDS, 2)
    right = (gold, f"\\text{{{gold}}}", gold.upper(), f"{gold}.",
             f"\\textbf{{{gold.capitalize()}}}")
    return AnswerSpec(gold, right, (other, f"\\text{{{other}}}", f"not {gold}"))


def gen_boolean(rng: random.Random) -> AnswerSpec:
    """Yes/no; answers as yes/true/``\\text{Yes}`` and so on."""
    truth = rng.random() < 0.5
    same, other = (YES_FORMS, NO_FORMS) if truth else (NO_FORMS, YES_FORMS)
    gold = rng.choice(same)
    return AnswerSpec(gold, (gold, *same), other)


GENERATORS: dict[str, Callable[[random.Random], AnswerSpec]] = {
    "mcq_letter": gen_mcq, "integer": gen_integer, "expression": gen_expression,
    "float": gen_float, "string": gen_string, "boolean": gen_boolean,
}

# --- reasoning text ----------------------------------------------------------------------------

OPENERS = (
    "Let me work through this step by step.",
    "We need to find the requested quantity from the passage.",
    "Okay, let's restate what the question is asking before computing anything.",
    "First, I will identify the relevant facts in the document.",
)
STEPS = (
    "Step {k}: adding the two amounts gives ${a} + {b} = {s}$.",
    "Multiplying both sides by {a}, we get ${a}x = {p}$, so $x = \\frac{{{p}}}{{{a}}} = {b}$.",
    "Note that $\\sqrt{{{sq}}} = {r}$, which simplifies the next expression.",
    "The passage gives {a} for the first period and {b} for the second, a difference of {d}.",
    "\\[ \\frac{{{a}}}{{{b}}} \\approx {q:.4f} \\]",
    "Let me double-check the arithmetic: ${a} \\times {b} = {p}$. Yes, that is right.",
    "Hmm, I should be careful with the signs here, since ${a} - {b} = {d2}$.",
    "Using $(u+v)^2 = u^2 + 2uv + v^2$ with $u = {a}$ and $v = {b}$ gives ${s}^2 = {s2}$.",
    "So far the running total is {s}, and {r} items remain to be accounted for.",
    "Option {letter} mentions {a}, which does not match what we computed, so we rule it out.",
    "The fraction $\\frac{{{p}}}{{{s}}}$ has numerator and denominator with gcd {g}.",
    "From the text, the key quantity is defined as the ratio of the two measured values.",
    "In other words, we want $f({r})$ where $f(x) = x^2 + {a}x$, that is ${f}$.",
)
REVISIONS = (
    "Wait, that does not look right. Let me re-check the computation.",
    "Hmm, actually I made an error above; let me redo the last step.",
    "Let me verify this once more before committing to it.",
)
FINALS = (
    "Therefore, the final answer is $\\boxed{ANS}$.",
    "**Final answer:** $\\boxed{ANS}$",
    "Thus the answer is \\(\\boxed{ANS}\\).",
    "\\[\n\\boxed{ANS}\n\\]",
)


def _step(rng: random.Random, k: int) -> str:
    """One reasoning sentence with fresh intermediate numbers."""
    a, b, r = rng.randint(2, 999), rng.randint(2, 999), rng.randint(2, 60)
    values = {"k": k, "a": a, "b": b, "s": a + b, "p": a * b, "d": abs(a - b), "d2": a - b,
              "q": a / b, "r": r, "sq": r * r, "s2": (a + b) ** 2, "letter": rng.choice(LETTERS),
              "g": math.gcd(a * b, a + b), "f": r * r + a * r}
    return rng.choice(STEPS).format(**values)


def reasoning(rng: random.Random, length: int) -> str:
    """Step-by-step reasoning of about ``length`` characters, in paragraphs."""
    parts = [rng.choice(OPENERS)]
    size, k = len(parts[0]), 1
    while size < length:
        sentence = ("\n\n" if rng.random() < 0.25 else " ") + _step(rng, k)
        parts.append(sentence)
        size, k = size + len(sentence), k + 1
    return "".join(parts)


def _pick(rng: random.Random, spec: AnswerSpec, correct: bool) -> tuple[str, str]:
    """An answer string and its form label."""
    if not correct:
        return rng.choice(spec.wrong), "wrong"
    if rng.random() < P_SAME_FORM or len(spec.right) == 1:
        return spec.right[0], "identical"
    return rng.choice(spec.right[1:]), "equivalent"


def rollout(rng: random.Random, spec: AnswerSpec) -> tuple[str, bool, str]:
    """One Reasoner response: ``(text, meant_correct, form)``."""
    text = reasoning(rng, rng.randint(*RESPONSE_CHARS))
    if rng.random() < P_NO_BOX:
        answer = rng.choice(spec.right)
        ending = (f"\n\nSo the final answer is {answer}." if rng.random() < 0.5
                  else f"\n\nTherefore the answer is $\\boxed{{{answer}")  # cut off mid-box
        return text + ending, False, "no_box"
    answer, form = _pick(rng, spec, rng.random() < P_CORRECT)
    if rng.random() < P_REVISED:
        earlier = rng.choice(spec.wrong)
        text += (f"\n\nSo the answer would be $\\boxed{{{earlier}}}$.\n\n{rng.choice(REVISIONS)} "
                 + reasoning(rng, rng.randint(300, 900)))
    return text + "\n\n" + rng.choice(FINALS).replace("ANS", answer), form != "wrong", form


def make_task(answer_type: str, spec: AnswerSpec, index: int) -> Task:
    """The :class:`Task` for ``spec``."""
    kind = "mcq" if answer_type == "mcq_letter" else "free_form"
    question = f"Question {index} about the document: what is the requested {answer_type}?"
    return Task.model_validate({"kind": kind, "question": question, "answer": spec.gold,
                                "answer_type": answer_type, "options": spec.options})


def make_items(n: int, seed: int) -> list[Item]:
    """``n`` pairs: tasks of mixed types, ``GROUP_SIZE`` consecutive rollouts per task."""
    rng = random.Random(seed)
    types, weights = list(TYPE_WEIGHTS), list(TYPE_WEIGHTS.values())
    items: list[Item] = []
    while len(items) < n:
        answer_type = rng.choices(types, weights)[0]
        spec = GENERATORS[answer_type](rng)
        task = make_task(answer_type, spec, len(items) // GROUP_SIZE)
        for _ in range(GROUP_SIZE):
            text, intended, form = rollout(rng, spec)
            items.append(Item(task, text, answer_type, intended, form))
    return items[:n]


# --- measuring ---------------------------------------------------------------------------------


class CountingPool(MathVerifyPool):
    """A :class:`MathVerifyPool` that records every ``(gold, prediction)`` job it runs."""

    def __init__(self, workers: int, timeout_s: float) -> None:
        super().__init__(workers, timeout_s)
        self.jobs: list[tuple[str, str]] = []

    def run(self, jobs: Sequence[tuple[str, str]]) -> list[Outcome]:
        """Record the jobs, then run them as usual."""
        self.jobs.extend(jobs)
        return super().run(jobs)


def open_verifier(**overrides: Any) -> tuple[Verifier, CountingPool]:
    """A :class:`Verifier` (config ``overrides``) whose Math-Verify jobs are counted."""
    verifier = Verifier(**overrides)
    pool = CountingPool(verifier.config.workers, verifier.config.timeout_s)
    verifier.pool.close()
    verifier.pool = pool
    return verifier, pool


def start_workers(verifier: Verifier) -> None:
    """Make ``verifier`` start its Math-Verify workers (one call that needs Math-Verify)."""
    task = Task(kind="free_form", question="warm-up", answer="\\frac{3}{4}",
                answer_type="expression")
    verifier.verify_many([(task, "\\boxed{0.75}")])


@dataclass
class Pass:
    """The verdicts and per-batch wall times of one pass over some items."""

    verdicts: list[Verdict]
    batch_s: list[float]

    @property
    def seconds(self) -> float:
        """Time spent inside ``verify_many``."""
        return sum(self.batch_s)


def timed_pass(verifier: Verifier, items: Sequence[Item], batch: int) -> Pass:
    """Verify ``items`` in batches of ``batch`` pairs, timing each ``verify_many`` call."""
    verdicts: list[Verdict] = []
    times: list[float] = []
    for start in range(0, len(items), batch):
        pairs = [(item.task, item.response) for item in items[start : start + batch]]
        began = time.perf_counter()
        verdicts.extend(verifier.verify_many(pairs))
        times.append(time.perf_counter() - began)
    return Pass(verdicts, times)


def outcome_counts(verdicts: Sequence[Verdict]) -> dict[str, int]:
    """How many verdicts ended in each outcome."""
    return dict(sorted(Counter(v.outcome for v in verdicts).items()))


def disagreements(items: Sequence[Item], verdicts: Sequence[Verdict]) -> list[dict[str, Any]]:
    """Pairs where the verifier's verdict differs from what the generator meant."""
    return [{"answer_type": it.answer_type, "gold": it.task.answer, "extracted": v.extracted,
             "form": it.form, "intended": it.intended, "outcome": v.outcome}
            for it, v in zip(items, verdicts, strict=True) if v.correct != it.intended]


def run_config(items: Sequence[Item], warmup: Sequence[Item], batch: int,
               cache_size: int) -> dict[str, Any]:
    """Start-up, a cold batch, the steady state and (with a cache) a hot replay, one verifier."""
    verifier, pool = open_verifier(cache_size=cache_size)
    with verifier:
        began = time.perf_counter()
        start_workers(verifier)
        startup_s = time.perf_counter() - began
        cold = timed_pass(verifier, warmup[:batch], batch)
        before = len(pool.jobs)
        steady = timed_pass(verifier, items, batch)
        jobs = pool.jobs[before:]
        hot = timed_pass(verifier, items, batch) if cache_size else None
        hot_jobs = len(pool.jobs) - before - len(jobs)
    result: dict[str, Any] = {
        "worker_startup_s": round(startup_s, 3),
        "first_batch_s": round(cold.seconds, 3),
        "verifications_per_s": round(len(items) / steady.seconds, 1),
        "seconds": round(steady.seconds, 3),
        "batch_s_median": round(statistics.median(steady.batch_s), 4),
        "batch_s_max": round(max(steady.batch_s), 4),
        "math_verify_jobs": len(jobs),
        "distinct_math_verify_pairs": len(set(jobs)),
        "outcomes": outcome_counts(steady.verdicts),
        "disagreements": disagreements(items, steady.verdicts),
    }
    if hot is not None:
        result["hot_replay_per_s"] = round(len(items) / hot.seconds, 1)
        result["hot_replay_math_verify_jobs"] = hot_jobs
    return result


def summarise(runs: Sequence[dict[str, Any]], key: str) -> dict[str, Any]:
    """Best, median and spread of ``key`` over repeated runs."""
    values = [float(run[key]) for run in runs]
    best = max(values)
    return {"best": best, "median": round(statistics.median(values), 1), "all": values,
            "spread_pct": round(100 * (best - min(values)) / best, 1)}


def by_answer_type(items: Sequence[Item], warmup: Sequence[Item],
                   batch: int) -> dict[str, dict[str, Any]]:
    """Steady-state throughput per answer type (default config, one warmed verifier)."""
    verifier, pool = open_verifier()
    breakdown: dict[str, dict[str, Any]] = {}
    with verifier:
        timed_pass(verifier, warmup[:batch], batch)
        for answer_type in TYPE_WEIGHTS:
            subset = [item for item in items if item.answer_type == answer_type]
            before = len(pool.jobs)
            result = timed_pass(verifier, subset, batch)
            breakdown[answer_type] = {
                "items": len(subset),
                "verifications_per_s": round(len(subset) / result.seconds, 1),
                "us_per_item": round(1e6 * result.seconds / len(subset), 1),
                "math_verify_jobs": len(pool.jobs) - before,
                "outcomes": outcome_counts(result.verdicts),
                "agreement": round(1 - len(disagreements(subset, result.verdicts))
                                   / len(subset), 4),
            }
    return breakdown


# --- pathological answers ----------------------------------------------------------------------

PATHOLOGICAL: tuple[tuple[str, str, str], ...] = (
    ("power_tower_10", "2", "10^{10^{10^{10}}}"),
    ("math_verify_issue_65", "\\frac{5}{16}",
     "\\dfrac{5^{\\left(5^{\\left(5^{\\left(5^5\\right)}\\right)} - 4\\right)} - 5}{16}"),
    ("power_tower_9", "2", "9^{9^{9^{9}}}"),
    ("power_tower_2", "2", "2^{2^{2^{2^{2^{2}}}}}"),
    ("huge_factorial", "2", "(10^{100})!"),
    ("huge_binomial", "1", "\\binom{10^{9}}{10^{5}}"),
    ("huge_product", "1", "\\prod_{k=1}^{10^{6}} k"),
    ("nonelementary_integral", "1", "\\int_0^1 e^{x^{2}} \\sin(x^{7}) dx"),
    ("nested_logs_issue_63", "x",
     "\\log_{2^5}(\\log_{2^4}(\\log_{2^3}(\\log_{2^2}(\\log_{2^1}x))))"),
)


def _expression_item(name: str, gold: str, response: str) -> Item:
    task = Task(kind="free_form", question=f"Pathological case {name}", answer=gold,
                answer_type="expression")
    return Item(task, response, "expression", False, name)


def pathological_items() -> list[Item]:
    """The slow Math-Verify inputs, boxed at the end of a short response, and a too-long one."""
    items = [_expression_item(name, gold, f"After a long computation, $\\boxed{{{answer}}}$.")
             for name, gold, answer in PATHOLOGICAL]
    too_long = "+".join(["x^{2}"] * 250)  # 1,499 characters > max_answer_chars
    items.append(_expression_item("too_long_answer", "250x^{2}", f"\\boxed{{{too_long}}}"))
    return items


def solo_costs(items: Sequence[Item]) -> dict[str, Any]:
    """Each pathological item alone in a batch (no cache; a pause before each call)."""
    verifier, _ = open_verifier(cache_size=0)
    rows = []
    with verifier:
        start_workers(verifier)
        for item in items:
            time.sleep(SETTLE_S)
            began = time.perf_counter()
            verdict = verifier.verify_many([(item.task, item.response)])[0]
            rows.append({"name": item.form, "answer_chars": len(extract_boxed(item.response) or ""),
                         "outcome": verdict.outcome,
                         "wall_s": round(time.perf_counter() - began, 3)})
        restarts = verifier.pool.restarts
    return {"cases": rows, "worker_restarts": restarts}


def _interleave(normal: Sequence[Item], extra: Sequence[Item]) -> list[Item]:
    """``extra`` spread evenly through ``normal``."""
    mixed = list(normal)
    for i, item in enumerate(extra):
        mixed.insert((i + 1) * len(mixed) // (len(extra) + 1), item)
    return mixed


def mixed_batch_cost(normal: Sequence[Item], extra: Sequence[Item]) -> dict[str, Any]:
    """Wall time of ``normal`` with and without ``extra`` mixed in (no cache, warm workers)."""
    verifier, _ = open_verifier(cache_size=0)
    config = verifier.config
    with verifier:
        base = min((timed_pass(verifier, normal, len(normal)) for _ in range(3)),
                   key=lambda p: p.seconds)
        time.sleep(SETTLE_S)
        mixed_items = _interleave(normal, extra)
        mixed = timed_pass(verifier, mixed_items, len(mixed_items))
        after = timed_pass(verifier, normal, len(normal))
    by_name = {it.form: v.outcome for it, v in zip(mixed_items, mixed.verdicts, strict=True)}
    kept = [v for it, v in zip(mixed_items, mixed.verdicts, strict=True) if it not in extra]
    timeouts = sum(by_name[it.form] == "timeout" for it in extra)
    bound = math.ceil(timeouts / config.workers) * config.timeout_s
    return {
        "normal_items": len(normal), "pathological_items": len(extra), "timeouts": timeouts,
        "base_s": round(base.seconds, 3), "mixed_s": round(mixed.seconds, 3),
        "extra_s": round(mixed.seconds - base.seconds, 3),
        "bound_s": bound, "tolerance_s": KILL_TOLERANCE_S,
        "within_bound": mixed.seconds - base.seconds <= bound + KILL_TOLERANCE_S,
        "overhead_per_timeout_round_s": round((mixed.seconds - base.seconds - bound)
                                              / max(1, math.ceil(timeouts / config.workers)), 3),
        "normal_verdicts_unchanged": kept == base.verdicts,
        "base_right_after_s": round(after.seconds, 3),
        "outcomes": {it.form: by_name[it.form] for it in extra},
    }


def cached_repeat(item: Item) -> dict[str, Any]:
    """A timed-out answer checked again by the same default verifier (its cache answers)."""
    verifier, pool = open_verifier()
    with verifier:
        start_workers(verifier)
        first = timed_pass(verifier, [item], 1)
        before = len(pool.jobs)
        again = timed_pass(verifier, [item], 1)
        jobs = len(pool.jobs) - before
    return {"name": item.form, "first_s": round(first.seconds, 3),
            "first_outcome": first.verdicts[0].outcome, "repeat_s": round(again.seconds, 4),
            "repeat_outcome": again.verdicts[0].outcome, "repeat_math_verify_jobs": jobs}


def degenerate_responses(repeats: Sequence[int]) -> list[dict[str, Any]]:
    """Responses of ``\\boxed{`` repeated (a model stuck in a loop): box extraction cost."""
    task = Task(kind="free_form", question="degenerate", answer="2", answer_type="integer")
    rows = []
    with Verifier() as verifier:  # no Math-Verify call: workers never start
        for count in repeats:
            response = "\\boxed{" * count
            began = time.perf_counter()
            verdict = verifier.verify_many([(task, response)])[0]
            rows.append({"repeats": count, "response_chars": len(response),
                         "outcome": verdict.outcome,
                         "wall_s": round(time.perf_counter() - began, 3)})
    return rows


def pathological(warmup: Sequence[Item], batch: int) -> dict[str, Any]:
    """Costs of slow and oversized answers, alone and mixed into a normal batch."""
    items = pathological_items()
    normal = warmup[:batch]
    return {
        "solo": solo_costs(items),
        "one_in_batch": mixed_batch_cost(normal, items[:1]),
        "all_in_batch": mixed_batch_cost(normal, items),
        "cached_repeat": cached_repeat(items[0]),
        "degenerate_response": degenerate_responses((500, 1000, 2000, 4000)),
    }


# --- environment and report --------------------------------------------------------------------


def versions() -> dict[str, str]:
    """Versions of Python, the project and the packages the verifier depends on."""
    return package_versions(("spice-env", "math-verify", "latex2sympy2_extended", "sympy",
                             "numpy", "pydantic"))


def source() -> dict[str, Any]:
    """The commit and the verifier's source files as measured (they may have local edits)."""
    return source_files(("spice_env/verify.py", "spice_env/_verify_worker.py"))


def workload(items: Sequence[Item]) -> dict[str, Any]:
    """What the generated pairs look like."""
    chars = [len(item.response) for item in items]
    return {
        "items": len(items), "tasks": len({id(item.task) for item in items}),
        "group_size": GROUP_SIZE,
        "answer_types": dict(Counter(item.answer_type for item in items).most_common()),
        "forms": dict(Counter(item.form for item in items).most_common()),
        "meant_correct": sum(item.intended for item in items),
        "revised_box": sum(item.response.count("\\boxed{") > 1 for item in items),
        "response_chars_mean": round(statistics.mean(chars)),
        "response_chars_min_max": [min(chars), max(chars)],
    }


def _without_details(run: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in run.items() if key != "disagreements"}


def throughput(args: argparse.Namespace, items: Sequence[Item],
               warmup: Sequence[Item]) -> dict[str, Any]:
    """Repeated default and no-cache runs (interleaved, so load drift hits both alike)."""
    default_runs: list[dict[str, Any]] = []
    no_cache_runs: list[dict[str, Any]] = []
    for _ in range(args.repeats):
        default_runs.append(run_config(items, warmup, args.batch, VerifierConfig().cache_size))
        no_cache_runs.append(run_config(items, warmup, args.batch, 0))
    best = max(default_runs, key=lambda run: float(run["verifications_per_s"]))
    jobs_cached, jobs_plain = best["math_verify_jobs"], no_cache_runs[0]["math_verify_jobs"]
    wrong = best["disagreements"]
    return {
        "verifications_per_s": best["verifications_per_s"],
        "verifications_per_s_no_cache": summarise(no_cache_runs, "verifications_per_s")["best"],
        "verifications_per_s_hot_cache": summarise(default_runs, "hot_replay_per_s")["best"],
        "variance": {"default": summarise(default_runs, "verifications_per_s"),
                     "no_cache": summarise(no_cache_runs, "verifications_per_s"),
                     "hot_cache": summarise(default_runs, "hot_replay_per_s")},
        "worker_startup_s": min(run["worker_startup_s"] for run in default_runs + no_cache_runs),
        "first_batch_s": min(run["first_batch_s"] for run in default_runs + no_cache_runs),
        "cache": {"math_verify_jobs_with_cache": jobs_cached,
                  "math_verify_jobs_no_cache": jobs_plain,
                  "cache_hits": jobs_plain - jobs_cached,
                  "distinct_math_verify_pairs": best["distinct_math_verify_pairs"],
                  "math_verify_jobs_per_item": round(jobs_plain / len(items), 4),
                  "hot_replay_math_verify_jobs": best["hot_replay_math_verify_jobs"]},
        "outcomes": best["outcomes"],
        "agreement_with_generator": round(1 - len(wrong) / len(items), 4),
        "disagreements_sample": wrong[:10],
        "runs": {"default": [_without_details(run) for run in default_runs],
                 "no_cache": [_without_details(run) for run in no_cache_runs]},
    }


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Every measurement, as the JSON report."""
    began = time.perf_counter()
    items = make_items(args.items, args.seed)
    warmup = make_items(args.batch, args.seed + 1)
    load_before = os.getloadavg()
    source_before = source()
    report: dict[str, Any] = {"benchmark": "spice_env.verify.Verifier throughput"}
    report.update(throughput(args, items, warmup))
    report["target_per_s"] = TARGET_PER_S
    report["target_met"] = report["verifications_per_s"] >= TARGET_PER_S
    report["target_met_no_cache"] = report["verifications_per_s_no_cache"] >= TARGET_PER_S
    report["by_answer_type"] = by_answer_type(items, warmup, args.batch)
    report["pathological"] = pathological(warmup, args.batch)
    report["workload"] = workload(items)
    report["settings"] = {"items": args.items, "batch": args.batch, "repeats": args.repeats,
                          "seed": args.seed, "verifier_config": VerifierConfig().model_dump()}
    report["machine"] = {**machine(), "load_avg_at_start": [round(x, 2) for x in load_before]}
    report["versions"] = versions()
    report["source"] = {**source_before, "changed_during_run": source() != source_before}
    report["date"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    report["command"] = command_line()
    report["benchmark_wall_s"] = round(time.perf_counter() - began, 1)
    return report


def _headline_rows(report: dict[str, Any]) -> list[tuple[str, str]]:
    """The (measure, value) rows of the Markdown summary."""
    path, var = report["pathological"], report["variance"]
    one, every = path["one_in_batch"], path["all_in_batch"]
    loop = next(row for row in path["degenerate_response"] if row["repeats"] == 2000)
    return [
        ("Verifications/s, steady state, default config",
         f"{report['verifications_per_s']:.0f} (median {var['default']['median']:.0f}, "
         f"spread {var['default']['spread_pct']}%)"),
        ("Verifications/s, `cache_size=0`",
         f"{report['verifications_per_s_no_cache']:.0f} (median {var['no_cache']['median']:.0f}, "
         f"spread {var['no_cache']['spread_pct']}%)"),
        ("Verifications/s, same batches replayed (hot cache)",
         f"{report['verifications_per_s_hot_cache']:.0f}"),
        (f"Target {report['target_per_s']:.0f}/s met", "yes" if report["target_met"] else "no"),
        ("Worker start-up (first call)", f"{report['worker_startup_s']:.2f} s"),
        ("First batch after start-up", f"{report['first_batch_s']:.2f} s"),
        ("Math-Verify jobs per item (no cache) / cache hits",
         f"{report['cache']['math_verify_jobs_per_item']} / {report['cache']['cache_hits']}"),
        ("One pathological answer in a batch: extra wall time",
         f"{one['extra_s']:.2f} s (timeout {one['bound_s']:.1f} s)"),
        (f"{every['pathological_items']} pathological answers in a batch: extra wall time",
         f"{every['extra_s']:.2f} s for {every['timeouts']} timeouts "
         f"(timeout rounds alone: {every['bound_s']:.1f} s)"),
        ("Degenerate response (`\\boxed{` x 2000, 14k chars): box extraction",
         f"{loop['wall_s']:.2f} s"),
    ]


def markdown(report: dict[str, Any]) -> str:
    """A short Markdown summary of ``report``."""
    table = "\n".join(f"| {name} | {value} |" for name, value in _headline_rows(report))
    types = "\n".join(f"| {name} | {row['items']} | {row['verifications_per_s']:.0f} | "
                      f"{row['math_verify_jobs']} |"
                      for name, row in report["by_answer_type"].items())
    host, settings = report["machine"], report["settings"]
    return (f"# Verifier throughput\n\n`{report['command']}` on {report['date']}, "
            f"{host['cpu_model']} ({host['cores']} cores, {host['ram_gib']} GiB), batch "
            f"{settings['batch']}, {settings['items']} items, best of {settings['repeats']}.\n\n"
            f"| Measure | Value |\n|---|---|\n{table}\n\n"
            f"| Answer type | Items | Verifications/s | Math-Verify jobs |\n|---|---|---|---|\n"
            f"{types}\n\n{_notes(report)}\n\nFull results: `verifier.json`.\n")


def _notes(report: dict[str, Any]) -> str:
    """Two sentences putting the headline in context."""
    expression = report["by_answer_type"]["expression"]
    cache = report["cache"]
    return (f"Only {100 * cache['math_verify_jobs_per_item']:.1f}% of pairs needed a Math-Verify "
            f"call (the rest took fast paths); expression answers alone ran at "
            f"{expression['verifications_per_s']:.0f}/s. Tasks are fresh in every batch, so the "
            f"cache answered {cache['cache_hits']} of {cache['math_verify_jobs_no_cache']} "
            f"Math-Verify calls; it matters for replays ("
            f"{report['verifications_per_s_hot_cache']:.0f}/s). Timeouts are never cached, so "
            f"a repeated pathological answer is tried again.")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--items", type=int, default=DEFAULT_ITEMS, help="pairs to verify")
    parser.add_argument("--batch", type=int, default=DEFAULT_BATCH, help="pairs per call")
    parser.add_argument("--repeats", type=int, default=DEFAULT_REPEATS, help="runs per config")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="workload seed")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="JSON report path")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, write the JSON and Markdown reports, print the headline."""
    args = parse_args(argv)
    report = measure(args)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    args.output.with_suffix(".md").write_text(markdown(report))
    print(f"verifications/s: {report['verifications_per_s']:.0f} (default), "
          f"{report['verifications_per_s_no_cache']:.0f} (no cache), target "
          f"{TARGET_PER_S:.0f}/s {'met' if report['target_met'] else 'NOT met'}; "
          f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
