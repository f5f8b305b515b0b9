"""``spice``: the command line of spice-env.

Subcommands:

* ``spice demo`` — play scripted SPICE episodes through ``gym.make("SpiceCorpus-v0")`` on the
  embedded corpus and print each question, gold answer, the Reasoner's answers and the rewards;
* ``spice assets`` — download and prepare the embedded offline assets.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from types import ModuleType

logger = logging.getLogger("spice")


class PackageConflictError(RuntimeError):
    """An import name of ours resolves to another distribution's package."""


def require_ours(name: str) -> ModuleType:
    """Import spice-env's ``agents`` / ``algorithms`` and stop clearly if another one shadows it."""
    module = importlib.import_module(name)
    if not getattr(module, "SPICE_ENV_PACKAGE", False):
        where = getattr(module, "__file__", None) or "an unknown location"
        raise PackageConflictError(
            f"'import {name}' found a package at {where} that is not spice-env's. Another "
            f"installed distribution (for example the OpenAI Agents SDK for 'agents') uses the "
            f"same import name; install spice-env in a dedicated virtual environment."
        )
    return module


def _demo(args: argparse.Namespace) -> int:
    import gymnasium as gym

    import spice_env

    require_ours("agents")
    scripted = importlib.import_module("agents.scripted")
    env = gym.make(spice_env.ENV_ID, corpus=args.corpus, group_size=args.group_size,
                   prompt_style=args.prompt_style, challenger_reward=args.challenger_reward)
    challenger = scripted.OracleChallenger(seed=args.seed)
    garbage = scripted.GarbageChallenger(seed=args.seed)
    reasoner = scripted.NoisyReasoner(p_correct=args.p_correct, seed=args.seed)
    print(f"SpiceCorpus-v0 on {getattr(env.unwrapped, 'corpus', args.corpus)!r}")
    for episode in range(args.episodes):
        obs, info = env.reset(seed=args.seed + episode)
        # every fourth episode shows what happens to a malformed question
        author = garbage if episode % 4 == 3 else challenger
        obs, reward, terminated, _, info = env.step(author.act(obs))
        print(f"\n[{episode}] document {info['document_id']} ({obs['task_format'] or 'invalid'})")
        if terminated:
            print(f"  invalid question ({info['invalid_reason']}: {info['detail']})")
            print(f"  rewards: challenger {reward:+.3f}")
            continue
        task = info["task"]
        print(f"  question: {task.reasoner_question()}")
        print(f"  gold: {task.answer} ({task.answer_type})")
        answers = reasoner.act(obs, info, n=args.group_size)
        obs, reward, terminated, _, info = env.step(answers)
        marks = " ".join("1" if c else "0" for c in info["correct"])
        print(f"  reasoner correct: {marks}  pass rate {info['pass_rate']:.2f}")
        print(f"  rewards: challenger {info['rewards']['challenger']:.3f}, "
              f"reasoner {info['rewards']['reasoner']}")
    env.close()
    return 0


def _assets(args: argparse.Namespace) -> int:
    from spice_env.assets import prepare_all

    for name, path in prepare_all().items():
        print(f"{name}: {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``spice``."""
    parser = argparse.ArgumentParser(prog="spice", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="play scripted episodes through gym.make")
    demo.add_argument("--episodes", type=int, default=8)
    demo.add_argument("--corpus", default="embedded")
    demo.add_argument("--group-size", type=int, default=8)
    demo.add_argument("--prompt-style", choices=["paper", "compact"], default="paper")
    demo.add_argument("--challenger-reward", default="variance")
    demo.add_argument("--p-correct", type=float, default=0.5)
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_demo)
    assets = sub.add_parser("assets", help="download and prepare the embedded assets")
    assets.set_defaults(func=_assets)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``spice`` console script."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except PackageConflictError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
