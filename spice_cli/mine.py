"""``spice mine``: the Challenger's valid questions over documents, written as a dataset."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

from spice_cli.common import (
    UsageError,
    add_game_arguments,
    check_model_argument,
    one_line,
    remote_code_warning,
    require_ours,
    writable_output,
)


def _checked(args: argparse.Namespace) -> None:
    for name, value in (("--documents", args.documents), ("--group-size", args.group_size),
                        ("--batch-size", args.batch_size), ("--max-new-tokens",
                                                            args.max_new_tokens)):
        if value < 1:
            raise UsageError(f"{name} must be at least 1, got {value}")
    if args.attempts is not None and args.attempts < args.group_size:
        raise UsageError(f"--attempts ({args.attempts}) must be at least --group-size "
                         f"({args.group_size})")
    if not math.isfinite(args.temperature) or args.temperature < 0:
        raise UsageError(f"--temperature must be 0 or more, got {args.temperature}")
    if args.output.suffix not in (".jsonl", ".parquet"):
        raise UsageError(f"--output {args.output}: give a .jsonl or a .parquet file name")
    writable_output(args.output)


def _players(args: argparse.Namespace) -> tuple[Any, Any, str, Any]:
    """The Challenger's and the Reasoner's generate functions, the model's name, and a closer."""
    if args.agent == "scripted":
        from agents.scripted import AnswerKey, NoisyReasoner, OracleChallenger

        key = AnswerKey()
        challenger = OracleChallenger(seed=args.seed, answer_key=key)
        reasoner = NoisyReasoner(p_correct=0.5, seed=args.seed, answer_key=key)
        return challenger.generate, reasoner.generate, "scripted", None
    from agents import SelfPlayAgent
    from agents.base import SamplingConfig

    check_model_argument(args.model, "--model")
    remote_code_warning(args.trust_remote_code, args.model)
    print(f"loading {args.model} ...", file=sys.stderr, flush=True)
    agent = SelfPlayAgent(
        "hf", args.model, trust_remote_code=args.trust_remote_code,
        challenger=SamplingConfig(temperature=args.temperature,
                                  max_new_tokens=args.max_new_tokens, seed=args.seed),
        reasoner=SamplingConfig(temperature=args.temperature, max_new_tokens=args.max_new_tokens,
                                n=args.group_size, seed=args.seed))
    return agent.generate, agent.generate, args.model, agent


def cmd_mine(args: argparse.Namespace) -> int:
    """spice mine: run the Challenger (and G Reasoner answers) over documents and write the
    valid questions with their pass rates."""
    require_ours("agents")
    _checked(args)
    from spice_env.mining import mine_questions, write_questions
    from spice_env.runner import SpiceRunner

    try:
        runner = SpiceRunner(args.corpus, batch_size=min(args.batch_size, args.documents),
                             attempts=args.attempts or args.group_size, seed=args.seed,
                             group_size=args.group_size, prompt_style=args.prompt_style,
                             task_formats=args.task_formats,
                             challenger_reward=args.challenger_reward,
                             format_choice=args.format_choice)
    except (OSError, ValueError) as exc:
        raise UsageError(one_line(exc)) from None
    challenger, reasoner, model, closer = _players(args)

    def progress(done: int, found: int) -> None:
        print(f"{done}/{args.documents} documents, {found} questions", file=sys.stderr,
              flush=True)

    try:
        records = mine_questions(runner, challenger, reasoner, documents=args.documents,
                                 model=model, progress=progress)
    finally:
        runner.close()
        if closer is not None:
            closer.close()
    path = write_questions(records, args.output)
    print(f"wrote {len(records)} questions from {args.documents} documents to {path}")
    return 0


def add_mine_command(command: Any) -> None:
    """Register ``spice mine`` (``command(name, help)`` makes a sub-parser)."""
    mine: argparse.ArgumentParser = command(
        "mine", "write the Challenger's valid questions over documents as a dataset "
        "(JSON lines or Parquet) for any RLVR trainer")
    mine.add_argument("--agent", choices=["model", "scripted"], default="model",
                      help="a model in both roles, or the scripted agents (no model)")
    mine.add_argument("--model", default="qwen2.5-coder-0.5b-instruct",
                      help="a shipped short name, a transformers folder or a hub id")
    add_game_arguments(mine, prompt_style="compact", selector=True)
    mine.add_argument("--documents", type=int, default=8, help="documents to play")
    mine.add_argument("--output", type=Path, required=True,
                      help="questions.jsonl or questions.parquet")
    mine.add_argument("--attempts", type=int, default=None,
                      help="N: Challenger attempts per document (default G; only G are kept)")
    mine.add_argument("--batch-size", type=int, default=4, help="documents per batch")
    mine.add_argument("--temperature", type=float, default=1.0, help="sampling temperature")
    mine.add_argument("--max-new-tokens", type=int, default=512,
                      help="generation length of both roles")
    mine.add_argument("--seed", type=int, default=0, help="seed of the documents and sampling")
    mine.add_argument("--trust-remote-code", action="store_true",
                      help="let the model's own Python code run (only for models you trust)")
    mine.set_defaults(func=cmd_mine)
