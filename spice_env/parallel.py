"""A PettingZoo ``ParallelEnv`` view of SPICE episodes.

Both agents, ``"challenger"`` and ``"reasoner"``, are live from ``reset`` to the end of the
episode and act every step; the agent whose turn it is not is ignored (send ``""`` or anything).

* Step 1 takes ``actions["challenger"]`` (one string). An invalid question ends the episode:
  the Challenger gets ``rho``, the Reasoner 0. With ``format_choice="selector"`` the first
  Challenger step is the task-type selector's, and the Challenger acts once more.
* Step 2 takes ``actions["reasoner"]``: a tuple of G strings. The Challenger gets its reward and
  the Reasoner the mean of its G rewards; the per-answer rewards are in the reasoner's info.

The Challenger's info carries the parsed ``task``; the Reasoner's info never does (it would hold
the gold answer and the Challenger's quotes from the document).
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar

from gymnasium import spaces
from pettingzoo import ParallelEnv

from spice_env.corpus import Corpus, CorpusSpec
from spice_env.env import SpiceCorpusEnv
from spice_env.game import observation
from spice_env.spaces import Prose
from spice_env.types import Observation
from spice_env.verify import Verifier

AGENTS = ("challenger", "reasoner")
_HIDDEN_FROM_REASONER = ("task", "detail")


def _infos(info: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per-agent infos: the Reasoner's never holds the task (its gold answer, quotes)."""
    reasoner = {k: v for k, v in info.items() if k not in _HIDDEN_FROM_REASONER}
    return {"challenger": dict(info), "reasoner": reasoner}


class SpiceParallelEnv(ParallelEnv[str, Observation, Any]):
    """The two roles of :class:`~spice_env.env.SpiceCorpusEnv` as PettingZoo agents."""

    metadata: ClassVar[dict[str, Any]] = {"name": "spice_corpus_v0", "render_modes": ["ansi"]}

    def __init__(self, corpus: CorpusSpec | Corpus = "embedded", *,
                 verifier: Verifier | None = None, **settings: Any) -> None:
        self.env = SpiceCorpusEnv(corpus, verifier=verifier, **settings)
        self.possible_agents = list(AGENTS)
        self.agents: list[str] = []
        self.render_mode = self.env.render_mode

    @functools.cache  # noqa: B019 - one space object per agent, as PettingZoo asks
    def observation_space(self, agent: str) -> spaces.Space[Any]:
        """Both agents observe the env's observation dict."""
        return self.env.observation_space

    @functools.cache  # noqa: B019
    def action_space(self, agent: str) -> spaces.Space[Any]:
        """The challenger acts with one string, the reasoner with a tuple of G strings."""
        if agent == "challenger":
            return Prose()
        return spaces.Tuple([Prose() for _ in range(self.env.config.group_size)])

    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[dict[str, Observation], dict[str, dict[str, Any]]]:
        """Start an episode: the challenger's observation, and a waiting one for the reasoner."""
        obs, info = self.env.reset(seed=seed, options=options)
        self.agents = list(AGENTS)
        waiting = observation("waiting", document_id=info["document_id"])
        return {"challenger": obs, "reasoner": waiting}, _infos(info)

    def step(self, actions: dict[str, Any]) -> tuple[
        dict[str, Observation], dict[str, float], dict[str, bool], dict[str, bool],
        dict[str, dict[str, Any]],
    ]:
        """Play the acting agent's action (see the module docstring); the other is ignored."""
        if not self.agents:
            raise RuntimeError("the episode has ended; call reset() before step()")
        if self.env.phase == "challenger":
            obs, reward, done, _truncated, info = self.env.step(actions["challenger"])
            if done:
                return self._finish(obs, reward, 0.0, info)
            waiting = observation("waiting", document_id=info["document_id"])
            # after a selector step the Challenger acts again (its question), else the Reasoner
            turn = {"challenger": obs, "reasoner": waiting} if obs["role"] == "challenger" else {
                "challenger": waiting, "reasoner": obs}
            return (turn, dict.fromkeys(AGENTS, 0.0),
                    dict.fromkeys(AGENTS, False), dict.fromkeys(AGENTS, False),
                    _infos(info))
        answers = actions["reasoner"]
        obs, reward, _, _, info = self.env.step(list(answers))
        rewards = info["rewards"]["reasoner"]
        return self._finish(obs, reward, sum(rewards) / len(rewards), info)

    def _finish(self, obs: Observation, challenger_reward: float, reasoner_reward: float,
                info: dict[str, Any]) -> tuple[Any, Any, Any, Any, Any]:
        self.agents = []
        return ({a: obs for a in AGENTS},
                {"challenger": float(challenger_reward), "reasoner": float(reasoner_reward)},
                dict.fromkeys(AGENTS, True), dict.fromkeys(AGENTS, False),
                _infos(info))

    def render(self) -> str | None:
        """The wrapped env's text rendering."""
        return self.env.render()

    def close(self) -> None:
        """Close the wrapped env (and its verifier workers, if it made them)."""
        self.env.close()
