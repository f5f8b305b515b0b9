"""Seconds per optimiser step against TRL's ``GRPOTrainer``, doing the same Reasoner-side work.

Both sides get the same workload and settings:

* the same model (the embedded ``qwen2.5-coder-0.5b-instruct`` by default), float32 master weights
  with bfloat16 autocast where the CPU has bf16 units (TRL: ``bf16=True``; ours:
  ``precision: auto``), activation checkpointing on (TRL's default);
* the same prompts: seeded arithmetic word problems with integer answers, in the ``compact``
  Reasoner prompt, as chat messages (both apply the tokenizer's chat template);
* the same number of generations per prompt (G), the same maximum completion length,
  temperature 1.0, top-p 1.0;
* the same reward: 1 when the project's verifier finds the boxed answer correct, else 0;
* the same loss: Dr. GRPO (TRL: ``loss_type="dr_grpo"``, ``scale_rewards="none"``, β = 0; ours:
  ``drgrpo`` with ``loss_normaliser`` = the maximum completion length), lr 1e-6, AdamW;
* the same batch: P prompts × G completions per step in micro-batches of M sequences
  (TRL: ``per_device_train_batch_size=M``, gradient accumulation P·G/M, one generation per step);
* the same number of optimiser steps; the first is a warm-up and is not timed.

What differs is each library's own machinery, which is what is measured. Ours is
:class:`algorithms.trainer.SpiceTrainer`: the hf backend samples from a bfloat16 copy of the
trained module (rows leave the batch when they finish, grouped-query decode attention), then
:meth:`~algorithms.trainer.SpiceTrainer.update` computes the loss on completion positions only,
computes each group's shared prompt once (one packed row per micro-batch with a block attention
mask), leaves out the samples whose advantage is 0 (no gradient under Dr. GRPO with β = 0; the
loss still divides by all P·G) and steps: the same optimiser step, with less work. TRL
generates with ``model.generate`` on the float32 module under autocast (a static batch), then
runs its loss over the micro-batches. Each side runs
in its own child process, one after the other, so neither sees the other's memory. A step's time
is generation + reward + loss/backward + optimiser (+ ours: the weight sync); completion lengths
are sampled, so the report also gives seconds per generated token.

Writes ``benchmarks/results/trl.json`` (key ``speedup_vs_trl``: TRL's mean step time over ours)
and a Markdown summary. Needs ``trl`` (``pip install 'spice-env[bench]'``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.reporting import (
    command_line,
    envelope,
    source_files,
    write_report,
)

SIDES = ("spice", "trl")
MEASURED_SOURCES = ("algorithms/trainer.py", "algorithms/samples.py", "algorithms/logprobs.py",
                    "agents/backends/hf.py", "benchmarks/perf/trl_compare.py")


def questions(count: int, seed: int) -> list[tuple[str, str]]:
    """Seeded two-step arithmetic word problems and their integer answers."""
    rng = random.Random(seed)
    items = []
    for _ in range(count):
        boxes, per_box, given = rng.randint(2, 9), rng.randint(3, 15), rng.randint(1, 20)
        name = rng.choice(["Ana", "Ben", "Chen", "Dara", "Eli", "Fay"])
        thing = rng.choice(["apples", "pencils", "stickers", "marbles", "cookies"])
        items.append((f"{name} has {boxes} boxes with {per_box} {thing} each and gives away "
                      f"{given} {thing}. How many {thing} does {name} have left?",
                      str(boxes * per_box - given)))
    return items


def prompts(args: argparse.Namespace) -> list[tuple[list[dict[str, str]], str]]:
    """The chat messages and gold answer of each prompt, ``steps`` × ``prompts`` of them."""
    from spice_env.prompting import reasoner_prompt

    found = []
    for question, answer in questions(args.steps * args.prompts, args.seed):
        rendered = reasoner_prompt(question, "compact")
        found.append(([dict(m) for m in rendered.messages], answer))
    return found


def _task(answer: str) -> Any:
    from spice_env.tasks import Task

    return Task(kind="free_form", question="", answer=answer, answer_type="integer")


# -- the two sides (each in a child process) ----------------------------------------------------

def run_spice(args: argparse.Namespace) -> dict[str, Any]:
    """Our trainer on the workload: generate, verify, Dr. GRPO step, sync; timed per step."""
    from algorithms.config import build_config
    from algorithms.launch import make_fabric
    from algorithms.samples import TrainingSample, assign_advantages
    from algorithms.trainer import SpiceTrainer
    from spice_env.game import observation
    from spice_env.prompting import RenderedPrompt
    from spice_env.verify import Verifier

    work = prompts(args)
    with tempfile.TemporaryDirectory() as folder:
        config = build_config({
            "model": {"name": args.model, "backend": "hf"},
            "game": {"group_size": args.generations},
            "rollout": {"attempts": max(8, args.generations)},
            "reasoner": {"temperature": 1.0, "top_p": 1.0, "max_new_tokens": args.max_tokens},
            "algorithm": {"name": "drgrpo", "loss_normaliser": args.max_tokens},
            "optimizer": {"lr": 1e-6},
            "trainer": {"output_dir": folder, "precision": "auto", "accelerator": "cpu",
                        "micro_batch_size": args.micro_batch, "activation_checkpointing": True,
                        "skip_inert_samples": not args.run_every_sample,
                        "loggers": [], "progress": False, "seed": args.seed},
        })
        trainer = SpiceTrainer(config, make_fabric(config))
        engine = trainer.setup().engine
        steps: list[dict[str, float]] = []
        with Verifier() as verifier:
            for step in range(args.steps):
                chunk = work[step * args.prompts : (step + 1) * args.prompts]
                observations = [observation("reasoner", RenderedPrompt(tuple(m), ""))
                                for m, _ in chunk]
                began = time.perf_counter()
                trainer.model.eval()
                with engine.generation_context(engine.agent):
                    generated = engine.agent.generate(observations, args.generations)
                generated_at = time.perf_counter()
                samples = []
                for group, ((_, answer), row) in enumerate(zip(chunk, generated, strict=True)):
                    verdicts = verifier.verify_many([(_task(answer), g.text) for g in row])
                    samples += [TrainingSample(role="reasoner", group=group,
                                               prompt_ids=g.prompt_ids,
                                               completion_ids=g.completion_ids,
                                               old_logprobs=g.logprobs,
                                               reward=float(v.correct))
                                for g, v in zip(row, verdicts, strict=True)]
                with_advantages, _ = assign_advantages(samples, trainer.algorithm)
                metrics = trainer.update(with_advantages)
                ended = time.perf_counter()
                steps.append({"seconds": ended - began, "generate_s": generated_at - began,
                              "completion_tokens": sum(len(g.completion_ids) for row in generated
                                                       for g in row),
                              "reward": statistics.fmean(s.reward for s in samples),
                              "skipped_samples": int(metrics.get("skipped_samples", 0))})
        trainer.close()
    return {"side": "spice", "precision": trainer.precision, "steps": steps}


def run_trl(args: argparse.Namespace) -> dict[str, Any]:
    """TRL's GRPOTrainer on the workload, timed per optimiser step by a callback."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from agents.models import cpu_has_bf16_units, resolve_model
    from spice_env.verify import Verifier

    folder = resolve_model(args.model)
    work = prompts(args)
    dataset = Dataset.from_list([{"prompt": m, "answer": a} for m, a in work])
    verifier = Verifier()

    def reward(completions: list[Any], answer: list[str], **_: Any) -> list[float | None]:
        texts = [c[-1]["content"] if isinstance(c, list) else str(c) for c in completions]
        found: list[float | None] = [float(v.correct) for v in verifier.verify_many(
            [(_task(a), t) for a, t in zip(answer, texts, strict=True)])]
        return found

    completions_per_step = args.prompts * args.generations

    class Timer(TrainerCallback):
        def __init__(self) -> None:
            self.steps: list[dict[str, float]] = []
            self.began = 0.0

        def on_step_begin(self, *_: Any, **__: Any) -> None:
            self.began = time.perf_counter()

        def on_step_end(self, *_: Any, **__: Any) -> None:
            self.steps.append({"seconds": time.perf_counter() - self.began})

        def on_log(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            logs = kwargs.get("logs") or {}
            if "completions/mean_length" in logs and self.steps:
                self.steps[-1]["completion_tokens"] = (logs["completions/mean_length"]
                                                       * completions_per_step)
                self.steps[-1]["reward"] = logs.get("reward", float("nan"))

    bf16 = cpu_has_bf16_units()
    with tempfile.TemporaryDirectory() as output:
        config = GRPOConfig(
            output_dir=output, use_cpu=True, bf16=bf16, seed=args.seed,
            per_device_train_batch_size=args.micro_batch,
            gradient_accumulation_steps=args.prompts * args.generations // args.micro_batch,
            num_generations=args.generations, max_completion_length=args.max_tokens,
            temperature=1.0, top_p=1.0, learning_rate=1e-6, lr_scheduler_type="constant",
            warmup_steps=0, beta=0.0, loss_type="dr_grpo", scale_rewards="none",
            max_steps=args.steps, logging_steps=1, save_strategy="no", report_to=[],
            gradient_checkpointing=True, shuffle_dataset=False, dataloader_num_workers=0,
            disable_tqdm=True)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        timer = Timer()
        trainer = GRPOTrainer(model=model, reward_funcs=[reward], args=config,
                              train_dataset=dataset, processing_class=tokenizer,
                              callbacks=[timer])
        trainer.train()
    verifier.close()
    return {"side": "trl", "precision": "bf16 autocast" if bf16 else "float32",
            "steps": timer.steps}


# -- the parent ---------------------------------------------------------------------------------

def child(side: str, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        output = Path(folder) / "result.json"
        command = [sys.executable, "-m", "benchmarks.perf.trl_compare", "--child", side,
                   "--child-output", str(output), "--model", args.model,
                   "--prompts", str(args.prompts), "--generations", str(args.generations),
                   "--max-tokens", str(args.max_tokens), "--micro-batch", str(args.micro_batch),
                   "--steps", str(args.steps), "--seed", str(args.seed),
                   *(["--run-every-sample"] if args.run_every_sample else [])]
        began = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0 or not output.exists():
            return {"side": side, "error": (done.stderr or done.stdout)[-3000:]}
        result: dict[str, Any] = json.loads(output.read_text())
        result["process_s"] = round(time.perf_counter() - began, 1)
        timed = result["steps"][1:]
        mean = statistics.fmean(s["seconds"] for s in timed)
        result["mean_step_s"] = round(mean, 2)
        result["mean_step_s_unrounded"] = mean
        tokens = [s.get("completion_tokens") for s in timed]
        if all(isinstance(t, int | float) and t > 0 for t in tokens):
            counts = [float(t) for t in tokens if t is not None]
            result["mean_completion_tokens"] = round(statistics.fmean(counts), 1)
            result["ms_per_completion_token"] = round(
                1000 * sum(s["seconds"] for s in timed) / sum(counts), 1)
        print(f"{side}: {result['mean_step_s']} s per step", file=sys.stderr)
        return result


def report(args: argparse.Namespace) -> dict[str, Any]:
    """Run both sides and compare them."""
    results = {side: child(side, args) for side in SIDES}
    out: dict[str, Any] = {
        "benchmark": "trl",
        **envelope(command_line(), ("spice-env", "torch", "transformers", "trl", "lightning",
                                    "accelerate")),
        "source": source_files(MEASURED_SOURCES),
        "workload": {"model": args.model, "prompts_per_step": args.prompts,
                     "generations_per_prompt": args.generations,
                     "max_completion_tokens": args.max_tokens, "micro_batch": args.micro_batch,
                     "optimizer_steps": args.steps, "timed_steps": max(args.steps - 1, 1),
                     "temperature": 1.0, "loss": "Dr. GRPO, beta 0, lr 1e-6",
                     "activation_checkpointing": True, "seed": args.seed,
                     "ours_skip_inert_samples": not args.run_every_sample},
        "results": results,
    }
    ours, theirs = results["spice"], results["trl"]
    if "mean_step_s" in ours and "mean_step_s" in theirs:
        out["speedup_vs_trl"] = round(theirs["mean_step_s_unrounded"]
                                      / ours["mean_step_s_unrounded"], 2)
        if "ms_per_completion_token" in ours and "ms_per_completion_token" in theirs:
            out["speedup_vs_trl_per_token"] = round(
                theirs["ms_per_completion_token"] / ours["ms_per_completion_token"], 2)
    return out


def markdown(data: dict[str, Any]) -> str:
    work = data["workload"]
    lines = ["# Seconds per optimiser step: spice-env against TRL's GRPOTrainer", "",
             f"`{data['command']}` on {data['date']}, {data['machine']['cpu_model']} "
             f"({data['machine']['cores']} cores); versions: "
             + ", ".join(f"{k} {v}" for k, v in data["versions"].items()) + ".", "",
             f"Model `{work['model']}`; {work['prompts_per_step']} prompts × "
             f"{work['generations_per_prompt']} generations per step, at most "
             f"{work['max_completion_tokens']} new tokens, micro-batches of "
             f"{work['micro_batch']}, {work['loss']}; {work['optimizer_steps']} steps, the first "
             "not timed.", "",
             "| side | precision | s per step | completion tokens per step | ms per token "
             "| mean reward |",
             "|---|---|---|---|---|---|"]
    for side, result in data["results"].items():
        if "error" in result:
            lines.append(f"| {side} | – | failed | – | – | – |")
            continue
        rewards = [s["reward"] for s in result["steps"][1:]
                   if isinstance(s.get("reward"), int | float)]
        reward = f"{statistics.fmean(rewards):.3f}" if rewards else "–"
        lines.append(f"| {side} | {result['precision']} | {result['mean_step_s']} | "
                     f"{result.get('mean_completion_tokens', '–')} | "
                     f"{result.get('ms_per_completion_token', '–')} | {reward} |")
    ours = data["results"].get("spice", {})
    timed = [s for s in ours.get("steps", [])[1:] if "generate_s" in s]
    if timed:
        generate = statistics.fmean(s["generate_s"] for s in timed)
        rest = statistics.fmean(s["seconds"] - s["generate_s"] for s in timed)
        lines += ["", f"Our timed steps: {generate:.1f} s generating, {rest:.1f} s verifying, "
                  "updating and syncing the weights (means)."]
    skipped = [s["skipped_samples"] for s in ours.get("steps", [])[1:] if "skipped_samples" in s]
    if skipped:
        per_step = work["prompts_per_step"] * work["generations_per_prompt"]
        lines += ["", "Samples ours left out of the forward and backward (advantage 0) in the "
                  f"timed steps: {skipped} of {per_step} each."]
    if "speedup_vs_trl" in data:
        lines += ["", f"- `speedup_vs_trl`: {data['speedup_vs_trl']} (TRL's mean step time over "
                  "ours)"]
        if "speedup_vs_trl_per_token" in data:
            lines.append(f"- `speedup_vs_trl_per_token`: {data['speedup_vs_trl_per_token']} "
                         "(the same per generated token, since sampled lengths differ)")
    if data.get("notes"):
        lines += ["", data["notes"]]
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    parser.add_argument("--prompts", type=int, default=4, help="prompts per step")
    parser.add_argument("--generations", type=int, default=4, help="G: completions per prompt")
    parser.add_argument("--max-tokens", type=int, default=256, help="max completion tokens")
    parser.add_argument("--micro-batch", type=int, default=4, help="sequences per backward")
    parser.add_argument("--steps", type=int, default=4, help="optimiser steps (first untimed)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--run-every-sample", action="store_true",
                        help="ours: run zero-advantage samples through the model too "
                             "(trainer.skip_inert_samples off), as TRL does")
    parser.add_argument("--notes", type=Path, default=None,
                        help="a text file whose content is added to the report")
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/trl.json"))
    parser.add_argument("--child", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--child-output", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.steps < 2:
        parser.error("--steps must be at least 2 (the first step is a warm-up, not timed)")
    if (args.prompts * args.generations) % args.micro_batch:
        parser.error("prompts × generations must be a multiple of --micro-batch")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        run = run_spice if args.child == "spice" else run_trl
        args.child_output.write_text(json.dumps(run(args)))
        return 0
    data = report(args)
    if args.notes is not None:
        data["notes"] = args.notes.read_text("utf-8").strip()
    write_report(data, args.output, markdown)
    print(markdown(data))
    return 0 if "speedup_vs_trl" in data else 1


if __name__ == "__main__":
    raise SystemExit(main())
