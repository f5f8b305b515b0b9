"""The checks before a run, the plan `spice train --dry-run` prints, and shipped configs."""

from __future__ import annotations

import http.server
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from agents.tiny import save_tiny_model
from algorithms.config import (
    ConfigError,
    build_config,
    config_summary,
    load_config,
    resolve_config,
    shipped_configs,
)
from algorithms.preflight import (
    ModelFacts,
    PreflightError,
    endpoint_problem,
    estimate_memory,
    preflight,
)
from spice_cli.main import main


def _corpus(folder: Path) -> Path:
    path = folder / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": f"Document {i}: the sky is blue."}) + "\n"
                            for i in range(3)))
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


def test_shipped_configs_are_found_by_name_and_described() -> None:
    shipped = shipped_configs()
    assert {"cpu-demo", "paper-qwen3-4b", "baseline-r-zero"} <= set(shipped)
    for name, path in shipped.items():
        assert path.is_file() and config_summary(path), name  # each says what it is for
        load_config(name)
    assert resolve_config("cpu-demo") == resolve_config("cpu-demo.yaml") == shipped["cpu-demo"]
    with pytest.raises(ConfigError, match="did you mean cpu-demo"):
        resolve_config("cpu_demo")


def test_a_users_config_extends_a_shipped_one(tmp_path: Path) -> None:
    mine = tmp_path / "mine.yaml"
    mine.write_text("# my run\nextends: cpu-demo\ntrainer:\n  iterations: 2\n")
    config = load_config(mine)
    assert config.trainer.iterations == 2
    assert config.rollout.batch_size == load_config("cpu-demo").rollout.batch_size
    assert config_summary(mine) == "my run"


def test_the_plan_of_a_run(tiny: Path, tmp_path: Path) -> None:
    config = load_config("cpu-demo", [f"model.name={tiny}", f"trainer.output_dir={tmp_path}/r",
                                      "rollout.batch_size=3", "rollout.attempts=6",
                                      "game.group_size=4", "reasoner.n=4"])
    plan = preflight(config)
    assert plan.model.tied_embeddings is True  # cpu-demo's frozen input table is trained here
    assert any("trained as usual" in note for note in plan.notes)
    assert plan.processes == 1 and plan.accelerator == "cpu"
    assert plan.documents_per_iteration == 3
    assert plan.model.parameters and plan.model.parameters > 0
    assert set(plan.memory_gb) >= {"weights", "gradients+AdamW", "activations (rough)"}
    # fp32 master weights, then gradients and two AdamW moments in fp32
    assert plan.memory_gb["gradients+AdamW"] == pytest.approx(
        3 * plan.memory_gb["weights"], rel=0.05)
    text = plan.describe()
    assert "B=3 documents per process" in text and "N=6" in text and "G=4" in text
    assert "up to 48 Reasoner answers and 24 trained samples" in text
    assert not (tmp_path / "r").exists()  # nothing written


def test_a_frozen_input_embedding_leaves_its_state_out_of_the_estimate() -> None:
    facts = ModelFacts(source="untied", parameters=630_000_000, layers=24, hidden_size=896,
                       vocab_size=151_936, tied_embeddings=False)
    trained = estimate_memory(build_config({}), facts, "bf16-mixed")
    frozen = estimate_memory(build_config({"trainer": {"freeze_input_embeddings": True}}),
                             facts, "bf16-mixed")
    table = 151_936 * 896
    assert trained["gradients+AdamW"] - frozen["gradients+AdamW"] == pytest.approx(
        12 * table / 1e9)
    assert frozen["weights"] == trained["weights"]


def test_lora_and_bf16_shrink_the_estimate(tiny: Path, tmp_path: Path) -> None:
    base = [f"model.name={tiny}", f"trainer.output_dir={tmp_path}/r"]
    full = preflight(load_config("cpu-demo", [*base, "trainer.precision=32-true"])).memory_gb
    lora = preflight(load_config("cpu-demo", [*base, "trainer.precision=32-true",
                                              "trainer.lora_rank=4"])).memory_gb
    pure = preflight(load_config("cpu-demo", [*base, "trainer.precision=bf16-true"])).memory_gb
    assert lora["gradients+AdamW"] < full["gradients+AdamW"]
    assert pure["weights"] == pytest.approx(full["weights"] / 2, rel=0.05)


