"""SPICE as an environment of the ``verifiers`` library (its v1 API, ``verifiers>=0.4``).

Two kinds of episode, both scored by this library's verifier:

* **reasoner** — the Reasoner task over Challenger-made questions: each task is one question of a
  file written by ``spice mine`` (or any JSON lines / Parquet file with ``question`` and
  ``answer`` columns); the agent answers without the document and its trace gets the reward
  ``correct`` (1.0 or 0.0, plus ``game.reasoner_format_weight`` for a boxed answer). Run it with
  ``-r G`` rollouts per task to get GRPO groups.
* **game** — the two-role game over a corpus: each task is one document; the ``challenger`` agent
  writes a question about it (after the task-type selector's turn with
  ``game.format_choice="selector"``), then the ``reasoner`` agent answers the question G times
  (``game.group_size``) without the document. Each trace gets its role's reward (the Challenger:
  the configured Challenger reward of the G answers, or ρ for an invalid question; a Reasoner:
  its answer's reward) and the metrics ``valid``, ``pass_rate`` (Challenger) and ``correct``
  (Reasoner). ``-r N`` rollouts per document give the Challenger's N attempts.

The verifiers plugin is the top-level module :mod:`spice_verifiers` (verifiers resolves an
environment by a top-level module name): ``vf-eval spice-verifiers -m <model> ...`` on the
command line, or :func:`load_environment` in Python. Its default harness,
:class:`SpiceChatHarness`, sends each turn as one chat completion from the host (no sandbox, no
program to install); any verifiers harness can be chosen per role instead
(``--env.reasoner.harness.id null``).
"""

from __future__ import annotations

import asyncio
import atexit
import json
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import httpx
import numpy as np
import verifiers.v1 as vf
from pydantic import Field, field_validator, model_validator

from spice_env.corpus import DEFAULT_MAX_TOKENS, Document, load_corpus
from spice_env.game import GameConfig, SpiceGame, choose_format
from spice_env.integrations.trl import gold_task
from spice_env.prompting import challenger_prompt, reasoner_prompt, selector_prompt
from spice_env.tasks import Task
from spice_env.verify import Verifier

Mode = Literal["reasoner", "game"]
ENV_ID = "spice_verifiers"
"""The verifiers id of this environment (the top-level plugin module)."""

_verifier: Verifier | None = None
_verifier_lock = threading.Lock()


def shared_verifier() -> Verifier:
    """The verifier every SPICE task of this process scores with (started on first use and
    stopped at exit). Verification is serialised: the verifier's worker pool serves one batch at
    a time."""
    global _verifier
    with _verifier_lock:
        if _verifier is None:
            _verifier = Verifier()
            atexit.register(_verifier.close)
        return _verifier


async def _verify(pairs: Sequence[tuple[Task, str]]) -> list[Any]:
    def run() -> list[Any]:
        verifier = shared_verifier()
        with _verifier_lock:
            return list(verifier.verify_many(pairs))

    return await asyncio.to_thread(run)


class SpiceTaskData(vf.TaskData):
    """One SPICE task: a question with its gold answer (``role="reasoner"``), or a document for
    the Challenger (``role="challenger"``)."""

    role: Literal["reasoner", "challenger"] = Field(
        default="reasoner", description="Who plays the task's prompt.")
    answer: str | None = Field(default=None, description="The gold answer (reasoner tasks).")
    answer_type: str | None = Field(default=None, description="How the answer is checked.")
    options: dict[str, str] | None = Field(default=None, description="MCQ options by letter.")
    document_id: str = Field(default="", description="The grounding document's id.")
    source: str = Field(default="", description="The grounding document's source.")
    task_format: str = Field(default="", description="mcq or free_form (challenger tasks; empty "
                             "when the task-type selector picks it).")
    document: str = Field(default="", description="The document's text (challenger tasks).")
    scored_by: Literal["task", "game"] = Field(
        default="task", description="`task`: the task scores its answer against its gold; "
        "`game`: the game scores the episode (a question the Challenger just wrote).")


