"""Agents of spice-env: who acts in SPICE episodes.

* :mod:`agents.base` — the ``Agent`` and ``Backend`` contracts, ``Generation``, ``SamplingConfig``;
* :mod:`agents.self_play` — ``SelfPlayAgent``, one policy playing both roles;
* :mod:`agents.backends` — generation engines (transformers);
* :mod:`agents.models` — the offline shipped models and ``load_model``;
* :mod:`agents.scripted` — deterministic scripted agents for tests, demos and the env checker;
* :mod:`agents.tiny` — tiny random models built in code, for tests.

Submodules are imported on use, so ``import agents`` stays light.
"""

from __future__ import annotations

SPICE_ENV_PACKAGE = True
"""Marks this ``agents`` package as spice-env's (another distribution uses the same name)."""
