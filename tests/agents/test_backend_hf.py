"""The transformers backend against transformers' own generate and forward pass."""

from __future__ import annotations

import pytest
import torch

from agents.backends.hf import HFBackend, packing_available
from agents.base import SamplingConfig
from agents.tiny import tiny_model


@pytest.fixture(scope="module")
def backend() -> HFBackend:
    model, tokenizer = tiny_model(seed=1)
    return HFBackend(model, tokenizer, max_batch_size=3)


def prompts(backend: HFBackend) -> list[list[int]]:
    texts = ["What is 12 + 30?", "The quick brown fox", "A) 80 B) 90 C) 100 D) 120 answer:",
             "digits 0123456789 and more digits 9876543210 and a long tail of words here"]
    return [backend.tokenizer.encode(t, add_special_tokens=False) for t in texts]


def test_greedy_matches_transformers_generate(backend: HFBackend) -> None:
    outs = backend.generate(prompts(backend), SamplingConfig(temperature=0, max_new_tokens=20), 1)
    for prompt, (generation,) in zip(prompts(backend), outs, strict=True):
        reference = backend.model.generate(torch.tensor([prompt]), max_new_tokens=20,
                                           do_sample=False)[0, len(prompt):].tolist()
        assert list(generation.completion_ids) == reference[: len(generation.completion_ids)]
        assert generation.prompt_ids == tuple(prompt)
        assert len(generation.logprobs) == len(generation.completion_ids)
        expected = "stop" if generation.completion_ids[-1] in backend.stop_ids else "length"
        assert generation.finish_reason == expected


def test_logprobs_match_a_forward_pass(backend: HFBackend) -> None:
    outs = backend.generate(prompts(backend), SamplingConfig(temperature=1.0, top_p=0.9,
                                                             max_new_tokens=12, seed=3), 2)
    for group in outs:
        for g in group:
            ids = torch.tensor([list(g.prompt_ids) + list(g.completion_ids)])
            with torch.no_grad():
                logits = backend.model(ids).logits.float()
            start = len(g.prompt_ids) - 1
            expected = torch.log_softmax(logits, -1)[0, start:-1].gather(
                1, torch.tensor(g.completion_ids)[:, None])[:, 0]
            assert torch.allclose(expected, torch.tensor(g.logprobs), atol=1e-4)


def test_seeded_sampling_is_reproducible_and_n_varies(backend: HFBackend) -> None:
    sampling = SamplingConfig(temperature=1.0, max_new_tokens=10, seed=7)
    first = backend.generate(prompts(backend)[:2], sampling, 4)
    again = backend.generate(prompts(backend)[:2], sampling, 4)
    assert [[g.completion_ids for g in grp] for grp in first] == \
        [[g.completion_ids for g in grp] for grp in again]
    assert len({g.completion_ids for g in first[0]}) > 1  # samples of one prompt differ
    assert [len(grp) for grp in first] == [4, 4]


def test_stop_token_ends_a_row_and_is_not_in_the_text(backend: HFBackend) -> None:
    stop = sorted(backend.stop_ids)[0]
    with torch.no_grad():  # force the stop token after two steps by biasing the output layer
        bias = torch.zeros(backend.model.config.vocab_size)
        bias[stop] = 1e4
        original = backend.model.lm_head.forward
        calls = {"n": 0}

        def biased(hidden: torch.Tensor) -> torch.Tensor:
            calls["n"] += 1
            logits = original(hidden)
            return logits + bias if calls["n"] > 2 else logits

        backend.model.lm_head.forward = biased  # type: ignore[method-assign]
        try:
            (g,), = backend.generate(prompts(backend)[:1], SamplingConfig(temperature=0,
                                                                          max_new_tokens=10), 1)
        finally:
            backend.model.lm_head.forward = original  # type: ignore[method-assign]
    assert g.finish_reason == "stop" and g.completion_ids[-1] == stop
    assert len(g.completion_ids) == 3
    assert g.text == backend.tokenizer.decode(list(g.completion_ids[:-1]), skip_special_tokens=True)


def test_update_weights_changes_outputs(backend: HFBackend) -> None:
    model, tokenizer = tiny_model(seed=1)
    other = HFBackend(model, tokenizer)
    sampling = SamplingConfig(temperature=0, max_new_tokens=8)
    before = other.generate(prompts(other)[:1], sampling, 1)[0][0]
    donor, _ = tiny_model(seed=2)
    other.update_weights(dict(donor.named_parameters()))
    after = other.generate(prompts(other)[:1], sampling, 1)[0][0]
    reference = HFBackend(donor, tokenizer).generate(prompts(other)[:1], sampling, 1)[0][0]
    assert after.completion_ids == reference.completion_ids
    assert after.logprobs == pytest.approx(reference.logprobs, abs=1e-5)
    assert after.logprobs != pytest.approx(before.logprobs, abs=1e-3)
    with pytest.raises(KeyError, match="no parameter"):
        other.update_weights({"nope": torch.zeros(1)})


