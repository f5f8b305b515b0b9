"""The algorithms by name.

:data:`ALGORITHMS` maps each name to its class; a class's ``config_class`` is the settings it
takes, whose ``name`` field (a one-value ``Literal``) tags an ``algorithm:`` config section. The
``algorithm`` section of a :class:`~algorithms.config.TrainConfig` is validated by the class its
``name`` picks here, so a registered algorithm is usable from YAML and ``algorithm.name=...``
overrides like the shipped ones::

    from algorithms.base import AlgorithmBase, AlgorithmConfigBase
    from algorithms.registry import register_algorithm

    class MyConfig(AlgorithmConfigBase):
        name: Literal["mine"] = "mine"

    @register_algorithm
    class Mine(AlgorithmBase):
        config_class = MyConfig
        ...  # advantages() and loss()
"""

from __future__ import annotations

import typing
from typing import Annotated, Any, Literal, TypeVar

from pydantic import Field

from algorithms.base import Algorithm, AlgorithmConfigBase
from algorithms.drgrpo import DrGRPO, DrGRPOConfig
from algorithms.grpo import GRPO, GRPOConfig
from algorithms.ppo import PPO, PPOConfig
from spice_env.registry import Registry

AlgorithmName = Literal["drgrpo", "grpo", "ppo"]
"""The shipped algorithms' names."""

AlgorithmConfig = Annotated[DrGRPOConfig | GRPOConfig | PPOConfig, Field(discriminator="name")]
"""The shipped algorithms' configurations; ``name`` picks the class."""

ALGORITHMS: Registry[Any] = Registry("algorithm", {
    "drgrpo": DrGRPO, "grpo": GRPO, "ppo": PPO})
"""Algorithm classes by name (``drgrpo`` is the paper's and the default)."""

A = TypeVar("A", bound=type)


def config_name(config_class: type[AlgorithmConfigBase]) -> str:
    """The tag of an algorithm's settings: the default of its ``name`` field."""
    field = config_class.model_fields.get("name")
    value = field.default if field is not None else None
    if not isinstance(value, str) or not value:
        raise TypeError(f"{config_class.__name__} needs a field name: Literal['<tag>'] = "
                        "'<tag>' naming its algorithm")
    return value


def register_algorithm(cls: A, *, overwrite: bool = False) -> A:
    """Make an algorithm class available under its settings' ``name`` (usable as a decorator).

    Raises:
        TypeError: the class has no ``config_class`` with a ``name`` tag.
        ValueError: the name is taken (and ``overwrite`` is False).
    """
    config_class = getattr(cls, "config_class", None)
    if not (isinstance(config_class, type) and issubclass(config_class, AlgorithmConfigBase)):
        raise TypeError(f"{cls.__name__} needs a config_class (an AlgorithmConfigBase "
                        "subclass)")
    ALGORITHMS.register(config_name(config_class), cls, overwrite=overwrite)
    return cls


def algorithm_config_class(name: str) -> type[AlgorithmConfigBase]:
    """The settings class of the algorithm called ``name``."""
    found: type[AlgorithmConfigBase] = ALGORITHMS[name].config_class
    return found


def algorithm_config(value: Any) -> AlgorithmConfigBase:
    """An ``algorithm`` section validated by the class its ``name`` (default ``drgrpo``) picks."""
    if isinstance(value, AlgorithmConfigBase):
        return value
    if not isinstance(value, dict):
        raise ValueError(f"the algorithm section must be a mapping, got {value!r}")
    name = value.get("name", "drgrpo")
    if not isinstance(name, str) or name not in ALGORITHMS:
        raise ValueError(str(ALGORITHMS.unknown(name)))
    return algorithm_config_class(name).model_validate({**value, "name": name})


def make_algorithm(config: AlgorithmConfigBase) -> Algorithm:
    """The algorithm a configuration describes."""
    algorithm: Algorithm = ALGORITHMS[config_name(type(config))](config)
    return algorithm


assert set(typing.get_args(AlgorithmName)) <= set(ALGORITHMS)
