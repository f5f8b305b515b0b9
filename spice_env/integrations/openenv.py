"""``SpiceCorpus-v0`` served with OpenEnv's protocol (``openenv-core``), and its client.

:func:`make_app` builds the OpenEnv FastAPI app (``spice serve`` runs it): each WebSocket
session (``/ws``, what :class:`SpiceEnvClient` and TRL's OpenEnv integration use) plays its own
episodes, one at a time, on one shared corpus and verifier; ``POST /reset``, ``POST /step``,
``GET /state``, ``GET /health`` and ``GET /schema`` are OpenEnv's HTTP routes. OpenEnv's plain HTTP
calls are stateless (every call gets a fresh environment), so an episode, which takes two or three
steps, is played over a session.

An episode is the Gymnasium environment's: ``reset`` gives the Challenger's observation, a step
with :attr:`SpiceAction.text` plays the Challenger (or the task-type selector), a step with
:attr:`SpiceAction.texts` plays the Reasoner's G answers. The observation carries every field of
:class:`~spice_env.types.Observation`, the reward and ``done``, and ``info`` (the environment's
info made JSON: the task with its gold answer, verdicts, rewards of both roles, invalid reasons).
An action that does not fit the turn (a string for the Reasoner, the wrong number of answers, a
step after the end) is no crash: the observation repeats the turn with ``info["error"]``.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Mapping
from typing import Any

from openenv.core import EnvClient
from openenv.core.client_types import StepResult
from openenv.core.env_server import Action, Environment, Observation, State, create_app
from pydantic import BaseModel, Field

from spice_env.corpus import Corpus, CorpusSpec, load_corpus
from spice_env.env import SpiceCorpusEnv
from spice_env.types import OBSERVATION_KEYS
from spice_env.verify import Verifier


class SpiceAction(Action):
    """One turn's action: ``text`` for the Challenger (and the selector), ``texts`` for the
    Reasoner's G answers."""

    text: str | None = Field(default=None, description="The Challenger's output.")
    texts: list[str] | None = Field(default=None, description="The Reasoner's G answers.")


class SpiceObservation(Observation):
    """What the server sends after ``reset`` and each step: the observation's fields and
    ``info``."""

    role: str = Field(default="done", description="Whose turn: challenger, reasoner or done.")
    prompt: str = Field(default="", description="The prompt as plain text.")
    messages: list[dict[str, str]] = Field(default_factory=list,
                                           description="The prompt as chat messages.")
    assistant_prefix: str = Field(default="", description="Text the reply starts with.")
    document: str = Field(default="", description="The document (the Challenger's turn).")
    document_id: str = Field(default="", description="The document's id.")
    question: str = Field(default="", description="The question (the Reasoner's turn).")
    task_format: str = Field(default="", description="mcq, free_form or select.")
    info: dict[str, Any] = Field(default_factory=dict, description="The step's info, as JSON.")


class SpiceState(State):
    """The session's episode: its phase and document."""

    phase: str = "done"
    document_id: str = ""


def plain(value: Any) -> Any:
    """``value`` as JSON-ready data (pydantic models, dataclasses, tuples and numbers)."""
    if isinstance(value, BaseModel):
        return plain(value.model_dump(mode="json"))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return plain(dataclasses.asdict(value))
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return repr(value)


