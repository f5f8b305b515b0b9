"""``spice``: the command line of spice-env.

Subcommands:

* ``spice demo`` — play SPICE episodes through ``gym.make("SpiceCorpus-v0")`` on the embedded
  corpus with the embedded default model in both roles (or with scripted agents,
  ``--agent scripted``), printing each question, gold answer, the Reasoner's answers and the
  rewards;
* ``spice train --config <yaml> [dotted.key=value ...] [--resume]`` — SPICE self-play training
  (:func:`algorithms.trainer.train`); the run folder is ``trainer.output_dir``;
* ``spice eval --model <name|folder|run|checkpoint> --suite math|general|all [--limit n]
  [--output f.json]`` — the reasoning benchmarks (:mod:`benchmarks.evaluation`);
  ``spice eval --compare before.json after.json`` — a before/after table with differences;
* ``spice bench rewards [--rollouts runs/<run>/rollouts.jsonl]`` — the Challenger-reward
  benchmark (:mod:`benchmarks.rewards`);
* ``spice bench coevolution --run runs/<run>`` — the co-evolution probe
  (:mod:`benchmarks.coevolution`);
* ``spice bench perf`` — rollout, training and verifier benchmarks in one report, and the
  comparison with TRL (:mod:`benchmarks.perf.report`);
* ``spice assets`` — download and prepare the embedded offline assets.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

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
    env = gym.make(spice_env.ENV_ID, corpus=args.corpus, group_size=args.group_size,
                   prompt_style=args.prompt_style, challenger_reward=args.challenger_reward,
                   task_formats=args.task_formats)
    print(f"SpiceCorpus-v0 on {getattr(env.unwrapped, 'corpus', args.corpus)!r}")
    play = _model_player(args) if args.agent == "model" else _scripted_player(args)
    try:
        for episode in range(args.episodes):
            obs, info = env.reset(seed=args.seed + episode)
            obs, reward, terminated, _, info = env.step(play("challenger", obs, info, episode))
            print(f"\n[{episode}] document {info['document_id']} "
                  f"({obs['task_format'] or 'invalid'})")
            if terminated:
                print(f"  invalid question ({info['invalid_reason']}: {info['detail']})")
                print(f"  rewards: challenger {reward:+.3f}")
                continue
            task = info["task"]
            print("  question: " + task.reasoner_question().replace("\n", "\n            "))
            print(f"  gold: {task.answer} ({task.answer_type})")
            obs, reward, terminated, _, info = env.step(play("reasoner", obs, info, episode))
            answers = ", ".join(f"{v.extracted if v.extracted is not None else '-'}"
                                f"{'+' if v.correct else ''}" for v in info["verdicts"])
            print(f"  reasoner answers: {answers}  (+ correct, - nothing boxed)")
            print(f"  pass rate {info['pass_rate']:.2f}; rewards: challenger "
                  f"{info['rewards']['challenger']:.3f}, reasoner {info['rewards']['reasoner']}")
    finally:
        env.close()
    return 0


def _model_player(args: argparse.Namespace) -> Any:
    """Both roles played by one model (the embedded default unless ``--model``)."""
    agents = importlib.import_module("agents")
    base = importlib.import_module("agents.base")
    print(f"loading {args.model} ...", flush=True)
    agent = agents.SelfPlayAgent(
        "hf", args.model,
        challenger=base.SamplingConfig(temperature=args.temperature, max_new_tokens=256,
                                       seed=args.seed),
        reasoner=base.SamplingConfig(temperature=args.temperature, max_new_tokens=256,
                                     n=args.group_size, seed=args.seed))

    def play(role: str, obs: Any, info: Any, episode: int) -> Any:
        return agent.act(obs, info)

    return play


def _scripted_player(args: argparse.Namespace) -> Any:
    """The oracle Challenger (a garbage one every fourth episode) and a noisy Reasoner."""
    scripted = importlib.import_module("agents.scripted")
    challenger = scripted.OracleChallenger(seed=args.seed)
    garbage = scripted.GarbageChallenger(seed=args.seed)
    reasoner = scripted.NoisyReasoner(p_correct=args.p_correct, seed=args.seed)

    def play(role: str, obs: Any, info: Any, episode: int) -> Any:
        if role == "challenger":
            return (garbage if episode % 4 == 3 else challenger).act(obs)
        return reasoner.act(obs, info, n=args.group_size)

    return play


def _train(args: argparse.Namespace) -> int:
    require_ours("agents")
    require_ours("algorithms")
    from algorithms.config import ConfigError, load_config

    try:
        config = load_config(args.config, args.overrides)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from algorithms.trainer import train

    try:
        summary = train(config, resume=args.resume)
    except (ConfigError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("stopped; continue with --resume", file=sys.stderr)
        return 130
    if summary.history:
        last = summary.history[-1]
        shown = ["challenger/valid_rate", "challenger/frontier_share", "challenger/reward",
                 "reasoner/reward", "reasoner/boxed_rate", "time/iteration"]
        print(f"{summary.iterations} iterations in {summary.output_dir}; last: "
              + ", ".join(f"{key} {last[key]:.3f}" for key in shown if key in last))
    return 0


def _eval_agent(args: argparse.Namespace) -> Any:
    """The Reasoner for ``spice eval``: a SelfPlayAgent over the chosen backend."""
    import torch

    require_ours("agents")
    require_ours("algorithms")
    from agents import SelfPlayAgent

    dtype = None if args.dtype == "auto" else getattr(torch, args.dtype)
    if args.backend == "openai":
        return SelfPlayAgent(backend="openai", model=args.model, template=args.template,
                             backend_options={"base_url": args.base_url})
    from algorithms.checkpoints import export_policy, load_policy

    if args.backend == "vllm":
        folder = export_policy(args.model, args.work_dir,
                               trust_remote_code=args.trust_remote_code)
        return SelfPlayAgent(backend="vllm", model=folder, dtype=dtype, template=args.template,
                             trust_remote_code=args.trust_remote_code)
    from agents.backends.hf import HFBackend

    loaded = load_policy(args.model, dtype=dtype, device=args.device,
                         trust_remote_code=args.trust_remote_code)
    return SelfPlayAgent(backend=HFBackend(loaded.model, loaded.tokenizer,
                                           max_batch_size=args.batch_size),
                         template=args.template)


def _eval(args: argparse.Namespace) -> int:
    import json
    from datetime import UTC, datetime

    from benchmarks.evaluation import (
        EvalSettings,
        agent_generate,
        compare,
        compare_markdown,
        evaluate,
        markdown,
        suite_benchmarks,
    )
    from benchmarks.perf.common import machine, package_versions

    if args.compare:
        try:
            reports = [json.loads(Path(f).read_text("utf-8")) for f in args.compare]
        except (OSError, ValueError) as exc:
            print(f"error: cannot read a report: {exc}", file=sys.stderr)
            return 2
        table = compare_markdown(compare(*reports))
        sources = [f"- {label}: `{r.get('command', '?')}`"
                   for label, r in zip(("before", "after"), reports, strict=True)]
        table = "\n".join([f"`spice {' '.join(args.argv)}`", "", *sources, "", table])
        print(table)
        if args.output:
            Path(args.output).write_text(table, "utf-8")
        return 0
    if not args.model:
        print("error: --model is required (or --compare a.json b.json)", file=sys.stderr)
        return 2
    try:
        specs = suite_benchmarks(args.suite)
        settings = EvalSettings(prompt_style=args.prompt_style,
                                max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                                limit=args.limit, seed=args.seed)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        agent = _eval_agent(args)
    except (OSError, ValueError) as exc:
        print(f"error: cannot load {args.model}: {exc}", file=sys.stderr)
        return 2
    started = datetime.now(UTC)
    try:
        report = evaluate(agent_generate(agent), specs, settings, progress=not args.no_progress)
    finally:
        agent.close()
    report = {"model": args.model, "backend": args.backend,
              "command": "spice " + " ".join(args.argv),
              "date": started.isoformat(timespec="seconds"),
              "seconds": round((datetime.now(UTC) - started).total_seconds(), 1),
              "machine": machine(),
              "versions": package_versions(["spice-env", "torch", "transformers",
                                            "math-verify"]), **report}
    table = markdown(report)
    print(table)
    if args.output:
        output = Path(args.output)
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n", "utf-8")
        output.with_suffix(".md").write_text(table, "utf-8")
        print(f"wrote {output} and {output.with_suffix('.md')}")
    return 0


def _bench_rewards(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from benchmarks.perf.common import machine, package_versions
    from benchmarks.rewards import CurriculumSettings, markdown, plot, run

    rollouts = args.rollouts
    if rollouts is not None and not rollouts.is_file():
        print(f"error: no rollouts file at {rollouts}", file=sys.stderr)
        return 2
    report = run(rollouts, CurriculumSettings(steps=args.steps, seed=args.seed))
    report.update(command="spice " + " ".join(args.argv), date=datetime.now(UTC).isoformat(
        timespec="seconds"), machine=machine(), versions=package_versions(["spice-env",
                                                                           "numpy"]))
    return _write_report(report, args.output, markdown, plot)


def _write_report(report: dict[str, Any], output: Path, markdown: Any, plot: Any) -> int:
    """Write a benchmark's JSON, Markdown and PNG side by side and print the Markdown."""
    import json

    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    output.with_suffix(".md").write_text(markdown(report))
    plot(report, output.with_suffix(".png"))
    print(markdown(report))
    print(f"wrote {output}, {output.with_suffix('.md')}, {output.with_suffix('.png')}")
    return 0


