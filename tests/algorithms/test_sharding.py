"""FSDP (``trainer.strategy: fsdp``): the sharding itself, sharded checkpoints, and training on
two CPU processes (gloo) against the same run under DDP."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import torch

from agents.tiny import tiny_model
from algorithms.checkpoints import load_policy
from algorithms.config import build_config
from algorithms.preflight import PreflightError, check_output_dir
from algorithms.run_folder import RunFolder
from algorithms.runlog import read_jsonl
from algorithms.sharding import decoder_layers, is_sharded_checkpoint

if TYPE_CHECKING:
    from tests.algorithms.conftest import RunFn, TwoProcessRun


def test_the_units_are_the_decoder_layers() -> None:
    model, _ = tiny_model(0, layers=3)
    assert [type(m).__name__ for m in decoder_layers(model)] == ["Qwen2DecoderLayer"] * 3
    from algorithms.lora import with_lora

    assert len(decoder_layers(with_lora(model, 2))) == 3
    assert decoder_layers(torch.nn.Linear(2, 2)) == []


def test_a_sharded_checkpoint_is_a_folder_the_run_folder_handles(tmp_path: Path) -> None:
    run = RunFolder(tmp_path / "run")
    for iteration in (1, 2, 3):
        temporary = run.staging_path(iteration)
        run.prepare_staging(temporary)
        temporary.mkdir()
        (temporary / ".metadata").write_bytes(b"x")
        (temporary / "__0_0.distcp").write_bytes(b"x")
        run.publish(temporary, iteration, keep=2)
    assert run.latest() == run.checkpoint_path(3) and is_sharded_checkpoint(run.latest())
    assert [p.name for p in run.checkpoints()] == ["iter-000002.ckpt", "iter-000003.ckpt"]
    assert not is_sharded_checkpoint(tmp_path)
    config = build_config({"trainer": {"output_dir": str(run.path), "strategy": "ddp"}})
    with pytest.raises(PreflightError, match=r"trainer\.strategy=fsdp"):
        check_output_dir(config, resume=True)
    check_output_dir(config.model_copy(update={"trainer": config.trainer.model_copy(
        update={"strategy": "fsdp"})}), resume=True)


def _weights(source: Path) -> dict[str, torch.Tensor]:
    return {k: v.float() for k, v in load_policy(source, dtype=torch.float32).model
            .state_dict().items()}


def _max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


@pytest.mark.slow
def test_fsdp_on_two_cpu_processes_matches_ddp_resumes_and_exports(
        tmp_path: Path, ddp_run: TwoProcessRun, run_two_processes: RunFn) -> None:
    fsdp = tmp_path / "fsdp"
    exact = (*ddp_run.settings, "trainer.strategy=fsdp")
    run_two_processes(fsdp, *exact, "trainer.iterations=1")
    ddp = RunFolder(ddp_run.folder)

    # one update: the same parameters as DDP's (float32, up to the order of the reductions)
    first = RunFolder(fsdp).checkpoint_path(1)
    assert is_sharded_checkpoint(first)
    assert sorted(p.name for p in first.glob("__*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    base, after = _weights(ddp_run.base), _weights(first)
    assert _max_difference(base, after) > 1e-4  # it moved
    assert _max_difference(after, _weights(ddp.checkpoint_path(1))) < 1e-6
    assert _max_difference(after, _weights(fsdp / "model")) == 0.0  # the export loads

    # resume from the sharded checkpoint: the second update again as DDP's
    run_two_processes(fsdp, *exact, "trainer.iterations=2", "--resume")
    for rank in (0, 1):
        assert [r["iteration"] for r in read_jsonl(fsdp / f"rollouts.rank{rank}.jsonl")] == \
            [1, 1, 2, 2]
    assert _max_difference(_weights(fsdp / "model"), _weights(ddp.checkpoint_path(2))) < 1e-5
    checksums = read_jsonl(fsdp / "ranks.jsonl")[-1]["parameter_checksums"]
    assert checksums[0] == checksums[1]

    # LoRA adapters, activation checkpointing and bf16-mixed under FSDP
    lora = tmp_path / "lora"
    run_two_processes(lora, *exact, "trainer.iterations=1", "trainer.precision=bf16-mixed",
                      "trainer.lora_rank=4", "trainer.activation_checkpointing=true")
    merged = _weights(lora / "model")
    assert _max_difference(merged, _weights(RunFolder(lora).checkpoint_path(1))) < 1e-6
    assert _max_difference(merged, base) > 0


UNEVEN = """
import sys
import torch
from algorithms.sharding import gathered
from tests.algorithms.test_sharding import uneven_learner, uneven_samples

out = sys.argv[1]
learner = uneven_learner("fsdp", 2, out + ".run")
rank = learner.fabric.global_rank
learner.update(uneven_samples()[rank])  # three micro-batches on rank 0, one on rank 1
with gathered(learner.model):
    state = {n: p.detach().clone() for n, p in learner.model.module.named_parameters()}
if rank == 0:
    torch.save(state, out)
learner.fabric.barrier()
"""


def uneven_learner(strategy: str, devices: int, output: str) -> Any:
    """A launched Learner of the tiny model (float32, micro-batches of one sample)."""
    from agents.tiny import tiny_model
    from algorithms.launch import make_fabric
    from algorithms.learner import Learner
    from algorithms.registry import make_algorithm

    config = build_config({"optimizer": {"lr": 1e-3}, "trainer": {
        "strategy": strategy, "devices": devices, "accelerator": "cpu",
        "precision": "32-true", "micro_batch_size": 1, "loggers": [], "output_dir": output}})
    fabric = make_fabric(config)
    fabric.launch()
    model, tokenizer = tiny_model(0)
    return Learner(config, fabric, model, make_algorithm(config.algorithm),
                   precision="32-true", pad_id=int(tokenizer.pad_token_id))


def uneven_samples() -> list[list[Any]]:
    """Three samples for rank 0 and one for rank 1."""
    from algorithms.samples import TrainingSample

    return [[TrainingSample(role="reasoner", group=k, prompt_ids=(5, 6, 7 + k),
                            completion_ids=(9, 10 + k, 11), old_logprobs=(-4.0, -4.0, -4.0),
                            reward=1.0, advantage=(0.5 if k % 2 else -0.5) * (rank + 1))
             for k in range(3 if rank == 0 else 1)] for rank in (0, 1)]


@pytest.mark.slow
def test_ranks_with_unequal_micro_batches_step_together(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    # under FSDP a rank short of micro-batches waits in vain for the others' gathers unless it
    # makes up for them; the step must be that of one process holding all the samples
    script = tmp_path / "uneven.py"
    script.write_text(UNEVEN)
    out = tmp_path / "fsdp.pt"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, str(script), str(out)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    sharded = torch.load(out, weights_only=True)
    single = uneven_learner("auto", 1, str(tmp_path / "single"))
    before = {n: p.detach().clone() for n, p in single.model.module.named_parameters()}
    single.update([s for rank in uneven_samples() for s in rank])
    after = {n: p.detach() for n, p in single.model.module.named_parameters()}
    assert _max_difference(sharded, after) < 1e-6
    assert _max_difference(after, before) > 1e-4