def test_released_weights_take_no_memory_until_updated() -> None:
    model, tokenizer = tiny_model(seed=1)
    copy = HFBackend(model.to(torch.bfloat16), tokenizer)
    sampling = SamplingConfig(temperature=0, max_new_tokens=8)
    trained, _ = tiny_model(seed=2)  # float32, as the trainer's module
    copy.release_weights()
    assert all(p.numel() == 0 for p in model.parameters())
    assert model.lm_head.weight is model.model.embed_tokens.weight  # still tied
    with pytest.raises(RuntimeError, match="update_weights"):
        copy.generate(prompts(copy)[:1], sampling, 1)
    copy.update_weights(list(trained.named_parameters()))
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    for name, parameter in trained.named_parameters():
        assert torch.equal(dict(model.named_parameters())[name], parameter.to(torch.bfloat16))
    again = HFBackend(tiny_model(seed=2)[0].to(torch.bfloat16), tokenizer)
    assert copy.generate(prompts(copy)[:2], sampling, 1) == again.generate(
        prompts(copy)[:2], sampling, 1)


def test_sampling_config_validation() -> None:
    with pytest.raises(ValueError):
        SamplingConfig(top_p=0)
    with pytest.raises(ValueError):
        SamplingConfig(temperature=float("nan"))
    with pytest.raises(ValueError):
        SamplingConfig(max_new_tokens=0)


def test_batches_respect_both_limits() -> None:
    model, tokenizer = tiny_model(seed=1)
    backend = HFBackend(model, tokenizer, max_batch_size=4, max_batch_tokens=100)
    rows = [[1] * n for n in (10, 50, 20, 10, 10, 10, 10, 30)]
    for n in (1, 3):
        chunks = backend._chunks([len(r) for r in rows], n)
        samples = [0] * len(rows)
        for chunk in chunks:
            for index, count in chunk:
                samples[index] += count
            size = sum(count for _, count in chunk)
            assert size <= 4
            assert size == 1 or size * max(len(rows[i]) for i, _ in chunk) <= 100
        assert samples == [n] * len(rows)
    outs = backend.generate(rows, SamplingConfig(temperature=0, max_new_tokens=3), 1)
    assert [g.prompt_ids for (g,) in outs] == [tuple(r) for r in rows]  # order kept


def test_a_prompt_is_prefilled_once_for_all_its_samples() -> None:
    model, tokenizer = tiny_model(seed=2)
    shared = HFBackend(model, tokenizer, max_batch_size=6)
    separate = HFBackend(model, tokenizer, max_batch_size=6, share_prompts=False)
    batch = prompts(shared)
    prefill_rows: list[int] = []

    def record(_module: object, args: tuple[object, ...], kwargs: dict[str, torch.Tensor]
               ) -> None:
        ids = kwargs["input_ids"]
        if ids.shape[1] > 1:
            prefill_rows.append(ids.shape[0])

    handle = model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        sampling = SamplingConfig(temperature=1.0, top_p=0.95, max_new_tokens=16, seed=11)
        ours = shared.generate(batch, sampling, 3)  # 12 rows: 2 prompts (6 rows) per batch
        rows_shared = list(prefill_rows)
        prefill_rows.clear()
        reference = separate.generate(batch, sampling, 3)
    finally:
        handle.remove()
    assert rows_shared == [2, 2] and prefill_rows == [6, 6]
    for mine, theirs in zip(ours, reference, strict=True):
        assert [g.completion_ids for g in mine] == [g.completion_ids for g in theirs]
        for a, b in zip(mine, theirs, strict=True):
            assert a.prompt_ids == b.prompt_ids and a.finish_reason == b.finish_reason
            assert torch.allclose(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-5)
    assert len({g.completion_ids for g in ours[0]}) > 1  # the copies sample independently


def test_samples_of_one_prompt_split_over_batches_when_they_do_not_fit() -> None:
    model, tokenizer = tiny_model(seed=1)
    backend = HFBackend(model, tokenizer, max_batch_size=3)
    assert backend._chunks([5, 9], 4) == [[(0, 3)], [(0, 1), (1, 2)], [(1, 2)]]
    outs = backend.generate(prompts(backend)[:2], SamplingConfig(temperature=1.0, seed=5,
                                                                  max_new_tokens=6), 4)
    assert [len(group) for group in outs] == [4, 4]
    assert all(g.prompt_ids == tuple(prompts(backend)[i]) for i in (0, 1) for g in outs[i])


