"""Loading a policy back out of a run is neutral: weights that did not move give the base model's
answers, item for item, through every way a policy is loaded."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from agents.models import cast_parameters, load_model
from agents.tiny import save_tiny_model
from algorithms.checkpoints import load_policy

pytestmark = pytest.mark.slow

PROMPTS = ["Question: what is 6 times 7?", "The sky is", "Problem: a train leaves at noon",
           "Answer in a box:"]


def _greedy(model: torch.nn.Module, tokenizer: object) -> list[list[int]]:
    outputs = []
    for prompt in PROMPTS:
        ids = tokenizer(prompt, return_tensors="pt").input_ids  # type: ignore[operator]
        with torch.no_grad():
            done = model.generate(ids, max_new_tokens=24, do_sample=False)  # type: ignore[operator]
        outputs.append(done[0, ids.shape[1]:].tolist())
    return outputs


def _logits(model: torch.nn.Module, tokenizer: object) -> torch.Tensor:
    ids = tokenizer(" ".join(PROMPTS), return_tensors="pt").input_ids  # type: ignore[operator]
    with torch.no_grad():
        return model(ids).logits.float()  # type: ignore[operator]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_every_way_of_loading_an_unmoved_policy_answers_like_the_base(
        still_run: tuple[Path, Path], dtype: torch.dtype) -> None:
    base, run = still_run
    reference = load_model(base, dtype=dtype)
    expected, expected_logits = (_greedy(reference.model, reference.tokenizer),
                                 _logits(reference.model, reference.tokenizer))
    checkpoint = next((run / "checkpoints").glob("iter-*.ckpt"))
    forms = {"checkpoint file": checkpoint, "checkpoints/last": run / "checkpoints" / "last",
             "run folder": run, "exported model/": run / "model"}
    for form, where in forms.items():
        loaded = load_policy(where, dtype=dtype)
        assert loaded.model.model.rotary_emb.inv_freq.dtype == torch.float32, form
        assert _greedy(loaded.model, loaded.tokenizer) == expected, form
        # an update at lr 1e-30 moves only weights that are exactly 0 (by about 1e-30)
        gap = (_logits(loaded.model, loaded.tokenizer) - expected_logits).abs().max().item()
        assert gap < 1e-6, (form, gap)


def test_a_run_folder_without_its_export_loads_its_newest_checkpoint_neutrally(
        still_run: tuple[Path, Path], tmp_path: Path) -> None:
    base, run = still_run
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("model"))
    reference = load_model(base, dtype=torch.bfloat16)
    loaded = load_policy(copy, dtype=torch.bfloat16)
    gap = (_logits(loaded.model, loaded.tokenizer)
           - _logits(reference.model, reference.tokenizer)).abs().max().item()
    assert gap < 1e-6
    assert _greedy(loaded.model, loaded.tokenizer) == _greedy(reference.model,
                                                              reference.tokenizer)


def test_casting_parameters_keeps_the_buffers_a_dtype_load_keeps(tmp_path: Path) -> None:
    folder = save_tiny_model(tmp_path / "m", seed=1)
    loaded = load_model(folder, dtype=torch.bfloat16)  # the reference: a load in the dtype
    model = cast_parameters(load_model(folder, dtype=torch.float32).model, torch.bfloat16)
    whole = load_model(folder, dtype=torch.float32).model.to(torch.bfloat16)  # module-wide
    assert model.model.rotary_emb.inv_freq.dtype == torch.float32
    assert whole.model.rotary_emb.inv_freq.dtype == torch.bfloat16
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    reference = _logits(loaded.model, loaded.tokenizer)
    assert torch.equal(_logits(model, loaded.tokenizer), reference)
    # the module-wide cast is what made checkpoints answer differently from their base model
    assert (_logits(whole, loaded.tokenizer) - reference).abs().max().item() > 1e-4
