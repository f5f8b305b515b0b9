"""spice_env.integrations.openenv: ``spice serve`` as a real process on loopback, played with
openenv-core's own client — a full episode, bad actions, concurrent sessions, the HTTP routes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from agents.scripted import OracleChallenger
from spice_cli.main import main
from spice_env.integrations.openenv import SpiceAction, SpiceEnvClient

pytestmark = pytest.mark.slow
G = 4


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "spice_cli.main", "serve", "--port", str(port), "--corpus",
         "embedded:math", "--group-size", str(G), "--max-sessions", "4"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).json() == {"status": "healthy"}:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                output = process.stdout.read().decode() if process.stdout else ""
                raise AssertionError(f"spice serve did not come up: {output[-2000:]}")
            time.sleep(0.2)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def play(env: Any, seed: int) -> dict[str, Any]:
    """One episode with the scripted agents; returns the last step's observation info."""
    challenger = OracleChallenger(seed)
    result = env.reset(seed=seed)
    observation = result.observation
    assert observation.role == "challenger" and observation.document
    result = env.step(SpiceAction(text=challenger.act(observation.model_dump())))
    observation = result.observation
    assert observation.role == "reasoner" and not observation.document and not result.done
    task = observation.info["task"]
    answers = [f"\\boxed{{{task['answer']}}}"] * (G - 1) + ["\\boxed{no}"]
    result = env.step(SpiceAction(texts=answers))
    assert result.done and result.observation.role == "done"
    return {**result.observation.info, "reward": result.reward}


def test_a_full_episode_through_openenvs_client(server: str) -> None:
    with SpiceEnvClient(base_url=server).sync() as env:
        info = play(env, seed=0)
        assert info["pass_rate"] == pytest.approx((G - 1) / G)
        assert info["rewards"]["reasoner"] == [1.0, 1.0, 1.0, 0.0]
        assert info["reward"] == pytest.approx(info["rewards"]["challenger"])
        state = env.state()
        assert state.phase == "done" and state.step_count == 2


def test_bad_actions_are_answered_and_lose_nothing(server: str) -> None:
    with SpiceEnvClient(base_url=server).sync() as env:
        early = env.step(SpiceAction(text="too early"))
        assert "call reset" in early.observation.info["error"] and not early.done
        observation = env.reset(seed=3).observation
        wrong = env.step(SpiceAction(texts=["a", "b"]))  # the Challenger's turn takes text
        assert "takes text" in wrong.observation.info["error"]
        assert wrong.observation.role == "challenger" and wrong.observation.document_id == \
            observation.document_id
        step = env.step(SpiceAction(text=OracleChallenger(3).act(observation.model_dump())))
        assert step.observation.role == "reasoner"
        short = env.step(SpiceAction(texts=["\\boxed{1}"]))  # G answers are needed
        assert "takes 4 answers" in short.observation.info["error"]
        assert short.observation.role == "reasoner" and not short.done
        done = env.step(SpiceAction(texts=["\\boxed{1}"] * G))
        assert done.done
        invalid = env.reset(seed=4)
        assert invalid.observation.role == "challenger"
        garbage = env.step(SpiceAction(text="not a question"))
        assert garbage.done and garbage.reward == -0.1
        assert garbage.observation.info["invalid_reason"] == "no_json"


def test_concurrent_sessions_keep_their_own_episodes(server: str) -> None:
    with SpiceEnvClient(base_url=server).sync() as first, \
            SpiceEnvClient(base_url=server).sync() as second:
        a = first.reset(seed=10).observation
        b = second.reset(seed=11).observation
        a = first.step(SpiceAction(text=OracleChallenger(10).act(a.model_dump()))).observation
        assert second.state().phase == "challenger"  # the other session did not move
        b = second.step(SpiceAction(text=OracleChallenger(11).act(b.model_dump()))).observation
        assert a.role == b.role == "reasoner" and a.document_id != b.document_id
        assert first.step(SpiceAction(texts=["\\boxed{x}"] * G)).done
        assert second.state().phase == "reasoner"
        assert second.step(SpiceAction(texts=["\\boxed{y}"] * G)).done


