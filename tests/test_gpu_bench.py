"""bench/gpu.py's CPU dry run: every part of the one-GPU bench runs, on a tiny model, and its JSON holds each figure.

The GPU run itself needs a CUDA host (bench/README.md); this keeps its code paths from rotting between GPU runs:
the same functions (the peak, the train stage against the stock recipe, the batch sweep, every lever, the
evaluate batch, the roberta-shaped model) run on the CPU in well under a minute.
"""

from __future__ import annotations

import json
import sys

from helpers import ROOT, run

GOALS = {"default_repro_s", "train_loop_samples_per_s", "train_loop_vs_stock", "best_batch_mfu", "roberta_mfu"}


def test_dry_run_measures_every_part(tmp_path):
    out = tmp_path / "gpu-dry.json"
    done = run(
        [sys.executable, "bench/gpu.py", "--dry-run", "--budget-s", "240", "--out", str(out)], ROOT, timeout=400
    )
    result = json.loads(out.read_text())
    assert result["dry_run"] and result["device"] == "cpu" and not result["goals_asserted"]
    assert result["budget"]["skipped"] == [] and result["budget"]["stopped"] == [], result["budget"]

    peak = result["peak"]["used_flops_per_s"]
    assert peak > 0 and result["peak"]["dtype"] == result["precision"]
    loop = result["train_loop"]
    for side in ("ours", "stock"):
        rates = loop[side]["samples_per_s"]
        assert rates["n"] == 3 and 0 < rates["min"] <= rates["median"] <= rates["max"], (side, rates)
        # model FLOPs per second over the run's own peak: a share, never above the chip
        assert 0 < loop[side]["mfu"]["max"] < 1, (side, loop[side]["mfu"])
    assert loop["ours_vs_stock"] == loop["ours"]["samples_per_s"]["median"] / loop["stock"]["samples_per_s"]["median"]
    assert set(result["batch_sweep"]["batches"]) == {"16", "32"}

    levers = result["levers"]["runs"]
    for name in ("base", "static_buckets", "adamw_foreach", "no_pin_memory", "compile", "eval_batch"):
        assert levers[name].get("does"), name
    assert all(e["speedup"] > 0 for e in result["levers"]["effects"].values())
    assert 0 < result["roberta"]["modes"]["eager"]["samples_per_s"]["median"]

    assert set(result["goals"]) == GOALS
    measured = {name: goal["measured"] for name, goal in result["goals"].items()}
    assert measured["default_repro_s"] is None  # no `dvc repro` in the dry run unless --repro
    assert measured["train_loop_samples_per_s"] == loop["ours"]["samples_per_s"]["median"]
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