def test_grouped_decode_attention_matches_the_models_own() -> None:
    model, tokenizer = tiny_model(seed=3)
    grouped = HFBackend(model, tokenizer, decode_attention="grouped")
    own = HFBackend(model, tokenizer, decode_attention="model")
    ids = prompts(grouped)  # different lengths: left padding is masked in both
    sampling = SamplingConfig(temperature=0, max_new_tokens=12)
    for (a,), (b,) in zip(grouped.generate(ids, sampling, 1), own.generate(ids, sampling, 1),
                          strict=True):
        assert a.completion_ids == b.completion_ids
        assert torch.allclose(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-5)
    assert model.config._attn_implementation == "sdpa"  # restored after each call
    with pytest.raises(ValueError, match="decode_attention"):
        HFBackend(model, tokenizer, decode_attention="fast")  # type: ignore[arg-type]


def test_the_sampler_follows_the_distribution_and_skips_zero_probabilities() -> None:
    from agents.backends.hf import sample_from

    probs = torch.tensor([[0.0, 0.5, 0.0, 0.3, 0.2, 0.0]]).repeat(20000, 1)
    generator = torch.Generator().manual_seed(0)
    counts = torch.bincount(sample_from(probs, generator), minlength=6).float() / 20000
    assert counts[[0, 2, 5]].sum() == 0
    assert torch.allclose(counts[[1, 3, 4]], torch.tensor([0.5, 0.3, 0.2]), atol=0.015)
    edge = torch.tensor([[0.0, 1.0, 0.0]])  # one possible token, whatever the uniform draw
    assert set(sample_from(edge.repeat(1000, 1), generator).tolist()) == {1}


@pytest.mark.skipif(not packing_available(), reason="no oneDNN packed linear kernels")
def test_packed_weights_decode_as_the_plain_ones_and_follow_updates() -> None:
    sampling = SamplingConfig(temperature=1.0, max_new_tokens=10, seed=5)

    def backend(seed: int, pack: bool) -> HFBackend:
        model, tokenizer = tiny_model(seed=seed)
        return HFBackend(model.to(torch.bfloat16).requires_grad_(False), tokenizer,
                         pack_weights=pack)

    plain, packed = backend(1, False), backend(1, True)
    expected = plain.generate(prompts(plain), sampling, 2)
    found = packed.generate(prompts(packed), sampling, 2)
    assert [[g.completion_ids for g in row] for row in found] == \
        [[g.completion_ids for g in row] for row in expected]
    for row, reference in zip(found, expected, strict=True):
        for g, r in zip(row, reference, strict=True):
            assert g.logprobs == pytest.approx(r.logprobs, abs=2e-2)
    assert "model.layers.0.mlp.down_proj.weight" in packed._packed
    assert "lm_head.weight" not in packed._packed  # tied to the embedding table: left plain
    layer = packed.model.model.layers[0].mlp.down_proj
    assert layer.weight.numel() == 0  # the packed copy holds the weights, not twice
    donor = backend(2, False)
    packed.update_weights(list(tiny_model(seed=2)[0].named_parameters()))  # float32 in
    assert layer.weight.numel() == 0
    after = packed.generate(prompts(packed)[:2], sampling, 1)
    assert [row[0].completion_ids for row in after] == \
        [row[0].completion_ids for row in donor.generate(prompts(donor)[:2], sampling, 1)]
    packed.release_weights()  # the update: nothing held; the sync brings plain weights back
    assert not packed._packed and "forward" not in vars(layer)
    packed.update_weights(list(tiny_model(seed=2)[0].named_parameters()))
    assert layer.weight.numel() > 0
    again = packed.generate(prompts(packed)[:2], sampling, 1)
    assert [row[0].completion_ids for row in again] == [row[0].completion_ids for row in after]
    assert layer.weight.numel() == 0  # packed again for the generation


def test_a_module_that_is_trained_is_never_packed() -> None:
    model, tokenizer = tiny_model(seed=1)
    trained = HFBackend(model.to(torch.bfloat16), tokenizer, pack_weights=True)
    trained.generate(prompts(trained)[:1], SamplingConfig(temperature=0, max_new_tokens=3), 1)
    assert not trained._packed and all(p.numel() > 0 for p in model.parameters())