def test_the_http_routes(server: str) -> None:
    assert httpx.get(f"{server}/health").json() == {"status": "healthy"}
    schema = httpx.get(f"{server}/schema").json()
    assert {"text", "texts"} <= set(schema["action"]["properties"])
    reset = httpx.post(f"{server}/reset", json={"seed": 1}).json()
    assert reset["observation"]["role"] == "challenger" and reset["done"] is False
    step = httpx.post(f"{server}/step", json={"action": {"text": "x"}})  # stateless over HTTP
    assert step.status_code == 200 and "call reset" in step.json()["observation"]["info"]["error"]
    bad = httpx.post(f"{server}/step", json={"action": {"text": 5}})
    assert bad.status_code == 422


def test_serve_refuses_bad_settings_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", "--port", str(port)]) == 2
        assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err
    assert main(["serve", "--port", "70000"]) == 2
    assert main(["serve", "--port", str(free_port()), "--corpus", "nowhere/x.jsonl"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("error:") for line in err)


@pytest.mark.timeout(600)
def test_the_client_inside_a_trl_rollout_func(server: str, tmp_path: Any) -> None:
    """TRL's OpenEnv pattern: a ``rollout_func`` that plays the Challenger's turn against the
    server with the trainer's own model and hands the environment's reward to a reward
    function (a tiny random model writes no valid question, so every reward is ρ)."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from agents.tiny import save_tiny_model

    folder = save_tiny_model(tmp_path / "tiny", seed=0)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    played: list[float] = []

    def rollout(prompts: list[Any], trainer: Any) -> dict[str, Any]:
        out: dict[str, list[Any]] = {"prompt_ids": [], "completion_ids": [], "logprobs": [],
                                     "env_reward": []}
        with SpiceEnvClient(base_url=server).sync() as env:
            for index, _ in enumerate(prompts):  # one completion per row TRL hands over
                observation = env.reset(seed=index).observation
                ids = tokenizer(observation.prompt, return_tensors="pt").input_ids[:, -64:]
                with torch.no_grad():
                    made = trainer.model.generate(ids, max_new_tokens=6, do_sample=True,
                                                  output_scores=True,
                                                  return_dict_in_generate=True,
                                                  pad_token_id=tokenizer.pad_token_id)
                completion = made.sequences[0, ids.shape[1]:]
                logprobs = [float(torch.log_softmax(score[0].float(), -1)[token])
                            for score, token in zip(made.scores, completion, strict=True)]
                result = env.step(SpiceAction(text=tokenizer.decode(completion)))
                played.append(float(result.reward or 0.0))
                out["prompt_ids"].append(ids[0].tolist())
                out["completion_ids"].append(completion.tolist())
                out["logprobs"].append(logprobs)
                out["env_reward"].append(played[-1])
        return out

    def env_reward(completions: Any, env_reward: list[float], **_: Any) -> list[float]:
        return list(env_reward)

    config = GRPOConfig(output_dir=str(tmp_path / "out"), use_cpu=True,
                        per_device_train_batch_size=2, num_generations=2,
                        max_completion_length=6, max_steps=1, logging_steps=1,
                        save_strategy="no", report_to=[], beta=0.0, loss_type="dr_grpo",
                        dataloader_num_workers=0, disable_tqdm=True)
    trainer = GRPOTrainer(model=AutoModelForCausalLM.from_pretrained(folder),
                          reward_funcs=[env_reward], args=config,
                          train_dataset=Dataset.from_list([{"prompt": "play"}] * 2),
                          processing_class=tokenizer, rollout_func=rollout)
    trainer.train()
    assert played and set(played) == {-0.1}
    logged = [e for e in trainer.state.log_history if "rewards/env_reward/mean" in e]
    assert logged and logged[0]["rewards/env_reward/mean"] == pytest.approx(-0.1)
