"""Training-time log-probabilities against the ones recorded while sampling."""

from __future__ import annotations

import pytest
import torch

from agents.backends.hf import HFBackend
from agents.base import SamplingConfig
from agents.tiny import tiny_model
from algorithms.logprobs import completion_logprobs


def test_match_the_sampling_logprobs_and_carry_gradients() -> None:
    model, tokenizer = tiny_model(seed=5)
    backend = HFBackend(model, tokenizer)
    prompts = [tokenizer.encode(t) for t in ("What is 12 + 30?", "A fox", "digits 0123456789")]
    groups = backend.generate(prompts, SamplingConfig(temperature=1.0, max_new_tokens=10, seed=1),
                              2)
    samples = [g for group in groups for g in group]
    result = completion_logprobs(model, [s.prompt_ids for s in samples],
                                 [s.completion_ids for s in samples], tokenizer.pad_token_id,
                                 with_hidden=True)
    for row, sample in enumerate(samples):
        length = len(sample.completion_ids)
        assert result.mask[row].sum() == length
        assert torch.allclose(result.logprobs[row, :length].detach(),
                              torch.tensor(sample.logprobs), atol=1e-4)
    assert result.hidden is not None and result.hidden.shape[:2] == result.logprobs.shape
    assert bool((result.entropy >= 0).all())
    result.logprobs.sum().backward()
    assert model.model.embed_tokens.weight.grad is not None


