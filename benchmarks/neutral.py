"""Is the measuring path neutral? A run's policy, loaded every way a policy is loaded, against its
base model, item for item.

Before any claim that training improved a model, the path that measures it must give the same
answers for a model that did not change. This check takes a run whose weights did not move (for
example one iteration at ``optimizer.lr=1e-30``) and evaluates, greedily and on the same items,
the base model and the run's policy through each load path (the checkpoint file, the
``checkpoints/last`` pointer, the run folder, the exported ``model/``), and, as a control of the
instrument itself, the same checkpoint cast module-wide to the generation dtype (the old loading
path, which also cast the rotary frequencies). It counts identical responses per path::

    spice train --config cpu-demo trainer.iterations=1 optimizer.lr=1e-30 \\
        trainer.output_dir=runs/neutral trainer.save_every=1
    python -m benchmarks.neutral --run runs/neutral --limit 24 \\
        --output benchmarks/results/neutral.json
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from agents.backends.hf import HFBackend
from agents.models import LoadedModel, load_model
from agents.self_play import SelfPlayAgent
from algorithms.checkpoints import (
    load_checkpoint_policy,
    load_policy,
    resolve_checkpoint,
    run_of,
)
from algorithms.launch import compute_dtype, resolve_precision
from algorithms.run_folder import RunFolder
from benchmarks.evaluation import EvalSettings, agent_generate, evaluate, suite_benchmarks
from benchmarks.reporting import envelope, write_report


def _module_wide_cast(checkpoint: Path, dtype: torch.dtype) -> LoadedModel:
    """The checkpoint loaded as before the fix: float32, then ``module.to(dtype)``."""
    loaded = load_checkpoint_policy(checkpoint, dtype=torch.float32)
    loaded.model.to(dtype)
    return loaded


def neutral_check(run: Path, *, suite: str = "gsm8k", limit: int = 24, max_new_tokens: int = 384,
                  batch_size: int = 24, control: bool = True,
                  progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Evaluate the base model and every load path of ``run``'s policy; compare the responses."""
    config = run_of(run)
    if config is None:
        raise ValueError(f"{run} is not a run folder (no config.yaml)")
    dtype = compute_dtype(resolve_precision(config.trainer.precision, "cpu"))
    settings = EvalSettings(prompt_style=config.game.prompt_style,
                            max_new_tokens=max_new_tokens, batch_size=batch_size, limit=limit,
                            template=config.model.template,
                            dtype=str(dtype).removeprefix("torch."), from_run=True)
    specs = suite_benchmarks(suite)
    last = RunFolder(run).last_pointer
    checkpoint = resolve_checkpoint(last)
    if checkpoint is None:
        raise ValueError(f"{run} has no checkpoints/last pointer to a checkpoint")
    paths: dict[str, Callable[[], LoadedModel]] = {
        "base model": lambda: load_model(config.model.name, dtype=dtype),
        "checkpoint file": lambda: load_policy(checkpoint, dtype=dtype),
        "checkpoints/last": lambda: load_policy(last, dtype=dtype),
        "run folder": lambda: load_policy(run, dtype=dtype),
    }
    if RunFolder(run).has_export():
        paths["exported model/"] = lambda: load_policy(RunFolder(run).export_dir, dtype=dtype)
    if control:
        paths["control: module-wide cast"] = lambda: _module_wide_cast(checkpoint, dtype)
    answers: dict[str, list[str]] = {}
    accuracy: dict[str, float | None] = {}
    seconds: dict[str, float] = {}
    for name, load in paths.items():
        started = time.perf_counter()
        loaded = load()
        agent = SelfPlayAgent(backend=HFBackend(loaded.model, loaded.tokenizer,
                                                max_batch_size=batch_size),
                              template=config.model.template)
        report = evaluate(agent_generate(agent), specs, settings, progress=False)
        agent.close()
        records = [r for bench in report["benchmarks"].values() for r in bench.get("records", [])]
        answers[name] = [r["responses"][0]["text"] for r in records]
        accuracy[name] = report["summary"].get("overall")
        seconds[name] = round(time.perf_counter() - started, 1)
        del loaded, agent
        progress(f"{name}: accuracy {accuracy[name]}, {seconds[name]} s")
    base = answers["base model"]
    identical = {name: sum(a == b for a, b in zip(texts, base, strict=True))
                 for name, texts in answers.items() if name != "base model"}
    neutral = all(identical[name] == len(base) for name in identical
                  if not name.startswith("control"))
    return {"benchmark": "neutral", "run": str(run), "base_model": config.model.name,
            "suite": suite, "items": len(base), "settings": settings.model_dump(),
            "identical_to_base": identical, "accuracy": accuracy, "seconds": seconds,
            "neutral": neutral,
            **envelope("", ["spice-env", "torch", "transformers"])}


def markdown(report: dict[str, Any]) -> str:
    """The check as a table."""
    settings = report["settings"]
    lines = [f"# Neutral measuring path: `{report['run']}` against `{report['base_model']}`", "",
             f"`{report.get('command', '')}`", "",
             f"{report['items']} {report['suite']} items, greedy, `{settings['prompt_style']}` "
             f"prompt, `{settings['dtype']}`, at most {settings['max_new_tokens']} new tokens.",
             "",
             "| load path | responses identical to the base model's | accuracy |",
             "|---|---|---|",
             f"| base model | — | {report['accuracy']['base model']} |"]
    for name, same in report["identical_to_base"].items():
        lines.append(f"| {name} | {same}/{report['items']} | {report['accuracy'][name]} |")
    verdict = "neutral" if report["neutral"] else "NOT neutral"
    lines += ["", f"Every load path of the run's policy: **{verdict}**."]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks.neutral --run runs/<run> [--limit n] [--output f.json]``."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.neutral", description=__doc__
                                     .split("\n")[0], allow_abbrev=False)
    parser.add_argument("--run", type=Path, required=True, help="a run whose weights did not "
                        "move")
    parser.add_argument("--suite", default="gsm8k", help="benchmarks to answer")
    parser.add_argument("--limit", type=int, default=24, help="items per benchmark")
    parser.add_argument("--max-new-tokens", type=int, default=384, help="completion limit")
    parser.add_argument("--no-control", action="store_true", help="skip the module-wide cast")
    parser.add_argument("--output", type=Path, default=Path("runs/bench/neutral.json"),
                        help="the JSON report (its .md table beside it)")
    args = parser.parse_args(argv)
    report = neutral_check(args.run, suite=args.suite, limit=args.limit,
                           max_new_tokens=args.max_new_tokens, control=not args.no_control)
    report["command"] = "python -m benchmarks.neutral " + " ".join(
        sys.argv[1:] if argv is None else argv)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    write_report(report, args.output, markdown)
    print(markdown(report))
    return 0 if report["neutral"] else 1


if __name__ == "__main__":
    sys.exit(main())
