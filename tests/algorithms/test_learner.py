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
