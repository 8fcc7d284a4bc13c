"""Does storing every frozen tensor in bf16 cost accuracy against only the Linear ones? The default study, 3 seeds.

    python bench/bf16_storage.py                      # seeds 42 43 44 -> bench/results/bf16-storage-<time>.json

Two rules for the frozen weights under bf16 autocast: every frozen tensor in bf16, embeddings and LayerNorm
included ("all-frozen", what `lora_dvc.modeling.ready_for_bf16_autocast` does: faster on a CPU, as the
activations between layers stay bf16), or only the frozen Linear tensors, which autocast would cast anyway
("linear": exactly autocast's numerics). Each run is the default study's train and evaluate stages on the
committed tree (`git archive HEAD`), one seed and one rule at a time, the rules alternating, each with its
own checkpoint folder; both rules are patched in, so the tree's own rule does not matter. The JSON holds
every run's test and val scores and train seconds, and per rule the mean and sample standard deviation of
the scores and min/median/max of the seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from benchlib import RESULTS, ROOT, env, git_commit_all, host_info, mean_std, stamp, write_json

RULES = ("linear", "all-frozen")


def bf16_rule(rule: str):
    """`ready_for_bf16_autocast` under one rule, spelled out here whatever the tree's own function does."""
    import torch

    from lora_dvc import compat

    def ready(model) -> int:
        compat.disable_lora_input_cast(model)
        if rule == "linear":
            modules = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
            tensors = [p for m in modules for p in m.parameters(recurse=False)]
        else:
            tensors = list(model.parameters())
        frozen = [p for p in tensors if not p.requires_grad and p.is_floating_point() and p.dtype != torch.bfloat16]
        for param in frozen:
            param.data = param.data.to(torch.bfloat16)
        return len(frozen)

    return ready


def train_and_evaluate(rule: str) -> None:
    """(child, run in the copy) the train and evaluate stages with `rule` where training looks it up."""
    sys.path.insert(0, os.getcwd())  # the copy's lora_dvc and stages, not this tree's
    import stages.evaluate
    import stages.train
    from lora_dvc import training
    from lora_dvc.runner import run_stage

    training.ready_for_bf16_autocast = bf16_rule(rule)
    run_stage(stages.train.run)
    run_stage(stages.evaluate.main)


def prepared_copy(dest: Path) -> Path:
    """HEAD's tree in `dest`, a git + DVC repository with prepare and tokenize run."""
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", "HEAD"], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    git_commit_all(dest)
    subprocess.run(
        [sys.executable, "-m", "dvc", "repro", "tokenize"], cwd=dest, check=True, capture_output=True, env=env()
    )
    return dest


def one_run(repo: Path, rule: str, seed: int, checkpoints: Path) -> dict:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["train"]["seed"] = seed
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", rule],
        cwd=repo,
        env=env(LORA_DVC_CHECKPOINTS=str(checkpoints / f"{rule}-{seed}")),
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"{rule} seed {seed} failed:\n{done.stderr[-3000:]}")
    train = json.loads((repo / "metrics/train.json").read_text())
    test = json.loads((repo / "metrics/test.json").read_text())["test"]
    row = {
        "rule": rule,
        "seed": seed,
        "test_accuracy": test["accuracy"],
        "test_macro_f1": test["macro_f1"],
        "val_accuracy": train["val"]["accuracy"],
        "train_seconds": train["fit"]["seconds"],
        "process_seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(row), flush=True)
    return row


def summary(rows: list[dict]) -> dict:
    out = {}
    for rule in RULES:
        mine = [r for r in rows if r["rule"] == rule]
        secs = sorted(r["train_seconds"] for r in mine)
        accuracy, accuracy_std = mean_std(r["test_accuracy"] for r in mine)
        out[rule] = {
            "test_accuracy_mean": accuracy,
            "test_accuracy_std": accuracy_std,
            "test_macro_f1_mean": mean_std(r["test_macro_f1"] for r in mine)[0],
            "train_seconds": {"min": secs[0], "median": statistics.median(secs), "max": secs[-1]},
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    parser.add_argument("--child", choices=RULES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        train_and_evaluate(args.child)
        return
    host = host_info()
    with tempfile.TemporaryDirectory() as scratch:
        repo = prepared_copy(Path(scratch) / "repo")
        rows = []
        for i, seed in enumerate(args.seeds):
            order = RULES if i % 2 == 0 else RULES[::-1]  # alternate which rule runs first
            rows += [one_run(repo, rule, seed, Path(scratch) / "checkpoints") for rule in order]
    result = {
        "bench": "bf16-storage",
        "host": host,
        "study": "params.yaml default",
        "runs": rows,
        "summary": summary(rows),
    }
    out = write_json(RESULTS / f"bf16-storage-{stamp()}.json", result)
    print(f"wrote {out}")
    print(json.dumps(result["summary"], indent=2))


if __name__ == "__main__":
    main()