def test_empty_completions_and_bad_input() -> None:
    model, tokenizer = tiny_model(seed=5)
    result = completion_logprobs(model, [[5, 6, 7], [8]], [[], [9, 10]], tokenizer.pad_token_id)
    assert result.mask.tolist() == [[0.0, 0.0], [1.0, 1.0]]
    assert float(result.logprobs[0].detach().abs().sum()) == 0.0
    with pytest.raises(ValueError, match="one completion per prompt"):
        completion_logprobs(model, [[1]], [], tokenizer.pad_token_id)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_token_logprobs_match_log_softmax_with_gradients(dtype: torch.dtype,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import algorithms.logprobs as module

    monkeypatch.setattr(module, "ROWS_PER_CHUNK", 3)  # several chunks and a partial one
    torch.manual_seed(0)
    base = (torch.randn(7, 50) * 4).to(dtype)
    targets = torch.randint(0, 50, (7,))
    weights = torch.randn(7)
    ours = base.clone().requires_grad_(True)
    picked, entropy = module.token_logprobs(ours, targets)
    (picked * weights).sum().backward()
    reference = base.clone().requires_grad_(True)
    log_probs = torch.log_softmax(reference.float(), dim=-1)
    expected = log_probs.gather(1, targets[:, None])[:, 0]
    (expected * weights).sum().backward()
    tolerance = 1e-5 if dtype == torch.float32 else 1e-2
    torch.testing.assert_close(picked, expected, rtol=0, atol=tolerance)
    torch.testing.assert_close(entropy, -(log_probs.exp() * log_probs).sum(-1), rtol=0,
                               atol=tolerance)
    assert ours.grad is not None and reference.grad is not None and ours.grad.dtype == dtype
    torch.testing.assert_close(ours.grad.float(), reference.grad.float(), rtol=0,
                               atol=tolerance)
    assert not entropy.requires_grad


@pytest.mark.parametrize("last", ["linear", "softcapped", "tanh"])
def test_the_logits_memory_takes_their_gradient_only_where_nothing_keeps_it(
        last: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import algorithms.logprobs as module

    monkeypatch.setattr(module, "ROWS_PER_CHUNK", 4)
    torch.manual_seed(1)
    hidden, targets = torch.randn(2, 5, 8), torch.randint(0, 30, (9,))

    def gradient(reference: bool) -> tuple[torch.Tensor, bool]:
        weight = torch.randn(30, 8, generator=torch.Generator().manual_seed(2),
                             requires_grad=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = torch.nn.functional.linear(hidden, weight)  # as a model's output layer
        if last == "softcapped":  # tanh keeps its output, but the scaled copy is new memory
            logits = torch.tanh(logits / 3) * 3
        if last == "tanh":  # tanh's backward reads its own output: that memory is kept
            logits = torch.tanh(logits)
        flat = logits.reshape(-1, 30)[1:]  # a view of it, as the layouts take
        if reference:
            found = torch.log_softmax(flat.float(), -1).gather(1, targets[:, None])[:, 0]
        else:
            found, _ = module.token_logprobs(flat, targets)
        found.sum().backward()
        assert weight.grad is not None
        return weight.grad, module._storage_unused_after(flat)

    ours, reused = gradient(False)
    expected, _ = gradient(True)
    assert reused == (last != "tanh")
    torch.testing.assert_close(ours, expected, rtol=0, atol=2e-2)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_shared_prompts_give_the_padded_layout_numbers_and_gradients(attention: str) -> None:
    import algorithms.logprobs as module

    model, tokenizer = tiny_model(seed=3)
    model = model.float()
    model.set_attn_implementation(attention)
    assert module.packable(model)
    # two groups sharing prompts, a lone prompt, an empty completion among them
    prompts = [[5, 6, 7, 8], [5, 6, 7, 8], [9, 10], [5, 6, 7, 8], [9, 10], [11]]
    completions = [[1, 2, 3], [4], [5, 6, 7, 8, 9], [], [3, 3], [7, 7, 7]]
    weights = torch.randn(6, 5, generator=torch.Generator().manual_seed(0))
    found = {}
    for share in (False, True):
        model.zero_grad(set_to_none=True)
        result = completion_logprobs(model, prompts, completions, tokenizer.pad_token_id,
                                     with_hidden=True, share_prompts=share)
        (result.logprobs * weights).sum().backward()
        grads = {name: p.grad.clone() for name, p in model.named_parameters()
                 if p.grad is not None}
        found[share] = (result, grads)
    padded, packed = found[False][0], found[True][0]
    assert torch.equal(padded.mask, packed.mask)
    torch.testing.assert_close(packed.logprobs, padded.logprobs, rtol=0, atol=1e-5)
    torch.testing.assert_close(packed.entropy, padded.entropy, rtol=0, atol=1e-5)
    assert packed.hidden is not None and padded.hidden is not None
    mask = padded.mask[..., None]
    torch.testing.assert_close(packed.hidden * mask, padded.hidden * mask, rtol=0, atol=1e-5)
    assert float(packed.logprobs[3].detach().abs().sum()) == 0.0  # the empty completion
    assert found[True][1].keys() == found[False][1].keys()
    for name, grad in found[False][1].items():
        torch.testing.assert_close(found[True][1][name], grad, rtol=0, atol=1e-5)


def test_shared_prompts_fall_back_to_padding(monkeypatch: pytest.MonkeyPatch) -> None:
    import algorithms.logprobs as module

    model, tokenizer = tiny_model(seed=3)
    calls: list[int] = []
    real = module._shared_prompt_logprobs

    def spy(*args: object, **kwargs: object) -> module.CompletionLogprobs:
        calls.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(module, "_shared_prompt_logprobs", spy)
    completion_logprobs(model, [[5, 6], [7, 8]], [[1], [2]], tokenizer.pad_token_id)
    completion_logprobs(model, [[5, 6], [5, 6]], [[], []], tokenizer.pad_token_id)
    completion_logprobs(model, [[5, 6], [5, 6]], [[1], [2]], tokenizer.pad_token_id,
                        share_prompts=False)
    assert calls == []  # no prompt repeats / nothing to score / turned off
    completion_logprobs(model, [[5, 6], [5, 6]], [[1], [2]], tokenizer.pad_token_id)
    assert calls == [1]
    wrapper = torch.nn.Module()  # a data-parallel wrapper keeps the model in .module
    wrapper.module = model
    assert module.packable(wrapper)
    config = model.config  # a sliding window would be lost in the block mask
    config.layer_types = ["sliding_attention"] * len(config.layer_types)
    config.sliding_window = 8
    assert module.packable(model, longest=8) and not module.packable(model, longest=9)
    assert not module.packable(model)
    config.layer_types = ["full_attention"] * len(config.layer_types)
    config.sliding_window = None
    model.config._attn_implementation = "flash_attention_2"  # takes no explicit mask
    assert not module.packable(model) and not module.packable(wrapper)
