"""The algorithms by name, and their configurations as one tagged union."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from algorithms.base import Algorithm
from algorithms.drgrpo import DrGRPO, DrGRPOConfig
from algorithms.grpo import GRPO, GRPOConfig
from algorithms.ppo import PPO, PPOConfig

AlgorithmName = Literal["drgrpo", "grpo", "ppo"]
AlgorithmConfig = Annotated[DrGRPOConfig | GRPOConfig | PPOConfig, Field(discriminator="name")]
"""Any algorithm's configuration; its ``name`` field picks the class."""

ALGORITHM_CONFIGS: dict[str, type[DrGRPOConfig] | type[GRPOConfig] | type[PPOConfig]] = {
    "drgrpo": DrGRPOConfig, "grpo": GRPOConfig, "ppo": PPOConfig}
"""Configuration classes by algorithm name."""

ALGORITHMS: dict[str, type[DrGRPO] | type[GRPO] | type[PPO]] = {
    "drgrpo": DrGRPO, "grpo": GRPO, "ppo": PPO}
"""Algorithm classes by name (``drgrpo`` is the paper's and the default)."""


def make_algorithm(config: DrGRPOConfig | GRPOConfig | PPOConfig) -> Algorithm:
    """The algorithm a configuration describes."""
    try:
        cls = ALGORITHMS[config.name]
    except KeyError:
        raise ValueError(f"unknown algorithm {config.name!r}; valid: "
                         f"{', '.join(ALGORITHMS)}") from None
    algorithm: Algorithm = cls(config)  # type: ignore[arg-type]
    return algorithm
