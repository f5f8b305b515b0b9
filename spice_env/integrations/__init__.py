"""Adapters to other libraries' trainers and tools, each importing its library only when used.

* :mod:`spice_env.integrations.trl` — this library's verifier as a reward function of TRL's
  ``GRPOTrainer`` (imports nothing of TRL);
* :mod:`spice_env.integrations.openenv` — ``SpiceCorpus-v0`` served with OpenEnv's protocol, and
  its client (needs ``openenv-core``, the ``openenv`` extra).
"""