class SpiceTask(vf.Task[SpiceTaskData, vf.State, vf.TaskConfig]):
    """A SPICE task; a reasoner task loaded from a file scores its answer with the verifier."""

    reasoner_format_weight: float = 0.0

    @vf.reward
    async def correct(self, trace: vf.Trace) -> float | dict[str, float]:
        """1.0 for an answer the verifier accepts, else 0.0 (plus the format weight for a boxed
        answer); nothing for a task the game scores."""
        data = self.data
        if data.role != "reasoner" or data.scored_by != "task" or not data.answer:
            return {}
        task = gold_task(data.answer, data.answer_type, data.options)
        (verdict,) = await _verify([(task, trace.last_reply)])
        trace.record_metric("boxed", float(verdict.outcome != "no_answer"))
        bonus = self.reasoner_format_weight if verdict.outcome != "no_answer" else 0.0
        return (1.0 if verdict.correct else 0.0) + bonus


class SpiceTasksetConfig(vf.TasksetConfig):
    """What the tasks are (``--env.taskset.*``)."""

    id: str = ENV_ID
    mode: Mode = Field(default="game", description="`game`: the two-role game over the "
                       "documents of `corpus`; `reasoner`: the questions of `questions`.")
    questions: Path | None = Field(default=None, description="A JSON lines or Parquet file of "
                                   "questions (`spice mine` writes one); reasoner mode.")
    corpus: str = Field(default="embedded", description="A corpus spec (`embedded`, a path, a "
                        "hub dataset); game mode.")
    max_tokens: int = Field(default=DEFAULT_MAX_TOKENS, ge=16,
                            description="Segment length when loading the corpus.")
    limit: int | None = Field(default=None, ge=1, description="Use the first `limit` questions "
                              "or documents only.")
    seed: int = Field(default=0, description="Seeds the task formats of the documents.")
    game: GameConfig = Field(default_factory=GameConfig, description="The game's settings "
                             "(`spice_env.game.GameConfig`).")

    @field_validator("game")
    @classmethod
    def _batch_free(cls, game: GameConfig) -> GameConfig:
        if game.repetition_penalty:
            raise ValueError("game.repetition_penalty clusters the questions of a whole "
                             "iteration; an episode of one document cannot apply it")
        if game.rho_schedule:
            raise ValueError("game.rho_schedule follows the training iteration, which an "
                             "episode does not know; set game.rho")
        if not isinstance(game.challenger_reward, str):
            raise ValueError("game.challenger_reward must be a registered name here (the "
                             "config travels to other processes)")
        return game

    @model_validator(mode="after")
    def _questions_for_reasoner(self) -> SpiceTasksetConfig:
        if self.mode == "reasoner" and self.questions is None:
            raise ValueError("reasoner mode reads its questions from a file: set "
                             "taskset.questions (`spice mine` writes one)")
        return self


class SpiceTaskset(vf.Taskset[SpiceTask, SpiceTasksetConfig]):
    """The questions (reasoner mode) or the documents (game mode) of the config."""

    def load(self) -> Iterator[SpiceTask]:
        config = self.config
        if config.mode == "reasoner":
            assert config.questions is not None  # the config says so
            rows = read_questions(config.questions)
            for index, row in enumerate(rows[:config.limit]):
                yield self._task(question_data(row, index, config.game.prompt_style))
            return
        corpus = load_corpus(config.corpus, max_tokens=config.max_tokens)
        rng = np.random.default_rng([config.seed, 11])
        for index, document in enumerate(corpus):
            if config.limit is not None and index >= config.limit:
                return
            task_format = ("" if config.game.format_choice == "selector"
                           else choose_format(config.game, rng))
            yield self._task(document_data(config.game, document, task_format))

    def _task(self, data: SpiceTaskData) -> SpiceTask:
        task = SpiceTask(data, self.config.task)
        task.reasoner_format_weight = self.config.game.reasoner_format_weight
        return task


def document_data(config: GameConfig, document: Document, task_format: str) -> SpiceTaskData:
    """The Challenger's task for ``document``: the task-type selector's prompt when
    ``task_format`` is empty, else the Challenger's prompt for that format."""
    if task_format:
        text = document.text if config.grounding else None
        rendered = challenger_prompt(text, task_format, config.prompt_style)  # type: ignore[arg-type]
    else:
        rendered = selector_prompt(document.text, config.prompt_style)
    return SpiceTaskData(
        id=document.id, name=document.id, role="challenger",
        prompt=[dict(m) for m in rendered.messages], document_id=document.id,
        source=document.source, task_format=task_format, document=document.text)


