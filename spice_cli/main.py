"""spice: the command line of spice-env.

Subcommands:

* ``spice demo`` — play SPICE episodes through ``gym.make("SpiceCorpus-v0")`` on the embedded
  corpus with the embedded default model in both roles (or with scripted agents,
  ``--agent scripted``), printing each question, gold answer, the Reasoner's answers and the
  rewards;
* ``spice train --config <name|yaml> [dotted.key=value ...] [--resume] [--dry-run]`` — SPICE
  self-play training (:func:`algorithms.trainer.train`); the run folder is
  ``trainer.output_dir``. Everything that can be checked cheaply (config, run folder, corpus,
  model configuration and tokenizer) is checked before any weights load; ``--dry-run`` stops
  there and prints the plan, ``--print-config`` prints the merged config;
* ``spice configs`` — the shipped configurations, by name, with what each is for;
* ``spice eval --model <name|folder|run|checkpoint> --suite math|general|all [--limit n]
  [--output f.json]`` — the reasoning benchmarks (:mod:`benchmarks.evaluation`);
  ``spice eval --compare before.json after.json`` — a before/after table with differences;
* ``spice bench rewards [--rollouts runs/<run>/rollouts.jsonl]`` — the Challenger-reward
  benchmark (:mod:`benchmarks.rewards`);
* ``spice bench coevolution --run runs/<run>`` — the co-evolution probe
  (:mod:`benchmarks.coevolution`);
* ``spice bench perf`` — rollout, training and verifier benchmarks in one report, and the
  comparison with TRL (:mod:`benchmarks.perf.report`);
* ``spice mine --model <name|folder> --documents n --output questions.{jsonl,parquet}`` — the
  Challenger's valid questions over documents as a dataset (``--agent scripted`` without a model);
* ``spice export <run|checkpoint> <folder> [--push-to-hub owner/name]`` — the policy as a
  transformers folder with a model card;
* ``spice serve --host 127.0.0.1 --port P`` — the environment over OpenEnv's protocol;
* ``spice assets`` — download and prepare the embedded offline assets.

A user error (a missing file, a bad setting, an unreachable endpoint) is one line on standard
error that names the problem and the fix, with exit code 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from spice_cli.bench import cmd_bench_coevolution, cmd_bench_perf, cmd_bench_rewards
from spice_cli.common import (
    PackageConflictError,
    UsageError,
    add_game_arguments,
    one_line,
    require_ours,
    user_errors,
)
from spice_cli.evaluate import cmd_eval
from spice_cli.export import add_export_command
from spice_cli.mine import add_mine_command
from spice_cli.play import cmd_assets, cmd_demo
from spice_cli.serve import add_serve_command
from spice_cli.train import cmd_configs, cmd_train

__all__ = ["PackageConflictError", "UsageError", "build_parser", "main", "require_ours"]

# --- the parser -----------------------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``spice train: error: ... (see spice train --help)``)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults shown after each option's help; ``None`` and flags' ``False`` are not shown."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or "%(default)" in text \
                or isinstance(action, argparse._VersionAction):
            return text
        return text + " (default: %(default)s)"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("spice-env")
    except PackageNotFoundError:
        import spice_env

        return spice_env.__version__


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``spice``."""
    options: dict[str, Any] = {"allow_abbrev": False, "formatter_class": _Formatter}
    parser = _Parser(prog="spice", description="SPICE self-play in corpus environments: play, "
                     "train, evaluate and benchmark.", **options)
    parser.add_argument("--version", action="version", version=f"spice-env {_version()}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command",
                                parser_class=_Parser)

    def command(name: str, text: str, parent: Any = sub) -> argparse.ArgumentParser:
        made: argparse.ArgumentParser = parent.add_parser(name, help=text, description=text,
                                                          **options)
        return made

    demo = command("demo", "play SPICE episodes through gym.make and print them")
    demo.add_argument("--agent", choices=["model", "scripted"], default="model",
                      help="the model in both roles, or scripted agents (no model, a second)")
    demo.add_argument("--model", default="qwen2.5-coder-0.5b-instruct",
                      help="a shipped short name, a transformers folder or a hub id")
    demo.add_argument("--episodes", type=int, default=4, help="episodes to play")
    add_game_arguments(demo, corpus="embedded:math", group_size=4, prompt_style="compact")
    demo.add_argument("--temperature", type=float, default=0.7,
                      help="sampling temperature of both roles (model agent)")
    demo.add_argument("--p-correct", type=float, default=0.5,
                      help="the scripted Reasoner's chance of answering right")
    demo.add_argument("--seed", type=int, default=0, help="seed of the episodes")
    demo.set_defaults(func=cmd_demo)

    train = command("train", "SPICE self-play training from a config")
    train.add_argument("--config", default=None,
                       help="a shipped config's name (spice configs lists them) or a YAML "
                       "file; the library defaults when omitted")
    train.add_argument("overrides", nargs="*", metavar="dotted.key=value",
                       help="settings over the file's, e.g. trainer.iterations=20")
    train.add_argument("--resume", action="store_true",
                       help="continue the run in trainer.output_dir from its last checkpoint")
    train.add_argument("--dry-run", action="store_true",
                       help="check the config, run folder, corpus, model configuration and "
                       "tokenizer, print the plan and memory estimate, and stop")
    train.add_argument("--print-config", action="store_true",
                       help="print the merged config as YAML and stop")
    train.set_defaults(func=cmd_train)

    configs = command("configs", "list the shipped configurations")
    configs.set_defaults(func=cmd_configs)

    ev = command("eval", "evaluate a model on the reasoning benchmarks")
    ev.add_argument("--model", default=None, help="a shipped short name, a transformers "
                    "folder, a hub id, a run folder or a checkpoint (runs/<run>/checkpoints/last)")
    ev.add_argument("--suite", default="all", help="math, general, all, offline, or benchmark "
                    "names separated by commas (gsm8k,math500,...)")
    ev.add_argument("--limit", type=int, default=None,
                    help="items per benchmark (a seeded random subset; all when omitted)")
    ev.add_argument("--output", default=None,
                    help="write the report here (JSON) and its table beside it (.md)")
    ev.add_argument("--compare", nargs=2, metavar=("BEFORE", "AFTER"), default=None,
                    help="two reports: print a table of their differences")
    ev.add_argument("--backend", choices=["hf", "vllm", "openai"], default="hf",
                    help="how the model generates")
    ev.add_argument("--base-url", default="http://127.0.0.1:8000/v1",
                    help="the OpenAI-compatible endpoint (--backend openai)")
    ev.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"],
                    default="auto", help="auto: for a run, the dtype it generated in; else "
                    "bfloat16 where the hardware is fast at it")
    ev.add_argument("--device", default="cpu", help="hf backend: cpu, cuda, cuda:1, ...")
    ev.add_argument("--prompt-style", choices=["paper", "compact"], default=None,
                    help="the Reasoner prompt (default: for a run, the style it trained with; "
                    "else paper)")
    ev.add_argument("--template", choices=["auto", "chat", "plain"], default=None,
                    help="chat template or plain prompts (default: for a run, its "
                    "model.template; else auto)")
    ev.add_argument("--max-new-tokens", type=int, default=2048,
                    help="completion length limit (the paper's protocol: 2048)")
    ev.add_argument("--batch-size", type=int, default=32,
                    help="questions generated together")
    ev.add_argument("--seed", type=int, default=0, help="seed of the subset and of sampling")
    ev.add_argument("--work-dir", type=Path, default=Path("runs/eval-work"),
                    help="where a checkpoint is exported for the vllm backend")
    ev.add_argument("--trust-remote-code", action="store_true",
                    help="allow code from the model's repository to run")
    ev.add_argument("--no-progress", action="store_true", help="no progress bar")
    ev.set_defaults(func=cmd_eval)

    bench = command("bench", "benchmarks (results go under runs/bench unless --output says "
                    "otherwise)").add_subparsers(dest="benchmark", required=True,
                                                 metavar="benchmark", parser_class=_Parser)
    rewards = command("rewards", "compare the Challenger rewards", bench)
    rewards.add_argument("--rollouts", type=Path, default=None,
                         help="a run's rollouts.jsonl, to compare the rewards on its questions")
    rewards.add_argument("--steps", type=int, default=300,
                         help="steps of the simulated curriculum")
    rewards.add_argument("--seed", type=int, default=0, help="seed of the simulation")
    rewards.add_argument("--output", type=Path, default=Path("runs/bench/rewards.json"),
                         help="the JSON report (the .md table and .png plot go beside it)")
    rewards.add_argument("--train", action="store_true",
                         help="compare by training: the same short learning run under each "
                         "reward, with held-out evaluation")
    rewards.add_argument("--config", default=None,
                         help="with --train: the run's config (default: cpu-learn)")
    rewards.add_argument("--rewards", default=None,
                         help="with --train: rewards to compare, comma-separated (default: "
                         "variance,absolute_zero)")
    rewards.add_argument("--runs-dir", type=Path, default=None,
                         help="with --train: where the arms' run folders go (default: "
                         "runs/bench/<output name>-runs/<reward>)")
    rewards.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                         help="with --train: import this module first (it registers rewards)")
    rewards.add_argument("overrides", nargs="*", metavar="dotted.key=value",
                         help="with --train: settings over the config's, e.g. "
                         "trainer.iterations=6")
    rewards.set_defaults(func=cmd_bench_rewards)
    coevolution = command("coevolution", "the co-evolution probe on a run's checkpoints", bench)
    coevolution.add_argument("--run", type=Path, required=True, help="a run folder (runs/<run>)")
    coevolution.add_argument("--documents", type=int, default=16,
                             help="documents in the fixed pool")
    coevolution.add_argument("--questions-per-document", type=int, default=2,
                             help="Challenger questions per document and point")
    coevolution.add_argument("--group-size", type=int, default=None,
                             help="Reasoner answers per question (default: the run's G)")
    coevolution.add_argument("--freeze", type=int, default=None,
                             help="iteration of the frozen point (0: the base model; default: "
                             "the earliest)")
    coevolution.add_argument("--seed", type=int, default=0, help="seed of the document pool "
                             "and of sampling")
    coevolution.add_argument("--device", default="cpu", help="cpu, cuda, ...")
    coevolution.add_argument("--trust-remote-code", action="store_true",
                             help="allow code from the run's base model to run (the run's "
                             "model.trust_remote_code is not honoured)")
    coevolution.add_argument("--output", type=Path,
                             default=Path("runs/bench/coevolution.json"),
                             help="the JSON report (the .md table and .png plot go beside it)")
    coevolution.set_defaults(func=cmd_bench_coevolution)
    perf = command("perf", "verifier, rollout, training and TRL benchmarks in one report", bench)
    perf.add_argument("--only", nargs="+", default=["verifier", "rollout", "train", "trl"],
                      choices=["verifier", "rollout", "train", "trl"],
                      help="the benchmarks to run, in this order")
    perf.add_argument("--output-dir", type=Path, default=Path("runs/bench/perf"),
                      help="where each benchmark's files and perf.json/perf.md go")
    for part in ("verifier", "rollout", "train", "trl"):
        perf.add_argument(f"--{part}-args", default="", metavar="ARGS",
                          help=f"further options of the {part} benchmark, as one string")
    perf.set_defaults(func=cmd_bench_perf)

    add_mine_command(command)
    add_export_command(command)
    add_serve_command(command)

    assets = command("assets", "download and prepare the embedded offline assets")
    assets.add_argument("--models", nargs="*", default=None, metavar="NAME",
                        help="also prepare these shipped models (all: every one)")
    assets.set_defaults(func=cmd_assets)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``spice`` console script."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for name in ("lightning.pytorch", "lightning.fabric"):  # they print through their own handler
        logging.getLogger(name).propagate = False
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
    except SystemExit as done:
        return int(done.code or 0)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if extra:  # overrides may also come after --resume
        bad = [item for item in extra if "=" not in item or item.startswith("-")]
        if not hasattr(args, "overrides") or bad:
            where = f"spice {args.command}" if getattr(args, "command", None) else "spice"
            print(f"{where}: error: unrecognized arguments: {' '.join(bad or extra)} (see "
                  f"{where} --help)", file=sys.stderr)
            return 2
        args.overrides = [*args.overrides, *extra]
    try:
        return int(args.func(args))
    except user_errors() as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
