"""Did the loop teach? The before/after report of a training run with in-loop evaluation.

A run trained with a held-out set (``evaluation.heldout``) answers those questions greedily
before its first update and after its last (``evaluations.jsonl``). This report puts next to
those numbers everything needed to believe them:

* the held-out accuracy before and after, with the paired difference and its standard error
  (the same questions both times), and how many questions turned right or wrong;
* the same questions answered through the **checkpoint path** (the policy read back from the run's
  last checkpoint, as ``spice eval`` reads it) and by the base model through ``load_model``:
  the in-loop numbers must agree with what the saved policy does (response for response when the
  run generated with the HF backend on a CPU, as the report does; a run that generated with vLLM
  or on a GPU agrees in accuracy only);
* a **control**: a run whose weights did not move (``optimizer.lr=1e-30``, one iteration),
  its checkpoint evaluated the same way, must answer exactly like the base model;
* benchmark subsets (GSM8K, MATH-500) before and after, with standard errors;
* the curves per iteration and a plot::

    spice train --config cpu-learn
    spice train --config cpu-learn trainer.iterations=1 optimizer.lr=1e-30 \\
        evaluation.heldout=0 trainer.output_dir=runs/cpu-learn-control
    python -m benchmarks.learning --run runs/cpu-learn --control runs/cpu-learn-control \\
        --benchmarks gsm8k,math500 --limit 100 --output benchmarks/results/learning.json
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from agents.backends.hf import HFBackend
from agents.models import LoadedModel, load_model
from agents.self_play import SelfPlayAgent
from algorithms.checkpoints import load_policy, run_of
from algorithms.config import TrainConfig
from algorithms.evaluation import HELDOUT, EvalQuestion, answer_questions, gold_answer_type
from algorithms.evaluation import summarise as summarise_records
from algorithms.launch import compute_dtype, resolve_precision
from algorithms.run_folder import EVALUATIONS_FILE, RunFolder, checkpoint_iteration
from algorithms.runlog import read_jsonl
from benchmarks.evaluation import EvalSettings, agent_generate, evaluate, suite_benchmarks
from benchmarks.reporting import envelope, write_report
from spice_env.game import SpiceGame
from spice_env.tasks import Task
from spice_env.verify import Verifier

CURVE_KEYS = ("challenger/valid_rate", "challenger/frontier_share", "challenger/reward",
              "challenger/pass_rate", "reasoner/reward", "reasoner/boxed_rate",
              "reasoner/completion_tokens", "train/loss", "train/entropy", "time/iteration")


def paired(before: Sequence[Mapping[str, Any]], after: Sequence[Mapping[str, Any]]
           ) -> dict[str, Any]:
    """The change of accuracy on the same questions: the mean per-question difference, its
    standard error, and the counts of questions that turned right and wrong."""
    by_id = {r["id"]: bool(r["correct"]) for r in before}
    pairs = [(by_id[r["id"]], bool(r["correct"])) for r in after if r["id"] in by_id]
    n = len(pairs)
    if not n:
        return {"n": 0}
    diffs = [float(a) - float(b) for b, a in pairs]
    mean = sum(diffs) / n
    spread = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1)) if n > 1 else 0.0
    return {"n": n, "gain": mean, "stderr": spread / math.sqrt(n),
            "turned_right": sum(not b and a for b, a in pairs),
            "turned_wrong": sum(b and not a for b, a in pairs)}


def identical(first: Sequence[Mapping[str, Any]], second: Sequence[Mapping[str, Any]]) -> int:
    """How many questions got the very same response text in both."""
    texts = {r["id"]: r["text"] for r in first}
    return sum(texts.get(r["id"]) == r["text"] for r in second)


def _summary(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    found = summarise_records(records)
    return {key: (value if math.isfinite(value) else None) for key, value in found.items()}


def heldout_records(run: Path) -> dict[int, list[dict[str, Any]]]:
    """The run's held-out answers by iteration."""
    out: dict[int, list[dict[str, Any]]] = {}
    for record in read_jsonl(RunFolder(run).evaluations_file):
        if record.get("set") == HELDOUT:
            out.setdefault(int(record["iteration"]), []).append(record)
    return out


def _questions(records: Sequence[Mapping[str, Any]]) -> list[EvalQuestion]:
    return [EvalQuestion(r["id"], Task(kind="free_form", question=r["question"],
                                       answer=r["answer"],
                                       answer_type=gold_answer_type(r["answer"])))
            for r in records]


