"""One short check of the CUDA paths on one GPU, with a tiny model built in code (a script).

Usage (from the repository root, on a machine with a CUDA GPU)::

    python benchmarks/perf/gpu_check.py [--output benchmarks/results/gpu_check.json]

What it runs, each part on its own so that one failure does not hide the others:

* ``hf_generation`` — :class:`agents.backends.hf.HFBackend` on CUDA in bfloat16: sampled and
  greedy completions of a batch of prompts (tokens per second, greedy runs repeat exactly, the
  log-probabilities are finite);
* ``logprobs_bf16_vs_fp32`` — the trainer's log-probabilities of the same completions under
  bf16 autocast and in float32 (their mean and largest difference);
* ``shared_prompt_mask`` — the packed layout (a prompt shared by several completions computed
  once, with a block attention mask) against one padded row per completion, under CUDA's SDPA
  attention;
* ``training`` — two iterations of the Fabric trainer on CUDA in bf16-mixed (a tiny model, a
  corpus written on the spot, scripted texts so that rewards vary), a checkpoint and the export.

The result (what ran, what it measured, pass or fail) goes to ``--output`` as JSON with a
Markdown summary beside it. It needs torch, transformers, lightning, peft and the rest of
spice-env's dependencies, not vLLM and not the embedded assets; where only the first four are
installed, bring the others as wheels (gymnasium, farama-notifications, pettingzoo, pydantic,
pydantic-core, annotated-types, typing-inspection, math-verify, latex2sympy2-extended,
antlr4-python3-runtime, gguf, datasets and theirs). ``--device cpu`` runs the same code on the
CPU, to try the script where there is no GPU (its result says so; it is not a GPU check).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: the repository root on the path
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch

from benchmarks.reporting import command_line, envelope, write_report

PACKAGES = ("torch", "transformers", "lightning", "peft", "math-verify", "pydantic")
DOCUMENTS = [
    {"text": f"Problem {k}. A shop sells {k + 2} boxes of {k + 5} pencils each. Every pencil "
             f"costs {k + 1} cents. The total price of all pencils is {(k + 2) * (k + 5) * (k + 1)}"
             " cents, found by multiplying the three numbers."} for k in range(12)]


def tiny(device: torch.device, dtype: torch.dtype) -> tuple[Any, Any]:
    """The tiny model (head size 32, so fused attention kernels take it) on ``device``."""
    from agents.models import cast_parameters
    from agents.tiny import tiny_model

    model, tokenizer = tiny_model(0, hidden=128)
    return cast_parameters(model, dtype, device).eval(), tokenizer


def _prompts(tokenizer: Any) -> list[list[int]]:
    texts = [d["text"] for d in DOCUMENTS[:8]]
    return [tokenizer.encode(t, add_special_tokens=False) for t in texts]


def check_hf_generation(device: torch.device) -> dict[str, Any]:
    from agents.backends.hf import HFBackend
    from agents.base import SamplingConfig

    model, tokenizer = tiny(device, torch.bfloat16)
    backend = HFBackend(model, tokenizer)
    prompts = _prompts(tokenizer)
    sampling = SamplingConfig(temperature=1.0, max_new_tokens=64, seed=0)
    backend.generate(prompts[:2], sampling, 2)  # warm-up
    _sync(device)
    start = time.perf_counter()
    rows = backend.generate(prompts, sampling, 4)
    _sync(device)
    seconds = time.perf_counter() - start
    tokens = sum(len(g.completion_ids) for row in rows for g in row)
    greedy = SamplingConfig(temperature=0.0, max_new_tokens=32)
    first, second = (backend.generate(prompts, greedy, 1) for _ in range(2))
    finite = all(all(map(_finite, g.logprobs)) for row in rows for g in row)
    repeats = [g.completion_ids for r in first for g in r] == \
        [g.completion_ids for r in second for g in r]
    return {"passed": finite and repeats and tokens > 0, "rows": len(prompts) * 4,
            "tokens": tokens, "tokens_per_s": round(tokens / seconds, 1),
            "logprobs_finite": finite, "greedy_repeats": repeats}


def _sequences(tokenizer: Any) -> tuple[list[list[int]], list[list[int]]]:
    """Prompts and completions where each prompt is shared by three completions."""
    prompts = _prompts(tokenizer)[:4]
    generator = torch.Generator().manual_seed(0)
    completions = [torch.randint(5, 100, (12 + 3 * k,), generator=generator).tolist()
                   for k in range(12)]
    return [prompts[k // 3] for k in range(12)], completions


def check_logprobs(device: torch.device) -> dict[str, Any]:
    from algorithms.logprobs import completion_logprobs

    model, tokenizer = tiny(device, torch.float32)
    prompts, completions = _sequences(tokenizer)
    pad = int(tokenizer.pad_token_id)
    with torch.no_grad():
        exact = completion_logprobs(model, prompts, completions, pad, share_prompts=False)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            low = completion_logprobs(model, prompts, completions, pad, share_prompts=False)
    mask = exact.mask.bool()
    difference = (exact.logprobs.float() - low.logprobs.float()).abs()[mask]
    mean, largest = float(difference.mean()), float(difference.max())
    return {"passed": mean < 0.05 and largest < 0.5, "tokens": int(mask.sum()),
            "mean_abs_difference": round(mean, 6), "max_abs_difference": round(largest, 6),
            "tolerance": "mean < 0.05, max < 0.5 nats (bf16 against float32)"}


def check_shared_prompts(device: torch.device) -> dict[str, Any]:
    from algorithms.logprobs import completion_logprobs, packable

    model, tokenizer = tiny(device, torch.float32)
    model.config._attn_implementation = "sdpa"
    prompts, completions = _sequences(tokenizer)
    pad = int(tokenizer.pad_token_id)
    with torch.no_grad():
        packed = completion_logprobs(model, prompts, completions, pad, share_prompts=True)
        padded = completion_logprobs(model, prompts, completions, pad, share_prompts=False)
    mask = padded.mask.bool()
    largest = float((packed.logprobs - padded.logprobs).abs()[mask].max())
    return {"passed": bool(packable(model)) and largest < 1e-4, "attention": "sdpa",
            "packable": bool(packable(model)), "max_abs_difference": largest,
            "tolerance": "1e-4 (float32)"}


def check_training(device: torch.device) -> dict[str, Any]:
    import json

    from agents.scripted import ScriptedTextAgent
    from agents.tiny import save_tiny_model
    from algorithms.config import build_config
    from algorithms.trainer import train

    with tempfile.TemporaryDirectory() as work:
        root = Path(work)
        folder = save_tiny_model(root / "tiny", seed=0, hidden=128)
        corpus = root / "corpus.jsonl"
        corpus.write_text("".join(json.dumps(d) + "\n" for d in DOCUMENTS), "utf-8")
        config = build_config({
            "model": {"name": str(folder)},
            "rollout": {"corpus": str(corpus), "batch_size": 2, "attempts": 4,
                        "max_document_tokens": 128},
            "game": {"group_size": 2},
            "challenger": {"max_new_tokens": 16}, "reasoner": {"max_new_tokens": 16},
            "optimizer": {"lr": 1e-3},
            "trainer": {"iterations": 2, "output_dir": str(root / "run"), "devices": 1,
                        "accelerator": "cuda" if device.type == "cuda" else "cpu",
                        "precision": "bf16-mixed", "micro_batch_size": 3, "save_every": 1,
                        "progress": False, "loggers": ["csv"]}})
        start = time.perf_counter()
        summary = train(config, agent_wrapper=ScriptedTextAgent)
        seconds = time.perf_counter() - start
        history = summary.history
        exported = (root / "run" / "model" / "config.json").is_file()
        losses = [r.get("train/loss") for r in history]
        finite = all(isinstance(x, float) and _finite(x) for x in losses)
        return {"passed": len(history) == 2 and exported and finite and
                summary.checkpoint is not None, "iterations": len(history),
                "seconds": round(seconds, 1), "losses": losses, "exported": exported,
                "iteration_s": [r.get("time/iteration") for r in history]}


CHECKS: dict[str, Callable[[torch.device], dict[str, Any]]] = {
    "hf_generation": check_hf_generation,
    "logprobs_bf16_vs_fp32": check_logprobs,
    "shared_prompt_mask": check_shared_prompts,
    "training": check_training,
}


def _finite(x: float) -> bool:
    return x == x and abs(x) != float("inf")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_checks(device: torch.device, names: Sequence[str] = tuple(CHECKS)) -> dict[str, Any]:
    """Every named check on ``device``: its measurements, or the error that stopped it."""
    results: dict[str, Any] = {}
    for name in names:
        start = time.perf_counter()
        try:
            results[name] = CHECKS[name](device)
        except Exception as error:  # one failure is reported, the other checks still run
            results[name] = {"passed": False, "error": f"{type(error).__name__}: {error}",
                             "traceback": traceback.format_exc(limit=4)}
        results[name]["wall_s"] = round(time.perf_counter() - start, 2)
    return results


def summary_markdown(report: dict[str, Any]) -> str:
    """The report as a short Markdown table."""
    lines = [f"# GPU check ({report['device_name']})", "", f"`{report['command']}`, "
             f"{report['date']}", "", "| check | passed | measured |", "|---|---|---|"]
    for name, result in report["checks"].items():
        shown = {k: v for k, v in result.items() if k not in ("passed", "traceback")}
        lines.append(f"| {name} | {'yes' if result['passed'] else 'no'} | "
                     f"{', '.join(f'{k}={v}' for k, v in shown.items())} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--checks", nargs="+", choices=tuple(CHECKS), default=list(CHECKS))
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/gpu_check.json"))
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here (use --device cpu to try the script on the CPU)",
              file=sys.stderr)
        return 2
    device = torch.device(args.device)
    report: dict[str, Any] = {**envelope(command_line(), PACKAGES),
                              "device": args.device,
                              "device_name": torch.cuda.get_device_name(0)
                              if args.device == "cuda" else "cpu (not a GPU check)",
                              "checks": run_checks(device, args.checks)}
    report["passed"] = all(r["passed"] for r in report["checks"].values())
    for path in write_report(report, args.output, summary_markdown):
        print(path)
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