def question_data(row: Mapping[str, Any], index: int, style: Any = "paper") -> SpiceTaskData:
    """A reasoner task from one row of a questions file: ``prompt`` (chat messages) or
    ``question``, ``answer``, and optionally ``answer_type``, ``options``, ``document_id`` and
    ``source``."""
    answer = row.get("answer")
    if answer is None or not str(answer).strip():
        raise ValueError(f"question {index}: no gold answer (column 'answer')")
    prompt = row.get("prompt")
    if not (isinstance(prompt, Sequence) and not isinstance(prompt, str) and prompt):
        question = row.get("question")
        if not isinstance(question, str) or not question.strip():
            raise ValueError(f"question {index}: neither a 'prompt' nor a 'question'")
        prompt = list(reasoner_prompt(question, style).messages)
    gold = gold_task(str(answer), row.get("answer_type"), row.get("options"), row=index)
    document_id = str(row.get("document_id") or "")
    return SpiceTaskData(
        id=f"{document_id or 'question'}:{index}", prompt=[dict(m) for m in prompt],
        role="reasoner", answer=gold.answer, answer_type=gold.answer_type, options=gold.options,
        document_id=document_id, source=str(row.get("source") or ""))


def read_questions(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a questions file: JSON lines (``.jsonl``) or Parquet (``.parquet``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such questions file")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return list(pq.read_table(path).to_pylist())
    if path.suffix != ".jsonl":
        raise ValueError(f"{path}: a questions file ends in .jsonl or .parquet")
    rows = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: not JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{number}: a row must be a JSON object")
            rows.append(row)
    return rows


# -- the harness: one chat completion per turn, sent from the host ------------------------------

class SpiceChatHarnessConfig(vf.HarnessConfig):
    """Settings of :class:`SpiceChatHarness`."""

    request_timeout: float = Field(default=600.0, gt=0, description="Seconds one completion "
                                   "may take.")


class SpiceChatHarness(vf.Harness[SpiceChatHarnessConfig]):
    """Sends the task's prompt as one chat completion to the rollout's model endpoint, from the
    host process: nothing runs in the runtime and nothing is installed, so a single-turn SPICE
    role needs no sandbox. The sampling settings are the run's (the endpoint applies them)."""

    APPENDS_SYSTEM_PROMPT = True
    EXECUTES_CODE = False
    NEEDS_CONTAINER = False

    async def launch(self, ctx: vf.ModelContext, trace: vf.Trace, runtime: vf.Runtime,
                     endpoint: str, secret: str, mcp_urls: dict[str, str], data: vf.TaskData,
                     tool_interception_url: str | None = None) -> vf.ProgramResult:
        from verifiers.v1.dialects.chat import message_to_wire

        system, prompt = self.resolve_prompt(data)
        messages: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
        if isinstance(prompt, str):
            messages.append({"role": "user", "content": prompt})
        else:
            messages.extend(message_to_wire(message) for message in prompt or [])
        try:
            async with httpx.AsyncClient(timeout=self.config.request_timeout) as client:
                response = await client.post(
                    endpoint.rstrip("/") + "/chat/completions",
                    headers={"Authorization": f"Bearer {secret}"},
                    json={"model": ctx.model, "messages": messages})
        except httpx.TransportError as exc:
            from verifiers.v1.errors import MODEL_TRANSPORT_ERROR_EXIT_CODE

            return vf.ProgramResult(MODEL_TRANSPORT_ERROR_EXIT_CODE, "",
                                    f"the model endpoint is unreachable: {exc}")
        if response.status_code != 200:
            return vf.ProgramResult(1, "", f"the model endpoint answered {response.status_code}: "
                                    f"{response.text[:500]}")
        return vf.ProgramResult(0, _reply_text(response), "")


def _reply_text(response: httpx.Response) -> str:
    try:
        content = response.json()["choices"][0]["message"].get("content")
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return ""
    return content if isinstance(content, str) else ""


# -- the environment: one document's game, or one question -------------------------------------

def _local_agent() -> vf.AgentConfig:
    return vf.AgentConfig(runtime=vf.SubprocessConfig())


class SpiceEnvConfig(vf.EnvConfig):
    """The SPICE environment: the taskset (``--env.taskset.*``) and the two roles
    (``--env.challenger.*``, ``--env.reasoner.*``: model, sampling, harness, runtime)."""

    taskset: SpiceTasksetConfig = Field(default_factory=SpiceTasksetConfig)
    challenger: vf.AgentConfig = _local_agent()
    reasoner: vf.AgentConfig = _local_agent()


class SpiceEnv(vf.Env[SpiceEnvConfig]):
    """Plays a question (reasoner mode) or a document's game (game mode); see the module
    docstring."""

    def __init__(self, config: SpiceEnvConfig) -> None:
        super().__init__(config)
        self._game: SpiceGame | None = None

    @property
    def game(self) -> SpiceGame:
        """The game's rules, scoring with :func:`shared_verifier`."""
        if self._game is None:
            self._game = SpiceGame(self.config.taskset.game, shared_verifier())
        return self._game

    async def run(self, task: vf.Task, agents: vf.Agents) -> None:
        data: SpiceTaskData = task.data
        if data.role == "reasoner":
            await agents.reasoner.run(task)
            return
        document = Document(id=data.document_id, text=data.document, source=data.source)
        task_format = data.task_format
        if not task_format:
            selector = await agents.challenger.run(task)
            result, chosen = self.game.select(selector.last_reply, np.random.default_rng())
            selection = result.selection.model_dump(mode="json") if result.selection else None
            selector.info["spice"] = {"step": "select", "selection": selection,
                                      "invalid_reason": result.reason, "task_format": chosen}
            if chosen is None or not selector.ok:
                return
            task_format = chosen
            task = type(task)(document_data(self.config.taskset.game, document, chosen),
                              task.config)
        attempt = await agents.challenger.run(task)
        parsed = self.game.parse(attempt.last_reply, document, task_format)  # type: ignore[arg-type]
        attempt.info["spice"] = {
            "step": "question", "task_format": task_format, "invalid_reason": parsed.reason,
            "detail": parsed.detail,
            "task": parsed.task.model_dump(mode="json") if parsed.task else None}
        if parsed.task is None or not attempt.ok:
            return
        question = self.game.reasoner_rendered(parsed.task)
        minted = SpiceTask(SpiceTaskData(
            id=f"{document.id}:question", prompt=[dict(m) for m in question.messages],
            role="reasoner", answer=parsed.task.answer, answer_type=parsed.task.answer_type,
            options=parsed.task.options, document_id=document.id, source=document.source,
            scored_by="game"), task.config)
        await asyncio.gather(*(agents.reasoner.run(minted)
                               for _ in range(self.config.taskset.game.group_size)))

    async def finalize(self, task: vf.Task, episode: vf.Episode) -> None:
        if task.data.role == "reasoner":
            return  # the question scored itself
        if not all(trace.ok for trace in episode.traces):
            return  # a failed turn (an endpoint error) is not the Challenger's doing: no rewards
        steps = {t.info.get("spice", {}).get("step"): t for t in episode.traces
                 if t.agent.name == "challenger"}
        selector, attempt = steps.get("select"), steps.get("question")
        answers = [t for t in episode.traces if t.agent.name == "reasoner"]
        reward = self.config.taskset.game.rho
        if attempt is not None:
            gold = attempt.info["spice"]["task"]
            attempt.record_metric("valid", float(gold is not None))
            if gold is not None:
                outcome = await asyncio.to_thread(self._score, Task.model_validate(gold),
                                                  [t.last_reply for t in answers])
                reward = outcome.challenger_reward
                attempt.record_metric("pass_rate", outcome.pass_rate)
                for trace, value, verdict in zip(answers, outcome.reasoner_rewards,
                                                 outcome.verdicts, strict=True):
                    trace.record_reward("correct", value)
                    trace.record_metric("boxed", float(verdict.outcome != "no_answer"))
            attempt.record_reward("challenger", reward)
        if selector is not None:
            selector.record_metric("valid", float(attempt is not None))
            selector.record_reward("challenger", reward)

    def _score(self, gold: Task, answers: list[str]) -> Any:
        game = self.game
        with _verifier_lock:
            return game.score(gold, answers)


def load_environment(mode: Mode = "game", *, questions: str | Path | None = None,
                     corpus: str = "embedded", limit: int | None = None, seed: int = 0,
                     game: GameConfig | None = None, **settings: Any) -> SpiceEnv:
    """The SPICE environment as a verifiers ``Env``: ``mode="game"`` plays the two-role game over
    the documents of ``corpus``; ``mode="reasoner"`` answers the questions of ``questions`` (a
    ``spice mine`` file). ``game`` (or its fields as keyword arguments) sets the rules."""
    if game is not None and settings:
        raise TypeError("give the game's settings either as game= or as keyword arguments")
    rules = game if game is not None else GameConfig(**settings)
    taskset = SpiceTasksetConfig(mode=mode, questions=Path(questions) if questions else None,
                                 corpus=corpus, limit=limit, seed=seed, game=rules)
    env = vf.load_environment(SpiceEnvConfig(taskset=taskset))
    assert isinstance(env, SpiceEnv)
    return env