class _Policy:
    """A policy loaded one way, answering as the run's Reasoner does."""

    def __init__(self, config: TrainConfig, load: Callable[[], LoadedModel]) -> None:
        self.config = config
        self.loaded = load()
        # the trainer's backend options: the same batching gives the same padding, so the same
        # arithmetic as the evaluation in the loop
        backend = HFBackend(self.loaded.model, self.loaded.tokenizer,
                            **config.model.backend_options)
        self.agent = SelfPlayAgent(backend=backend, template=config.model.template)

    def heldout(self, questions: Sequence[EvalQuestion], verifier: Verifier, *,
                max_new_tokens: int, batch_size: int, seed: int) -> list[dict[str, Any]]:
        game = SpiceGame(self.config.game, verifier)
        return answer_questions(questions, agent_generate(self.agent),
                                game.reasoner_observation, verifier,
                                max_new_tokens=max_new_tokens, batch_size=batch_size,
                                seed=seed)

    def benchmarks(self, suite: str, settings: EvalSettings) -> dict[str, Any]:
        report = evaluate(agent_generate(self.agent), suite_benchmarks(suite), settings,
                          progress=False)
        return {name: {key: bench.get(key) for key in ("items", "accuracy", "stderr",
                                                        "answered_rate", "truncated_rate")}
                for name, bench in report["benchmarks"].items()}

    def close(self) -> None:
        self.agent.close()


def learning_report(run: Path, *, control: Path | None = None, benchmarks: str | None = None,
                    limit: int = 100, batch_size: int = 64,
                    progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Everything of the module's docstring, as a JSON-ready dict."""
    config, checkpoint, before_loop, after_loop, report = _in_loop(run)
    questions = _questions(before_loop)
    dtype = compute_dtype(resolve_precision(config.trainer.precision, "cpu"))
    policies: dict[str, Callable[[], LoadedModel]] = {
        "base": lambda: load_model(config.model.name, dtype=dtype),
        "after": lambda: load_policy(checkpoint, dtype=dtype),
    }
    if control is not None:
        policies["control"] = lambda: load_policy(RunFolder(control).last_pointer,
                                                  dtype=dtype)
    settings = EvalSettings(prompt_style=config.game.prompt_style,
                            max_new_tokens=report["settings"]["max_new_tokens"],
                            batch_size=batch_size, limit=limit, template=config.model.template,
                            dtype=str(dtype).removeprefix("torch."), from_run=True)
    heldout_paths, bench, seconds = _answer_by_path(config, policies, questions, settings,
                                                    benchmarks, progress)
    report["checkpoint_path"] = {
        "base": _summary(heldout_paths["base"]), "after": _summary(heldout_paths["after"]),
        "base_identical_to_loop_before": identical(before_loop, heldout_paths["base"]),
        "after_identical_to_loop_after": identical(after_loop, heldout_paths["after"]),
        "paired": paired(heldout_paths["base"], heldout_paths["after"]),
    }
    if control is not None:
        report["control"] = {"run": str(control),
                             "before": _summary(heldout_paths["base"])["accuracy"],
                             "after": _summary(heldout_paths["control"])["accuracy"],
                             "identical": identical(heldout_paths["base"],
                                                    heldout_paths["control"]),
                             "n": len(questions)}
    if bench:
        report["benchmarks"] = {
            name: {"before": bench["base"][name], "after": bench["after"][name]}
            for name in bench["base"]}
        report["benchmark_settings"] = settings.model_dump()
    report["seconds"] = seconds
    report.update(envelope("", ["spice-env", "torch", "transformers", "peft"]))
    return report


def _in_loop(run: Path) -> tuple[TrainConfig, Path, list[dict[str, Any]],
                                 list[dict[str, Any]], dict[str, Any]]:
    """The run's config, its last checkpoint, the held-out answers of the loop before the first
    update and at that checkpoint, and the report's in-loop part (numbers, settings, curves)."""
    config = run_of(run)
    if config is None:
        raise ValueError(f"{run} is not a run folder (no config.yaml)")
    answered = heldout_records(run)
    if not answered:
        raise ValueError(f"{run} has no held-out evaluation ({EVALUATIONS_FILE}); train with "
                         "evaluation.heldout set")
    checkpoint = RunFolder(run).latest()
    if checkpoint is None:
        raise ValueError(f"{run} has no checkpoints/last pointer to a checkpoint")
    first, last = min(answered), checkpoint_iteration(checkpoint)
    if last not in answered:  # a run stopped between an evaluation and its next checkpoint
        raise ValueError(f"{run}: the last checkpoint ({checkpoint.name}) has no held-out "
                         f"evaluation (evaluated at {sorted(answered)}); resume the run to its "
                         "end")
    before_loop, after_loop = answered[first], answered[last]
    limit_tokens = config.evaluation.max_new_tokens or config.reasoner.max_new_tokens
    dtype = compute_dtype(resolve_precision(config.trainer.precision, "cpu"))
    history = read_jsonl(RunFolder(run).metrics_file)
    seconds = [r.get("time/iteration", 0.0) + r.get("time/eval", 0.0) for r in history]
    report: dict[str, Any] = {
        "benchmark": "learning", "run": str(run), "base_model": config.model.name,
        "heldout": {"before": _summary(before_loop)["accuracy"],
                    "after": _summary(after_loop)["accuracy"],
                    "n": len(_questions(before_loop)), "iterations": [first, last],
                    "before_detail": _summary(before_loop), "after_detail": _summary(after_loop),
                    "paired": paired(before_loop, after_loop)},
        "settings": {"backend": config.model.backend, "prompt_style": config.game.prompt_style,
                     "template": config.model.template, "dtype": str(dtype).removeprefix(
                         "torch."), "max_new_tokens": limit_tokens, "greedy": True},
        "config": config.model_dump(mode="json"),
        "minutes": round(sum(s for s in seconds if isinstance(s, int | float)) / 60, 1),
        "curves": [{key: r[key] for key in ("iteration", *CURVE_KEYS, *(
            k for k in r if k.startswith("eval/"))) if key in r} for r in history],
    }
    return config, checkpoint, before_loop, after_loop, report


def _answer_by_path(config: TrainConfig, policies: Mapping[str, Callable[[], LoadedModel]],
                    questions: list[EvalQuestion], settings: EvalSettings,
                    benchmarks: str | None, progress: Callable[[str], None]
                    ) -> tuple[dict[str, list[dict[str, Any]]], dict[str, dict[str, Any]],
                               dict[str, float]]:
    """Each policy's held-out answers (and, for base and after, its benchmark results) and the
    seconds each took."""
    section = config.evaluation
    heldout_paths: dict[str, list[dict[str, Any]]] = {}
    bench: dict[str, dict[str, Any]] = {}
    seconds: dict[str, float] = {}
    verifier = Verifier()
    try:
        for name, load in policies.items():
            started = time.perf_counter()
            policy = _Policy(config, load)
            heldout_paths[name] = policy.heldout(questions, verifier,
                                                 max_new_tokens=settings.max_new_tokens,
                                                 batch_size=section.batch_size,
                                                 seed=section.seed)
            if benchmarks and name in ("base", "after"):
                bench[name] = policy.benchmarks(benchmarks, settings)
            policy.close()
            seconds[name] = round(time.perf_counter() - started, 1)
            progress(f"{name}: held-out accuracy "
                     f"{_summary(heldout_paths[name])['accuracy']}, {seconds[name]} s")
    finally:
        verifier.close()
    return heldout_paths, bench, seconds


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}"


