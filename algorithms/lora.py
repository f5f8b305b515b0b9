"""LoRA adapters on the policy: wrapping a model, and its weights with the adapters merged.

The trainer wraps the policy with :func:`with_lora` when ``trainer.lora_rank`` is set (rank r,
alpha 2r, no dropout, every linear layer); the generation engines and the export need plain
transformers weights, which :func:`merged_lora_weights` gives without touching the adapters.
"""

from __future__ import annotations

from typing import Any

import torch


def with_lora(module: Any, rank: int) -> Any:
    """``module`` wrapped by peft with LoRA adapters of ``rank`` on all linear layers.

    Raises:
        ConfigError: peft is not installed.
    """
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        from algorithms.config import ConfigError

        raise ConfigError("trainer.lora_rank needs peft: pip install 'spice-env[lora]'"
                          ) from None
    config = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0,
                        target_modules="all-linear", task_type="CAUSAL_LM")
    return get_peft_model(module, config)


def merged_lora_weights(model: Any) -> list[tuple[str, torch.Tensor]]:
    """A peft model's base weights with each LoRA layer's delta added, under the base model's
    parameter names (the adapters stay as they are)."""
    base = model.get_base_model()
    merged: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name, module in base.named_modules():
            if hasattr(module, "base_layer") and hasattr(module, "get_delta_weight"):
                adapters = [a for a in getattr(module, "active_adapters", []) if
                            a in getattr(module, "lora_A", {})]
                weight = module.base_layer.weight.detach().clone()
                for adapter in adapters:
                    weight += module.get_delta_weight(adapter).to(weight.dtype)
                merged[f"{name}.weight"] = weight
        out = []
        for name, parameter in base.named_parameters():
            if "lora_" in name:
                continue
            clean = name.replace(".base_layer.", ".")
            out.append((clean, merged.get(clean, parameter.detach())))
    return out
