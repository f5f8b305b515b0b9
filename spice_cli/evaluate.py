"""``spice eval``: the reasoning benchmarks, and the comparison of two reports."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from spice_cli.common import (
    UsageError,
    check_model_argument,
    one_line,
    remote_code_warning,
    require_ours,
    writable_output,
)


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

    _say_remote_code(args)
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


def _say_remote_code(args: argparse.Namespace) -> None:
    """Warn whose code ``--trust-remote-code`` lets run; say so when only the evaluated run's
    config asks for it (a run's setting is not honoured)."""
    from algorithms.checkpoints import remote_code_source, run_of
    from algorithms.run_folder import run_folder_of

    run = run_of(args.model)
    run_asks = run is not None and run.model.trust_remote_code
    if args.trust_remote_code or run_asks:
        remote_code_warning(args.trust_remote_code, remote_code_source(args.model),
                            run=getattr(run_folder_of(args.model), "path", None),
                            run_asks=run_asks)


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
                         f"{one_line(exc)})") from None
    if not isinstance(report, dict) or not isinstance(report.get("benchmarks"), dict) \
            or not report["benchmarks"]:
        raise UsageError(f"--compare: {path} holds no benchmark results (write one with spice "
                         "eval --output)")
    return report


def cmd_eval(args: argparse.Namespace) -> int:
    """spice eval: a model on the reasoning benchmarks, or two reports compared."""
    output = Path(args.output) if args.output else None
    if output is not None:
        writable_output(output)
    if args.compare:
        return _compare(args, output)
    if not args.model:
        raise UsageError("--model is required (or --compare a.json b.json)")
    specs, settings = _settings(args)
    if args.backend == "openai":
        from algorithms.preflight import endpoint_problem

        problem = endpoint_problem(args.base_url)
        if problem:
            raise UsageError(f"--base-url {args.base_url} cannot be reached ({problem}); start "
                             "the server or fix --base-url")
    else:
        check_model_argument(args.model, "--model")
    try:
        agent = _eval_agent(args)
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot load {args.model}: {one_line(exc)}") from None
    warn_if_long(args, agent, specs, settings)
    try:
        report = _evaluated(args, agent, specs, settings)
    finally:
        agent.close()
    _write(report, output)
    return 0


def _compare(args: argparse.Namespace, output: Path | None) -> int:
    """``--compare before.json after.json``: the table of differences."""
    from benchmarks.evaluation import compare, compare_markdown

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


def _settings(args: argparse.Namespace) -> tuple[list[Any], Any]:
    """The benchmarks of ``--suite`` and the evaluation settings (a run's defaults filled in)."""
    from benchmarks.evaluation import EvalSettings, suite_benchmarks

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
        raise UsageError(one_line(exc)) from None
    return specs, settings


def _evaluated(args: argparse.Namespace, agent: Any, specs: Sequence[Any], settings: Any
               ) -> dict[str, Any]:
    """The evaluation's report, with the command, date, machine and versions."""
    from datetime import UTC, datetime

    from benchmarks.evaluation import agent_generate, evaluate
    from benchmarks.reporting import envelope

    started = datetime.now(UTC)
    report = evaluate(agent_generate(agent), specs, settings, progress=not args.no_progress)
    return {"model": args.model, "backend": args.backend,
            **envelope("spice " + " ".join(args.argv),
                       ["spice-env", "torch", "transformers", "math-verify"], started=started),
            "seconds": round((datetime.now(UTC) - started).total_seconds(), 1), **report}


def _write(report: dict[str, Any], output: Path | None) -> None:
    """Print the report's table; write the JSON and the Markdown when asked."""
    from benchmarks.evaluation import markdown
    from benchmarks.reporting import write_report

    print(markdown(report))
    if output is not None:
        write_report(report, output, markdown)
        print(f"wrote {output} and {output.with_suffix('.md')}")


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


def warn_if_long(args: argparse.Namespace, agent: Any, specs: Sequence[Any],
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
