"""The one-GPU bench: the train stage on one CUDA GPU against the stock recipe and the chip's own matmul peak.

    bash .gpu-kit/setup.sh && source .gpu-kit/env.sh && python bench/gpu.py     # on the GPU host
    python bench/gpu.py --dry-run [--repro]                                     # the same code paths on the CPU

In a temporary copy of this tree: the matmul peak, `dvc repro` from scratch (--repro), the train stage against
the stock recipe (alternating), a batch sweep with model FLOPs as a share of the peak, and the evaluate stage at
two batch sizes -> bench/results/gpu-<UTC>.json; a dry run (tiny model) writes to a temporary folder.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
sys.path[:0] = [str(ROOT / "bench"), str(ROOT)]  # benchlib, run, peer_trainer; lora_dvc and stages
for _key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "DVC_NO_ANALYTICS", "TQDM_DISABLE"):
    os.environ.setdefault(_key, "1")
from benchlib import (  # noqa: E402
    alternate,
    host_info,
    log,
    matmul_peak,
    run_flops,
    spread,
    token_lengths,
    write_json,
    write_params,
)
from default_study import one_run  # noqa: E402

# (rows, val rows, test rows, batches, evaluate batches, repeats, peak n, peak s, burst); the first batch is the loop's
GPU = (None, 0, 0, [32, 64, 128, 256, 512], [128, 1024], 3, 8192, 2.0, 10)
DRY = (96, 24, 32, [32, 16], [8, 64], 3, 256, 0.3, 1)
# issue 25's goals; a dry run reports them and asserts nothing
GOALS = {
    "default_repro_s": ("<=", 25.0, "default `dvc repro` from scratch on one GPU, s"),
    "train_loop_samples_per_s": (">=", 5000.0, "train stage at batch 32, its own samples/s"),
    "train_loop_vs_stock": (">=", 2.0, "train stage at batch 32 against the stock recipe, ratio of medians"),
    "best_batch_mfu": (">=", 0.10, "model FLOPs share of the measured peak, train stage at its best batch"),
}

# dense bf16 tensor-core peak from the vendor's datasheet, FLOP/s (sparsity not counted), by a name fragment
DATASHEET_BF16 = {
    "H200": 989e12,
    "H100 SXM": 989e12,
    "H100 PCIe": 756e12,
    "H100": 989e12,
    "A100": 312e12,
    "L4": 121e12,
}


def datasheet_peak(gpu: str | None) -> float | None:
    """The datasheet's dense bf16 peak for a torch.cuda device name, or None for a chip not listed (or the CPU)."""
    return next((peak for name, peak in DATASHEET_BF16.items() if gpu and name in gpu), None)


