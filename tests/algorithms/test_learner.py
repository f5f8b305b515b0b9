"""The learner's step: a non-finite loss or gradient is reported and never applied."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from algorithms.samples import TrainingSample
from tests.algorithms.test_sharding import uneven_learner


def samples(advantage: float) -> list[TrainingSample]:
    return [TrainingSample(role="reasoner", group=k, prompt_ids=(5, 6, 7 + k),
                           completion_ids=(9, 10 + k), old_logprobs=(-4.0, -4.0), reward=1.0,
                           advantage=advantage if k == 0 else 0.5) for k in range(2)]


@pytest.mark.parametrize("clip", [1.0, None])
def test_a_non_finite_update_is_skipped_and_reported(tmp_path: Path, clip: float | None,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    learner = uneven_learner("auto", 1, str(tmp_path / "run"))
    config = learner.config
    learner.config = config.model_copy(update={"optimizer": config.optimizer.model_copy(
        update={"grad_clip": clip})})
    before = {n: p.detach().clone() for n, p in learner.model.module.named_parameters()}
    metrics = learner.update(samples(math.nan))
    assert metrics["nonfinite_step"] == 1.0 and not math.isfinite(metrics["grad_norm"])
    assert "non-finite update" in capsys.readouterr().out
    for name, tensor in learner.model.module.named_parameters():
        assert torch.equal(tensor, before[name]), name  # nothing applied, nothing poisoned
    assert all(torch.isfinite(v).all() for state in learner.optimizer.state.values()
               for v in state.values() if isinstance(v, torch.Tensor))
    metrics = learner.update(samples(-0.5))  # the next finite step trains as usual
    assert "nonfinite_step" not in metrics and math.isfinite(metrics["grad_norm"])
    assert any(not torch.equal(t, before[n]) for n, t in learner.model.module.named_parameters())


def test_a_frozen_input_embedding_gets_no_gradient_and_no_optimiser_state(
        tmp_path: Path) -> None:
    from agents.tiny import tiny_model
    from algorithms.config import build_config
    from algorithms.launch import make_fabric
    from algorithms.learner import Learner, freeze_input_embeddings
    from algorithms.registry import make_algorithm

    tied, _ = tiny_model(0)  # the output layer shares the table: it stays trained
    assert freeze_input_embeddings(tied) == 0
    assert tied.get_input_embeddings().weight.requires_grad
    model, tokenizer = tiny_model(0)
    model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone())
    model.config.tie_word_embeddings = False
    table = model.get_input_embeddings().weight
    assert freeze_input_embeddings(model) == table.numel()
    config = build_config({"optimizer": {"lr": 1e-3}, "trainer": {
        "accelerator": "cpu", "precision": "32-true", "loggers": [],
        "output_dir": str(tmp_path / "run"), "freeze_input_embeddings": True}})
    fabric = make_fabric(config)
    fabric.launch()
    learner = Learner(config, fabric, model, make_algorithm(config.algorithm),
                      precision="32-true", pad_id=int(tokenizer.pad_token_id))
    before, head = table.detach().clone(), model.lm_head.weight.detach().clone()
    metrics = learner.update(samples(-0.5))
    assert math.isfinite(metrics["grad_norm"])
    assert torch.equal(table, before) and table.grad is None
    assert not torch.equal(model.lm_head.weight, head)  # the output layer still trains
    held = {id(p) for group in learner.optimizer.param_groups for p in group["params"]}
    assert id(table) not in held and id(model.lm_head.weight) in held
