"""The pipeline's train stage against the stock Hugging Face Trainer recipe, alternating repeats.

    python bench/run.py --quick          # 256 rows, 1 repeat: checks the harness (minutes), figures meaningless
    python bench/run.py                  # 2,048 rows, 3 alternating repeats

In a temporary git + DVC copy of this tree (AG News, all-MiniLM-L6-v2, `data.max_train_rows=--rows`, --set
overrides): `dvc repro -f -s train` in fp32 and bf16 against bench/peer_trainer.py, in
benchlib.run_order; accuracy at equal steps, model FLOPs (benchlib.run_flops) against the matmul peak, no-op
`dvc repro`, peak RSS. Writes bench/results/stock-recipe-<time>.json; bench/figures.py quotes the newest.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml
from benchlib import (
    BENCH,
    RESULTS,
    ROOT,
    alternate,
    copy_tree,
    git_commit_all,
    host_info,
    log,
    matmul_peak,
    paired_ratios,
    read_raw,
    run_flops,
    run_order,
    spread,
    stamp,
    timed,
    token_lengths,
    wait_for_quiet,
    write_json,
    write_params,
    write_raw,
)

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
RAW = ROOT / "data/raw/ag_news"
SIDES = ("ours", "stock")


def dvc(args: list[str], repo: Path, what: str = "dvc", extra_env: dict | None = None) -> dict:
    return timed([sys.executable, "-m", "dvc", *args], repo, repo.parent / f"{what}.log", extra_env)


def make_copy(dest: Path, rows: int, val_rows: int, test_rows: int, seed: int, overrides: list[str] = ()) -> Path:
    """A fresh git + DVC repository with this working tree's files and the bench's params (AG News)."""
    copy_tree(dest)
    # the dev pool as shipped; test cut to a seeded, stratified sample so the test passes stay
    # affordable on 2 cores (both sides see the same rows)
    data = dest / "data/bench_ag_news"
    data.mkdir(parents=True)
    shutil.copy2(RAW / "dev.tsv", data / "dev.tsv")
    test = read_raw(RAW / "test.tsv")
    if test_rows and test_rows < len(test):
        test = test.groupby(test.columns[-1], group_keys=False).sample(frac=test_rows / len(test), random_state=seed)
        test = test.sample(frac=1, random_state=seed)
    write_raw(test, data / "test.tsv")
    val = [f"data.val_fraction={round(val_rows / len(read_raw(RAW / 'dev.tsv')), 5)}"] if val_rows else []
    # val is carved from the pool before max_train_rows; keep its pass small
    sets = ["data.dataset=ag_news", "data.path=data/bench_ag_news", f"data.max_train_rows={rows or 'null'}", *val]
    write_params(dest, [*sets, f"model.name={MODEL}", "train.epochs=1", *overrides])
    return git_commit_all(dest)


def best_peak(*peaks: dict) -> dict:
    """The best of several peak measurements: another process on a core only ever lowers the figure."""
    best = dict(peaks[0])
    best["flops_per_s"] = {k: max(p["flops_per_s"][k] for p in peaks) for k in peaks[0]["flops_per_s"]}
    best["measurements"] = [p["flops_per_s"] for p in peaks]
    return best


def run_ours(copy: Path, precision: str, with_test: bool, extra_env: dict | None = None) -> dict:
    """`dvc repro -f -s train` at this precision: whole-process wall, the stage's own figures, accuracy."""
    write_params(copy, [f"train.precision={precision}"])
    t = dvc(["repro", "-f", "-s", "train"], copy, "ours", extra_env)
    m = json.loads((copy / "records/train/metrics.json").read_text())
    run = {
        **t,
        "side": "ours",
        "precision": precision,
        "steps": m.get("steps"),
        "epochs": m.get("epochs"),
        "loop_s": m.get("train_seconds"),
        "samples_per_second": m.get("train_samples_per_second"),
        "val_accuracy": m["val"]["accuracy"],
    }
    if with_test:
        dvc(["repro", "-f", "-s", "evaluate"], copy, "ours")
        ev = json.loads((copy / "records/evaluate/metrics.json").read_text())
        run.update(test_accuracy=ev["test"]["accuracy"], majority_accuracy=ev["test"]["majority_accuracy"])
    return run