class SpiceOpenEnv(Environment[SpiceAction, SpiceObservation, SpiceState]):
    """One session's SPICE environment for OpenEnv's server (see the module docstring)."""

    SUPPORTS_CONCURRENT_SESSIONS = True
    _verifying = threading.Lock()  # sessions share one verifier; its pool serves one at a time

    def __init__(self, corpus: Corpus, verifier: Verifier, **settings: Any) -> None:
        super().__init__()
        self.env = SpiceCorpusEnv(corpus, verifier=verifier, **settings)
        self._state = SpiceState()
        self._last = SpiceObservation(info={"error": "no episode yet: call reset first"})

    def reset(self, seed: int | None = None, episode_id: str | None = None,
              **kwargs: Any) -> SpiceObservation:
        obs, info = self.env.reset(seed=seed)
        self._state = SpiceState(episode_id=episode_id, step_count=0, phase=self.env.phase,
                                 document_id=info["document_id"])
        self._last = self._observation(obs, info, reward=None, done=False)
        return self._last

    def step(self, action: SpiceAction, timeout_s: float | None = None,
             **kwargs: Any) -> SpiceObservation:
        phase = self.env.phase
        if phase == "done":
            return self._refuse("the episode has ended (or none began): call reset")
        given: Any = action.texts if phase == "reasoner" else action.text
        if given is None:
            wanted = "texts (the G answers)" if phase == "reasoner" else "text"
            return self._refuse(f"the {phase}'s turn takes {wanted}")
        try:
            if phase == "reasoner":
                with self._verifying:
                    obs, reward, done, _, info = self.env.step(list(given))
            else:
                with self._verifying:  # an invalid question ends the episode unverified
                    obs, reward, done, _, info = self.env.step(given)
        except (TypeError, ValueError) as exc:
            return self._refuse(str(exc))
        self._state.step_count += 1
        self._state.phase = self.env.phase
        self._last = self._observation(obs, info, reward=float(reward), done=bool(done))
        return self._last

    def _refuse(self, message: str) -> SpiceObservation:
        """The current turn again, with the reason the action was not played."""
        return self._last.model_copy(update={"info": {**self._last.info, "error": message},
                                             "reward": None})

    @staticmethod
    def _observation(obs: Mapping[str, Any], info: Mapping[str, Any], *, reward: float | None,
                     done: bool) -> SpiceObservation:
        fields = {key: plain(obs[key]) for key in OBSERVATION_KEYS}
        return SpiceObservation(**fields, info=plain(dict(info)), reward=reward, done=done)

    @property
    def state(self) -> SpiceState:
        return self._state

    def close(self) -> None:
        self.env.close()


def make_app(corpus: CorpusSpec | Corpus = "embedded", *, max_sessions: int = 8,
             verifier: Verifier | None = None, **settings: Any) -> Any:
    """The OpenEnv FastAPI app serving ``SpiceCorpus-v0`` (``settings``: the game's fields),
    with at most ``max_sessions`` WebSocket sessions at once."""
    loaded = corpus if isinstance(corpus, Corpus) else load_corpus(corpus)
    shared = verifier or Verifier()
    SpiceCorpusEnv(loaded, verifier=shared, **settings).close()  # bad settings fail here

    def session() -> SpiceOpenEnv:
        return SpiceOpenEnv(loaded, shared, **settings)

    app = create_app(session, SpiceAction, SpiceObservation, env_name="spice_corpus",
                     max_concurrent_envs=max_sessions)
    app.add_middleware(_QuietDisconnect)
    app.state.spice_verifier = shared
    return app


class _QuietDisconnect:
    """OpenEnv's session endpoint closes a socket the client already closed, and the
    ``WebSocketDisconnect`` this raises is logged as a server error; a client leaving is normal,
    so it is dropped here (only for WebSocket connections)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        from starlette.websockets import WebSocketDisconnect

        try:
            await self.app(scope, receive, send)
        except WebSocketDisconnect:
            if scope.get("type") != "websocket":
                raise


class SpiceEnvClient(EnvClient[SpiceAction, SpiceObservation, SpiceState]):
    """A client of :func:`make_app`'s server: ``SpiceEnvClient(base_url=...).sync()`` for
    blocking calls (``with ... as env: env.reset(); env.step(SpiceAction(text=...))``), or the
    asynchronous methods as they are."""

    def _step_payload(self, action: SpiceAction) -> dict[str, Any]:
        return action.model_dump(exclude_none=True, exclude={"metadata"})

    def _parse_result(self, payload: dict[str, Any]) -> StepResult[SpiceObservation]:
        observation = SpiceObservation(**payload.get("observation", {}),
                                       reward=payload.get("reward"),
                                       done=bool(payload.get("done", False)))
        return StepResult(observation=observation, reward=payload.get("reward"),
                          done=bool(payload.get("done", False)))

    def _parse_state(self, payload: dict[str, Any]) -> SpiceState:
        return SpiceState(**payload)
