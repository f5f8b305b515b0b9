"""Log-probabilities of sampled completions under a model, with gradients, for the loss.

Rows are laid out as ``[padding | prompt | completion | padding]``: prompts left-padded to the
longest prompt, completions right-padded to the longest completion, so every completion starts in
the same column. Only the positions that predict completion tokens get logits
(``logits_to_keep``), which keeps the vocabulary-sized tensor at completion length.
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
                        with_hidden: bool = False) -> CompletionLogprobs:
    """Log-probabilities of ``completions`` after ``prompts`` under ``model``.

    Args:
        model: a transformers causal LM (``logits_to_keep`` support).
        prompts: token ids of each prompt.
        completions: token ids of each completion (may be empty).
        pad_id: the id put on padding positions (masked out).
        with_hidden: also return last-layer hidden states (PPO's value head).
    """
    if len(prompts) != len(completions):
        raise ValueError("one completion per prompt")
    if not prompts:
        raise ValueError("no sequences")
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
    logits = out.logits[:, :-1, :].float()  # positions predicting completion tokens
    targets, mask = targets.to(device), mask.to(device)
    log_norm = torch.logsumexp(logits, dim=-1)
    picked = logits.gather(-1, targets[..., None])[..., 0]
    logprobs = (picked - log_norm) * mask
    with torch.no_grad():
        probs = torch.softmax(logits, dim=-1)
        entropy = (log_norm - (probs * logits).sum(-1)) * mask
    hidden = None
    if with_hidden:
        last = out.hidden_states[-1]
        hidden = last[:, width_prompt - 1: width_prompt - 1 + width_completion, :]
    return CompletionLogprobs(logprobs=logprobs, mask=mask, entropy=entropy, hidden=hidden)
