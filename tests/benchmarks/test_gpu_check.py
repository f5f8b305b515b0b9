"""The GPU check script, run on the CPU (the same code; its report says it is no GPU check)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from benchmarks.perf import gpu_check


def test_every_check_runs_and_reports(tmp_path: Path) -> None:
    output = tmp_path / "gpu_check.json"
    assert gpu_check.main(["--device", "cpu", "--output", str(output)]) == 0
    report = json.loads(output.read_text())
    assert report["device"] == "cpu" and "not a GPU check" in report["device_name"]
    assert set(report["checks"]) == set(gpu_check.CHECKS) and report["passed"]
    assert report["checks"]["shared_prompt_mask"]["max_abs_difference"] < 1e-4
    assert report["checks"]["training"]["iterations"] == 2
    assert "| training | yes |" in output.with_suffix(".md").read_text()


def test_a_failing_check_is_reported_and_the_rest_still_run(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(device: torch.device) -> dict[str, object]:
        raise RuntimeError("no kernel for this")

    monkeypatch.setitem(gpu_check.CHECKS, "hf_generation", broken)
    results = gpu_check.run_checks(torch.device("cpu"),
                                   ["hf_generation", "shared_prompt_mask"])
    assert results["hf_generation"]["passed"] is False
    assert "no kernel for this" in results["hf_generation"]["error"]
    assert results["shared_prompt_mask"]["passed"] is True


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is here")
def test_without_a_gpu_it_says_so(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert gpu_check.main(["--output", str(tmp_path / "x.json")]) == 2
    assert "no CUDA device" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()
