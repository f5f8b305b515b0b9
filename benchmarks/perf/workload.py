"""The verifier benchmark's workload: Reasoner responses generated deterministically.

A seeded :class:`random.Random` writes a few thousand characters of step-by-step reasoning with
LaTeX and intermediate numbers, sometimes an earlier ``\\boxed{}`` that is then revised, ending in a
``\\boxed{…}`` final answer (or, for a small share, in no box at all). Answer types come in
training-like proportions (:data:`TYPE_WEIGHTS`); every task gets :data:`GROUP_SIZE` rollouts (a
GRPO group) whose answers are written in several equivalent or wrong forms, so Math-Verify
really runs and a cache only helps as much as it would in training. :func:`make_items` is the
entry point.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

from spice_env.tasks import LETTERS, Task

GROUP_SIZE = 8  # rollouts per task, as in a GRPO group
RESPONSE_CHARS = (1500, 4500)
P_NO_BOX = 0.05  # responses without a (complete) box
P_CORRECT = 0.55  # of boxed responses, those meant to be right
P_SAME_FORM = 0.4  # of right answers, those written exactly as the gold answer
P_REVISED = 0.2  # responses with an earlier, revised \boxed{}
TYPE_WEIGHTS: dict[str, float] = {
    "mcq_letter": 0.40, "integer": 0.20, "expression": 0.20,
    "float": 0.08, "string": 0.08, "boolean": 0.04,
}

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
