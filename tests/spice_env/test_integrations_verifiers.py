"""spice_env.integrations.verifiers with the real verifiers library (v1 API): the Reasoner task
over mined questions, the two-role game, the task-type selector, ``vf-eval`` on the command line,
and bad input. The model is a scripted OpenAI-compatible server on loopback, so every reward is
known in advance."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import verifiers.v1 as vf

from spice_cli.main import main
from spice_env.integrations import verifiers as spice_vf
from spice_env.mining import write_questions
from spice_env.rewards import DEFAULT_RHO, get_challenger_reward

pytestmark = pytest.mark.slow

QUESTION = "How many legs do 3 spiders have in total?"
FREE_FORM = json.dumps({"question": QUESTION, "answer": "24", "answer_type": "integer"})
SELECT_FREE_FORM = json.dumps({"suitable_for_mcq": False, "suitable_for_free_form": True,
                               "best_answer_type": "integer", "reason": "it has counts"})
Reply = Callable[[list[dict[str, Any]]], str]


class ScriptedModel:
    """An OpenAI-compatible chat server whose replies come from ``reply(messages)``; it records
    every request body."""

    def __init__(self) -> None:
        self.reply: Reply = lambda messages: ""
        self.status = 200
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        model = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                with model._lock:
                    model.requests.append(body)
                    text = model.reply(body["messages"])
                    status = model.status
                payload = {"id": "c", "object": "chat.completion", "created": 0,
                           "model": body["model"],
                           "choices": [{"index": 0, "finish_reason": "stop",
                                        "message": {"role": "assistant", "content": text}}],
                           "usage": {"prompt_tokens": 8, "completion_tokens": 4,
                                     "total_tokens": 12}}
                data = json.dumps(payload if status == 200 else {"error": "down"}).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def script(self, challenger: list[str], reasoner: list[str]) -> None:
        """Cycle through ``challenger`` replies for the Challenger's (and selector's) prompts and
        ``reasoner`` replies for the Reasoner's."""
        turns = {"challenger": itertools.cycle(challenger), "reasoner": itertools.cycle(reasoner)}
        self.requests.clear()
        self.reply = lambda messages: next(turns[role_of(messages)])


def role_of(messages: list[dict[str, Any]]) -> str:
    return "reasoner" if QUESTION in messages[-1]["content"] else "challenger"


@pytest.fixture(scope="module")
def model() -> Iterator[ScriptedModel]:
    os.environ.setdefault("SPICE_TEST_KEY", "local")
    served = ScriptedModel()
    yield served
    served.server.shutdown()


def context(model: ScriptedModel, **sampling: Any) -> Any:
    client = vf.EvalClientConfig(base_url=model.url, api_key_var="SPICE_TEST_KEY")
    return vf.ModelContext(client=client, model="scripted",
                           sampling=vf.SamplingConfig(**sampling))


def play(env: Any, model: ScriptedModel, tasks: list[Any] | None = None, **sampling: Any
         ) -> list[Any]:
    """One episode per task, one after another (so scripted replies arrive in order)."""
    async def run() -> list[Any]:
        async with env.serving():
            return [await env.run_episode(task, context(model, **sampling))
                    for task in (tasks if tasks is not None else list(env.taskset))]

    return asyncio.run(run())


def traces(episode: Any, name: str) -> list[Any]:
    return [t for t in episode.traces if t.agent.name == name]


def score(trace: Any, name: str) -> float | None:
    reward = trace.rewards.get(name)
    return None if reward is None else reward.score


# -- the Reasoner task over mined questions ----------------------------------------------------

