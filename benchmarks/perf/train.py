"""Training speed of the embedded model: tokens per second, model FLOP utilisation, iteration split.

Three measurements in one process, so that the peak and the training numbers see the same
machine state:

1. **Peak.** The best of several timed bfloat16 (and float32) square matrix products of sizes
   1024, 2048 and ``--peak-size``: the machine's attainable matmul rate, the MFU's denominator.
2. **Training step.** The trainer's update path (``policy_loss`` through a Fabric module in the
   trainer's precision, Dr. GRPO, AdamW) on synthetic sequences of ``--prompt`` + ``--completion``
   tokens in micro-batches of ``--micro-batch``. Model FLOPs per step count, per token, 6 × the
   non-embedding parameters, 6 × vocabulary × hidden for the output layer at completion
   positions only (the trainer computes logits only there), and 6 × layers × hidden × context
   for causal attention (half of the dense 12·L·d·T). The optimiser step is included in the time.
3. **The demo**: ``--demo-iterations`` iterations of ``configs/cpu-demo.yaml`` through
   ``algorithms.trainer.train`` with a checkpoint after each and the export at the end, each
   iteration split into generate / verify / train / sync in seconds and in peak resident memory,
   and the run's peak memory per phase, saves and export included (skip with
   ``--no-iteration``).

Writes ``benchmarks/results/train.json`` (key ``mfu``: a fraction) and a Markdown summary beside it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from benchmarks.reporting import (
    command_line,
    envelope,
    source_files,
    write_report,
)

MEASURED_SOURCES = ["algorithms/trainer.py", "algorithms/samples.py", "algorithms/logprobs.py",
                    "algorithms/drgrpo.py", "algorithms/learner.py", "algorithms/engine.py",
                    "agents/backends/hf.py", "configs/cpu-demo.yaml"]


def matmul_peak(dtype: torch.dtype, size: int, repeats: int) -> float:
    """Best FLOP/s of ``size``² × ``size``² products in ``dtype``."""
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    torch.matmul(a, b)  # warm-up: kernel selection, page faults
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def model_flops_per_step(config: Any, prompt: int, completion: int, sequences: int) -> float:
    """Forward + backward FLOPs of one step over ``sequences`` rows (see the module docstring)."""
    hidden, layers, vocab = config.hidden_size, config.num_hidden_layers, config.vocab_size
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    inter = config.intermediate_size
    attention_params = hidden * head_dim * (2 * heads + 2 * kv_heads)  # q, o, k, v
    non_embedding = layers * (attention_params + 3 * hidden * inter)
    tokens = prompt + completion
    attention = 6 * layers * heads * head_dim * tokens  # per token: causal, fwd + bwd
    per_row = 6 * non_embedding * tokens + 6 * vocab * hidden * completion + attention * tokens
    return float(per_row * sequences)


def training_step(args: argparse.Namespace) -> dict[str, Any]:
    """Tokens/s and achieved FLOP/s of the trainer's update on synthetic sequences."""
    from lightning.fabric import Fabric

    from agents.models import load_model
    from algorithms.drgrpo import DrGRPO, DrGRPOConfig
    from algorithms.launch import resolve_precision
    from algorithms.learner import make_adamw
    from algorithms.samples import TrainingSample, policy_loss

    precision = resolve_precision(args.precision, "cpu")
    fabric = Fabric(accelerator="cpu", devices=1, precision=precision)  # type: ignore[arg-type]
    loaded = load_model(args.model, dtype=torch.bfloat16 if precision == "bf16-true"
                        else torch.float32)
    model: Any = fabric.setup_module(loaded.model)
    optimizer: Any = fabric.setup_optimizers(make_adamw(list(model.parameters()), lr=1e-6))
    if args.activation_checkpointing:
        model.module.gradient_checkpointing_enable(
            gradient_checkpointing_kwargs={"use_reentrant": False})
    generator = torch.Generator().manual_seed(0)
    vocab = loaded.model.config.vocab_size

    def sample(row: int) -> TrainingSample:
        ids = torch.randint(100, vocab - 100, (args.prompt + args.completion,),
                            generator=generator).tolist()
        return TrainingSample(role="reasoner", group=row // 4, prompt_ids=tuple(ids[:args.prompt]),
                              completion_ids=tuple(ids[args.prompt:]),
                              old_logprobs=tuple([-8.0] * args.completion), reward=0.0,
                              advantage=1.0 if row % 2 else -1.0)

    samples = [sample(r) for r in range(args.sequences)]
    algorithm = DrGRPO(DrGRPOConfig(loss_normaliser=args.completion))
    pad = loaded.tokenizer.pad_token_id or 0
    model.train()
    times, optimiser_times = [], []
    for step in range(args.steps + 1):  # the first step warms up and is not counted
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        # as the trainer: one autocast region for all micro-batches, the module behind
        # Fabric's wrapper (bf16 logits, no float32 output copy)
        with fabric.autocast():
            policy_loss(getattr(model, "_forward_module", model), samples, algorithm,
                        pad_id=pad, micro_batch_size=args.micro_batch,
                        backward=fabric.backward)
        before_step = time.perf_counter()
        optimizer.step()
        elapsed = time.perf_counter() - start
        if step:
            times.append(elapsed)
            optimiser_times.append(time.perf_counter() - before_step)
        print(f"  step {step}: {elapsed:.2f} s (optimiser "
              f"{time.perf_counter() - before_step:.2f} s)", file=sys.stderr)
    seconds = sum(times) / len(times)
    flops = model_flops_per_step(loaded.model.config, args.prompt, args.completion,
                                 args.sequences)
    tokens = args.sequences * (args.prompt + args.completion)
    return {"precision": precision, "sequences_per_step": args.sequences,
            "prompt_tokens": args.prompt, "completion_tokens": args.completion,
            "micro_batch_size": args.micro_batch,
            "activation_checkpointing": args.activation_checkpointing,
            "seconds_per_step": round(seconds, 3), "step_seconds": [round(t, 3) for t in times],
            "optimiser_seconds": round(sum(optimiser_times) / len(optimiser_times), 3),
            "tokens_per_s": round(tokens / seconds, 1), "model_flops_per_step": flops,
            "achieved_tflops": round(flops / seconds / 1e12, 4)}


