"""`python bench/default_study.py [--repeats 3]`: the default study from scratch, timed -> bench/results/.

Each repeat runs `dvc repro -f -s STAGE` for every stage in order in this working tree (the last run's outputs,
dvc.lock included, are the ones to commit), with the load during each stage (benchlib.timed)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
from pathlib import Path

from benchlib import RESULTS, ROOT, host_info, log, spread, stamp, timed, write_json

STAGES = ("prepare", "tokenize", "train", "evaluate", "report", "export")


def one_run(log_file: Path, repo: Path = ROOT) -> dict:
    """Every stage of `repo` from scratch, in order; the run's total, load and test accuracy."""
    stages = {
        stage: timed([sys.executable, "-m", "dvc", "repro", "-f", "-s", stage], repo, log_file) for stage in STAGES
    }
    wall = sum(s["wall_s"] for s in stages.values())
    busy = sum((s["other_cores"] or 0) * s["wall_s"] for s in stages.values())  # other processes' core-seconds
    return {
        "stage_seconds": {stage: round(s["wall_s"], 1) for stage, s in stages.items()},
        "total_seconds": round(wall, 1),
        "other_cores": round(busy / wall, 2),  # time-weighted over the stages
        "load1_before": stages["prepare"]["load1_before"],
        "load1_after": stages["export"]["load1_after"],
        "test_accuracy": json.loads((repo / "metrics/test.json").read_text())["test"]["accuracy"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="from-scratch runs (default 3)")
    args = parser.parse_args()
    host, started = host_info(), dt.datetime.now(dt.timezone.utc)  # at the start: the tree that is measured
    log_file = Path(tempfile.mkdtemp(prefix="default-study-")) / "repro.log"
    runs = []
    for i in range(args.repeats):
        runs.append(one_run(log_file))
        log(f"run {i + 1}/{args.repeats}: {runs[-1]}")
    train = json.loads((ROOT / "metrics/train.json").read_text())
    record = {
        "bench": "default-study",
        "command": f"python bench/default_study.py --repeats {args.repeats}",
        "date": started.isoformat(timespec="seconds"),
        "host": host,
        "runs": runs,
        "total_seconds": spread(r["total_seconds"] for r in runs),
        "stage_seconds": {s: spread(r["stage_seconds"][s] for r in runs)["median"] for s in STAGES},
        "test": json.loads((ROOT / "metrics/test.json").read_text())["test"],  # the last run's: the committed one
        "val": train["val"],
        "fit": train["fit"],
    }
    out = write_json(RESULTS / f"default-study-{stamp()}.json", record)
    log(f"wrote {out}: median {record['total_seconds']['median']} s from scratch; log in {log_file}")


if __name__ == "__main__":
    main()
