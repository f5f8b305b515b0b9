"""Utilities: the environment conformance checker."""

from spice_env.utils.check_env import EnvCheckError, check_env

__all__ = ["EnvCheckError", "check_env"]
