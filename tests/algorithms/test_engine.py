"""The policy engine's choices: the generation copy (freed during the update), and the options
of one vLLM engine per rank."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from agents.base import SamplingConfig
from agents.tiny import tiny_model
from algorithms.config import build_config
from algorithms.engine import PolicyEngine, generation_copy, vllm_rank_options


def test_a_generation_copy_when_the_trained_module_cannot_generate() -> None:
    model, _ = tiny_model(0)
    cpu = torch.device("cpu")
    single = build_config({})
    assert generation_copy(single, model, "32-true", cpu) is None  # generates itself
    copy = generation_copy(single, model, "bf16-mixed", cpu)
    assert copy is not None and copy is not model
    assert next(copy.parameters()).dtype == torch.bfloat16
    assert not any(p.requires_grad for p in copy.parameters())
    sharded = build_config({"trainer": {"strategy": "fsdp"}})
    full = generation_copy(sharded, model, "32-true", cpu)  # every rank needs a full copy
    assert full is not None and next(full.parameters()).dtype == torch.float32
    assert generation_copy(build_config({"model": {"backend": "vllm"}}), model, "bf16-mixed",
                           cpu) is None


def test_one_vllm_engine_per_rank_and_sleep_mode_on_gpus() -> None:
    def fabric(world: int, device: str) -> SimpleNamespace:
        return SimpleNamespace(world_size=world, device=torch.device(device))

    assert vllm_rank_options(fabric(1, "cpu")) == {}
    assert vllm_rank_options(fabric(2, "cpu")) == {
        "distributed_executor_backend": "external_launcher"}
    assert vllm_rank_options(fabric(1, "cuda")) == {"sleep_mode": True}
    assert vllm_rank_options(fabric(8, "cuda")) == {
        "distributed_executor_backend": "external_launcher", "sleep_mode": True}


def test_the_generation_copy_is_freed_during_the_update_and_made_again() -> None:
    model, tokenizer = tiny_model(0)
    fabric = SimpleNamespace(device=torch.device("cpu"), global_rank=0, world_size=1)
    wrapped = torch.nn.Module()  # as Fabric's wrapper: the trained module under .module
    wrapped.module = model
    engine = PolicyEngine(build_config({}), fabric, wrapped, tokenizer, precision="bf16-mixed",
                          source="tiny")
    copy = engine.agent.backend.model
    assert copy is not model and not engine.shares_module
    prompt = [tokenizer.encode("What is 2 + 2?", add_special_tokens=False)]
    sampling = SamplingConfig(temperature=0, max_new_tokens=6)
    before = engine.agent.backend.generate(prompt, sampling, 1)
    engine.rest()  # before the update: the copy holds nothing
    assert sum(p.numel() for p in copy.parameters()) == 0
    engine.sync()  # after it: the copy is the trained weights in bf16 again
    for name, parameter in model.named_parameters():
        assert torch.equal(dict(copy.named_parameters())[name], parameter.to(torch.bfloat16))
    assert engine.agent.backend.generate(prompt, sampling, 1) == before
    engine.close()
