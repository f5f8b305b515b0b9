"""Learning algorithms of spice-env.

* :mod:`algorithms.base` — the batch of scored completions, group advantages, the clipped
  surrogate, the KL estimator;
* :mod:`algorithms.drgrpo` — Dr. GRPO (the paper's, the default);
* :mod:`algorithms.grpo` — GRPO;
* :mod:`algorithms.ppo` — PPO with a value head and GAE;
* :mod:`algorithms.logprobs` — log-probabilities of sampled completions, with gradients;
* :mod:`algorithms.samples` — rollouts to training samples, advantages per role group, the
  micro-batched loss;
* :mod:`algorithms.registry` — the algorithms by name and their tagged configurations;
* :mod:`algorithms.config` — the configuration of a training run (YAML, overrides, errors).
"""

from __future__ import annotations

SPICE_ENV_PACKAGE = True
"""Marks this ``algorithms`` package as spice-env's (another distribution uses the same name)."""
