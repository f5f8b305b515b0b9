"""The policy engine's choices: the generation copy, and the options of one vLLM engine per
rank."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from agents.tiny import tiny_model
from algorithms.config import build_config
from algorithms.engine import generation_copy, vllm_rank_options


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
