"""bench/gpu.py's CPU dry run: every part of the one-GPU bench runs on a tiny model, and its JSON holds each figure.

The GPU run itself needs a CUDA host (bench/README.md); this keeps its code paths from rotting between GPU runs.
"""

from __future__ import annotations

import json
import sys

import pytest
from helpers import ROOT, run

GOALS = {"default_repro_s", "train_loop_samples_per_s", "train_loop_vs_stock", "best_batch_mfu"}


def test_dry_run_measures_every_part(tmp_path):
    out = tmp_path / "gpu-dry.json"
    cmd = [sys.executable, "bench/gpu.py", "--dry-run", "--repro", "--repeats", "1", "--out", str(out)]
    done = run(cmd, ROOT, timeout=500)
    result = json.loads(out.read_text())
    repro = result["default_repro"]  # `dvc repro` from scratch on the tiny model, every stage timed
    assert list(repro["stage_seconds"]) == ["prepare", "tokenize", "train", "evaluate", "report", "export"]
    assert 0 < repro["total_seconds"] == pytest.approx(sum(repro["stage_seconds"].values()), abs=0.3)  # 0.1 s each
    assert result["dry_run"] and result["device"] == "cpu" and not result["goals_asserted"]
    assert result["peak"]["flops_per_s"][result["precision"]] > 0
    loop = result["train_loop"]
    for side in ("ours", "stock"):
        assert 0 < loop[side]["samples_per_s"]["median"], side
        assert 0 < loop[side]["mfu"]["max"] < 1, (side, loop[side]["mfu"])  # a share, never above the chip
    assert loop["ours_vs_stock"] == loop["ours"]["samples_per_s"]["median"] / loop["stock"]["samples_per_s"]["median"]
    assert set(result["batch_sweep"]["batches"]) == {"16", "32"}
    assert result["eval_batches"]["speedup"] > 0
    assert result["flops"]["encoder"]["layers"] == 2 and result["flops"]["encoder"]["adapted"]
    assert set(result["goals"]) == GOALS and result["goals"]["default_repro_s"]["measured"] == repro["total_seconds"]
    assert result["datasheet_peak_flops_per_s"] is None and "mfu_datasheet" not in loop["ours"]  # a CPU: none
    assert "goal train_loop_vs_stock" in done.stderr  # each goal is logged with its figure


def test_dry_run_never_writes_into_bench_results():
    done = run(
        [sys.executable, "bench/gpu.py", "--dry-run", "--out", "bench/results/gpu-x.json"],
        ROOT,
        check=False,
        timeout=60,
    )
    assert done.returncode == 2 and "never go into bench/results" in done.stderr
    assert not (ROOT / "bench/results/gpu-x.json").exists()


def test_datasheet_peak_by_device_name():
    sys.path.insert(0, str(ROOT / "bench"))
    from gpu import datasheet_peak

    assert datasheet_peak("NVIDIA H100 80GB HBM3") == datasheet_peak("NVIDIA H200") == 989e12
    assert datasheet_peak("NVIDIA H100 PCIe") == 756e12 and datasheet_peak("NVIDIA A100-SXM4-80GB") == 312e12
    assert datasheet_peak("Tesla T4") is None and datasheet_peak(None) is None
