"""Learning algorithms of spice-env (Dr. GRPO, GRPO, PPO) and the Fabric trainer."""

from __future__ import annotations

SPICE_ENV_PACKAGE = True
"""Marks this ``algorithms`` package as spice-env's (another distribution uses the same name)."""
