"""vLLM against transformers on the real embedded model: the parity that float32 buys on CPU."""

from __future__ import annotations

from collections.abc import Iterator

import gymnasium as gym
import pytest
import torch

import spice_env
from agents.backends.hf import HFBackend
from agents.backends.vllm import VLLMBackend
from agents.base import SamplingConfig
from agents.models import load_model
from agents.self_play import encode_observation

pytest.importorskip("vllm")

MODEL = "qwen2.5-coder-0.5b-instruct"
GREEDY = SamplingConfig(temperature=0, max_new_tokens=32)
LOGPROB_TOLERANCE = 1e-3  # measured: about 1e-5 in float32


@pytest.fixture(scope="module")
def engine() -> Iterator[VLLMBackend]:
    backend = VLLMBackend(MODEL, max_model_len=4096)
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def reference() -> HFBackend:
    loaded = load_model(MODEL, dtype=torch.float32)
    return HFBackend(loaded.model, loaded.tokenizer)


def spice_prompts(tokenizer: object) -> list[list[int]]:
    """A compact Challenger prompt with a real document and a Reasoner prompt, as token ids."""
    env = gym.make(spice_env.ENV_ID, corpus="embedded:math", group_size=2,
                   prompt_style="compact", task_formats="free_form")
    challenger, _ = env.reset(seed=3)
    reasoner, *_ = env.step(
        '{"question": "A train covers 120 km in 1.5 hours. What is its speed in km/h?", '
        '"answer": "80", "answer_type": "integer"}')
    env.close()
    return [encode_observation(tokenizer, challenger), encode_observation(tokenizer, reasoner)]


def assert_parity(engine: VLLMBackend, reference: HFBackend, prompts: list[list[int]]) -> None:
    ours = engine.generate(prompts, GREEDY, 1)
    theirs = reference.generate(prompts, GREEDY, 1)
    for (a,), (b,) in zip(ours, theirs, strict=True):
        assert a.completion_ids[:32] == b.completion_ids[:32]
        diff = torch.tensor(a.logprobs) - torch.tensor(b.logprobs)
        assert float(diff.abs().max()) < LOGPROB_TOLERANCE


def test_greedy_parity_on_spice_prompts(engine: VLLMBackend, reference: HFBackend) -> None:
    assert engine.dtype == "float32"
    prompts = spice_prompts(engine.tokenizer)
    assert prompts == spice_prompts(reference.tokenizer)
    assert_parity(engine, reference, prompts)


def test_parity_after_a_weight_update(engine: VLLMBackend, reference: HFBackend) -> None:
    # the embedded model ties its output layer to the embedding table: update both paths
    generator = torch.Generator().manual_seed(0)
    changed = {name: p.detach() * (1 + 0.05 * torch.randn(p.shape, generator=generator))
               for name, p in reference.model.named_parameters()
               if name == "model.embed_tokens.weight" or ".layers.3." in name}
    reasoner = spice_prompts(engine.tokenizer)[1:]
    before = engine.generate(reasoner, GREEDY, 1)
    reference.update_weights(changed)
    engine.update_weights(changed)
    after = engine.generate(reasoner, GREEDY, 1)
    assert after[0][0].logprobs != before[0][0].logprobs
    assert_parity(engine, reference, reasoner)
