"""The transformers backend: batched, left-padded decoding with a KV cache.

Prompts of a batch are left-padded to one length and prefilled together; then one token per
step is sampled for every unfinished row, reusing the KV cache. Rows that finish are dropped from
the batch (and from the cache), so long and short completions do not pay for each other. The
log-probability of each sampled token is taken from the raw logits (before temperature and
top-p), in float32.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from agents.backends.common import make_generation, stop_token_ids
from agents.base import Generation, SamplingConfig


class HFBackend:
    """Generation with a transformers causal LM (shared with the trainer: same module).

    Args:
        model: a causal LM (``AutoModelForCausalLM``), already on its device and dtype.
        tokenizer: its tokenizer.
        max_batch_size: rows decoded at once (prompts × samples are split into chunks).
        max_batch_tokens: a chunk also stops growing when its rows times its longest prompt
            would pass this many tokens (bounds prefill memory and padding).
    """

    def __init__(self, model: Any, tokenizer: Any, *, max_batch_size: int = 64,
                 max_batch_tokens: int = 16384) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.max_batch_size = max_batch_size
        self.max_batch_tokens = max_batch_tokens
        self.stop_ids = stop_token_ids(getattr(model, "generation_config", None), tokenizer)
        pad = tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else sorted(self.stop_ids)[0])

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def generate(self, prompts: Sequence[Sequence[int]], sampling: SamplingConfig, n: int
                 ) -> list[list[Generation]]:
        """``n`` samples for each prompt; rows are ordered prompt by prompt."""
        rows = [list(p) for p in prompts for _ in range(n)]
        generator = torch.Generator(device="cpu")
        if sampling.seed is not None:
            generator.manual_seed(sampling.seed)
        else:
            generator.seed()
        results: dict[int, Generation] = {}
        for chunk in self._chunks(rows):
            for index, generation in zip(chunk, self._decode([rows[i] for i in chunk], sampling,
                                                              generator), strict=True):
                results[index] = generation
        flat = [results[i] for i in range(len(rows))]
        return [flat[i * n : (i + 1) * n] for i in range(len(prompts))]

    def _chunks(self, rows: list[list[int]]) -> list[list[int]]:
        """Row indices in batches of similar prompt length, within both batch limits."""
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
        chunks: list[list[int]] = []
        for index in order:  # ascending length: the newest row is the chunk's longest
            last = chunks[-1] if chunks else None
            if (last is not None and len(last) < self.max_batch_size
                    and (len(last) + 1) * len(rows[index]) <= self.max_batch_tokens):
                last.append(index)
            else:
                chunks.append([index])
        return chunks

    @torch.inference_mode()
    def _decode(self, prompts: list[list[int]], sampling: SamplingConfig,
                generator: torch.Generator) -> list[Generation]:
        device = self.device
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, prompt in enumerate(prompts):
            ids[row, width - len(prompt):] = torch.tensor(prompt, dtype=torch.long)
            mask[row, width - len(prompt):] = 1
        ids, mask = ids.to(device), mask.to(device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True)
        cache, logits = out.past_key_values, out.logits[:, -1, :]
        alive = list(range(len(prompts)))  # original row of each live batch row
        tokens: list[list[int]] = [[] for _ in prompts]
        logprobs: list[list[float]] = [[] for _ in prompts]
        stop = torch.tensor(sorted(self.stop_ids), device=device)
        for _ in range(sampling.max_new_tokens):
            chosen = _sample(logits, sampling, generator)
            raw = torch.log_softmax(logits.float(), dim=-1).gather(1, chosen[:, None])[:, 0]
            done = torch.isin(chosen, stop)
            for b, row in enumerate(alive):
                tokens[row].append(int(chosen[b]))
                logprobs[row].append(float(raw[b]))
            keep = (~done).nonzero()[:, 0]
            if len(keep) == 0:
                break
            if len(keep) < len(alive):  # drop finished rows from the batch and the cache
                cache.batch_select_indices(keep)
                mask, positions, chosen = mask[keep], positions[keep], chosen[keep]
                alive = [alive[int(k)] for k in keep]
            mask = torch.cat([mask, mask.new_ones((len(alive), 1))], dim=1)
            positions = positions[:, -1:] + 1
            out = self.model(input_ids=chosen[:, None], attention_mask=mask,
                             position_ids=positions, past_key_values=cache, use_cache=True)
            cache, logits = out.past_key_values, out.logits[:, -1, :]
        return [make_generation(self.tokenizer, p, t, lp, self.stop_ids)
                for p, t, lp in zip(prompts, tokens, logprobs, strict=True)]

    def update_weights(self, named_tensors: Any) -> None:
        """Nothing to do when the trainer updates this same module; otherwise copy tensors in."""
        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, tensor in (named_tensors.items() if hasattr(named_tensors, "items")
                                 else named_tensors):
                target = params.get(name)
                if target is None:
                    raise KeyError(f"the model has no parameter named {name!r}")
                if target.data_ptr() != tensor.data_ptr():
                    target.copy_(tensor.to(target.device, target.dtype))

    def close(self) -> None:
        """Nothing to release: the module belongs to the caller."""


def _sample(logits: torch.Tensor, sampling: SamplingConfig, generator: torch.Generator
            ) -> torch.Tensor:
    if sampling.temperature == 0:
        return logits.argmax(dim=-1)
    scaled = logits.float() / sampling.temperature
    probs = torch.softmax(scaled, dim=-1)
    if sampling.top_p < 1.0:
        sorted_probs, sorted_idx = probs.sort(dim=-1, descending=True)
        cumulative = sorted_probs.cumsum(dim=-1)
        sorted_probs[(cumulative - sorted_probs) > sampling.top_p] = 0.0
        probs = torch.zeros_like(probs).scatter(1, sorted_idx, sorted_probs)
    picked = torch.multinomial(probs.cpu(), 1, generator=generator)[:, 0]
    return picked.to(logits.device)
