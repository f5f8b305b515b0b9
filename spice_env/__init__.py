"""spice-env: SPICE self-play in corpus environments.

Importing the package registers ``SpiceCorpus-v0`` with Gymnasium (lazily: nothing heavy is
imported until ``gym.make`` is called)::

    import gymnasium as gym
    import spice_env

    env = gym.make("SpiceCorpus-v0", corpus="embedded", group_size=8)
"""

from __future__ import annotations

import gymnasium

__version__ = "0.1.0"

ENV_ID = "SpiceCorpus-v0"

if ENV_ID not in gymnasium.registry:
    gymnasium.register(
        id=ENV_ID,
        entry_point="spice_env.env:SpiceCorpusEnv",
        nondeterministic=True,
    )

__all__ = ["ENV_ID", "__version__"]
