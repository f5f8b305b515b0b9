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
* ``spice assets`` — download and prepare the embedded offline assets.

A user error (a missing file, a bad setting, an unreachable endpoint) is one line on standard
error that names the problem and the fix, with exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

logger = logging.getLogger("spice")


class UsageError(Exception):
    """A mistake of the user's: printed as one line, exit code 2."""


class PackageConflictError(UsageError):
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


def _user_errors() -> tuple[type[BaseException], ...]:
    """The exception types that mean a mistake in the input, not a bug."""
    from spice_env.assets import AssetError
    from spice_env.corpus import CorpusError

    kinds: list[type[BaseException]] = [UsageError, CorpusError, AssetError]
    try:
        from algorithms.config import ConfigError

        kinds.append(ConfigError)
    except ImportError:  # another package named algorithms: require_ours says so
        pass
    return tuple(kinds)


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 1500 else text[:1497] + "..."


# --- spice demo -----------------------------------------------------------------------------------

def _demo(args: argparse.Namespace) -> int:
    import gymnasium as gym

    import spice_env
    from spice_env.rewards import CHALLENGER_REWARDS

    require_ours("agents")
    for name, value, low in (("--episodes", args.episodes, 1), ("--group-size", args.group_size,
                                                                1)):
        if value < low:
            raise UsageError(f"{name} must be at least {low}, got {value}")
    if not 0.0 <= args.p_correct <= 1.0:
        raise UsageError(f"--p-correct must be between 0 and 1, got {args.p_correct}")
    if not math.isfinite(args.temperature) or args.temperature < 0:
        raise UsageError(f"--temperature must be 0 or more, got {args.temperature}")
    if args.challenger_reward not in CHALLENGER_REWARDS:
        raise UsageError(f"--challenger-reward {args.challenger_reward!r} is not a registered "
                         f"reward; choose one of {', '.join(sorted(CHALLENGER_REWARDS))}")
    try:
        env = gym.make(spice_env.ENV_ID, corpus=args.corpus, group_size=args.group_size,
                       prompt_style=args.prompt_style, challenger_reward=args.challenger_reward,
                       task_formats=args.task_formats)
    except ValueError as exc:  # the game's settings refused a value
        raise UsageError(f"cannot start the demo: {exc}") from None
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
    _check_model_argument(args.model, "--model")
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


def _check_model_argument(model: str, option: str) -> None:
    """A model argument that names a local path must be a model folder (or a run, for eval)."""
    from agents.models import SHIPPED_MODELS, looks_like_path
    from algorithms.run_folder import is_checkpoint_reference

    path = Path(model).expanduser()
    if model in SHIPPED_MODELS:
        return
    if path.is_file() and not is_checkpoint_reference(path):
        raise UsageError(f"{option} {model} is a file; give a transformers model folder, a "
                         "run folder, a checkpoint (.ckpt or checkpoints/last), a shipped name "
                         f"({', '.join(SHIPPED_MODELS)}) or a hub id")
    if not path.exists() and looks_like_path(model):
        raise UsageError(f"{option} {model}: no such folder; give a transformers model folder, "
                         f"a shipped name ({', '.join(SHIPPED_MODELS)}) or a hub id")


# --- spice train / configs ------------------------------------------------------------------------

def _train(args: argparse.Namespace) -> int:
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
    eval_sets = _eval_sets(config)  # before the model loads: a bad name fails fast
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
        shown = ["challenger/valid_rate", "challenger/frontier_share", "challenger/reward",
                 "reasoner/reward", "reasoner/boxed_rate", "time/iteration"]
        print(f"{summary.iterations} iterations in {summary.output_dir}; last: "
              + ", ".join(f"{key} {last[key]:.3f}" for key in shown if key in last))
    return 0


def _eval_sets(config: Any) -> dict[str, Any]:
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


def _configs(args: argparse.Namespace) -> int:
    require_ours("algorithms")
    from algorithms.config import config_summary, shipped_configs

    shipped = shipped_configs()
    width = max(len(name) for name in shipped)
    for name, path in shipped.items():
        print(f"{name:<{width}}  {config_summary(path)}")
    print(f"\nuse one by name: spice train --config {next(iter(shipped))}; "
          f"the files are in {next(iter(shipped.values())).parent}")
    return 0


# --- spice eval -----------------------------------------------------------------------------------

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


def _writable_output(output: Path) -> None:
    """Refuse an output path whose folder cannot be written, before any work."""
    if output.is_dir():
        raise UsageError(f"--output {output} is a folder; give a file name such as "
                         f"{output / 'report.json'}")
    require_ours("algorithms")
    from algorithms.preflight import nearest_existing

    existing = nearest_existing(output.parent)
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"--output {output}: {existing} cannot be written; choose another "
                         "place for the report")


