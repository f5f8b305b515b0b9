"""A MkDocs hook used only by the documentation build: configuration fields and metric names
as tables.

A page line ``<!-- fields: module:Class section -->`` becomes a Markdown table of the fields of
the pydantic model ``Class`` builds for ``section`` (key, type, default, description), with the
defaults ``Class()`` gives that section; without a section, of ``Class`` itself. The descriptions
are the ``Field(description=...)`` texts of the code, so the tables never drift from what the
config accepts. A line ``<!-- metrics -->`` becomes the table of the metrics a training run
logs (:data:`algorithms.metrics.METRICS`), and ``<!-- paper-memory -->`` the memory per GPU that
``spice train --dry-run`` estimates for each paper config under DDP and FSDP (the base models'
shapes from their published configurations, counted on the meta device).
"""

from __future__ import annotations

import collections.abc
import importlib
import re
import types
import typing
from typing import Any

_METRICS_MARKER = re.compile(r"^<!-- metrics -->$", re.MULTILINE)
_MEMORY_MARKER = re.compile(r"^<!-- paper-memory -->$", re.MULTILINE)

# the published shapes of the paper's base models (their config.json files)
_PAPER_MODELS: dict[str, tuple[str, dict[str, Any]]] = {
    "paper-qwen3-4b": ("Qwen3Config", dict(
        hidden_size=2560, intermediate_size=9728, num_hidden_layers=36,
        num_attention_heads=32, num_key_value_heads=8, head_dim=128, vocab_size=151936,
        tie_word_embeddings=True)),
    "paper-qwen3-8b": ("Qwen3Config", dict(
        hidden_size=4096, intermediate_size=12288, num_hidden_layers=36,
        num_attention_heads=32, num_key_value_heads=8, head_dim=128, vocab_size=151936,
        tie_word_embeddings=False)),
    "paper-octothinker-3b": ("LlamaConfig", dict(
        hidden_size=3072, intermediate_size=8192, num_hidden_layers=28,
        num_attention_heads=24, num_key_value_heads=8, vocab_size=128256,
        tie_word_embeddings=True)),
    "paper-octothinker-8b": ("LlamaConfig", dict(
        hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
        tie_word_embeddings=False)),
}
_MARKER = re.compile(r"^<!-- fields: (?P<target>[\w.]+:\w+)(?: (?P<section>\w+))? -->$",
                     re.MULTILINE)


def _type(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" if isinstance(a, str) else str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(_type(a) for a in args)
    if origin is typing.Annotated:
        return _type(args[0])
    if origin is collections.abc.Callable:
        return "callable"
    if origin is not None:
        inner = ", ".join(_type(a) for a in args)
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]"
    if annotation is type(None):
        return "None"
    return getattr(annotation, "__name__", str(annotation))


def _shown(value: Any) -> str:
    if hasattr(value, "model_dump"):
        return "(section)"
    if isinstance(value, tuple):
        value = list(value)
    text = value if isinstance(value, str) else repr(value)
    return f"`{text}`" if text else '`""`'


def fields_table(target: str, section: str | None) -> str:
    """The Markdown table of one model's fields (or of one section of it)."""
    module_name, _, class_name = target.partition(":")
    model = getattr(importlib.import_module(module_name), class_name)
    defaults = None
    if section and section in model.model_fields:  # a section of a config: its defaults there
        defaults = getattr(model(), section)
        model = type(defaults)
    rows = ["| key | type | default | what |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        key = f"{section}.{name}" if section else name
        value = getattr(defaults, name) if defaults is not None else (
            field.default_factory() if field.default_factory is not None else field.default)
        description = " ".join((field.description or "").split()).replace("|", "\\|")
        rows.append(f"| `{key}` | {_type(field.annotation)} | {_shown(value)} | "
                    f"{description} |")
    return "\n".join(rows)


def metrics_table() -> str:
    """The Markdown table of the metric names a run logs and what they mean."""
    from algorithms.metrics import METRICS

    rows = ["| key | meaning |", "|---|---|"]
    for metric in METRICS:
        rows.append(f"| `{metric.key}` | {metric.meaning.replace('|', chr(92) + '|')} |")
    return "\n".join(rows)


def paper_memory_table() -> str:
    """GB per GPU of each paper config on 8 GPUs under DDP and FSDP, as the dry run estimates
    them (training state; vLLM's share of the GPU comes on top)."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    from algorithms.config import load_config
    from algorithms.preflight import ModelFacts, estimate_memory

    rows = ["| config | base model | parameters | strategy | weights | gradients + AdamW | "
            "activations (rough) | peak in the update | peak at the weight sync |",
            "|---|---|---|---|---|---|---|---|---|"]
    for name, (kind, shape) in _PAPER_MODELS.items():
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(getattr(transformers, kind)(**shape))
        count = sum(p.numel() for p in model.parameters())
        facts = ModelFacts(source="", parameters=count, layers=shape["num_hidden_layers"],
                           hidden_size=shape["hidden_size"], vocab_size=shape["vocab_size"])
        for strategy in ("ddp", "fsdp"):
            config = load_config(name, [f"trainer.strategy={strategy}"])
            parts = estimate_memory(config, facts, "bf16-mixed",
                                    processes=config.trainer.devices)  # type: ignore[arg-type]
            weights, states = parts["weights"], parts["gradients+AdamW"]
            activations = parts["activations (rough)"]
            # at the sync the gradients are freed; the AdamW moments stay
            sync = weights + states * 2 / 3 + parts.get("gathered at sync (moment)", 0.0)
            cells = [f"{x:.0f}" for x in (weights, states, activations,
                                          weights + states + activations, sync)]
            rows.append(f"| `{name}` | {config.model.name} | {count / 1e9:.2f}B | {strategy} | "
                        f"{' | '.join(cells)} |")
    return "\n".join(rows)


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    """Replace every fields marker of a page by its table, the metrics marker by the metrics
    table and the paper-memory marker by the memory table."""
    markdown = _METRICS_MARKER.sub(lambda m: metrics_table(), markdown)
    markdown = _MEMORY_MARKER.sub(lambda m: paper_memory_table(), markdown)
    return _MARKER.sub(lambda m: fields_table(m.group("target"), m.group("section")), markdown)