PHASES = ("generate", "verify", "train", "sync", "iteration")
MEMORY_TARGET_GB = 12.0
"""``make demo`` fits a 16 GB laptop: its peak resident memory in every phase stays under this."""


def demo_measurement(args: argparse.Namespace) -> dict[str, Any]:
    """The demo run of :func:`demo_run` in a process of its own, so that the memory the training
    steps measured before it left behind is not counted in its peaks."""
    with tempfile.TemporaryDirectory() as folder:
        output = Path(folder) / "demo.json"
        subprocess.run([sys.executable, "-m", "benchmarks.perf.train", "--demo-child",
                        str(output), "--demo-config", args.demo_config, "--demo-iterations",
                        str(args.demo_iterations), "--seed", str(args.seed)], check=True)
        result: dict[str, Any] = json.loads(output.read_text("utf-8"))
    return result


def demo_run(args: argparse.Namespace) -> dict[str, Any]:
    """``--demo-iterations`` iterations of the CPU demo through the trainer, a checkpoint saved
    after each and the model exported at the end: the first iteration's time split (as before),
    every iteration's time and peak memory per phase, and the whole run's peak memory per
    phase (setup, saves and export included)."""
    from algorithms.config import load_config
    from algorithms.trainer import train

    with tempfile.TemporaryDirectory() as folder:
        config = load_config(args.demo_config, [
            f"trainer.iterations={args.demo_iterations}", f"trainer.output_dir={folder}/run",
            "trainer.loggers=[]", "trainer.save_every=1", "trainer.keep_checkpoints=1",
            "trainer.progress=false", "trainer.log_rollouts=false", f"trainer.seed={args.seed}"])
        summary = train(config)
    records = [r for r in summary.history if "time/iteration" in r]  # not evaluations
    keys = ["time/generate", "time/verify", "time/train", "time/sync", "time/iteration",
            "throughput/generated_tokens_per_s", "throughput/trained_tokens_per_s",
            "challenger/completion_tokens", "reasoner/completion_tokens",
            "train/completion_tokens", "train/skipped_samples", "challenger/valid_rate"]
    iterations = [{"iteration": int(r["iteration"]),
                   **{f"{k}_s": round(r[f"time/{k}"], 2) for k in PHASES if f"time/{k}" in r},
                   **{f"{k}_peak_gb": round(r[f"memory/{k}"], 3) for k in PHASES
                      if f"memory/{k}" in r},
                   "trained_tokens": r.get("train/completion_tokens")} for r in records]
    peak = max(summary.memory.values(), default=float("nan"))
    return {"config": args.demo_config, **{k: round(records[0][k], 3) for k in keys
                                           if k in records[0]},
            "iterations": iterations, "memory_gb": summary.memory,
            "memory_peak_gb": peak, "memory_target_gb": MEMORY_TARGET_GB,
            "memory_met": bool(peak < MEMORY_TARGET_GB)}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--prompt", type=int, default=384, help="prompt tokens per sequence")
    parser.add_argument("--completion", type=int, default=256,
                        help="completion tokens per sequence")
    parser.add_argument("--sequences", type=int, default=8, help="sequences per step")
    parser.add_argument("--micro-batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=2, help="timed steps (after one warm-up)")
    parser.add_argument("--activation-checkpointing", action="store_true")
    parser.add_argument("--peak-size", type=int, default=4096)
    parser.add_argument("--peak-repeats", type=int, default=5)
    parser.add_argument("--no-iteration", action="store_true")
    parser.add_argument("--demo-config", default="configs/cpu-demo.yaml")
    parser.add_argument("--demo-iterations", type=int, default=3,
                        help="iterations of the demo run (the AdamW state exists from the "
                        "second on, so its peaks need two or more)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--demo-child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/train.json"))
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.demo_child:
        args.demo_child.write_text(json.dumps(demo_run(args)), "utf-8")
        return 0
    print("matmul peak …", file=sys.stderr)
    sizes = [1024, 2048, args.peak_size]
    peak_bf16 = max(matmul_peak(torch.bfloat16, n, args.peak_repeats) for n in sizes)
    peak_fp32 = max(matmul_peak(torch.float32, n, args.peak_repeats) for n in sizes)
    print(f"  bf16 {peak_bf16 / 1e12:.2f} TFLOP/s, fp32 {peak_fp32 / 1e12:.2f} TFLOP/s",
          file=sys.stderr)
    print("training steps …", file=sys.stderr)
    step = training_step(args)
    peak = peak_bf16 if step["precision"].startswith("bf16") else peak_fp32
    mfu = step["achieved_tflops"] * 1e12 / peak
    iteration = None if args.no_iteration else demo_measurement(args)
    result = {
        "benchmark": "train",
        "mfu": round(mfu, 4),
        "mfu_target": 0.30,
        "peak_tflops": {"bf16": round(peak_bf16 / 1e12, 3), "fp32": round(peak_fp32 / 1e12, 3),
                        "matmul_sizes": sizes},
        "training_step": step,
        "iteration": iteration,
        "model": args.model,
        **envelope(command_line(), ["torch", "transformers", "lightning", "spice-env"]),
        "sources": source_files(MEASURED_SOURCES),
    }
    write_report(result, args.output, summary_markdown)
    print(json.dumps({"mfu": result["mfu"], "tokens_per_s": step["tokens_per_s"],
                      "iteration": iteration}, indent=2))
    return 0


