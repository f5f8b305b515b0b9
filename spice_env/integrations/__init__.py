"""Adapters to other libraries' trainers and tools, each importing its library only when used.

* :mod:`spice_env.integrations.trl` — this library's verifier as a reward function of TRL's
  ``GRPOTrainer`` (imports nothing of TRL);
* :mod:`spice_env.integrations.openenv` — ``SpiceCorpus-v0`` served with OpenEnv's protocol, and
  its client (needs ``openenv-core``, the ``openenv`` extra);
* :mod:`spice_env.integrations.verifiers` — the two-role game and the Reasoner task as an
  environment of the verifiers library (needs ``verifiers``, the ``verifiers`` extra; its plugin
  module is :mod:`spice_verifiers`).
"""
