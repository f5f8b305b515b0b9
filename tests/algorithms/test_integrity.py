"""Checkpoints on resume and load: damage found before any model is loaded, no pickled code
run, non-finite state refused."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from agents.scripted import ScriptedTextAgent
from algorithms.checkpoints import load_policy
from algorithms.integrity import (
    CheckpointError,
    check_sharded_index,
    checksum_file,
    load_tensors,
    record_checksums,
    verify_checkpoint,
    verify_shared,
)
from algorithms.run_folder import RunFolder
from algorithms.trainer import SpiceTrainer, train
from spice_cli.main import main
from tests.algorithms.test_trainer import tiny_config


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """A two-iteration tiny run with a checkpoint after each: (run folder, its config)."""
    from agents.tiny import save_tiny_model

    root = tmp_path_factory.mktemp("integrity")
    base = save_tiny_model(root / "base", seed=0)
    config = tiny_config(base, root / "run", trainer={
        "iterations": 2, "save_every": 1, "precision": "32-true", "export_model": False,
        "keep_checkpoints": 2, "loggers": []})
    train(config, agent_wrapper=ScriptedTextAgent)
    return root / "run", config


def copy_run(saved_run: tuple[Path, Any], tmp_path: Path) -> tuple[RunFolder, Any]:
    source, config = saved_run
    target = tmp_path / "run"
    shutil.copytree(source, target)
    (target / "config.yaml").write_text((target / "config.yaml").read_text().replace(
        str(source), str(target)))
    return RunFolder(target), config.model_copy(update={"trainer": config.trainer.model_copy(
        update={"output_dir": str(target), "iterations": 3})})


def no_model_load(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the model was loaded before the checkpoint was checked")

    monkeypatch.setattr("agents.models.load_model", refuse)


def test_checkpoints_are_published_with_their_checksums(saved_run: tuple[Path, Any]) -> None:
    run = RunFolder(saved_run[0])
    assert [p.name for p in run.checkpoints()] == ["iter-000001.ckpt", "iter-000002.ckpt"]
    for checkpoint in run.checkpoints():
        record = json.loads(checksum_file(checkpoint).read_text())
        assert list(record["files"]) == [checkpoint.name]
        verify_checkpoint(checkpoint)
    assert sorted(p.name for p in run.checkpoints_dir.iterdir()) == [
        "iter-000001.ckpt", "iter-000001.ckpt.sha256", "iter-000002.ckpt",
        "iter-000002.ckpt.sha256", "last"]


def test_an_unchanged_checkpoint_is_read_once_and_by_one_rank(
        saved_run: tuple[Path, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import algorithms.integrity as integrity

    run, _ = copy_run(saved_run, tmp_path)
    latest = run.latest()
    assert latest is not None
    reads: list[Path] = []
    check = integrity._problem
    monkeypatch.setattr(integrity, "_problem", lambda path: reads.append(path) or check(path))
    for path in (latest, checksum_file(latest)):
        os.utime(path)  # changed just now
    verify_checkpoint(latest)
    verify_checkpoint(latest)  # changed within the second: not trusted to be unchanged
    assert len(reads) == 2
    for path in (latest, checksum_file(latest)):
        os.utime(path, ns=(10**18, 10**18))
    verify_checkpoint(latest)
    verify_checkpoint(latest)  # the preflight check and the trainer's: one read
    assert len(reads) == 3
    os.utime(latest, ns=(2 * 10**18, 2 * 10**18))  # touched: read again
    verify_checkpoint(latest)
    assert len(reads) == 4

    given: list[str | None] = []

    def share(value: str | None) -> list[str | None]:
        given.append(value)
        return [given[0], value]  # rank 0's verdict first, as the gather returns it

    verify_shared(latest, [], rank=1, share=share)  # a verdict of None from rank 0
    assert len(reads) == 4 and given == [None]
    given[:] = ["iter-000002.ckpt is damaged: rank 0 says so"]
    with pytest.raises(CheckpointError, match="rank 0 says so"):
        verify_shared(latest, [], rank=1, share=share)
    assert len(reads) == 4  # the other ranks never read it
    latest.write_bytes(latest.read_bytes()[:100])
    given.clear()
    with pytest.raises(CheckpointError, match="is damaged"):
        verify_shared(latest, [], rank=0, share=share)
    assert given and "is damaged" in str(given[0])


@pytest.mark.parametrize("damage", ["overwritten", "truncated", "legacy-truncated"])
def test_a_damaged_checkpoint_fails_before_the_model_loads(
        saved_run: tuple[Path, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        damage: str, capsys: pytest.CaptureFixture[str]) -> None:
    run, config = copy_run(saved_run, tmp_path)
    latest = run.latest()
    assert latest is not None
    data = bytearray(latest.read_bytes())
    if damage == "overwritten":  # bytes in the middle of a tensor: a silent NaN before
        data[len(data) // 2:len(data) // 2 + 64] = b"\xff" * 64
    else:
        data = data[:len(data) // 2]
    latest.write_bytes(bytes(data))
    if damage.startswith("legacy"):  # saved before checksums were recorded
        checksum_file(latest).unlink()
    no_model_load(monkeypatch)
    with pytest.raises(CheckpointError, match=r"iter-000002.ckpt is damaged: .*older "
                                              r"checkpoints: iter-000001.ckpt"):
        SpiceTrainer(config, _fabric(config)).setup(resume=True)
    overrides = [f"model.name={config.model.name}", f"trainer.output_dir={run.path}",
                 "trainer.iterations=3", "rollout.corpus=embedded:math"]
    assert main(["train", "--resume", "--dry-run", *overrides]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "is damaged" in err and "\n" not in err
    with pytest.raises(CheckpointError, match="is damaged"):
        load_policy(latest)


def _fabric(config: Any) -> Any:
    from algorithms.launch import make_fabric

    return make_fabric(config)


def test_non_finite_weights_are_refused_on_resume_and_load(
        saved_run: tuple[Path, Any], tmp_path: Path) -> None:
    run, config = copy_run(saved_run, tmp_path)
    latest = run.latest()
    assert latest is not None
    state = torch.load(latest, weights_only=True)
    name = next(k for k in state["model"] if ".layers." in k)  # not a tied embedding
    state["model"][name] = torch.full_like(state["model"][name], float("nan"))
    torch.save(state, latest)
    record_checksums(latest)  # intact on disk: the values themselves are wrong
    with pytest.raises(CheckpointError, match=f"NaN or infinite values.*{name}"):
        SpiceTrainer(config, _fabric(config)).setup(resume=True)
    with pytest.raises(CheckpointError, match="NaN or infinite weights"):
        load_policy(latest)


class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_that_would_run_code_is_refused(saved_run: tuple[Path, Any],
                                                     tmp_path: Path) -> None:
    run, config = copy_run(saved_run, tmp_path)
    latest = run.latest()
    assert latest is not None
    marker = tmp_path / "ran"
    state = torch.load(latest, weights_only=True)
    state["training"]["payload"] = _Payload(str(marker))
    torch.save(state, latest)
    record_checksums(latest)
    with pytest.raises(CheckpointError, match="objects other than tensors"):
        load_tensors(latest)
    with pytest.raises(CheckpointError, match="objects other than tensors"):
        SpiceTrainer(config, _fabric(config)).setup(resume=True)
    with pytest.raises(CheckpointError):
        load_policy(latest)
    assert not marker.exists()
    index = tmp_path / "sharded.ckpt"
    index.mkdir()
    (index / ".metadata").write_bytes(pickle.dumps(_Payload(str(marker))))
    with pytest.raises(CheckpointError, match="not part of a checkpoint index"):
        check_sharded_index(index)
    assert not marker.exists()


def test_resuming_an_intact_checkpoint_still_works(saved_run: tuple[Path, Any],
                                                   tmp_path: Path) -> None:
    run, config = copy_run(saved_run, tmp_path)
    summary = train(config, resume=True, agent_wrapper=ScriptedTextAgent)
    assert summary.iterations == 3
    assert [p.name for p in run.checkpoints()] == ["iter-000002.ckpt", "iter-000003.ckpt"]
    assert not checksum_file(run.checkpoints_dir / "iter-000001.ckpt").exists()  # pruned too