def summary_markdown(result: dict[str, Any]) -> str:
    step, peak = result["training_step"], result["peak_tflops"]
    lines = [
        "# Training speed",
        "",
        f"`{result['command']}` on {result['machine']['cpu_model']} "
        f"({result['machine']['cores']} cores), {result['date']}.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| bf16 / fp32 matmul peak | {peak['bf16']} / {peak['fp32']} TFLOP/s |",
        f"| training precision | {step['precision']} |",
        f"| step | {step['sequences_per_step']} × ({step['prompt_tokens']} + "
        f"{step['completion_tokens']}) tokens, micro-batch {step['micro_batch_size']} |",
        f"| seconds per step | {step['seconds_per_step']} |",
        f"| training tokens/s | {step['tokens_per_s']} |",
        f"| achieved | {step['achieved_tflops']} TFLOP/s |",
        f"| **MFU** (of the measured peak) | **{result['mfu']:.1%}** (target "
        f"{result['mfu_target']:.0%}) |",
    ]
    if result["iteration"]:
        it = result["iteration"]
        lines += ["", f"One iteration of `{it['config']}`:", "", "| phase | seconds |", "|---|---|"]
        lines += [f"| {key.split('/')[1]} | {it[key]} |" for key in
                  ("time/generate", "time/verify", "time/train", "time/sync", "time/iteration")
                  if key in it]
        if it.get("iterations"):
            lines += ["", f"The same run, {len(it['iterations'])} iterations with a checkpoint "
                      "saved after each and the model exported at the end: seconds and peak "
                      "resident memory (GB) per phase.", "",
                      "| iteration | " + " | ".join(f"{k} s" for k in PHASES) + " | "
                      + " | ".join(f"{k} GB" for k in PHASES) + " |",
                      "|---" * (1 + 2 * len(PHASES)) + "|"]
            lines += ["| " + " | ".join(str(row.get(c, "")) for c in
                                        ["iteration", *(f"{k}_s" for k in PHASES),
                                         *(f"{k}_peak_gb" for k in PHASES)]) + " |"
                      for row in it["iterations"]]
            memory = it["memory_gb"]
            lines += ["", "Peak resident memory of the whole run per phase: "
                      + ", ".join(f"{k} {v:.2f} GB" for k, v in memory.items())
                      + f". **Peak {it['memory_peak_gb']:.2f} GB** (target under "
                      f"{it['memory_target_gb']:.0f} GB: "
                      f"{'met' if it['memory_met'] else 'not met'})."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