def run_peer(copy: Path, recipe: str, precision: str, steps: int, with_test: bool) -> dict:
    """bench/peer_trainer.py: whole-process wall less its test pass, so it covers what `-s train` covers."""
    out = copy.parent / f"peer-{recipe}-{precision}-{time.time_ns()}.json"
    cmd = [
        sys.executable,
        str(BENCH / "peer_trainer.py"),
        "--repo",
        str(copy),
        "--max-steps",
        str(steps),
        "--out",
        str(out),
    ]
    cmd += (["--test"] if with_test else []) + (["--bf16"] if precision == "bf16" else [])
    t = timed(cmd, copy, copy.parent / "peer.log")
    res = json.loads(out.read_text())
    t["wall_s"] = round(t["wall_s"] - res.get("test_seconds", 0.0), 3)
    return {
        **t,
        "side": recipe,
        "precision": precision,
        "steps": res["steps"],
        "loop_s": res["train_runtime"],
        "samples_per_second": res["train_samples_per_second"],
        "val_accuracy": res["val_accuracy"],
        "test_accuracy": res.get("test_accuracy"),
    }


def speed_runs(copy: Path, args, default: str) -> list[dict]:
    """Every config in `run_order`, rotated from repeat to repeat; accuracy (test pass) on each config's first run."""
    runs, steps = [], None
    order = run_order(default, tuple(args.precisions))
    for i, (side, precision) in enumerate(alternate(order, args.repeats)):
        first = not any(r["side"] == side and r["precision"] == precision for r in runs)
        if args.quiet_wait:
            wait_for_quiet(args.quiet_cores, args.quiet_wait)
        if side == "ours":
            runs.append(run_ours(copy, precision, with_test=first))
            steps = steps or runs[-1]["steps"]  # the same rows and epochs in every precision
        else:
            runs.append(run_peer(copy, side, precision, steps, with_test=first))
        runs[-1]["repeat"] = i // len(order)
        log(f"{side} {precision}: {runs[-1]['wall_s']} s wall, {runs[-1]['other_cores']} other cores")
    return runs


def median_of(runs: list[dict], side: str, precision: str, key: str = "wall_s") -> float | None:
    values = [r[key] for r in runs if r["side"] == side and r["precision"] == precision and r.get(key) is not None]
    return round(statistics.median(values), 3) if values else None


def first_of(runs: list[dict], side: str, precision: str, key: str):
    return next(
        (r[key] for r in runs if r["side"] == side and r["precision"] == precision and r.get(key) is not None), None
    )


def default_precision() -> str:
    """What `train.precision: auto` resolves to on this host, asked of the pipeline's own code."""
    from lora_dvc.device import Runtime

    return Runtime.create("cpu", "auto").precision


def speed_summary(runs: list[dict], default: str, precisions: tuple[str, ...] = ("fp32", "bf16")) -> dict:
    """Per row (each measured precision on both sides, then our default against the stock default where those
    differ): min/median/max whole-process seconds per side, and ours-vs-peer ratios (peer time / our time) per
    repeat, each against the peer run next to it, with their min/median/max."""
    rows = {p: (p, p) for p in ("fp32", "bf16") if p in precisions}
    if default != "fp32":
        rows["default"] = (default, "fp32")
    summary = {}
    for row, pair in rows.items():
        ours_p, peer_p = pair
        entry = {"ours_precision": ours_p, "peer_precision": peer_p}
        for side, precision in (("ours", ours_p), ("stock", peer_p)):
            seconds = [r["wall_s"] for r in runs if (r["side"], r["precision"]) == (side, precision)]
            entry[f"{side}_s"] = spread(seconds) if seconds else None
            if side != "ours":
                ratios = paired_ratios(runs, ("ours", ours_p), (side, precision))
                entry[f"vs_{side}"] = spread(ratios) if ratios else None
        summary[row] = entry
    return summary


def accuracy_summary(runs: list[dict], precisions: tuple[str, ...]) -> dict:
    acc = {}
    for precision in precisions:
        ours, stock = (
            first_of(runs, "ours", precision, "test_accuracy"),
            first_of(runs, "stock", precision, "test_accuracy"),
        )
        acc[precision] = {
            "steps": [first_of(runs, s, precision, "steps") for s in ("ours", "stock")],
            "ours_val": first_of(runs, "ours", precision, "val_accuracy"),
            "stock_val": first_of(runs, "stock", precision, "val_accuracy"),
            "ours_test": ours,
            "stock_test": stock,
            "delta_points": round(100 * (ours - stock), 2) if ours is not None and stock is not None else None,
            "majority": first_of(runs, "ours", precision, "majority_accuracy"),
        }
    return acc


def flops_summary(runs: list[dict], lengths: dict, peak: dict, epochs: float) -> dict:
    """Model FLOPs of one run, per trained token, and each side's achieved FLOP/s over its own loop clock."""
    enc = lengths["encoder"]
    total = run_flops(enc, lengths["train"], lengths["val"], epochs)
    per_token = run_flops(enc, lengths["train"], [], 1.0) / sum(lengths["train"])
    achieved = {}
    for side in SIDES:
        for precision in ("fp32", "bf16"):
            loop = median_of(runs, side, precision, "loop_s")
            if loop:
                rate = total / loop
                achieved[f"{side}/{precision}"] = {
                    "flops_per_s": rate,
                    "share_of_peak": rate / peak["flops_per_s"][precision],
                }
    return {
        "encoder": enc.__dict__,
        "epochs": epochs,
        "train_tokens": sum(lengths["train"]),
        "val_tokens": sum(lengths["val"]),
        "per_train_token": per_token,
        "run_total": total,
        "achieved": achieved,
    }


