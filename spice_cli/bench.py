"""``spice bench``: the Challenger-reward comparison, the co-evolution probe and the perf report."""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Any

from benchmarks.reporting import envelope, write_report
from spice_cli.common import (
    UsageError,
    one_line,
    remote_code_warning,
    require_ours,
    writable_output,
)
from spice_cli.train import eval_sets_of


def cmd_bench_rewards(args: argparse.Namespace) -> int:
    """spice bench rewards: the Challenger rewards compared on simulated or logged rollouts,
    or by training (``--train``)."""

    from benchmarks.rewards import CurriculumSettings, markdown, plot, run

    if args.train:
        if args.rollouts is not None or args.steps != 300 or args.seed != 0:
            raise UsageError("--rollouts, --steps and --seed are for the simulation; with "
                             "--train the config sets the seed (trainer.seed=...)")
        return _bench_rewards_train(args)
    if args.overrides or args.config or args.plugin or args.rewards or args.runs_dir:
        raise UsageError("--config, --rewards, --plugin, --runs-dir and dotted.key=value "
                         "settings go with --train")
    rollouts = args.rollouts
    if rollouts is not None and not rollouts.is_file():
        raise UsageError(f"--rollouts: no rollouts file at {rollouts} (a run folder's "
                         "rollouts.jsonl)")
    if args.steps < 1:
        raise UsageError(f"--steps must be at least 1, got {args.steps}")
    writable_output(args.output)
    report = run(rollouts, CurriculumSettings(steps=args.steps, seed=args.seed))
    report.update(envelope("spice " + " ".join(args.argv), ["spice-env", "numpy"]))
    return _write_report(report, args.output, markdown, plot)


def _bench_rewards_train(args: argparse.Namespace) -> int:
    """``spice bench rewards --train``: one short learning run per Challenger reward."""
    from datetime import UTC, datetime

    require_ours("algorithms")
    from algorithms.config import load_config
    from algorithms.preflight import preflight
    from benchmarks.reward_training import arm_config, compare_rewards, markdown, plot
    from spice_env.rewards import CHALLENGER_REWARDS

    for module in args.plugin:
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise UsageError(f"--plugin {module}: cannot be imported ({error})") from None
    rewards = [name.strip() for name in (args.rewards or "variance,absolute_zero").split(",")
               if name.strip()]
    unknown = [name for name in rewards if name not in CHALLENGER_REWARDS]
    if unknown or len(set(rewards)) != len(rewards) or not rewards:
        raise UsageError(f"--rewards: {', '.join(unknown) or 'each reward once'}; registered: "
                         f"{', '.join(CHALLENGER_REWARDS)} (add yours with --plugin)")
    config = load_config(args.config or "cpu-learn", args.overrides)
    if not config.evaluation.heldout:
        raise UsageError("--train needs a held-out set: set evaluation.heldout (the cpu-learn "
                         "config has one)")
    writable_output(args.output)
    root = args.runs_dir or Path("runs/bench") / (args.output.stem + "-runs")
    for reward in rewards:  # every arm checked before the first trains
        preflight(arm_config(config, reward, root))
    eval_sets = eval_sets_of(config)
    started = datetime.now(UTC)

    def save(partial: dict[str, Any]) -> None:
        write_report({**partial, "command": "spice " + " ".join(args.argv)}, args.output)

    report = compare_rewards(config, rewards, root, eval_sets=eval_sets, on_arm=save)
    report.update(envelope("spice " + " ".join(args.argv),
                           ["spice-env", "torch", "transformers", "peft"], started=started),
                  minutes=round((datetime.now(UTC) - started).total_seconds() / 60, 1))
    return _write_report(report, args.output, markdown, plot)


def _write_report(report: dict[str, Any], output: Path, markdown: Any, plot: Any) -> int:
    """Write a benchmark's JSON, Markdown and PNG side by side and print the Markdown."""
    written = write_report(report, output, markdown, plot)
    print(markdown(report))
    print(f"wrote {', '.join(map(str, written))}")
    return 0


def cmd_bench_coevolution(args: argparse.Namespace) -> int:
    """spice bench coevolution: the co-evolution probe over a run's checkpoints."""
    from datetime import UTC, datetime

    require_ours("algorithms")
    from algorithms.run_folder import RunFolder
    from benchmarks.coevolution import ProbeSettings, markdown, plot, run_probe

    if not args.run.is_dir():
        raise UsageError(f"--run {args.run} is not a run folder (give runs/<run>)")
    writable_output(args.output)
    try:
        settings = ProbeSettings(documents=args.documents,
                                 questions_per_document=args.questions_per_document,
                                 group_size=args.group_size, freeze=args.freeze, seed=args.seed,
                                 device=args.device, trust_remote_code=args.trust_remote_code)
        model = RunFolder(args.run).config().model  # its base model and checkpoints are probed
        remote_code_warning(args.trust_remote_code, model.name, run=args.run,
                            run_asks=model.trust_remote_code)
        started = datetime.now(UTC)
        report = run_probe(args.run, settings, progress=True)
    except (OSError, ValueError) as exc:
        raise UsageError(one_line(exc)) from None
    report.update(envelope("spice " + " ".join(args.argv),
                           ["spice-env", "torch", "transformers"], started=started),
                  seconds=round((datetime.now(UTC) - started).total_seconds(), 1))
    return _write_report(report, args.output, markdown, plot)


def cmd_bench_perf(args: argparse.Namespace) -> int:
    """spice bench perf: the performance benchmarks in one report."""
    import shlex

    from benchmarks.perf.report import markdown, run

    if args.output_dir.exists() and not args.output_dir.is_dir():
        raise UsageError(f"--output-dir {args.output_dir} is a file; give a folder")
    writable_output(args.output_dir / "perf.json")
    extra = {part: shlex.split(getattr(args, f"{part}_args") or "")
             for part in ("verifier", "rollout", "train", "trl")}
    report = run(args.only, args.output_dir, extra, command="spice " + " ".join(
        shlex.quote(a) for a in args.argv))
    output = args.output_dir / "perf.json"
    write_report(report, output, markdown)
    print(markdown(report))
    failed = [part for part, entry in report["parts"].items() if "error" in entry]
    if failed:
        print(f"error: {', '.join(failed)} failed (see {output})", file=sys.stderr)
        return 1
    return 0
