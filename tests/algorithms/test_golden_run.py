"""Seeded tiny runs give the same metrics, rollouts, evaluations and weights as recorded.

The record (``data/golden_runs.json``) was first written by the trainer before its code was
split into the run folder, the metrics, the policy engine and the loop; any change to what a run
computes shows up here. Timings are left out; everything else is compared: strings and integers
exactly, floats to 1e-9 relative (summation order may differ in the last bits).

CPU kernels differ between instruction sets (AVX2, AVX-512, AVX-512 BF16), and so do the float32
and bfloat16 results of the same run, so there is one record per kind of machine
(:func:`machine`). On a kind without a record, floats are compared to what the precision allows
(``LOOSE``) and strings and integers exactly.

After a change that is meant to alter what a run computes, write the record again with
``SPICE_WRITE_GOLDEN=1 pytest tests/algorithms/test_golden_run.py`` and say why in the commit;
the records of other machines are then stale and are removed. ``SPICE_WRITE_GOLDEN=add``
adds the record of a new kind of machine to the others (for code that computes what they
record).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pytest
import torch

from agents.scripted import ScriptedTextAgent
from agents.tiny import save_tiny_model
from algorithms.config import build_config
from algorithms.runlog import read_jsonl
from algorithms.trainer import train

pytestmark = pytest.mark.slow

RECORD = Path(__file__).parent / "data" / "golden_runs.json"

RUNS: dict[str, dict[str, dict[str, Any]]] = {
    # the paper's algorithm in mixed precision: a generation copy synced after each update,
    # with a held-out set evaluated before, in between and after
    "drgrpo-mixed-eval": {
        "trainer": {"precision": "bf16-mixed"},
        "evaluation": {"heldout": 4, "every": 1, "max_new_tokens": 6, "batch_size": 3},
    },
    # PPO: the value head, GAE and the generation with the trained module itself
    "ppo-fp32": {"algorithm": {"name": "ppo"}, "trainer": {"precision": "32-true"}},
    # GRPO with a KL penalty (a reference model) on LoRA adapters
    "grpo-lora-kl": {"algorithm": {"name": "grpo", "beta": 0.05},
                     "trainer": {"precision": "32-true", "lora_rank": 4,
                                 "skip_inert_samples": False}},
}


LOOSE = {"bf16-mixed": (1e-2, 1e-3), "32-true": (1e-4, 1e-5)}
"""(relative, absolute) tolerances for a machine without a record, by precision; measured
differences between an AVX2 and an AVX-512 BF16 machine: up to 5e-3 relative (1e-3 absolute)
in bf16-mixed weight sums, 1.4e-5 relative in float32 ones."""


def machine() -> str:
    """The kind of CPU a run's numbers depend on: torch's vector capability and the bfloat16
    instructions present (``AVX2``, ``AVX512+avx512_bf16``, ...)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            flags = next((line.split(":", 1)[1].split() for line in handle
                          if line.startswith("flags")), [])
    except OSError:
        flags = []
    extras = sorted({"avx512_bf16", "amx_bf16"} & set(flags))
    return "+".join([torch.backends.cpu.get_cpu_capability(), *extras])


def run_config(base: Path, output: Path, sections: dict[str, dict[str, Any]]) -> Any:
    data: dict[str, Any] = {
        "model": {"name": str(base)},
        "rollout": {"corpus": "embedded:math", "batch_size": 2, "attempts": 4,
                    "max_document_tokens": 128},
        "game": {"group_size": 2},
        "challenger": {"max_new_tokens": 10},
        "reasoner": {"max_new_tokens": 10, "n": 2},
        "optimizer": {"lr": 1e-3},
        "trainer": {"iterations": 2, "output_dir": str(output), "micro_batch_size": 3,
                    "save_every": 1, "progress": False, "seed": 11},
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return build_config(data)


def timeless(record: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in record.items()
            if not key.startswith(("time/", "throughput/", "memory/"))}


def recorded_run(base: Path, output: Path, sections: dict[str, dict[str, Any]]
                 ) -> dict[str, Any]:
    """What a run leaves that does not depend on the clock."""
    from safetensors.torch import load_file

    train(run_config(base, output, sections), agent_wrapper=ScriptedTextAgent)
    weights = load_file(str(output / "model" / "model.safetensors"))
    return {
        "metrics": [timeless(r) for r in read_jsonl(output / "metrics.jsonl")],
        "rollouts": read_jsonl(output / "rollouts.jsonl"),
        "evaluations": read_jsonl(output / "evaluations.jsonl"),
        "weights": {name: [float(t.double().sum()), float(t.double().abs().sum())]
                    for name, t in sorted(weights.items())},
        # the checksum records beside each checkpoint are left out (test_integrity.py)
        "checkpoints": sorted(p.name for p in (output / "checkpoints").iterdir()
                              if not p.name.endswith(".sha256")),
    }


def assert_same(found: Any, expected: Any, where: str = "",
                tolerance: tuple[float, float] = (1e-9, 1e-12)) -> None:
    if isinstance(expected, dict):
        assert isinstance(found, dict), where
        assert sorted(found) == sorted(expected), f"{where}: keys differ: " \
            f"{sorted(set(found) ^ set(expected))}"
        for key in expected:
            assert_same(found[key], expected[key], f"{where}/{key}", tolerance)
    elif isinstance(expected, list):
        assert isinstance(found, list) and len(found) == len(expected), where
        for index, (a, b) in enumerate(zip(found, expected, strict=True)):
            assert_same(a, b, f"{where}[{index}]", tolerance)
    elif isinstance(expected, float) and not isinstance(found, bool):
        assert isinstance(found, int | float), where
        assert math.isclose(found, expected, rel_tol=tolerance[0], abs_tol=tolerance[1]), \
            f"{where}: {found!r} != {expected!r}"
    else:
        assert found == expected, f"{where}: {found!r} != {expected!r}"


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("golden") / "base", seed=0)


@pytest.mark.parametrize("name", sorted(RUNS))
def test_a_seeded_run_computes_what_it_computed_before(base: Path, tmp_path: Path,
                                                        name: str) -> None:
    found = recorded_run(base, tmp_path / name, RUNS[name])
    records = json.loads(RECORD.read_text("utf-8")) if RECORD.exists() else {}
    here = machine()
    if os.environ.get("SPICE_WRITE_GOLDEN"):
        if os.environ.get("SPICE_WRITE_GOLDEN") != "add":  # other machines' records are stale
            records = {here: records.get(here, {})}
        records.setdefault(here, {})[name] = found
        RECORD.parent.mkdir(parents=True, exist_ok=True)
        RECORD.write_text(json.dumps(records, indent=1, sort_keys=True, ensure_ascii=False)
                          + "\n", "utf-8")
        pytest.skip(f"recorded {name} for {here}")
    assert found["metrics"] and found["rollouts"]
    if here in records:
        assert_same(found, records[here][name], name)
    else:  # another machine's numbers, to what the precision allows
        other = records[sorted(records)[0]][name]
        precision = RUNS[name]["trainer"]["precision"]
        assert_same(found, other, name, LOOSE[precision])