def _bench_coevolution(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    require_ours("algorithms")
    from benchmarks.coevolution import ProbeSettings, markdown, plot, run_probe
    from benchmarks.perf.common import machine, package_versions

    try:
        settings = ProbeSettings(documents=args.documents,
                                 questions_per_document=args.questions_per_document,
                                 group_size=args.group_size, freeze=args.freeze, seed=args.seed,
                                 device=args.device)
        started = datetime.now(UTC)
        report = run_probe(args.run, settings, progress=True)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report.update(command="spice " + " ".join(args.argv),
                  date=started.isoformat(timespec="seconds"),
                  seconds=round((datetime.now(UTC) - started).total_seconds(), 1),
                  machine=machine(), versions=package_versions(["spice-env", "torch",
                                                                "transformers"]))
    return _write_report(report, args.output, markdown, plot)


def _bench_perf(args: argparse.Namespace) -> int:
    import json
    import shlex

    from benchmarks.perf.report import markdown, run

    extra = {part: shlex.split(getattr(args, f"{part}_args") or "")
             for part in ("verifier", "rollout", "train", "trl")}
    report = run(args.only, args.output_dir, extra, command="spice " + " ".join(
        shlex.quote(a) for a in args.argv))
    output = args.output_dir / "perf.json"
    output.write_text(json.dumps(report, indent=2) + "\n")
    output.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))
    failed = [part for part, entry in report["parts"].items() if "error" in entry]
    if failed:
        print(f"error: {', '.join(failed)} failed (see {output})", file=sys.stderr)
        return 1
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
    demo = sub.add_parser("demo", help="play episodes through gym.make")
    demo.add_argument("--agent", choices=["model", "scripted"], default="model",
                      help="the embedded model in both roles, or scripted agents")
    demo.add_argument("--model", default="qwen2.5-coder-0.5b-instruct",
                      help="a shipped short name, a transformers folder or a hub id")
    demo.add_argument("--episodes", type=int, default=4)
    demo.add_argument("--corpus", default="embedded:math")
    demo.add_argument("--group-size", type=int, default=4)
    demo.add_argument("--prompt-style", choices=["paper", "compact"], default="compact")
    demo.add_argument("--task-formats", choices=["both", "mcq", "free_form"], default="both")
    demo.add_argument("--challenger-reward", default="variance")
    demo.add_argument("--temperature", type=float, default=0.7,
                      help="sampling temperature of both roles (model agent)")
    demo.add_argument("--p-correct", type=float, default=0.5,
                      help="the scripted Reasoner's chance of answering right")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_demo)
    train = sub.add_parser("train", help="SPICE self-play training from a YAML config")
    train.add_argument("--config", default=None,
                       help="a YAML file (configs/cpu-demo.yaml, ...); defaults when omitted")
    train.add_argument("overrides", nargs="*", metavar="dotted.key=value",
                       help="settings over the file's, e.g. trainer.iterations=20")
    train.add_argument("--resume", action="store_true",
                       help="continue the run in trainer.output_dir from its last checkpoint")
    train.set_defaults(func=_train)
    ev = sub.add_parser("eval", help="evaluate a model on the reasoning benchmarks")
    ev.add_argument("--model", default=None, help="a shipped short name, a transformers "
                    "folder, a hub id, a run folder or a checkpoint (runs/<run>/checkpoints/last)")
    ev.add_argument("--suite", default="all", help="math, general, all, offline, or benchmark "
                    "names separated by commas (gsm8k,math500,...)")
    ev.add_argument("--limit", type=int, default=None,
                    help="items per benchmark (a seeded random subset)")
    ev.add_argument("--output", default=None,
                    help="write the report here (JSON) and its table beside it (.md)")
    ev.add_argument("--compare", nargs=2, metavar=("BEFORE", "AFTER"), default=None,
                    help="two reports: print a table of their differences")
    ev.add_argument("--backend", choices=["hf", "vllm", "openai"], default="hf")
    ev.add_argument("--base-url", default="http://127.0.0.1:8000/v1",
                    help="the OpenAI-compatible endpoint (--backend openai)")
    ev.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"],
                    default="auto", help="auto: bfloat16 where the hardware is fast at it")
    ev.add_argument("--device", default="cpu", help="hf backend: cpu, cuda, cuda:1, ...")
    ev.add_argument("--prompt-style", choices=["paper", "compact"], default="paper",
                    help="the Reasoner prompt (use the style the model was trained with)")
    ev.add_argument("--template", choices=["auto", "chat", "plain"], default="auto",
                    help="chat template or plain prompts (as model.template in training)")
    ev.add_argument("--max-new-tokens", type=int, default=2048)
    ev.add_argument("--batch-size", type=int, default=32,
                    help="questions generated together")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--work-dir", type=Path, default=Path("runs/eval-work"),
                    help="where a checkpoint is exported for the vllm backend")
    ev.add_argument("--trust-remote-code", action="store_true")
    ev.add_argument("--no-progress", action="store_true")
    ev.set_defaults(func=_eval)
    bench = sub.add_parser("bench", help="benchmarks").add_subparsers(dest="benchmark",
                                                                      required=True)
    rewards = bench.add_parser("rewards", help="compare the Challenger rewards")
    rewards.add_argument("--rollouts", type=Path, default=None,
                         help="a run's rollouts.jsonl, to compare the rewards on its questions")
    rewards.add_argument("--steps", type=int, default=300,
                         help="steps of the simulated curriculum")
    rewards.add_argument("--seed", type=int, default=0)
    rewards.add_argument("--output", type=Path, default=Path("benchmarks/results/rewards.json"))
    rewards.set_defaults(func=_bench_rewards)
    coevolution = bench.add_parser("coevolution", help="the co-evolution probe on a run's "
                                   "checkpoints")
    coevolution.add_argument("--run", type=Path, required=True, help="a run folder (runs/<run>)")
    coevolution.add_argument("--documents", type=int, default=16,
                             help="documents in the fixed pool")
    coevolution.add_argument("--questions-per-document", type=int, default=2)
    coevolution.add_argument("--group-size", type=int, default=None,
                             help="Reasoner answers per question (default: the run's G)")
    coevolution.add_argument("--freeze", type=int, default=None,
                             help="iteration of the frozen point (0: the base model; default: "
                             "the earliest)")
    coevolution.add_argument("--seed", type=int, default=0)
    coevolution.add_argument("--device", default="cpu")
    coevolution.add_argument("--output", type=Path,
                             default=Path("benchmarks/results/coevolution.json"))
    coevolution.set_defaults(func=_bench_coevolution)
    perf = bench.add_parser("perf", help="verifier, rollout, training and TRL benchmarks in one "
                            "report")
    perf.add_argument("--only", nargs="+", default=["verifier", "rollout", "train", "trl"],
                      choices=["verifier", "rollout", "train", "trl"],
                      help="the benchmarks to run, in this order")
    perf.add_argument("--output-dir", type=Path, default=Path("benchmarks/results"),
                      help="where each benchmark's files and perf.json/perf.md go")
    for part in ("verifier", "rollout", "train", "trl"):
        perf.add_argument(f"--{part}-args", default="", metavar="ARGS",
                          help=f"further options of the {part} benchmark, as one string")
    perf.set_defaults(func=_bench_perf)
    assets = sub.add_parser("assets", help="download and prepare the embedded assets")
    assets.set_defaults(func=_assets)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``spice`` console script."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for name in ("lightning.pytorch", "lightning.fabric"):  # they print through their own handler
        logging.getLogger(name).propagate = False
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if extra:  # overrides may also come after --resume
        if getattr(args, "command", None) != "train" or any(
                "=" not in item or item.startswith("-") for item in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    try:
        return int(args.func(args))
    except PackageConflictError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
