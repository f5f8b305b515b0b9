"""Agents of spice-env: who acts in SPICE episodes.

* :mod:`agents.base` — the ``Agent`` and ``Backend`` contracts, ``Generation``, ``SamplingConfig``;
* :mod:`agents.self_play` — ``SelfPlayAgent``, one policy playing both roles;
* :mod:`agents.backends` — generation engines (transformers, vLLM, OpenAI-compatible HTTP);
* :mod:`agents.models` — the offline shipped models and ``load_model``;
* :mod:`agents.scripted` — deterministic scripted agents for tests, demos and the env checker;
* :mod:`agents.tiny` — tiny random models built in code, for tests.

``from agents import SelfPlayAgent, load_model`` works; submodules are imported on first use, so
``import agents`` stays light.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "Agent": "agents.base", "Backend": "agents.base", "ChatPrompt": "agents.base",
    "Generation": "agents.base", "SamplingConfig": "agents.base",
    "SelfPlayAgent": "agents.self_play", "load_model": "agents.models",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'agents' has no attribute {name!r}")

SPICE_ENV_PACKAGE = True
"""Marks this ``agents`` package as spice-env's (another distribution uses the same name)."""
