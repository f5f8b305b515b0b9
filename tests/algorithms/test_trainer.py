"""The Fabric trainer end to end with tiny random models.

A tiny random model never writes a parsable question, so these runs wrap it in
:class:`agents.scripted.ScriptedTextAgent`: token ids and log-probabilities are the model's own,
some texts are scripted so that rewards vary within groups and the loss has a gradient.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import torch

from agents.scripted import AnswerKey, ScriptedTextAgent
from agents.tiny import save_tiny_model
from algorithms.config import ConfigError, TrainConfig, build_config
from algorithms.runlog import read_jsonl
from algorithms.trainer import train

if TYPE_CHECKING:
    from tests.algorithms.conftest import RunFn, TwoProcessRun

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "model", seed=0)


def tiny_config(folder: Path, output: Path, **sections: dict[str, Any]) -> TrainConfig:
    data: dict[str, Any] = {
        "model": {"name": str(folder)},
        "rollout": {"corpus": "embedded:math", "batch_size": 2, "attempts": 4,
                    "max_document_tokens": 128},
        "game": {"group_size": 2},
        "challenger": {"max_new_tokens": 12},
        "reasoner": {"max_new_tokens": 12, "n": 2},
        "optimizer": {"lr": 1e-3},
        "trainer": {"iterations": 2, "output_dir": str(output), "micro_batch_size": 3,
                    "save_every": 1, "progress": False},
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return build_config(data)


def weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


@pytest.mark.parametrize("algorithm", ["drgrpo", "grpo", "ppo"])
def test_two_iterations_learn_and_leave_their_files(tiny_folder: Path, tmp_path: Path,
                                                    algorithm: str) -> None:
    out = tmp_path / "run"
    config = tiny_config(tiny_folder, out, algorithm={"name": algorithm})
    summary = train(config, agent_wrapper=ScriptedTextAgent)

    assert summary.iterations == 2 and len(summary.history) == 2
    for record in summary.history:
        assert math.isfinite(record["train/loss"]) and math.isfinite(record["train/entropy"])
        assert 0.0 <= record["train/clip_fraction"] <= 1.0
        assert record["challenger/valid_rate"] > 0 and record["reasoner/boxed_rate"] == 1.0
        for key in ("time/generate", "time/verify", "time/train", "time/sync",
                    "throughput/generated_tokens_per_s", "challenger/zero_variance_fraction",
                    "challenger/completion_tokens", "pass_rate_hist/0of2",
                    "train/skipped_samples", "memory/generate", "memory/train",
                    "memory/iteration"):
            assert key in record, key
        assert record["memory/iteration"] >= record["memory/train"] > 0.1
    if algorithm == "ppo":
        assert "train/value_loss" in summary.history[0]
    before, after = weights(tiny_folder), weights(out / "model")
    changed = [n for n in before if not torch.equal(before[n], after[n])]
    assert len(changed) > len(before) // 2  # the update reached most tensors

    assert (out / "logs" / "metrics.csv").read_text().count("\n") == 3  # header + 2
    assert {"setup", "generate", "verify", "train", "sync", "save", "export"} <= set(
        summary.memory)
    assert json.loads((out / "memory.json").read_text()) == summary.memory
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert (out / "plots" / "curves.png").stat().st_size > 10_000
    assert (out / "checkpoints" / "last").read_text() == "iter-000002.ckpt"
    assert sorted(p.name for p in (out / "checkpoints").glob("*.ckpt")) == [
        "iter-000001.ckpt", "iter-000002.ckpt"]
    rollouts = read_jsonl(out / "rollouts.jsonl")
    assert [r["iteration"] for r in rollouts] == [1, 1, 2, 2]
    attempt = next(a for r in rollouts for a in r["attempts"] if a["kept"] and a["valid"])
    assert attempt["question"] and attempt["gold"] is not None
    assert {"text", "extracted", "correct", "reward"} <= set(attempt["answers"][0])
    assert TrainConfig.model_validate(
        __import__("yaml").safe_load((out / "config.yaml").read_text())) == config


class Killed(Exception):
    """Stands in for the process being killed mid-iteration."""


def killer(after_calls: int) -> Any:
    calls = {"n": 0}

    def wrap(agent: Any) -> Any:
        scripted = ScriptedTextAgent(agent)
        inner = scripted.generate

        def generate(observations: Any, n: Any = None) -> Any:
            calls["n"] += 1
            if calls["n"] > after_calls:
                raise Killed
            return inner(observations, n)

        scripted.generate = generate  # type: ignore[method-assign]
        return scripted
    return wrap


def test_resume_continues_a_killed_run_exactly(tiny_folder: Path, tmp_path: Path) -> None:
    straight = tiny_config(tiny_folder, tmp_path / "straight", trainer={
        "iterations": 4, "save_every": 2, "precision": "32-true"})
    train(straight, agent_wrapper=ScriptedTextAgent)

    resumed = tiny_config(tiny_folder, tmp_path / "resumed", trainer={
        "iterations": 4, "save_every": 2, "precision": "32-true"})
    with pytest.raises(Killed):  # dies in iteration 3, after the checkpoint of iteration 2
        train(resumed, agent_wrapper=killer(after_calls=5))
    run = tmp_path / "resumed"
    with (run / "metrics.jsonl").open("a") as handle:  # what a kill mid-write leaves
        handle.write('{"iteration": 3, "challenger/reward": 0.5}\n{"iterat')
    with (run / "rollouts.jsonl").open("a") as handle:
        handle.write('{"iteration": 3, "rank": 0, "docu')
    with pytest.raises(ConfigError, match="--resume"):
        train(resumed, agent_wrapper=ScriptedTextAgent)  # a fresh start would mix two runs
    summary = train(resumed, resume=True, agent_wrapper=ScriptedTextAgent)

    assert summary.iterations == 4
    assert [r["iteration"] for r in summary.history] == [1, 2, 3, 4]
    documents = [[(r["iteration"], r["document_id"]) for r in
                  read_jsonl(tmp_path / name / "rollouts.jsonl")]
                 for name in ("straight", "resumed")]
    assert documents[0] == documents[1] and len(documents[0]) == 8
    a = weights(tmp_path / "straight" / "model")
    b = weights(tmp_path / "resumed" / "model")
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-6)
    first = read_jsonl(tmp_path / "straight" / "metrics.jsonl")
    for x, y in zip(first, summary.history, strict=True):
        assert x["challenger/reward"] == pytest.approx(y["challenger/reward"])
        assert x["train/loss"] == pytest.approx(y["train/loss"], abs=1e-6)
    csv_rows = (run / "logs" / "metrics.csv").read_text().strip().splitlines()
    assert len(csv_rows) == 5  # the history before the kill was replayed into the CSV


def test_in_loop_evaluation_before_every_k_and_after(tiny_folder: Path, tmp_path: Path) -> None:
    from algorithms.evaluation import EvalQuestion
    from spice_env.tasks import Task

    out = tmp_path / "evaluated"
    extra = [EvalQuestion(f"x{i}", Task(kind="free_form", question=f"{i} + {i}?",
                                        answer=str(2 * i), answer_type="integer"))
             for i in range(3)]
    config = tiny_config(tiny_folder, out, trainer={"iterations": 3},
                         evaluation={"heldout": 5, "every": 2, "max_new_tokens": 6,
                                     "batch_size": 4})
    summary = train(config, agent_wrapper=ScriptedTextAgent, eval_sets={"extra": extra})

    assert [r["iteration"] for r in summary.history] == [0, 1, 2, 3]
    evaluated = [r["iteration"] for r in summary.history if "eval/heldout/accuracy" in r]
    assert evaluated == [0, 2, 3]
    assert [r["iteration"] for r in summary.history if "eval/extra/accuracy" in r] == [0, 2, 3]
    first = summary.history[0]
    assert first["eval/heldout/items"] == 5 and first["eval/extra/items"] == 3
    assert 0 <= first["eval/heldout/boxed_rate"] <= 1 and first["time/eval"] > 0
    assert "challenger/reward" not in first  # iteration 0 is the evaluation alone
    answers = read_jsonl(out / "evaluations.jsonl")
    assert len(answers) == 3 * (5 + 3)
    assert {a["iteration"] for a in answers} == {0, 2, 3}
    assert all(a["tokens"] <= 6 for a in answers)
    held = {a["id"] for a in answers if a["set"] == "heldout"}
    assert len(held) == 5
    trained_on = {r["document_id"] for r in read_jsonl(out / "rollouts.jsonl")}
    assert trained_on and not held & trained_on  # the held-out documents are never sampled
    assert (out / "plots" / "curves.png").is_file()
    csv_header = (out / "logs" / "metrics.csv").read_text().splitlines()[0]
    assert "eval/heldout/accuracy" in csv_header

    longer = tiny_config(tiny_folder, out, trainer={"iterations": 4},
                         evaluation={"heldout": 5, "every": 2, "max_new_tokens": 6,
                                     "batch_size": 4})
    summary = train(longer, resume=True, agent_wrapper=ScriptedTextAgent,
                    eval_sets={"extra": extra})
    assert [r["iteration"] for r in summary.history] == [0, 1, 2, 3, 4]
    answers = read_jsonl(out / "evaluations.jsonl")
    assert [a["iteration"] for a in answers].count(0) == 8  # not evaluated again
    assert {a["iteration"] for a in answers} == {0, 2, 3, 4}
    again = {a["id"] for a in answers if a["set"] == "heldout" and a["iteration"] == 4}
    assert again == held
    other = tiny_config(tiny_folder, out, trainer={"iterations": 5},
                        evaluation={"heldout": 5, "seed": 1})
    with pytest.raises(ConfigError, match="another held-out set"):  # it would train on them
        train(other, resume=True, agent_wrapper=ScriptedTextAgent)


def test_evaluation_refuses_what_it_cannot_evaluate(tiny_folder: Path, tmp_path: Path) -> None:
    config = tiny_config(tiny_folder, tmp_path / "a", evaluation={"benchmarks": ["gsm8k"]})
    with pytest.raises(ConfigError, match="no questions were given for gsm8k"):
        train(config)
    config = tiny_config(tiny_folder, tmp_path / "b", rollout={"corpus": "embedded:general",
                                                             "max_records": 40},
                         evaluation={"heldout": 3})
    with pytest.raises(ConfigError, match=r"evaluation.heldout: .* 0 documents that can be held "
                       r"out; 3 were asked for .*'question' and 'answer'"):
        train(config)


def test_resume_without_a_checkpoint_says_so(tiny_folder: Path, tmp_path: Path) -> None:
    config = tiny_config(tiny_folder, tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        train(config, resume=True)


def test_lora_reference_kl_and_checkpointing(tiny_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "lora"
    config = tiny_config(tiny_folder, out, algorithm={"name": "grpo", "beta": 0.1},
                         trainer={"lora_rank": 4, "activation_checkpointing": True})
    summary = train(config, agent_wrapper=ScriptedTextAgent)
    assert all(math.isfinite(r["train/kl"]) for r in summary.history)
    before, after = weights(tiny_folder), weights(out / "model")
    assert set(before) == set(after)  # merged back into plain transformers weights
    assert any(not torch.equal(before[n], after[n]) for n in before)


def test_frozen_challenger_trains_only_the_reasoner(tiny_folder: Path, tmp_path: Path) -> None:
    other = save_tiny_model(tmp_path / "strong", seed=1)
    config = tiny_config(tiny_folder, tmp_path / "frozen",
                         model={"frozen_challenger": str(other)},
                         rollout={"batch_size": 4},
                         trainer={"train_roles": "reasoner", "iterations": 1})
    key = AnswerKey()  # the Reasoner's script reads the golds of the frozen Challenger's script
    summary = train(config, agent_wrapper=lambda agent: ScriptedTextAgent(agent, answer_key=key))
    record = summary.history[0]
    assert record["challenger/groups"] == 0  # no Challenger sample was trained on
    assert record["reasoner/groups"] > record["reasoner/zero_variance_fraction"] * 4
    before, after = weights(tiny_folder), weights(tmp_path / "frozen" / "model")
    assert any(not torch.equal(before[n], after[n]) for n in before)


def test_vllm_backend_receives_the_updated_weights(tmp_path: Path) -> None:
    pytest.importorskip("vllm")
    folder = save_tiny_model(tmp_path / "tiny128", seed=0, hidden=128)
    config = tiny_config(folder, tmp_path / "vllm", model={
        "backend": "vllm", "backend_options": {"max_model_len": 1024, "kv_cache_gib": 0.25}},
        optimizer={"lr": 3e-3}, trainer={"precision": "32-true"})
    summary = train(config, agent_wrapper=ScriptedTextAgent)
    second = summary.history[1]
    # samples of iteration 2 came from the engine after the first update: had the weights not
    # reached it, the trainer's log-probabilities would have moved away from the engine's
    assert second["train/ratio_mean"] == pytest.approx(1.0, abs=2e-3)
    assert second["time/sync"] > 0


def test_ddp_on_two_cpu_processes(ddp_run: TwoProcessRun, run_two_processes: RunFn) -> None:
    out = ddp_run.folder
    ranks = read_jsonl(out / "ranks.jsonl")[0]["parameter_checksums"]
    assert len(ranks) == 2 and ranks[0] == ranks[1]
    shards = [{r["document_id"] for r in read_jsonl(out / f"rollouts.rank{k}.jsonl")}
              for k in (0, 1)]
    assert shards[0] and shards[1] and not shards[0] & shards[1]
    history = read_jsonl(out / "metrics.jsonl")
    assert len(history) == 2
    assert history[0]["documents_with_reasoner_group"] <= 4  # B=2 per rank, gathered
    before, after = weights(ddp_run.base), weights(out / "model")
    assert any(not torch.equal(before[n], after[n]) for n in before)

    # resume on both ranks: each continues its own shard from its own saved sampler state
    run_two_processes(out, *ddp_run.settings, "trainer.strategy=ddp", "trainer.iterations=3",
                      "--resume")
    for k in (0, 1):
        records = read_jsonl(out / f"rollouts.rank{k}.jsonl")
        assert [r["iteration"] for r in records] == [1, 1, 2, 2, 3, 3]
    third = [{r["document_id"] for r in read_jsonl(out / f"rollouts.rank{k}.jsonl")
              if r["iteration"] == 3} for k in (0, 1)]
    assert not third[0] & shards[1] and not third[1] & shards[0]
    ranks = read_jsonl(out / "ranks.jsonl")[-1]["parameter_checksums"]
    assert ranks[0] == ranks[1]


def test_one_vllm_engine_per_rank_on_two_cpu_processes(tmp_path: Path,
                                                       run_two_processes: RunFn) -> None:
    pytest.importorskip("vllm")
    folder = save_tiny_model(tmp_path / "tiny128", seed=0, hidden=128)
    out = tmp_path / "vllm"
    # FSDP: each rank's engine (vLLM's external launcher) gets the gathered weights
    done = run_two_processes(
        out, f"model.name={folder}", "model.backend=vllm",
        "model.backend_options.max_model_len=1024", "model.backend_options.kv_cache_gib=0.25",
        "rollout.batch_size=2", "rollout.attempts=4", "rollout.max_document_tokens=128",
        "game.group_size=2", "challenger.max_new_tokens=12", "reasoner.max_new_tokens=12",
        "optimizer.lr=3e-3", "trainer.iterations=2", "trainer.strategy=fsdp",
        "trainer.precision=32-true")
    assert "Traceback" not in done.stderr
    second = read_jsonl(out / "metrics.jsonl")[1]
    # both engines sampled iteration 2 from the updated weights (see the single-process test)
    assert second["train/ratio_mean"] == pytest.approx(1.0, abs=2e-3)
    shards = [{r["document_id"] for r in read_jsonl(out / f"rollouts.rank{k}.jsonl")}
              for k in (0, 1)]
    assert shards[0] and shards[1] and not shards[0] & shards[1]


def test_spice_train_cli_reports_bad_configs(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    from spice_cli.main import main

    assert main(["train", "trainer.iterations=0"]) == 2
    assert "trainer.iterations" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("rollout:\n  batchsize: 4\n")
    assert main(["train", "--config", str(bad)]) == 2
    assert "rollout.batchsize: unknown key" in capsys.readouterr().err
    assert main(["train", f"trainer.output_dir={tmp_path / 'none'}", "--resume",
                 "model.name=" + str(tmp_path)]) == 2


CONFIGS = sorted((Path(__file__).parents[2] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_shipped_config_validates(path: Path) -> None:
    from algorithms.config import load_config

    config = load_config(path)
    assert config.trainer.iterations >= 1
    assert json.loads(config.model_dump_json())  # serialisable as it is written to runs


def test_skipping_zero_advantage_samples_leaves_the_step_unchanged(tiny_folder: Path,
                                                                    tmp_path: Path) -> None:
    from algorithms.launch import make_fabric
    from algorithms.samples import TrainingSample, assign_advantages
    from algorithms.trainer import SpiceTrainer

    def sample(group: int, reward: float, completion: tuple[int, ...]) -> TrainingSample:
        return TrainingSample(role="reasoner", group=group, prompt_ids=(5, 6, 7, 8 + group),
                              completion_ids=completion, old_logprobs=(-1.0,) * len(completion),
                              reward=reward)

    raw = [sample(0, 1.0, (9, 10)), sample(0, 0.0, (11,)), sample(1, 1.0, (12, 13, 14)),
           sample(1, 1.0, (15,))]
    after = []
    for skip in (True, False):
        config = tiny_config(tiny_folder, tmp_path / f"skip-{skip}",
                             trainer={"skip_inert_samples": skip, "micro_batch_size": 2,
                                      "loggers": []})
        trainer = SpiceTrainer(config, make_fabric(config))
        trainer.setup()
        samples, _ = assign_advantages(raw, trainer.algorithm)
        metrics = trainer.update(samples)
        assert metrics["skipped_samples"] == (2.0 if skip else 0.0)
        after.append({n: p.detach().clone() for n, p in trainer.model.named_parameters()})
        trainer.close()
    assert after[0].keys() == after[1].keys()
    for name, tensor in after[0].items():
        torch.testing.assert_close(tensor, after[1][name], rtol=0, atol=1e-7)


def test_selector_majority_labels_and_a_rho_schedule_train(tiny_folder: Path,
                                                           tmp_path: Path) -> None:
    out = tmp_path / "selector"
    config = tiny_config(tiny_folder, out, game={
        "group_size": 2, "format_choice": "selector", "label_source": "majority",
        "repetition_penalty": True, "rho_schedule": [[0, 0.0], [1, -0.3]]})
    summary = train(config, agent_wrapper=ScriptedTextAgent)
    assert summary.iterations == 2
    for record in summary.history:
        assert math.isfinite(record["train/loss"])
        assert 0.0 <= record["selector/valid_rate"] <= 1.0
    rollouts = read_jsonl(out / "rollouts.jsonl")
    assert all("selector" in r and "output" in r["selector"] for r in rollouts)
    invalid = [r["selector"]["reward"] for r in rollouts if not r["selector"]["valid"]]
    assert invalid and set(invalid) <= {0.0, -0.3}  # ρ of iteration 1, then of iteration 2
    scored = [a for r in rollouts for a in r["attempts"] if a["pass_rate"] is not None]
    assert scored and all(a.get("majority") is not None or a["pass_rate"] == 0.0 for a in scored)


def test_spice_train_cli_runs_the_selector_and_majority_labels(
        tiny_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Through the command line, with the tiny model's own (unparsable) texts: every selector
    choice is invalid and earns ρ, and the run says so in its metrics and rollouts."""
    import yaml

    from spice_cli.main import main

    out = tmp_path / "cli"
    config = tiny_config(tiny_folder, out, trainer={"iterations": 1})
    path = tmp_path / "tiny.yaml"
    path.write_text(config.to_yaml())
    settings = ["game.format_choice=selector", "game.label_source=majority",
                "game.rho_schedule=[[0, -0.25]]"]
    assert main(["train", "--config", str(path), "--dry-run", *settings]) == 0
    assert main(["train", "--config", str(path), "game.label_source=vote"]) == 2
    assert "label_source" in capsys.readouterr().err
    assert main(["train", "--config", str(path), *settings]) == 0
    record = read_jsonl(out / "metrics.jsonl")[-1]
    assert record["selector/valid_rate"] == 0.0 and record["selector/reward"] == -0.25
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["game"]["format_choice"] == "selector"
    assert all(r["selector"]["reward"] == -0.25 for r in read_jsonl(out / "rollouts.jsonl"))