@pytest.fixture(scope="module")
def mined(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mined") / "questions.jsonl"
    assert main(["mine", "--agent", "scripted", "--corpus", "embedded:math", "--documents", "4",
                 "--group-size", "2", "--batch-size", "2", "--output", str(out)]) == 0
    return out


def wrong(row: dict[str, Any]) -> str:
    if row["answer_type"] == "mcq_letter":
        return next(letter for letter in "ABCD" if letter != row["answer"])
    return "no idea"


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_reasoner_mode_scores_each_answer_against_its_gold(
        model: ScriptedModel, mined: Path, tmp_path: Path, suffix: str) -> None:
    unique = {}  # the N attempts on a document can ask the same question
    for line in mined.read_text().splitlines():
        row = json.loads(line)
        unique.setdefault(row["prompt"][-1]["content"], row)
    rows = list(unique.values())
    assert len(rows) >= 2, "the scripted miner found too few questions"
    path = write_questions(rows, tmp_path / f"questions{suffix}")
    answers = {row["prompt"][-1]["content"]: (
        f"So it is \\boxed{{{row['answer']}}}." if i % 2 == 0 else f"\\boxed{{{wrong(row)}}}")
        for i, row in enumerate(rows)}
    model.requests.clear()
    model.reply = lambda messages: answers[messages[-1]["content"]]
    env = spice_vf.load_environment("reasoner", questions=path)
    episodes = play(env, model, temperature=0.7, max_tokens=96)
    assert len(episodes) == len(rows)
    for i, episode in enumerate(episodes):
        assert episode.ok, episode.errors
        (trace,) = traces(episode, "reasoner")
        assert score(trace, "correct") == (1.0 if i % 2 == 0 else 0.0)
        assert trace.metrics["boxed"] == 1.0
    # the Reasoner saw the mined prompt, with the run's sampling settings
    assert [r["messages"] for r in model.requests] == [row["prompt"] for row in rows]
    assert all(r["temperature"] == 0.7 and r["max_tokens"] == 96 for r in model.requests)


def test_a_questions_file_of_plain_rows(model: ScriptedModel, tmp_path: Path) -> None:
    path = tmp_path / "own.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in [
        {"question": QUESTION, "answer": "24"},
        {"question": QUESTION, "answer": "B", "options": ["12", "24", "32", "8"]},
        {"question": QUESTION, "answer": "25", "answer_type": "integer"},
    ]) + "\n")
    model.script(challenger=["unused"], reasoner=["\\boxed{24}", "\\boxed{B}", "24"])
    env = spice_vf.load_environment("reasoner", questions=path, reasoner_format_weight=0.1)
    rewards = [score(traces(e, "reasoner")[0], "correct") for e in play(env, model)]
    assert rewards == [pytest.approx(1.1), pytest.approx(1.1), 0.0]  # the last is not boxed


# -- the two-role game -------------------------------------------------------------------------

def test_game_mode_rewards_both_roles(model: ScriptedModel) -> None:
    env = spice_vf.load_environment("game", corpus="embedded:math", limit=2, group_size=2,
                                    task_formats="free_form")
    tasks = list(env.taskset)
    model.script(challenger=[FREE_FORM, "I would rather not."],
                 reasoner=["\\boxed{24}", "\\boxed{18}"])
    valid, invalid = play(env, model, tasks)
    assert valid.ok and invalid.ok
    (attempt,) = traces(valid, "challenger")
    answers = traces(valid, "reasoner")
    expected = get_challenger_reward("variance")([True, False])
    assert score(attempt, "challenger") == pytest.approx(expected)
    assert attempt.metrics == {"valid": 1.0, "pass_rate": 0.5}
    assert sorted(score(t, "correct") for t in answers) == [0.0, 1.0]
    assert attempt.info["spice"]["task"]["answer"] == "24"
    # the Reasoner never sees the document; the Challenger does
    document = tasks[0].data.document
    reasoner_prompts = [r["messages"] for r in model.requests if role_of(r["messages"]) ==
                        "reasoner"]
    assert len(reasoner_prompts) == 2
    assert all(document[:200] not in m[-1]["content"] for m in reasoner_prompts)
    assert document[:200] in model.requests[0]["messages"][-1]["content"]
    (rejected,) = traces(invalid, "challenger")
    assert score(rejected, "challenger") == DEFAULT_RHO and rejected.metrics == {"valid": 0.0}
    assert rejected.info["spice"]["invalid_reason"] and not traces(invalid, "reasoner")


def test_majority_labels_judge_answers_without_the_gold(model: ScriptedModel) -> None:
    env = spice_vf.load_environment("game", corpus="embedded:math", limit=1, group_size=3,
                                    task_formats="free_form", label_source="majority",
                                    challenger_reward="r_zero")
    model.script(challenger=[FREE_FORM], reasoner=["\\boxed{7}", "\\boxed{7}", "\\boxed{24}"])
    (episode,) = play(env, model)
    assert sorted(score(t, "correct") for t in traces(episode, "reasoner")) == [0.0, 1.0, 1.0]
    (attempt,) = traces(episode, "challenger")
    assert attempt.metrics["pass_rate"] == pytest.approx(2 / 3)


def test_the_selector_turn_picks_the_format_and_shares_the_reward(model: ScriptedModel) -> None:
    env = spice_vf.load_environment("game", corpus="embedded:math", limit=2, group_size=2,
                                    format_choice="selector", rho=-0.3)
    tasks = list(env.taskset)
    assert all(t.data.task_format == "" for t in tasks)
    model.script(challenger=[SELECT_FREE_FORM, FREE_FORM, "no json here"],
                 reasoner=["\\boxed{24}"])
    chosen, refused = play(env, model, tasks)
    selector, attempt = traces(chosen, "challenger")
    assert selector.info["spice"] == {
        "step": "select", "invalid_reason": None, "task_format": "free_form",
        "selection": {"suitable_for_mcq": False, "suitable_for_free_form": True,
                      "best_answer_type": "integer", "reason": "it has counts"}}
    assert attempt.info["spice"]["task_format"] == "free_form"
    assert score(selector, "challenger") == score(attempt, "challenger") == pytest.approx(
        get_challenger_reward("variance")([True, True]))
    (only,) = traces(refused, "challenger")
    assert only.info["spice"]["invalid_reason"] == "no_json"
    assert score(only, "challenger") == -0.3 and only.metrics == {"valid": 0.0}


