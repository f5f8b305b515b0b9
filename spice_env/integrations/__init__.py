"""Adapters to other libraries' trainers and tools, each importing its library only when used.

* :mod:`spice_env.integrations.trl` — this library's verifier as a reward function of TRL's
  ``GRPOTrainer``.
"""
