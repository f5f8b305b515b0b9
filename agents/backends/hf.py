"""The transformers backend: batched, left-padded decoding with a KV cache.

Prompts of a batch are left-padded to one length and prefilled together, each distinct prompt
once: its key/value cache is then copied into one row per sample, so the Challenger's N attempts
at a document and the Reasoner's G answers to a question pay for one prefill. Then one token per
step is sampled for every unfinished row, reusing the KV cache. Rows that finish are dropped from
the batch (and from the cache), so long and short completions do not pay for each other. The
log-probability of each sampled token is taken from the raw logits (before temperature and
top-p), in float32.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Any, Literal

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
        decode_attention: ``"grouped"`` computes one-token decode steps with a grouped-query
            matmul attention that reads each key/value head once (prefill keeps the model's
            own attention); ``"model"`` keeps the model's attention throughout; ``"auto"``
            (default) picks ``"grouped"`` on CPU, where PyTorch's fused attention kernel is
            slow for single-token queries, and ``"model"`` elsewhere.
        share_prompts: prefill each prompt once and copy its cache to its ``n`` samples
            (default); ``False`` prefills every sample's row, as a reference.
        pack_weights: on a CPU, hold the bfloat16 weights of the model's linear layers in
            oneDNN's blocked layout (packed once, then used by every prefill and decode step:
            the small-batch matrix products of decoding ran 1.2-2.5 times faster so). The
            packed copy replaces the plain weights, which then hold no memory: only for a model
            this backend owns (a generation copy), never one that is trained. Weights that
            :meth:`update_weights` brings are packed as they come.
    """

    def __init__(self, model: Any, tokenizer: Any, *, max_batch_size: int = 64,
                 max_batch_tokens: int = 16384,
                 decode_attention: Literal["auto", "grouped", "model"] = "auto",
                 share_prompts: bool = True, pack_weights: bool = False) -> None:
        if decode_attention not in ("auto", "grouped", "model"):
            raise ValueError(f"decode_attention must be auto, grouped or model, "
                             f"got {decode_attention!r}")
        self.model = model
        self.tokenizer = tokenizer
        self.max_batch_size = max_batch_size
        self.max_batch_tokens = max_batch_tokens
        self.decode_attention = decode_attention
        self.share_prompts = share_prompts
        self.stop_ids = stop_token_ids(getattr(model, "generation_config", None), tokenizer)
        pad = tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else sorted(self.stop_ids)[0])
        self._released: set[str] = set()
        self.pack_weights = pack_weights and packing_available()
        self._packed: set[str] = set()  # the weights held packed (their parameters are empty)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def generate(self, prompts: Sequence[Sequence[int]], sampling: SamplingConfig, n: int
                 ) -> list[list[Generation]]:
        """``n`` samples for each prompt; rows are ordered prompt by prompt."""
        if self._released:
            raise RuntimeError(f"{len(self._released)} parameters were released "
                               "(release_weights): update_weights brings them back first")
        if self.pack_weights:
            self._pack()
        generator = torch.Generator(device="cpu")
        if sampling.seed is not None:
            generator.manual_seed(sampling.seed)
        else:
            generator.seed()
        samples: list[list[Generation]] = [[] for _ in prompts]
        with self._attention():
            for chunk in self._chunks([len(p) for p in prompts], n):
                decoded = iter(self._decode([list(prompts[i]) for i, _ in chunk],
                                            [count for _, count in chunk], sampling, generator))
                for index, count in chunk:
                    samples[index].extend(next(decoded) for _ in range(count))
        return samples

    @contextmanager
    def _attention(self) -> Iterator[None]:
        """Switch to grouped decode attention for the duration of a call, when chosen."""
        config = getattr(self.model, "config", None)
        current = getattr(config, "_attn_implementation", None)
        use = self.decode_attention == "grouped" or (
            self.decode_attention == "auto" and self.device.type == "cpu")
        if not use or current not in ("sdpa", "eager") or not hasattr(
                self.model, "set_attn_implementation"):
            yield
            return
        self.model.set_attn_implementation(_register_grouped_attention())
        try:
            yield
        finally:
            self.model.set_attn_implementation(current)

    def _chunks(self, lengths: Sequence[int], n: int) -> list[list[tuple[int, int]]]:
        """Batches of ``(prompt index, samples)`` over prompts of similar length: at most
        ``max_batch_size`` rows, and rows times the longest prompt within ``max_batch_tokens``
        (a batch of one row excepted). A prompt's samples share a batch unless they do not fit."""
        chunks: list[list[tuple[int, int]]] = []
        rows = 0  # rows of the newest batch
        for index in sorted(range(len(lengths)), key=lambda i: lengths[i]):
            # rows a batch may hold with this prompt as its longest (ascending: it is the newest)
            capacity = max(1, min(self.max_batch_size,
                                  self.max_batch_tokens // max(1, lengths[index])))
            left = n
            while left:
                room = capacity - rows if chunks else 0
                if room <= 0:
                    chunks.append([])
                    rows = 0
                    room = capacity
                take = min(left, room)
                chunks[-1].append((index, take))
                rows += take
                left -= take
        return chunks

    @torch.inference_mode()
    def _decode(self, prompts: list[list[int]], counts: list[int], sampling: SamplingConfig,
                generator: torch.Generator) -> list[Generation]:
        """``counts[i]`` samples of ``prompts[i]``, in order."""
        device = self.device
        rows_prompts = [p for p, count in zip(prompts, counts, strict=True) for _ in range(count)]
        if not self.share_prompts:
            prompts, counts = rows_prompts, [1] * len(rows_prompts)
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, prompt in enumerate(prompts):
            ids[row, width - len(prompt):] = torch.tensor(prompt, dtype=torch.long)
            mask[row, width - len(prompt):] = 1
        ids, mask = ids.to(device), mask.to(device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions,
                         use_cache=True, logits_to_keep=1)
        cache, logits = out.past_key_values, out.logits[:, -1, :]
        if len(prompts) < len(rows_prompts):  # one row per sample, copied from its prompt's
            rows = torch.repeat_interleave(torch.arange(len(prompts), device=device),
                                           torch.tensor(counts, device=device))
            cache.batch_select_indices(rows)
            logits, mask, positions = logits[rows], mask[rows], positions[rows]
            prompts = rows_prompts
        alive = list(range(len(prompts)))  # original row of each live batch row
        tokens: list[list[int]] = [[] for _ in prompts]
        logprobs: list[list[float]] = [[] for _ in prompts]
        stop = torch.tensor(sorted(self.stop_ids), device=device)
        for _ in range(sampling.max_new_tokens):
            chosen = _sample(logits, sampling, generator)
            raw = torch.log_softmax(logits.float(), dim=-1).gather(1, chosen[:, None])[:, 0]
            done = torch.isin(chosen, stop)
            for row, token, logprob in zip(alive, chosen.tolist(), raw.tolist(), strict=True):
                tokens[row].append(token)
                logprobs[row].append(logprob)
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
        """Nothing to do when the trainer updates this same module; otherwise copy tensors in
        (into new memory for parameters that :meth:`release_weights` freed)."""
        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, tensor in (named_tensors.items() if hasattr(named_tensors, "items")
                                 else named_tensors):
                target = params.get(name)
                if target is None:
                    raise KeyError(f"the model has no parameter named {name!r}")
                if name in self._packed:  # packed straight from what comes
                    self._pack_one(name, tensor.to(target.device, target.dtype))
                    continue
                if name in self._released:
                    target.data = torch.empty(tensor.shape, dtype=target.dtype,
                                              device=target.device)
                    self._released.discard(name)
                if target.data_ptr() != tensor.data_ptr():
                    target.copy_(tensor.to(target.device, target.dtype))

    def release_weights(self) -> None:
        """Free the parameters' memory (this module must be a copy of the trained one: the
        trainer's update then runs without it); :meth:`update_weights` brings them back, and
        generating before it is refused."""
        for name, parameter in self.model.named_parameters():
            parameter.data = parameter.data.new_empty(0)
            self._released.add(name)
        modules = dict(self.model.named_modules())
        for name in self._packed:  # the packed copies go too; the next generation packs again
            modules[name.removesuffix(".weight")].__dict__.pop("forward", None)
        self._packed.clear()

    def _pack(self) -> None:
        """Pack every plain linear layer's weight not packed yet (see ``pack_weights``)."""
        shared = Counter(id(p) for _, p in self.model.named_parameters(remove_duplicate=False))
        for name, module in self.model.named_modules():
            weight = getattr(module, "weight", None)
            key = f"{name}.weight" if name else "weight"
            if (type(module) is torch.nn.Linear and key not in self._packed
                    and weight is not None and weight.dtype == torch.bfloat16
                    and weight.device.type == "cpu" and not weight.requires_grad
                    and weight.numel() > 0 and shared[id(weight)] == 1):
                self._pack_one(key, weight.detach())

    def _pack_one(self, key: str, weight: torch.Tensor) -> None:
        module = self.model.get_submodule(key.removesuffix(".weight"))
        packed = torch.ops.mkldnn._reorder_linear_weight(weight.contiguous(), None)
        module.forward = partial(_packed_linear, packed, module.bias)
        module.weight.data = module.weight.data.new_empty(0)  # the packed copy holds it
        self._packed.add(key)

    def close(self) -> None:
        """Nothing to release: the module belongs to the caller."""


def packing_available() -> bool:
    """Whether this PyTorch build has oneDNN's packed linear kernels (``pack_weights``)."""
    return bool(torch.backends.mkldnn.is_available()) and all(
        hasattr(torch.ops.mkldnn, op) for op in ("_reorder_linear_weight", "_linear_pointwise"))


def _packed_linear(packed: torch.Tensor, bias: torch.Tensor | None, x: torch.Tensor
                   ) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")


GROUPED_ATTENTION = "spice_grouped_decode"


def _register_grouped_attention() -> str:
    """Register the grouped decode attention with transformers (once) and return its name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(GROUPED_ATTENTION, grouped_decode_attention)
    AttentionMaskInterface.register(GROUPED_ATTENTION, sdpa_mask)
    return GROUPED_ATTENTION


def grouped_decode_attention(module: Any, query: torch.Tensor, key: torch.Tensor,
                             value: torch.Tensor, attention_mask: torch.Tensor | None,
                             scaling: float | None = None, dropout: float = 0.0, **kwargs: Any
                             ) -> tuple[torch.Tensor, None]:
    """Attention for one new token per row, with query heads grouped over their key/value head.

    ``query`` is ``(batch, heads, 1, dim)``; ``key``/``value`` are ``(batch, kv_heads, length,
    dim)``. Scores are two small batched matmuls with no copy of the cache per query head.
    Longer queries (prefill) go to PyTorch's scaled-dot-product attention unchanged.
    """
    if query.shape[2] != 1:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask,
                                      scaling=scaling, dropout=dropout, **kwargs)
    batch, heads, _, dim = query.shape
    kv_heads = key.shape[1]
    grouped = query.reshape(batch, kv_heads, heads // kv_heads, dim)
    scale = scaling if scaling is not None else dim ** -0.5
    scores = torch.matmul(grouped, key.transpose(-1, -2)).float() * scale
    if attention_mask is not None:
        mask = attention_mask[:, :, -1:, : key.shape[2]]
        scores = (scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool
                  else scores + mask)
    probs = torch.softmax(scores, dim=-1).to(value.dtype)
    out = torch.matmul(probs, value).reshape(batch, heads, 1, dim).transpose(1, 2)
    return out, None


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
    return sample_from(probs, generator)


def sample_from(probs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One token per row of ``probs`` (rows need not be normalised), by inverting the CDF.

    ``torch.multinomial`` draws one exponential variate per vocabulary entry (150k per row for
    Qwen models), which cost a fifth of a decode step on CPU; this draws one uniform per row and
    searches the cumulative sums. A token of probability zero is never returned: adding zero
    leaves the cumulative sum exactly flat, and the search takes the first entry above the draw.
    """
    cdf = probs.cpu().float().cumsum(dim=-1)
    total = cdf[:, -1:]
    uniform = torch.rand((probs.shape[0], 1), generator=generator)
    picked = torch.searchsorted(cdf, uniform * total, right=True)[:, 0]
    overflow = picked >= probs.shape[1]  # only if u * total rounded up to the total
    if bool(overflow.any()):
        last = probs.shape[1] - 1 - (probs.cpu().flip(-1) > 0).int().argmax(dim=-1)
        picked = torch.where(overflow, last, picked)
    return picked.to(probs.device)