def _read_report(path: str) -> dict[str, Any]:
    import json

    file = Path(path)
    if not file.is_file():
        raise UsageError(f"--compare: no report at {path} (write one with spice eval "
                         "--output)")
    try:
        report = json.loads(file.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UsageError(f"--compare: {path} is not a spice eval report (not JSON: "
                         f"{_one_line(exc)})") from None
    if not isinstance(report, dict) or not isinstance(report.get("benchmarks"), dict) \
            or not report["benchmarks"]:
        raise UsageError(f"--compare: {path} holds no benchmark results (write one with spice "
                         "eval --output)")
    return report


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

    output = Path(args.output) if args.output else None
    if output is not None:
        _writable_output(output)
    if args.compare:
        reports = [_read_report(f) for f in args.compare]
        table = compare_markdown(compare(*reports))
        sources = [f"- {label}: `{r.get('command', '?')}`"
                   for label, r in zip(("before", "after"), reports, strict=True)]
        table = "\n".join([f"`spice {' '.join(args.argv)}`", "", *sources, "", table])
        print(table)
        if output is not None:
            output.parent.mkdir(parents=True, exist_ok=True)
            output.write_text(table, "utf-8")
        return 0
    if not args.model:
        raise UsageError("--model is required (or --compare a.json b.json)")
    for name in ("limit", "max_new_tokens", "batch_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    try:
        specs = suite_benchmarks(args.suite)
        _run_defaults(args)
        settings = EvalSettings(prompt_style=args.prompt_style,
                                max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                                limit=args.limit, seed=args.seed, template=args.template,
                                dtype=args.dtype, from_run=args.from_run)
    except ValueError as exc:
        raise UsageError(_one_line(exc)) from None
    if args.backend == "openai":
        from algorithms.preflight import endpoint_problem

        problem = endpoint_problem(args.base_url)
        if problem:
            raise UsageError(f"--base-url {args.base_url} cannot be reached ({problem}); start "
                             "the server or fix --base-url")
    else:
        _check_model_argument(args.model, "--model")
    try:
        agent = _eval_agent(args)
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot load {args.model}: {_one_line(exc)}") from None
    _warn_if_long(args, agent, specs, settings)
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
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n", "utf-8")
        output.with_suffix(".md").write_text(table, "utf-8")
        print(f"wrote {output} and {output.with_suffix('.md')}")
    return 0


def _run_defaults(args: argparse.Namespace) -> None:
    """Fill the prompt style, template and dtype not given: from the evaluated run's config
    (a run folder, checkpoint or its export), else the paper's protocol and the defaults."""
    run = None
    if args.backend != "openai":
        require_ours("algorithms")
        from algorithms.checkpoints import run_of

        run = run_of(args.model)
    args.from_run = run is not None and (None in (args.prompt_style, args.template)
                                         or args.dtype == "auto")
    if args.prompt_style is None:
        args.prompt_style = run.game.prompt_style if run is not None else "paper"
    if args.template is None:
        args.template = run.model.template if run is not None else "auto"
    if args.dtype == "auto" and run is not None and args.backend == "hf":
        from algorithms.launch import compute_dtype, resolve_precision

        accelerator = "cuda" if str(args.device).startswith("cuda") else "cpu"
        precision = resolve_precision(run.trainer.precision, accelerator)
        args.dtype = str(compute_dtype(precision)).removeprefix("torch.")
    elif args.dtype == "auto" and args.backend == "hf":
        from agents.models import default_dtype

        args.dtype = str(default_dtype(str(args.device))).removeprefix("torch.")


def _warn_if_long(args: argparse.Namespace, agent: Any, specs: Sequence[Any],
                  settings: Any) -> None:
    """On a CPU, say before starting when the evaluation may take more than ten minutes."""
    from benchmarks.evaluation import cpu_eval_seconds

    if args.backend == "openai" or str(args.device).startswith("cuda"):
        return
    module = getattr(getattr(agent, "backend", None), "model", None)
    parameters = sum(p.numel() for p in module.parameters()) if module is not None else None
    seconds, questions = cpu_eval_seconds(specs, settings, parameters)
    if seconds > 600:
        span = f"{seconds / 3600:.1f} hours" if seconds > 5400 else f"{seconds / 60:.0f} minutes"
        print(f"warning: on a CPU this evaluation may take up to about {span} ({questions} "
              f"questions, up to {settings.max_new_tokens} new tokens each); --limit and "
              "--max-new-tokens shorten it", file=sys.stderr)


# --- spice bench ----------------------------------------------------------------------------------

def _bench_rewards(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from benchmarks.perf.common import machine, package_versions
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
    _writable_output(args.output)
    report = run(rollouts, CurriculumSettings(steps=args.steps, seed=args.seed))
    report.update(command="spice " + " ".join(args.argv), date=datetime.now(UTC).isoformat(
        timespec="seconds"), machine=machine(), versions=package_versions(["spice-env",
                                                                           "numpy"]))
    return _write_report(report, args.output, markdown, plot)


def _bench_rewards_train(args: argparse.Namespace) -> int:
    """``spice bench rewards --train``: one short learning run per Challenger reward."""
    from datetime import UTC, datetime

    require_ours("algorithms")
    from algorithms.config import load_config
    from algorithms.preflight import preflight
    from benchmarks.perf.common import machine, package_versions
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
    _writable_output(args.output)
    root = args.runs_dir or Path("runs/bench") / (args.output.stem + "-runs")
    for reward in rewards:  # every arm checked before the first trains
        preflight(arm_config(config, reward, root))
    eval_sets = _eval_sets(config)
    started = datetime.now(UTC)

    def save(partial: dict[str, Any]) -> None:
        import json

        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps({**partial, "command": "spice " + " ".join(args.argv)},
                                          indent=2) + "\n")

    report = compare_rewards(config, rewards, root, eval_sets=eval_sets, on_arm=save)
    report.update(command="spice " + " ".join(args.argv),
                  date=started.isoformat(timespec="seconds"),
                  minutes=round((datetime.now(UTC) - started).total_seconds() / 60, 1),
                  machine=machine(), versions=package_versions(["spice-env", "torch",
                                                                "transformers", "peft"]))
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

    if not args.run.is_dir():
        raise UsageError(f"--run {args.run} is not a run folder (give runs/<run>)")
    _writable_output(args.output)
    try:
        settings = ProbeSettings(documents=args.documents,
                                 questions_per_document=args.questions_per_document,
                                 group_size=args.group_size, freeze=args.freeze, seed=args.seed,
                                 device=args.device)
        started = datetime.now(UTC)
        report = run_probe(args.run, settings, progress=True)
    except (OSError, ValueError) as exc:
        raise UsageError(_one_line(exc)) from None
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

    if args.output_dir.exists() and not args.output_dir.is_dir():
        raise UsageError(f"--output-dir {args.output_dir} is a file; give a folder")
    _writable_output(args.output_dir / "perf.json")
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
    if args.models:
        from agents.models import SHIPPED_MODELS, prepare_shipped_model

        for name in SHIPPED_MODELS if "all" in args.models else args.models:
            if name not in SHIPPED_MODELS:
                raise UsageError(f"--models: no shipped model {name!r}; choose from "
                                 f"{', '.join(SHIPPED_MODELS)} or all")
            print(f"model:{name}: {prepare_shipped_model(name)}")
    return 0


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
    demo.add_argument("--corpus", default="embedded:math",
                      help="a corpus spec: embedded, embedded:math, a file or folder, hf:<id>")
    demo.add_argument("--group-size", type=int, default=4, help="G: Reasoner answers per "
                      "question")
    demo.add_argument("--prompt-style", choices=["paper", "compact"], default="compact",
                      help="the role prompts")
    demo.add_argument("--task-formats", choices=["both", "mcq", "free_form"], default="both",
                      help="which question formats the Challenger may write")
    demo.add_argument("--challenger-reward", default="variance",
                      help="a registered Challenger reward (variance, absolute_zero, r_zero, "
                      "threshold, ...)")
    demo.add_argument("--temperature", type=float, default=0.7,
                      help="sampling temperature of both roles (model agent)")
    demo.add_argument("--p-correct", type=float, default=0.5,
                      help="the scripted Reasoner's chance of answering right")
    demo.add_argument("--seed", type=int, default=0, help="seed of the episodes")
    demo.set_defaults(func=_demo)

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
    train.set_defaults(func=_train)

    configs = command("configs", "list the shipped configurations")
    configs.set_defaults(func=_configs)

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
    ev.set_defaults(func=_eval)

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
    rewards.set_defaults(func=_bench_rewards)
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
    coevolution.add_argument("--output", type=Path,
                             default=Path("runs/bench/coevolution.json"),
                             help="the JSON report (the .md table and .png plot go beside it)")
    coevolution.set_defaults(func=_bench_coevolution)
    perf = command("perf", "verifier, rollout, training and TRL benchmarks in one report", bench)
    perf.add_argument("--only", nargs="+", default=["verifier", "rollout", "train", "trl"],
                      choices=["verifier", "rollout", "train", "trl"],
                      help="the benchmarks to run, in this order")
    perf.add_argument("--output-dir", type=Path, default=Path("runs/bench/perf"),
                      help="where each benchmark's files and perf.json/perf.md go")
    for part in ("verifier", "rollout", "train", "trl"):
        perf.add_argument(f"--{part}-args", default="", metavar="ARGS",
                          help=f"further options of the {part} benchmark, as one string")
    perf.set_defaults(func=_bench_perf)

    assets = command("assets", "download and prepare the embedded offline assets")
    assets.add_argument("--models", nargs="*", default=None, metavar="NAME",
                        help="also prepare these shipped models (all: every one)")
    assets.set_defaults(func=_assets)
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
    except _user_errors() as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