def markdown(report: Mapping[str, Any]) -> str:
    """The report as tables."""
    held, loop = report["heldout"], report["heldout"]["paired"]
    lines = [f"# What the loop learned: `{report['run']}`", "",
             f"Training: `{report.get('train_command', '')}`", "",
             f"Report: `{report.get('command', '')}`", "",
             f"{held['n']} held-out questions of the training corpus, greedy, "
             f"`{report['settings']['prompt_style']}` prompt, at most "
             f"{report['settings']['max_new_tokens']} new tokens; {report['minutes']} minutes of "
             "iterations and evaluations.", "",
             "| held-out set | accuracy | boxed rate | accuracy given boxed | truncated |",
             "|---|---|---|---|---|"]
    rows = [(f"in the loop, iteration {held['iterations'][0]}", held["before_detail"]),
            (f"in the loop, iteration {held['iterations'][1]}", held["after_detail"]),
            ("checkpoint path: base model", report["checkpoint_path"]["base"]),
            ("checkpoint path: last checkpoint", report["checkpoint_path"]["after"])]
    for label, s in rows:
        lines.append(f"| {label} | {_pct(s['accuracy'])} ± {_pct(s['stderr'])} | "
                     f"{_pct(s['boxed_rate'])} | {_pct(s['accuracy_given_boxed'])} | "
                     f"{_pct(s['truncated_rate'])} |")
    path = report["checkpoint_path"]
    lines += ["", f"Paired change in the loop: {100 * loop['gain']:+.1f} ± "
              f"{100 * loop['stderr']:.1f} points ({loop['turned_right']} questions turned "
              f"right, {loop['turned_wrong']} wrong). Identical responses, checkpoint path "
              f"against the loop: base {path['base_identical_to_loop_before']}/{held['n']}, "
              f"last checkpoint {path['after_identical_to_loop_after']}/{held['n']}."]
    if "control" in report:
        c = report["control"]
        lines += ["", f"Control (`{c['run']}`, weights unmoved): {_pct(c['before'])} → "
                  f"{_pct(c['after'])}, {c['identical']}/{c['n']} responses identical to the "
                  "base model's."]
    if "benchmarks" in report:
        lines += ["", "| benchmark | before | after |", "|---|---|---|"]
        for name, pair in report["benchmarks"].items():
            b, a = pair["before"], pair["after"]
            lines.append(f"| {name} ({b['items']} items) | {_pct(b['accuracy'])} ± "
                         f"{_pct(b['stderr'])} | {_pct(a['accuracy'])} ± {_pct(a['stderr'])} |")
    return "\n".join(lines) + "\n"


