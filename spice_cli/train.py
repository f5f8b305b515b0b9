"""``spice train`` and ``spice configs``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from spice_cli.common import (
    UsageError,
    require_ours,
)


def cmd_train(args: argparse.Namespace) -> int:
    """spice train: check everything cheap, then train (or stop there with ``--dry-run``)."""
    require_ours("agents")
    require_ours("algorithms")
    import yaml

    from algorithms.config import load_config
    from algorithms.preflight import preflight

    config = load_config(args.config, args.overrides)
    if args.print_config:
        print(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False), end="")
        return 0
    plan = preflight(config, resume=args.resume, dry_run=args.dry_run)
    eval_sets = eval_sets_of(config)  # before the model loads: a bad name fails fast
    if args.dry_run:
        print(plan.describe())
        print("\n# the resolved config")
        print(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False), end="")
        print("dry run: everything checked, nothing trained")
        return 0
    from algorithms.trainer import train

    try:
        summary = train(config, resume=args.resume, eval_sets=eval_sets)
    except KeyboardInterrupt:
        print("stopped; continue with --resume", file=sys.stderr)
        return 130
    if summary.history:
        last = summary.history[-1]
        from algorithms.metrics import SUMMARY as shown
        print(f"{summary.iterations} iterations in {summary.output_dir}; last: "
              + ", ".join(f"{key} {last[key]:.3f}" for key in shown if key in last))
    if summary.memory:
        phase = max(summary.memory, key=summary.memory.__getitem__)
        print(f"peak memory {summary.memory[phase]:.1f} GB (in {phase}; memory.json has "
              "every phase)")
    return 0


def eval_sets_of(config: Any) -> dict[str, Any]:
    """The benchmark subsets that ``evaluation.benchmarks`` names, read before training."""
    section = config.evaluation
    if not section.benchmarks:
        return {}
    from benchmarks.evaluation import BenchmarkUnavailable, benchmark_questions

    try:
        return benchmark_questions(section.benchmarks, limit=section.benchmark_limit,
                                   seed=section.seed)
    except (ValueError, BenchmarkUnavailable) as error:
        raise UsageError(f"evaluation.benchmarks: {error}") from None


def cmd_configs(args: argparse.Namespace) -> int:
    """spice configs: the shipped configurations and what each is for."""
    require_ours("algorithms")
    from algorithms.config import config_summary, shipped_configs

    shipped = shipped_configs()
    width = max(len(name) for name in shipped)
    for name, path in shipped.items():
        print(f"{name:<{width}}  {config_summary(path)}")
    print(f"\nuse one by name: spice train --config {next(iter(shipped))}; "
          f"the files are in {next(iter(shipped.values())).parent}")
    return 0