def noop_repro(copy: Path, repeats: int = 3) -> float:
    """Median wall of `dvc repro` with every stage cached (after one run that brings it up to date)."""
    dvc(["repro"], copy, "pipeline")
    return round(statistics.median(dvc(["repro"], copy, "noop")["wall_s"] for _ in range(repeats)), 3)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description="ours (dvc repro) vs the stock Trainer recipe, alternating repeats")
    ap.add_argument("--rows", type=int, default=2048, help="training rows (data.max_train_rows)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per side and precision (at least 3 to publish)")
    ap.add_argument("--val-rows", type=int, default=500, help="about this many val rows (sets data.val_fraction)")
    ap.add_argument("--test-rows", type=int, default=2000, help="stratified sample of the official test split")
    ap.add_argument("--quiet-cores", type=float, default=0.3, help="wait until other processes use fewer cores")
    ap.add_argument("--quiet-wait", type=float, default=60, help="... for at most this many s (0: never wait)")
    ap.add_argument("--quick", action="store_true", help="256 rows, 1 repeat, small val/test: checks the harness")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="params override, as exp run -S")
    ap.add_argument("--keep", action="store_true", help="keep the temporary repository")
    ap.add_argument(
        "--precisions",
        nargs="+",
        choices=("fp32", "bf16"),
        help="precisions to run both sides in (default: fp32, and bf16 where `train.precision: auto` picks it)",
    )
    args = ap.parse_args(argv)
    if args.quick:
        args.rows, args.repeats, args.val_rows, args.test_rows, args.quiet_wait = 256, 1, 128, 256, 0
    if args.rows < 1 or args.repeats < 1:
        ap.error("--rows and --repeats must be at least 1")
    return args


def main() -> None:
    args = parse_args()
    started, started_stamp = time.perf_counter(), stamp()
    date = dt.datetime.now().astimezone().isoformat(timespec="seconds")
    host = host_info()  # at the start: the tree the copy is made from, not one edited while the bench ran
    work = Path(tempfile.mkdtemp(prefix="lora-bench-"))
    copy = make_copy(work / "repo", args.rows, args.val_rows, args.test_rows, seed=0, overrides=args.set)
    log(f"temporary repository {copy}")
    dvc(["repro", "-s", "prepare"], copy, "pipeline")
    dvc(["repro", "-s", "tokenize"], copy, "pipeline")
    peak = matmul_peak()
    log(f"matmul peak: { ({k: round(v / 1e9, 1) for k, v in peak['flops_per_s'].items()}) } GFLOP/s")
    default = default_precision()
    args.precisions = sorted(set(args.precisions or ["fp32", default]) | {default}, key=["fp32", "bf16"].index)
    runs = speed_runs(copy, args, default)
    peak = best_peak(peak, matmul_peak())  # again after the runs: the quieter of the two is the peak
    lengths = token_lengths(copy)
    params = yaml.safe_load((copy / "params.yaml").read_text())
    result = {
        "bench": "stock-recipe",
        "command": " ".join(["python bench/run.py", *sys.argv[1:]]),
        "date": date,
        "stamp": started_stamp,
        "host": host,
        "args": vars(args),
        "params": params,
        "rows": json.loads((copy / "records/prepare.json").read_text())["rows"],
        "runs": runs,
        "speed": speed_summary(runs, default, tuple(args.precisions)),
        "accuracy": accuracy_summary(runs, tuple(args.precisions)),
        "flops": flops_summary(runs, lengths, peak, first_of(runs, "ours", args.precisions[0], "epochs")),
        "peak": peak,
        "peak_rss_mb": {
            p: max((r["peak_rss_mb"] for r in runs if r["side"] == "ours" and r["precision"] == p), default=None)
            for p in args.precisions
        },
        "noop_repro_s": noop_repro(copy),
    }
    result["bench_wall_s"] = round(time.perf_counter() - started, 1)
    # --quick figures are a harness check, not a published record: they stay out of bench/results
    out = write_json((work if args.quick else RESULTS) / f"stock-recipe-{result['stamp']}.json", result)
    print(json.dumps({"speed": result["speed"], "accuracy": result["accuracy"]}, indent=1))
    print(f"\nresults: {out}\n`python bench/figures.py` rewrites the docs' figures from the newest record")
    if not args.keep and not args.quick:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