def test_an_endpoint_error_is_no_reward(model: ScriptedModel) -> None:
    env = spice_vf.load_environment("game", corpus="embedded:math", limit=1, group_size=2,
                                    task_formats="free_form")
    model.script(challenger=[FREE_FORM], reasoner=["\\boxed{24}"])
    model.status = 500
    try:
        (episode,) = play(env, model)
    finally:
        model.status = 200
    assert not episode.ok
    (attempt,) = traces(episode, "challenger")
    assert not attempt.ok and "500" in json.dumps([e.message for e in attempt.errors])
    assert score(attempt, "challenger") is None  # not ρ: the model never answered


# -- vf-eval, as a user runs it ----------------------------------------------------------------

@pytest.mark.parametrize("mode", ["game", "reasoner"])
def test_vf_eval_runs_the_plugin(model: ScriptedModel, mined: Path, tmp_path: Path,
                                 mode: str) -> None:
    rows = {json.loads(line)["prompt"][-1]["content"]: json.loads(line)["answer"]
            for line in mined.read_text().splitlines()}

    def reply(messages: list[dict[str, Any]]) -> str:
        text = messages[-1]["content"]
        if text in rows:
            return f"\\boxed{{{rows[text]}}}"
        return "\\boxed{24}" if role_of(messages) == "reasoner" else FREE_FORM

    model.reply = reply
    taskset = (["--env.taskset.mode", "game", "--env.taskset.corpus", "embedded:math",
                "--env.taskset.game.task-formats", "free_form",
                "--env.taskset.game.group-size", "2"] if mode == "game" else
               ["--env.taskset.mode", "reasoner", "--env.taskset.questions", str(mined)])
    vf_eval = Path(sys.executable).with_name("vf-eval")
    result = subprocess.run(
        [str(vf_eval), "spice-verifiers", "-m", "scripted", "--client.base-url", model.url,
         "--client.api-key-var", "SPICE_TEST_KEY", "-n", "2", "-r", "2", "--no-push",
         "--no-rich", "-o", str(tmp_path), *taskset],
        capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    (out,) = tmp_path.glob("*/traces.jsonl")
    episodes = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(episodes) == 4 and all(e["ok"] for e in episodes)
    for episode in episodes:
        by_role = {t["agent"]["name"]: t for t in episode["traces"]}
        assert by_role["reasoner"]["rewards"]["correct"]["score"] == 1.0
        if mode == "game":
            assert by_role["challenger"]["metrics"] == {"valid": 1.0, "pass_rate": 1.0}
            assert len(episode["traces"]) == 3


# -- bad input ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("content", "message"), [
    ('{"question": "q", "answer": "1"}\nnot json\n', r"bad\.jsonl:2: not JSON"),
    ('["a list"]\n', r"bad\.jsonl:1: a row must be a JSON object"),
    ('{"question": "q"}\n', r"question 0: no gold answer"),
    ('{"answer": "1"}\n', r"question 0: neither a 'prompt' nor a 'question'"),
    ('{"question": "q", "answer": "1", "answer_type": "roman"}\n', r"row 0: answer_type 'roman'"),
])
def test_a_bad_questions_file_is_one_clear_error(tmp_path: Path, content: str,
                                                 message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    env = spice_vf.load_environment("reasoner", questions=path)
    with pytest.raises(ValueError, match=message):
        list(env.taskset)


def test_settings_that_cannot_work_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"set taskset\.questions"):
        spice_vf.load_environment("reasoner")
    with pytest.raises(ValueError, match="repetition_penalty"):
        spice_vf.load_environment("game", repetition_penalty=True)
    with pytest.raises(ValueError, match="rho_schedule"):
        spice_vf.load_environment("game", rho_schedule=[[0, 0.0], [10, -0.1]])
    with pytest.raises(FileNotFoundError, match="no such questions file"):
        list(spice_vf.load_environment("reasoner", questions=tmp_path / "none.jsonl").taskset)
    (tmp_path / "q.csv").write_text("question,answer\n")
    with pytest.raises(ValueError, match=r"ends in \.jsonl or \.parquet"):
        list(spice_vf.load_environment("reasoner", questions=tmp_path / "q.csv").taskset)