def plot(report: Mapping[str, Any], path: Path) -> Path:
    """The held-out curve (±1 s.e.) beside the self-play curves of the run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = report["curves"]
    figure, axes = plt.subplots(1, 3, figsize=(14, 3.6))
    evaluated = [r for r in curves if "eval/heldout/accuracy" in r]
    xs = [r["iteration"] for r in evaluated]
    acc = [r["eval/heldout/accuracy"] for r in evaluated]
    err = [r.get("eval/heldout/stderr", 0.0) for r in evaluated]
    axes[0].fill_between(xs, [a - e for a, e in zip(acc, err, strict=True)],
                         [a + e for a, e in zip(acc, err, strict=True)], alpha=0.2)
    axes[0].plot(xs, acc, marker="o", label="accuracy (±1 s.e.)")
    for key, label, style in (("boxed_rate", "boxed rate", "--"),
                              ("accuracy_given_boxed", "accuracy given boxed", ":")):
        points = [(r["iteration"], r[f"eval/heldout/{key}"]) for r in evaluated
                  if f"eval/heldout/{key}" in r]
        if points:
            axes[0].plot(*zip(*points, strict=True), marker=".", linestyle=style, label=label)
    axes[0].set_title(f"held-out questions ({report['heldout']['n']}), greedy", fontsize=10)
    axes[0].set_ylim(-0.02, 1.02)
    axes[0].legend(fontsize=7)
    trained = [r for r in curves if "challenger/valid_rate" in r]
    for key, label in (("challenger/valid_rate", "valid questions"),
                       ("challenger/frontier_share", "share 0<p<1"),
                       ("challenger/pass_rate", "Reasoner pass rate"),
                       ("reasoner/boxed_rate", "Reasoner boxed rate")):
        axes[1].plot([r["iteration"] for r in trained if key in r],
                     [r[key] for r in trained if key in r], marker=".", label=label)
    axes[1].set_title("self-play (sampled, per iteration)", fontsize=10)
    axes[1].set_ylim(-0.02, 1.02)
    axes[1].legend(fontsize=7)
    for key, label in (("challenger/reward", "Challenger reward"),
                       ("reasoner/reward", "Reasoner reward")):
        axes[2].plot([r["iteration"] for r in trained if key in r],
                     [r[key] for r in trained if key in r], marker=".", label=label)
    axes[2].set_title("rewards", fontsize=10)
    axes[2].legend(fontsize=7)
    for axis in axes:
        axis.set_xlabel("iteration", fontsize=8)
        axis.grid(alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks.learning --run runs/<run> [--control runs/<control>] ...``."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.learning",
                                     description=__doc__.split("\n")[0], allow_abbrev=False)
    parser.add_argument("--run", type=Path, required=True, help="a run with held-out evaluation")
    parser.add_argument("--control", type=Path, help="a run of the same config whose weights "
                        "did not move")
    parser.add_argument("--benchmarks", help="benchmarks before and after, e.g. gsm8k,math500")
    parser.add_argument("--limit", type=int, default=100, help="items per benchmark")
    parser.add_argument("--batch-size", type=int, default=64, help="benchmark questions "
                        "generated at once (the held-out set uses the run's own batching)")
    parser.add_argument("--train-command", default="", help="the command that trained the run "
                        "(recorded)")
    parser.add_argument("--output", type=Path, default=Path("runs/bench/learning.json"),
                        help="the JSON report (its .md tables and .png curves beside it)")
    args = parser.parse_args(argv)
    try:
        report = learning_report(args.run, control=args.control, benchmarks=args.benchmarks,
                                 limit=args.limit, batch_size=args.batch_size)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    report["train_command"] = args.train_command
    report["command"] = "python -m benchmarks.learning " + shlex.join(
        sys.argv[1:] if argv is None else argv)
    write_report(report, args.output, markdown, plot)
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