def test_fsdp_shards_the_training_state_in_the_estimate(tiny: Path, tmp_path: Path) -> None:
    base = [f"model.name={tiny}", f"trainer.output_dir={tmp_path}/r", "trainer.devices=2",
            "trainer.accelerator=cpu", "trainer.precision=bf16-mixed"]
    ddp = preflight(load_config("cpu-demo", [*base, "trainer.strategy=ddp"]))
    fsdp = preflight(load_config("cpu-demo", [*base, "trainer.strategy=fsdp"]))
    assert ddp.processes == fsdp.processes == 2
    for part in ("weights", "gradients+AdamW"):
        assert fsdp.memory_gb[part] == pytest.approx(ddp.memory_gb[part] / 2)
    assert fsdp.memory_gb["generation copy"] == ddp.memory_gb["generation copy"]
    assert fsdp.memory_gb["gathered at sync (moment)"] == pytest.approx(
        ddp.memory_gb["weights"])
    assert "gathered at sync" not in " ".join(ddp.memory_gb)
    assert "fsdp strategy" in fsdp.describe()


def test_dry_run_prints_plan_and_config_and_writes_nothing(
        tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert main(["train", "--config", "cpu-demo", f"model.name={tiny}",
                 f"trainer.output_dir={out}", "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "processes       1" in text and "memory/device" in text
    assert "dry run: everything checked, nothing trained" in text
    resolved = yaml.safe_load(text.split("# the resolved config\n", 1)[1].rsplit("dry run", 1)[0])
    assert resolved["model"]["name"] == str(tiny) and resolved["trainer"]["iterations"] == 6
    assert not out.exists()


def test_print_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--config", "cpu-demo-grpo", "trainer.iterations=3",
                 "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["algorithm"]["name"] == "grpo" and printed["trainer"]["iterations"] == 3
    assert printed["rollout"]["corpus"] == "embedded:math"  # from cpu-demo, through extends


def test_spice_configs_lists_them(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["configs"]) == 0
    out = capsys.readouterr().out
    for name, path in shipped_configs().items():
        assert f"{name}  " in out and config_summary(path) in out


def test_a_shipped_model_not_prepared_yet_is_a_note(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPICE_ENV_CACHE", str(tmp_path / "empty-cache"))
    config = load_config(None, ["model.name=smollm2-135m-instruct",
                                f"rollout.corpus={_corpus(tmp_path)}",
                                f"trainer.output_dir={tmp_path}/r"])
    plan = preflight(config, dry_run=True)
    assert "not prepared yet" in plan.model.source and "spice assets" in plan.describe()
    assert not plan.memory_gb  # its size is only known once it is converted


def test_a_hub_model_that_cannot_be_reached(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    config = load_config(None, ["model.name=org/model", f"rollout.corpus={_corpus(tmp_path)}",
                                f"trainer.output_dir={tmp_path}/r"])
    assert "hub id" in preflight(config, dry_run=True).describe()
    with pytest.raises(PreflightError, match="cannot be fetched"):
        preflight(config)


class _Models(http.server.BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        found = self.path.endswith("/v1/models")
        body = json.dumps({"data": [{"id": "served"}]}).encode() if found else b"missing"
        self.send_response(200 if found else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def server(serve: Callable[[type[http.server.BaseHTTPRequestHandler]], str]) -> str:
    return serve(_Models)


def test_endpoint_checks_against_a_real_server(server: str) -> None:
    assert endpoint_problem(f"{server}/v1") is None
    assert "HTTP 404" in (endpoint_problem(f"{server}/elsewhere") or "")
    assert "refused" in (endpoint_problem("http://127.0.0.1:9/v1") or "")
    assert endpoint_problem("ftp://host/v1") == "not an http(s) URL"


def test_the_corpus_byte_caps_are_settings(tiny: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    corpus = _corpus(tmp_path)  # three short lines, about 50 bytes each
    settings = [f"model.name={tiny}", f"rollout.corpus={corpus}",
                f"trainer.output_dir={tmp_path / 'run'}", "--dry-run"]
    assert main(["train", *settings, "rollout.max_record_bytes=20"]) == 2
    assert "max_record_bytes" in capsys.readouterr().err
    assert main(["train", *settings, "rollout.max_file_bytes=100"]) == 2
    assert "max_file_bytes" in capsys.readouterr().err
    assert main(["train", *settings, "rollout.max_file_bytes=null",
                 "rollout.max_record_bytes=1000"]) == 0
    assert main(["train", *settings, "rollout.max_record_bytes=0"]) == 2
    assert "rollout.max_record_bytes" in capsys.readouterr().err
