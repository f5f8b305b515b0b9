"""The verifiers plugin of spice-env: ``vf-eval spice-verifiers ...`` (see
:mod:`spice_env.integrations.verifiers`)."""

from spice_env.integrations.verifiers import (
    SpiceChatHarness,
    SpiceEnv,
    SpiceTaskset,
    load_environment,
)

__all__ = ["SpiceChatHarness", "SpiceEnv", "SpiceTaskset", "load_environment"]
