"""Log-probabilities of sampled completions under a model, with gradients, for the loss.

Two layouts give the same numbers:

* **padded**: one row per completion, ``[padding | prompt | completion | padding]``: prompts
  left-padded to the longest prompt, completions right-padded to the longest completion, so every
  completion starts in the same column;
* **shared prompts** (used when completions of the call share a prompt, as the G answers of a
  group do): one packed row ``[prompt A | a1 | a2 | … | prompt B | b1 | …]`` in which each prompt
  appears once and each completion attends to its own prompt and its own earlier tokens only (a
  block mask; positions restart after the prompt for every completion). A group of G answers to a
  P-token prompt then costs P + ΣC token positions instead of G·(P + max C), with the same
  log-probabilities and gradients up to floating-point rounding. It needs an attention that takes
  an explicit mask (``sdpa`` or ``eager``) and, for sliding-window models, sequences no longer
  than the window; otherwise the padded layout is used. The mask is one ``L × L`` tensor for the
  packed length L, so its attention cost grows with the square of all the tokens of a
  micro-batch: keep micro-batches to a group or two of long prompts.

Either way only the positions that predict completion tokens get logits (``logits_to_keep``),
which keeps the vocabulary-sized tensor at completion length.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class CompletionLogprobs:
    """Per-token results for S completions padded to T tokens.

    Attributes:
        logprobs: ``(S, T)`` log-probability of each completion token (0 on padding).
        mask: ``(S, T)`` 1 on completion tokens.
        entropy: ``(S, T)`` entropy of the model's next-token distribution at each position
            (no gradient).
        hidden: ``(S, T, H)`` last-layer hidden states at the positions that predict each token
            (for a value head), when asked for.
    """

    logprobs: torch.Tensor
    mask: torch.Tensor
    entropy: torch.Tensor
    hidden: torch.Tensor | None = None


def completion_logprobs(model: Any, prompts: Sequence[Sequence[int]],
                        completions: Sequence[Sequence[int]], pad_id: int, *,
                        with_hidden: bool = False, share_prompts: bool = True
                        ) -> CompletionLogprobs:
    """Log-probabilities of ``completions`` after ``prompts`` under ``model``.

    Args:
        model: a transformers causal LM (``logits_to_keep`` support).
        prompts: token ids of each prompt.
        completions: token ids of each completion (may be empty).
        pad_id: the id put on padding positions (masked out).
        with_hidden: also return last-layer hidden states (PPO's value head).
        share_prompts: compute a prompt that several completions share once, in one packed
            row with a block attention mask (see the module notes); the padded layout is used
            anyway when no prompt repeats or the model's attention takes no explicit mask.
    """
    if len(prompts) != len(completions):
        raise ValueError("one completion per prompt")
    if not prompts:
        raise ValueError("no sequences")
    if (share_prompts and len({tuple(p) for p in prompts}) < len(prompts)
            and any(completions)
            and packable(model, max(len(p) + len(c) for p, c in zip(prompts, completions,
                                                                       strict=True)))):
        return _shared_prompt_logprobs(model, prompts, completions, with_hidden=with_hidden)
    device = next(model.parameters()).device
    width_prompt = max(len(p) for p in prompts)
    width_completion = max(max(len(c) for c in completions), 1)
    rows = len(prompts)
    ids = torch.full((rows, width_prompt + width_completion), pad_id, dtype=torch.long)
    attention = torch.zeros_like(ids)
    targets = torch.full((rows, width_completion), pad_id, dtype=torch.long)
    mask = torch.zeros((rows, width_completion))
    for row, (prompt, completion) in enumerate(zip(prompts, completions, strict=True)):
        start = width_prompt - len(prompt)
        ids[row, start:width_prompt] = torch.tensor(list(prompt), dtype=torch.long)
        attention[row, start:width_prompt] = 1
        if completion:
            tokens = torch.tensor(list(completion), dtype=torch.long)
            ids[row, width_prompt:width_prompt + len(completion)] = tokens
            attention[row, width_prompt:width_prompt + len(completion)] = 1
            targets[row, : len(completion)] = tokens
            mask[row, : len(completion)] = 1
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=ids.to(device), attention_mask=attention.to(device),
                position_ids=positions.to(device), logits_to_keep=width_completion + 1,
                output_hidden_states=with_hidden, use_cache=False)
    logits = out.logits  # (S, T + 1, V): the last position predicts nothing we score
    targets = torch.cat([targets, targets.new_full((rows, 1), pad_id)], dim=1).to(device)
    mask = mask.to(device)
    flat_logprobs, flat_entropy = token_logprobs(logits.reshape(-1, logits.shape[-1]),
                                                 targets.reshape(-1))
    logprobs = flat_logprobs.view(rows, -1)[:, :-1] * mask
    entropy = flat_entropy.view(rows, -1)[:, :-1] * mask
    hidden = None
    if with_hidden:
        last = out.hidden_states[-1]
        hidden = last[:, width_prompt - 1: width_prompt - 1 + width_completion, :]
    return CompletionLogprobs(logprobs=logprobs, mask=mask, entropy=entropy, hidden=hidden)


MASKED_ATTENTIONS = ("sdpa", "eager")
"""Attention implementations that take an explicit 4-D mask (the shared-prompt layout needs one)."""


def _config(model: Any) -> Any:
    """The configuration of ``model`` or of the module a wrapper (DDP) holds."""
    for candidate in (model, getattr(model, "module", None)):
        config = getattr(candidate, "config", None)
        if config is not None:
            return config
    return None


def _attention(model: Any) -> str | None:
    return getattr(_config(model), "_attn_implementation", None)


def _window(config: Any) -> int | None:
    """The attention window when some layer attends to a window only (0: one of unknown size),
    None when every layer attends to the whole sequence."""
    types = getattr(config, "layer_types", None)
    window = getattr(config, "sliding_window", None)
    if types is not None:
        local = any(kind != "full_attention" for kind in types)
    else:
        local = bool(window) and bool(getattr(config, "use_sliding_window", True))
    if not local:
        return None
    return int(window) if isinstance(window, int) else 0


def packable(model: Any, longest: int | None = None) -> bool:
    """Whether ``model``'s attention takes the block mask of the shared-prompt layout.

    The block mask replaces the model's own, so a model whose layers attend to a sliding window
    is packable only when no sequence (prompt + completion, ``longest`` tokens) is longer than
    the window: the window then hides nothing.
    """
    config = _config(model)
    if getattr(config, "_attn_implementation", None) not in MASKED_ATTENTIONS:
        return False
    window = _window(config)
    return window is None or (longest is not None and 0 < longest <= window)


def _shared_prompt_logprobs(model: Any, prompts: Sequence[Sequence[int]],
                            completions: Sequence[Sequence[int]], *, with_hidden: bool
                            ) -> CompletionLogprobs:
    """The shared-prompt layout: one packed row, each distinct prompt once, a block mask."""
    device = next(model.parameters()).device
    order: dict[tuple[int, ...], list[int]] = {}
    for index, prompt in enumerate(prompts):
        order.setdefault(tuple(prompt), []).append(index)
    tokens: list[int] = []
    positions: list[int] = []
    block: list[int] = []  # which prompt a position belongs to
    branch: list[int] = []  # 0 on a prompt, 1 + the completion's index on a completion
    keep: list[int] = []  # the positions whose logits predict completion tokens, in order
    targets: list[int] = []
    lengths = [len(c) for c in completions]
    starts: list[int] = [0] * len(prompts)  # where each completion's predictions begin in keep
    for number, (prompt, members) in enumerate(order.items()):
        if not prompt:
            raise ValueError("a prompt needs at least one token")
        base = len(tokens)
        tokens += prompt
        positions += range(len(prompt))
        block += [number] * len(prompt)
        branch += [0] * len(prompt)
        for index in members:
            completion = list(completions[index])
            offset = len(tokens)
            tokens += completion
            positions += range(len(prompt), len(prompt) + len(completion))
            block += [number] * len(completion)
            branch += [1 + index] * len(completion)
            starts[index] = len(keep)
            if completion:  # the prompt's last position predicts the first token
                keep += [base + len(prompt) - 1, *range(offset, offset + len(completion) - 1)]
                targets += completion
    length = len(tokens)
    blocks, branches = torch.tensor(block), torch.tensor(branch)
    allowed = ((blocks[:, None] == blocks[None, :])
               & ((branches[None, :] == 0) | (branches[:, None] == branches[None, :]))
               & torch.ones(length, length, dtype=torch.bool).tril())
    mask: torch.Tensor = allowed[None, None].to(device)  # sdpa: True where attention goes
    if _attention(model) == "eager":  # eager adds the mask to the scores
        dtype = (torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type)
                 else next(model.parameters()).dtype)
        mask = torch.zeros(mask.shape, dtype=dtype, device=device).masked_fill(
            ~mask, torch.finfo(dtype).min)
    rows, width = len(prompts), max(max(lengths), 1)
    out_mask = torch.zeros((rows, width))
    for row, count in enumerate(lengths):
        out_mask[row, :count] = 1
    out_mask = out_mask.to(device)
    kept = torch.tensor(keep, device=device)
    out = model(input_ids=torch.tensor([tokens], device=device), attention_mask=mask,
                position_ids=torch.tensor([positions], device=device), logits_to_keep=kept,
                output_hidden_states=with_hidden, use_cache=False)
    picked, entropy = token_logprobs(out.logits[0], torch.tensor(targets, device=device))
    hidden = None
    if with_hidden:
        hidden = _per_completion(out.hidden_states[-1][0, kept], lengths, starts, width)
    return CompletionLogprobs(logprobs=_per_completion(picked, lengths, starts, width),
                              mask=out_mask,
                              entropy=_per_completion(entropy, lengths, starts, width),
                              hidden=hidden)


def _per_completion(flat: torch.Tensor, lengths: Sequence[int], starts: Sequence[int],
                    width: int) -> torch.Tensor:
    """``(S, width, …)`` rows cut from ``flat`` (completion ``i`` at ``starts[i]``), zero-padded;
    differentiable."""
    pieces = [torch.nn.functional.pad(flat[start:start + count],
                                      (0, 0) * (flat.dim() - 1) + (0, width - count))
              for start, count in zip(starts, lengths, strict=True)]
    return torch.stack(pieces)


ROWS_PER_CHUNK = 256
"""Positions whose vocabulary-sized rows are processed at once in :func:`token_logprobs`."""


class _TokenLogprobs(torch.autograd.Function):
    """log softmax(z)[target] and the entropy of softmax(z), row by row, in float32 chunks.

    Neither pass materialises a float32 copy of the whole ``(N, V)`` logits: the forward keeps
    only the log-normaliser per row, the backward recomputes the softmax chunk by chunk.
    """

    @staticmethod
    def forward(ctx: Any, logits: torch.Tensor, targets: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        rows = logits.shape[0]
        log_norm = torch.empty(rows, dtype=torch.float32, device=logits.device)
        picked = torch.empty_like(log_norm)
        entropy = torch.empty_like(log_norm)
        for start in range(0, rows, ROWS_PER_CHUNK):
            part = slice(start, start + ROWS_PER_CHUNK)
            z = logits[part].float()
            top = z.max(dim=-1, keepdim=True).values
            weights = (z - top).exp_()
            total = weights.sum(dim=-1)
            norm = top[:, 0] + total.log()
            log_norm[part] = norm
            entropy[part] = norm - (weights * z).sum(dim=-1) / total
            picked[part] = z.gather(1, targets[part, None])[:, 0] - norm
        ctx.save_for_backward(logits, targets, log_norm)
        ctx.reuse = _storage_unused_after(logits)
        ctx.mark_non_differentiable(entropy)
        return picked, entropy

    @staticmethod
    def backward(ctx: Any, grad_picked: torch.Tensor, grad_entropy: torch.Tensor
                 ) -> tuple[torch.Tensor, None]:
        logits, targets, log_norm = ctx.saved_tensors
        # the logits are read chunk by chunk before their chunk of the gradient is written, so
        # where nothing else keeps them their memory takes the gradient (one (N, V) tensor less)
        grad = logits if ctx.reuse else torch.empty_like(logits)
        for start in range(0, logits.shape[0], ROWS_PER_CHUNK):
            part = slice(start, start + ROWS_PER_CHUNK)
            upstream = grad_picked[part].float()[:, None]
            probs = (logits[part].float() - log_norm[part, None]).exp_()
            probs.mul_(-upstream).scatter_add_(1, targets[part, None], upstream)
            grad[part] = probs
        return grad, None


_KEEP_NO_OUTPUT = frozenset({"MmBackward0", "AddmmBackward0", "BmmBackward0", "ToCopyBackward0",
                             "MulBackward0", "DivBackward0", "CloneBackward0"})
"""Backward nodes that save their inputs at most, never the tensor they produced."""
_SHARE_THEIR_INPUT = frozenset({"UnsafeViewBackward0", "ViewBackward0", "ReshapeAliasBackward0",
                                "AliasBackward0", "SelectBackward0", "SliceBackward0"})
"""Backward nodes of ops whose output is (a view of) their input's memory."""


def _storage_unused_after(logits: torch.Tensor) -> bool:
    """Whether the backward pass needs the memory of ``logits`` for nothing else: the ops that
    made it (following ops that share their input's memory) are known to keep no output.
    Anything unknown (a model that ends in ``tanh``, which keeps its output) answers False."""
    base = logits._base if logits._base is not None else logits
    node = base.grad_fn
    for _ in range(8):
        if node is None:
            return False
        name = type(node).__name__
        if name in _KEEP_NO_OUTPUT:
            return True
        if name not in _SHARE_THEIR_INPUT or not node.next_functions:
            return False
        node = node.next_functions[0][0]
    return False


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probability of ``targets`` under ``logits`` (``(N, V)``, any float dtype) and the
    entropy of each row's distribution (no gradient), both float32 ``(N,)``.

    Equal to ``log_softmax(logits.float())`` gathered at the targets, with far less memory
    traffic for a large vocabulary.
    """
    picked, entropy = _TokenLogprobs.apply(logits, targets)
    return picked, entropy