@contextlib.contextmanager
def cwd(path: Path):
    """The stages read params.yaml and their inputs from the working directory."""
    before = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)
        gc.collect()
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def tiny_model(folder: Path) -> Path:
    """The dry run's model: 2 layers x 32 wide from a config, with the real MiniLM tokenizer."""
    from transformers import AutoModel, AutoTokenizer, BertConfig

    from lora_dvc.modeling import resolve_model_path

    config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    AutoModel.from_config(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(resolve_model_path("sentence-transformers/all-MiniLM-L6-v2")).save_pretrained(folder)
    return folder


def run_ours(copy: Path, sets: list[str]) -> dict:
    """The train stage's main() in the copy under these params (as `dvc exp run -S` sets them): its own figures."""
    import stages.train

    write_params(copy, sets)
    with cwd(copy):
        stages.train.main()
    m = json.loads((copy / "records/train/metrics.json").read_text())
    samples = json.loads((copy / "records/prepare.json").read_text())["rows"]["train"] * m["epochs_run"]
    return {"samples_per_s": m["train_samples_per_second"], "loop_s": samples / m["train_samples_per_second"]}


def run_stock(copy: Path, precision: str, out: Path) -> dict:
    """bench/peer_trainer.py --recipe stock in this process on the copy's rows and params: its Trainer's loop."""
    import peer_trainer

    peer_trainer.main(["--repo", str(copy), "--out", str(out)] + (["--bf16"] if precision == "bf16" else []))
    r = json.loads(out.read_text())
    return {"samples_per_s": r["train_samples_per_second"], "loop_s": r["train_runtime"]}


def train_loop(copy: Path, batch: int, repeats: int, precision: str, work: Path, flops: float, peaks: tuple) -> dict:
    """Ours against the stock recipe at `batch`, alternating (benchlib.alternate), `repeats` times each; model FLOPs
    per second as a share of the measured matmul peak (mfu) and, for a listed chip, of its datasheet peak."""
    peak, datasheet = peaks
    runs = {"ours": [], "stock": []}
    for i, side in enumerate(alternate(["ours", "stock"], repeats)):
        if side == "ours":
            runs[side].append(run_ours(copy, [f"train.batch_size={batch}"]))
        else:
            runs[side].append(run_stock(copy, precision, work / f"stock-{i}.json"))
        log(f"{side} at batch {batch}: {runs[side][-1]['samples_per_s']:,.0f} samples/s")
    out = {"batch": batch, "precision": precision}
    for side, found in runs.items():
        out[side] = {
            "samples_per_s": spread(r["samples_per_s"] for r in found),
            "mfu": spread((flops / r["loop_s"] / peak for r in found), 9),  # a tiny dry-run model's is ~1e-6
        }
        if datasheet:
            out[side]["mfu_datasheet"] = spread((flops / r["loop_s"] / datasheet for r in found), 9)
    out["ours_vs_stock"] = out["ours"]["samples_per_s"]["median"] / out["stock"]["samples_per_s"]["median"]
    return out


def batch_sweep(copy: Path, batches: list[int], flops: float, peak: float) -> dict:
    """The train stage at each batch: samples/s and model FLOPs per second as a share of the peak."""
    sweep = {}
    for batch in batches:
        run = run_ours(copy, [f"train.batch_size={batch}"])
        sweep[str(batch)] = {"samples_per_s": run["samples_per_s"], "mfu": flops / run["loop_s"] / peak}
        log(f"ours at batch {batch}: {run['samples_per_s']:,.0f} samples/s")
    return {"batches": sweep, "best_batch": int(max(sweep, key=lambda b: sweep[b]["mfu"]))}


def eval_batches(copy: Path, batches: list[int], repeats: int) -> dict:
    """evaluate.batch_size: the evaluate stage's own test samples/s at each batch, alternating."""
    import stages.evaluate

    runs = {b: [] for b in batches}
    for batch in alternate(batches, repeats):
        write_params(copy, [f"evaluate.batch_size={batch}"])
        with cwd(copy):
            stages.evaluate.main()
        runs[batch].append(
            json.loads((copy / "records/evaluate/metrics.json").read_text())["test"]["samples_per_second"]
        )
        log(f"evaluate at batch {batch}: {runs[batch][-1]:,.0f} samples/s")
    out = {str(b): spread(r) for b, r in runs.items()}
    out["speedup"] = out[str(batches[-1])]["median"] / out[str(batches[0])]["median"]
    return out


def goals(result: dict) -> dict:
    loop, sweep = result["train_loop"], result["batch_sweep"]
    measured = {
        "default_repro_s": (result["default_repro"] or {}).get("total_seconds"),
        "train_loop_samples_per_s": loop["ours"]["samples_per_s"]["median"],
        "train_loop_vs_stock": loop["ours_vs_stock"],
        "best_batch_mfu": sweep["batches"][str(sweep["best_batch"])]["mfu"],
    }
    out = {}
    for name, (op, target, what) in GOALS.items():
        value = measured[name]
        met = value is not None and (value >= target if op == ">=" else value <= target)
        out[name] = {"what": what, "target": f"{op} {target:g}", "measured": value, "met": met}
    return out


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true", help="the same code paths on the CPU, tiny model, seconds")
    ap.add_argument("--repro", action=argparse.BooleanOptionalAction, default=None, help="time `dvc repro` (GPU: on)")
    ap.add_argument("--repeats", type=int, help="runs of ours and of the stock recipe at batch 32 (default 3)")
    ap.add_argument("--out", type=Path, help="result JSON (default bench/results/gpu-<UTC>.json; dry run: a temp dir)")
    args = ap.parse_args(argv)
    if args.repeats is not None and args.repeats < 1:
        ap.error("--repeats takes an integer >= 1")
    if args.dry_run and args.out is not None and args.out.resolve().is_relative_to(RESULTS.resolve()):
        ap.error(f"dry-run figures never go into {RESULTS.relative_to(ROOT)}; give --out another folder")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        sys.exit("error: torch sees no CUDA GPU here; python bench/gpu.py --dry-run runs the CPU dry run")
    rows, val_rows, test_rows, batches, eval_sizes, repeats, peak_n, peak_s, burst = DRY if args.dry_run else GPU
    repeats = args.repeats or repeats
    device = "cpu" if args.dry_run else "cuda"
    if args.dry_run:
        torch.set_num_threads(1)  # a busy shared CPU (CI runs tests side by side) stalls 2 spinning threads
    from run import make_copy

    from lora_dvc.device import Runtime
    from lora_dvc.runner import setup_logging

    setup_logging()
    now = dt.datetime.now(dt.timezone.utc)
    work = Path(tempfile.mkdtemp(prefix="gpu-bench-"))
    os.environ["LORA_DVC_CHECKPOINTS"] = str(work / "checkpoints")  # never the user's ~/.cache
    precision = Runtime.create(device, "auto").precision
    sets = [
        "train.min_steps=null",
        "train.epochs=1",
        "train.checkpoint_every=0",
        f"train.device={device}",
        f"train.precision={precision}",
    ]
    if args.dry_run:  # the CUDA path's dropout, and a model that trains in seconds
        sets += ["train.fast_dropout=false", f"model.name={tiny_model(work / 'tiny')}", "model.max_length=64"]
    result = {
        "bench": "gpu",
        "command": " ".join(["python bench/gpu.py", *(sys.argv[1:] if argv is None else argv)]),
        "date": now.isoformat(timespec="seconds"),
        "dry_run": args.dry_run,
        "device": device,
        "precision": precision,
        "host": host_info(),
        "gpu": torch.cuda.get_device_name() if device == "cuda" else None,
        "cuda": torch.version.cuda,
    }
    copy = make_copy(work / "repo", rows, val_rows, test_rows, seed=0, overrides=sets)
    result["peak"] = matmul_peak(peak_n, peak_s, device, burst)
    peak = result["peak"]["flops_per_s"][precision]
    log(f"{device}, {precision}: matmul peak {peak / 1e12:,.3f} TFLOP/s; work in {work}")
    repro = args.repro if args.repro is not None else not args.dry_run
    result["default_repro"] = one_run(work / "repro.log", copy) if repro else None
    if not repro:  # the loops need the tokenize stage's outputs
        import stages.prepare
        import stages.tokenize

        with cwd(copy):
            stages.prepare.main()
            stages.tokenize.main()
    write_params(copy, sets)
    lengths = token_lengths(copy)
    encoder = lengths["encoder"]
    flops = run_flops(encoder, lengths["train"], lengths["val"])  # one epoch: train rows, one val pass
    result["flops"] = {"encoder": encoder.__dict__, "epoch_flops": flops, "train_rows": len(lengths["train"])}
    datasheet = datasheet_peak(result["gpu"]) if precision == "bf16" else None
    result["datasheet_peak_flops_per_s"] = datasheet
    result["train_loop"] = train_loop(copy, batches[0], repeats, precision, work, flops, (peak, datasheet))
    result["batch_sweep"] = batch_sweep(copy, batches, flops, peak)
    result["eval_batches"] = eval_batches(copy, eval_sizes, 1 if args.dry_run else 2)
    result["goals"] = goals(result)
    result["goals_asserted"] = not args.dry_run
    out = args.out or (work if args.dry_run else RESULTS) / f"gpu-{now.strftime('%Y%m%dT%H%M%SZ')}.json"
    write_json(out, result)
    for name, g in result["goals"].items():
        log(f"goal {name}: {g['target']}, measured {g['measured']}, met {g['met']}")
    print(f"wrote {out}")
    shutil.rmtree(work / "repo", ignore_errors=True)


if __name__ == "__main__":
    main()
