"""bench/gpu.py's CPU dry run: every part of the one-GPU bench runs on a tiny model, and its JSON holds each figure.

The GPU run itself needs a CUDA host (bench/README.md); this keeps its code paths from rotting between GPU runs.
"""

from __future__ import annotations

import json
import sys

from helpers import ROOT, run

GOALS = {"default_repro_s", "train_loop_samples_per_s", "train_loop_vs_stock", "best_batch_mfu"}


def test_dry_run_measures_every_part(tmp_path):
    out = tmp_path / "gpu-dry.json"
    done = run([sys.executable, "bench/gpu.py", "--dry-run", "--repeats", "1", "--out", str(out)], ROOT, timeout=400)
    result = json.loads(out.read_text())
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
    assert set(result["goals"]) == GOALS and result["goals"]["default_repro_s"]["measured"] is None
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
