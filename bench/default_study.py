"""The default study from scratch, stage by stage, timed: the record README's figures are generated from.

    python bench/default_study.py        # in the repository root -> bench/results/default-study-<time>.json

Runs `dvc repro -f -s STAGE` for every stage of dvc.yaml in pipeline order in this working tree (so its
outputs, dvc.lock included, are the ones to commit), each as its own process with DVC's start-up included,
and records the wall seconds of each, their total, the host (CPU, native-bf16 flags, torch) and the
numbers the stages wrote (test and val scores, train seconds, samples/s). tests/test_figures.py checks
that README quotes exactly what the newest record says.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

from benchlib import RESULTS, ROOT, env, host_info, stamp, write_json

STAGES = ("prepare", "tokenize", "train", "evaluate", "report", "export")


def main() -> None:
    host = host_info()  # at the start: the tree that is measured
    seconds = {}
    for stage in STAGES:
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "dvc", "repro", "-f", "-s", stage],
            cwd=ROOT,
            env=env(),
            capture_output=True,
            text=True,
        )
        seconds[stage] = round(time.perf_counter() - started, 1)
        if done.returncode != 0:
            raise SystemExit(f"dvc repro -f -s {stage} failed:\n{done.stderr[-3000:]}")
        print(f"{stage}: {seconds[stage]} s", flush=True)
    train = json.loads((ROOT / "metrics/train.json").read_text())
    test = json.loads((ROOT / "metrics/test.json").read_text())["test"]
    record = {
        "bench": "default-study",
        "host": host,
        "stage_seconds": seconds,
        "total_seconds": round(sum(seconds.values()), 1),
        "test": test,
        "val": train["val"],
        "fit": train["fit"],
    }
    out = write_json(RESULTS / f"default-study-{stamp()}.json", record)
    print(f"wrote {out}: {record['total_seconds']} s from scratch, test accuracy {test['accuracy']}")


if __name__ == "__main__":
    main()
