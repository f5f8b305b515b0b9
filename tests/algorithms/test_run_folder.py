"""The run folder: its paths, the ``last`` pointer, atomic publishing, pruning, clearing."""

from __future__ import annotations

from pathlib import Path

import pytest

from algorithms.run_folder import (
    RunFolder,
    checkpoint_iteration,
    is_checkpoint_reference,
    resolve_checkpoint,
    run_folder_of,
)


def publish(run: RunFolder, iteration: int, keep: int = 2) -> Path:
    temporary = run.staging_path(iteration)
    run.prepare_staging(temporary)
    temporary.write_bytes(b"state %d" % iteration)
    return run.publish(temporary, iteration, keep=keep)


def test_publishing_points_last_at_the_newest_and_keeps_the_newest(tmp_path: Path) -> None:
    run = RunFolder(tmp_path / "run")
    assert run.latest() is None and run.latest_iteration() is None and not run.has_history()
    for iteration in (1, 2, 3):
        final = publish(run, iteration)
        assert final == run.checkpoint_path(iteration) and final.is_file()
    assert run.last_pointer.read_text() == "iter-000003.ckpt"
    assert [p.name for p in run.checkpoints()] == ["iter-000002.ckpt", "iter-000003.ckpt"]
    assert run.latest() == run.checkpoint_path(3) and run.latest_iteration() == 3
    assert not list(run.checkpoints_dir.glob("*.tmp")) and run.has_history()
    assert checkpoint_iteration(run.latest()) == 3
    with pytest.raises(ValueError, match="not named like a checkpoint"):
        checkpoint_iteration(tmp_path / "model.ckpt")


def test_a_last_pointer_names_a_checkpoint_inside_the_folder_only(tmp_path: Path) -> None:
    run = RunFolder(tmp_path / "run")
    publish(run, 1)
    outside = tmp_path / "elsewhere.ckpt"
    outside.write_bytes(b"not ours")
    for pointer in (str(outside), "../../elsewhere.ckpt", "iter-000001.ckpt/..", ""):
        run.last_pointer.write_text(pointer)
        assert run.latest() is None, pointer
        with pytest.raises(FileNotFoundError, match="does not name a checkpoint"):
            resolve_checkpoint(run.last_pointer)
    run.last_pointer.write_text("iter-000009.ckpt")  # a name of the right form, but gone
    assert run.latest() is None
    with pytest.raises(FileNotFoundError, match="which does not exist"):
        resolve_checkpoint(run.last_pointer)
    run.last_pointer.write_text("iter-000001.ckpt\n")
    assert resolve_checkpoint(run.last_pointer) == run.checkpoint_path(1)
    assert resolve_checkpoint(run.path) is None


def test_clear_removes_what_a_run_wrote_and_keeps_the_rest(tmp_path: Path) -> None:
    run = RunFolder(tmp_path / "run")
    publish(run, 1)
    for path in (run.metrics_file, run.evaluations_file, run.ranks_file,
                 run.rollouts_file(), run.rollouts_file(1, 2)):
        path.write_text("{}\n")
    for folder in (run.plots_dir, run.export_dir, run.path / "logs", run.path / "tensorboard"):
        folder.mkdir()
    mine = run.path / "notes.txt"
    mine.write_text("keep me")
    run.write_config("model: {}\n")
    run.mark()
    run.clear()
    assert sorted(p.name for p in run.path.iterdir()) == ["config.yaml", "notes.txt",
                                                          "spice-run.json"]


@pytest.mark.parametrize("theirs", ["model", "logs", "checkpoints", "plots", "metrics.jsonl"])
def test_a_folder_no_run_wrote_is_never_cleared(tmp_path: Path, theirs: str) -> None:
    run = RunFolder(tmp_path / "work")
    run.path.mkdir()
    path = run.path / theirs
    if "." in theirs:
        path.write_text("their own file\n")
    else:
        path.mkdir()
        (path / "weights.bin").write_bytes(b"theirs")
    assert run.unowned_paths() == [path]
    with pytest.raises(FileExistsError, match=f"holds {theirs}.* but no spice-run.json"):
        run.clear()
    assert path.exists() and not run.is_marked()  # nothing deleted, nothing marked


def test_a_fresh_folder_is_marked_when_cleared(tmp_path: Path) -> None:
    run = RunFolder(tmp_path / "new")
    (tmp_path / "new").mkdir()
    (run.path / "README").write_text("a user's note")  # not part of the run layout
    run.clear()
    assert run.is_marked() and (run.path / "README").exists()
    publish(run, 1)
    run.clear()  # a marked folder: its run files go
    assert not run.checkpoints_dir.exists() and run.is_marked()


def test_cut_back_keeps_the_iterations_up_to_the_checkpoint(tmp_path: Path) -> None:
    run = RunFolder(tmp_path)
    lines = "".join(f'{{"iteration": {i}}}\n' for i in range(1, 5)) + '{"iterat'
    for path in (run.metrics_file, run.evaluations_file, run.rollouts_file()):
        path.write_text(lines)
    assert run.cut_back(2, rank=0, world_size=1) == 2
    assert run.rollouts_file().read_text() == '{"iteration": 1}\n{"iteration": 2}\n'
    assert run.evaluations_file.read_text() == run.metrics_file.read_text()


def test_the_run_of_a_path(tmp_path: Path) -> None:
    run = RunFolder(tmp_path / "run")
    publish(run, 1)
    assert run_folder_of(run.path) is None  # no config: not a run
    run.write_config("model: {}\n")
    run.export_dir.mkdir()
    for path in (run.path, run.last_pointer, run.checkpoint_path(1), run.export_dir):
        found = run_folder_of(path)
        assert found is not None and found.path == run.path, path
    assert run_folder_of(tmp_path) is None and run_folder_of("Qwen/Qwen3-4B") is None
    assert is_checkpoint_reference("runs/x/checkpoints/last")
    assert is_checkpoint_reference("a.ckpt") and not is_checkpoint_reference("runs/x/last")
