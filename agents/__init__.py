"""Agents of spice-env: who acts in SPICE episodes.

This package currently holds the deterministic scripted agents of :mod:`agents.scripted`, used
by the tests, the environment checker and the demo.
"""

from __future__ import annotations

SPICE_ENV_PACKAGE = True
"""Marks this ``agents`` package as spice-env's (another distribution uses the same name)."""
