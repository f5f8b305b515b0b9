"""Model resolution and the shipped-model registry."""

from __future__ import annotations

from pathlib import Path

import pytest

from agents.models import SHIPPED_MODELS, default_dtype, load_model, resolve_model
from agents.tiny import save_tiny_model
from spice_env.assets import AssetError


def test_registry() -> None:
    assert set(SHIPPED_MODELS) == {"qwen2.5-coder-0.5b-instruct", "smollm2-135m-instruct"}
    qwen = SHIPPED_MODELS["qwen2.5-coder-0.5b-instruct"]
    assert len(qwen.archives) == 6 and qwen.gguf_sha256
    assert all(len(a.sha256) == 64 for m in SHIPPED_MODELS.values() for a in m.archives)


def test_local_folder_and_hub_ids(tmp_path: Path) -> None:
    folder = save_tiny_model(tmp_path / "tiny")
    assert resolve_model(folder) == str(folder)
    assert resolve_model("someone/some-model") == "someone/some-model"  # a hub id, as is
    (tmp_path / "empty").mkdir()
    with pytest.raises(AssetError, match=r"no config\.json"):
        resolve_model(tmp_path / "empty")


def test_load_a_local_folder(tmp_path: Path) -> None:
    import torch

    loaded = load_model(save_tiny_model(tmp_path / "tiny"), dtype=torch.float32)
    assert loaded.model.dtype == torch.float32 and not loaded.model.training
    assert loaded.tokenizer.chat_template


def test_default_dtype() -> None:
    import torch

    assert default_dtype("cuda:0") == torch.bfloat16
    assert default_dtype("cpu") in (torch.bfloat16, torch.float32)
