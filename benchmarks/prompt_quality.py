"""How usable the prompt styles are with a given model (a measurement script, not a test).

For documents sampled from the embedded corpus it measures, per prompt style:

* the Challenger's valid-question rate (and the reasons of the invalid ones);
* on the valid questions, the Reasoner's boxed-answer rate, its pass rate, and the share of
  questions whose pass rate is strictly between 0 and 1 (the ones the variance reward learns from);
* the Reasoner's boxed-answer rate on fixed MathQA problems of the embedded corpus (the same
  inputs for every style and run).

Usage::

    python benchmarks/prompt_quality.py [--model NAME] [--documents N] [--samples G]
        [--styles compact paper] [--output benchmarks/results/prompt_quality.json]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agents.base import SamplingConfig
from agents.self_play import SelfPlayAgent
from benchmarks.reporting import envelope, write_report
from spice_env.corpus import load_corpus
from spice_env.game import GameConfig, SpiceGame, observation
from spice_env.prompting import PromptStyle, reasoner_prompt
from spice_env.types import TaskFormat
from spice_env.verify import Verifier, extract_boxed


def measure_style(agent: SelfPlayAgent, game: SpiceGame, documents: Sequence[Any],
                  samples: int) -> dict[str, Any]:
    """Challenger validity and Reasoner answer quality for one prompt style."""
    formats: list[TaskFormat] = ["free_form" if i % 2 == 0 else "mcq"
                                 for i in range(len(documents))]
    observations = [game.challenger_observation(d, f) for d, f in zip(documents, formats,
                                                                     strict=True)]
    started = time.perf_counter()
    outputs = [group[0] for group in agent.generate(observations, 1)]
    challenger_s = time.perf_counter() - started
    parsed = [game.parse(o.text, d, f) for o, d, f in zip(outputs, documents, formats,
                                                          strict=True)]
    tasks = [p.task for p in parsed if p.task is not None]
    result: dict[str, Any] = {
        "documents": len(documents),
        "challenger_valid_rate": len(tasks) / len(documents),
        "challenger_invalid_reasons": dict(Counter(p.reason for p in parsed if p.reason)),
        "challenger_length_cut_rate": sum(o.finish_reason == "length" for o in outputs)
        / len(outputs),
        "challenger_seconds": round(challenger_s, 1),
        "examples": [{"question": t.reasoner_question(), "answer": t.answer,
                      "answer_type": t.answer_type} for t in tasks[:5]],
    }
    if tasks:
        result.update(measure_reasoner(agent, game, tasks, samples))
    return result


def measure_reasoner(agent: SelfPlayAgent, game: SpiceGame, tasks: Sequence[Any], samples: int
                     ) -> dict[str, Any]:
    """Boxed rate, pass rates and frontier share of the Reasoner's answers."""
    observations = [game.reasoner_observation(t) for t in tasks]
    started = time.perf_counter()
    answers = agent.generate(observations, samples)
    seconds = time.perf_counter() - started
    pass_rates, outcomes = [], Counter[str]()
    for task, group in zip(tasks, answers, strict=True):
        verdicts = game.verifier.verify_many([(task, g.text) for g in group])
        outcomes.update(v.outcome for v in verdicts)
        pass_rates.append(sum(v.correct for v in verdicts) / len(verdicts))
    total = sum(outcomes.values())
    return {
        "questions": len(tasks),
        "reasoner_samples": samples,
        "reasoner_boxed_rate": 1 - outcomes["no_answer"] / total,
        "reasoner_outcomes": dict(outcomes),
        "reasoner_mean_pass_rate": sum(pass_rates) / len(pass_rates),
        "frontier_share": sum(0 < p < 1 for p in pass_rates) / len(pass_rates),
        "pass_rates": pass_rates,
        "reasoner_seconds": round(seconds, 1),
    }


def corpus_problems(n: int) -> list[str]:
    """``n`` MathQA problems spread over the embedded math corpus (their first line)."""
    corpus = load_corpus("embedded:math")
    step = max(1, len(corpus) // n)
    problems = []
    for index in range(0, step * n, step):
        line = corpus[index].text.split("\n", 1)[0].removeprefix("Problem: ").strip()
        problems.append(line[:1].upper() + line[1:])
    return problems


def measure_reasoner_on_problems(agent: SelfPlayAgent, style: PromptStyle, problems: list[str],
                                 samples: int) -> dict[str, Any]:
    """Boxed-answer and length-cut rates of the Reasoner on well-formed corpus problems.

    The Challenger's questions vary with its sampling; these do not, so prompt styles and
    settings compare on the same inputs. (Their gold answers are too irregular to grade.)
    """
    observations = []
    for problem in problems:
        rendered = reasoner_prompt(problem, style)
        observations.append(observation("reasoner", rendered, question=problem))
    started = time.perf_counter()
    groups = agent.generate(observations, samples)
    generations = [g for group in groups for g in group]
    return {
        "problems": len(problems), "samples": samples,
        "boxed_rate": sum(extract_boxed(g.text) is not None for g in generations)
        / len(generations),
        "length_cut_rate": sum(g.finish_reason == "length" for g in generations)
        / len(generations),
        "seconds": round(time.perf_counter() - started, 1),
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    parser.add_argument("--documents", type=int, default=32)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--styles", nargs="+", default=["compact", "paper"])
    parser.add_argument("--corpus", default="embedded")
    parser.add_argument("--problems", type=int, default=16,
                        help="MathQA problems for the Reasoner-only measurement")
    parser.add_argument("--challenger-tokens", type=int, default=256)
    parser.add_argument("--reasoner-tokens", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="benchmarks/results/prompt_quality.json")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Measure every requested style and write JSON and Markdown results."""
    args = parse_args(argv)
    agent = SelfPlayAgent(
        "hf", args.model,
        challenger=SamplingConfig(temperature=1.0, max_new_tokens=args.challenger_tokens,
                                  seed=args.seed),
        reasoner=SamplingConfig(temperature=1.0, max_new_tokens=args.reasoner_tokens,
                                seed=args.seed + 1))
    documents = load_corpus(args.corpus).sampler(args.seed).sample(args.documents)
    report: dict[str, Any] = {
        "model": args.model, "corpus": args.corpus, "temperature": 1.0,
        "challenger_max_new_tokens": args.challenger_tokens,
        "reasoner_max_new_tokens": args.reasoner_tokens,
        **envelope("python benchmarks/prompt_quality.py " + " ".join(
            sys.argv[1:] if argv is None else argv), ["spice-env", "torch", "transformers"]),
        "styles": {},
    }
    with Verifier() as verifier:
        for style in args.styles:
            style_name: PromptStyle = "compact" if style == "compact" else "paper"
            game = SpiceGame(GameConfig(prompt_style=style_name), verifier)
            report["styles"][style] = measure_style(agent, game, documents, args.samples)
            report["styles"][style]["reasoner_on_corpus_problems"] = \
                measure_reasoner_on_problems(agent, style_name, corpus_problems(args.problems),
                                             args.samples)
            print(style, {k: v for k, v in report["styles"][style].items()
                          if k not in ("examples", "pass_rates")}, flush=True)
    write_report(report, Path(args.output))
    return 0


if __name__ == "__main__":
    sys.exit(main())
