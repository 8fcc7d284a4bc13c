"""Seconds per training step of the default recipe's model under each speed lever, through transformers' Trainer.

    python bench/step_levers.py [--steps 16] [--repeats 3] [--levers base,fast_dropout,fp32,...] [--out FILE]

The train stage's model for params.yaml (lora_dvc.modeling), trained by `Trainer` on batches of 32 random ids
at AG News-like lengths; each lever (LEVERS) runs in its own process (`--child LEVER`), the order
reversed every other repeat, and is compared per repeat with `base`. Writes bench/results/step-levers-<date>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
from pathlib import Path

from benchlib import RESULTS, ROOT, host_info, spread, stamp, timed, write_json

# lever: (bf16 autocast, lora_dvc's fast dropout, every frozen tensor in bf16)
LEVERS = {
    "base": (True, False, False),
    "fast_dropout": (True, True, False),
    "ready_bf16": (True, True, True),
    "fp32": (False, False, False),
    "fp32_fast": (False, True, False),
}
LENGTHS = [40, 48, 56, 64, 44, 52, 36, 72]  # tokens per row; AG News rows average about 45
BATCH = 32


def lever_model(lever: str):
    """The train stage's model for params.yaml, with `lever`'s speed levers, in training mode."""
    from lora_dvc.dropout import use_fast_dropout
    from lora_dvc.modeling import apply_method, load_base_model, ready_for_bf16_autocast
    from lora_dvc.params import load_params

    _, fast, bf16_storage = LEVERS[lever]
    params = load_params(ROOT / "params.yaml")
    model = apply_method(load_base_model(params.model.name, list("abcd")), params.train.method, params.lora)
    if fast:
        use_fast_dropout(model)
    if bf16_storage:
        ready_for_bf16_autocast(model)
    return model


def one_lever(lever: str, steps: int) -> dict:
    """Warm-up (every row length once), then `steps` timed Trainer steps of the lever's model, in this process."""
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments

    torch.manual_seed(0)
    clock: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            clock.append(time.perf_counter())

    def collate(rows: list) -> dict:
        length = LENGTHS[collate.calls % len(LENGTHS)]
        collate.calls += 1
        ids = torch.randint(1000, 20000, (len(rows), length))
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.randint(0, 4, (len(rows),))}

    collate.calls = 0
    warm = len(LENGTHS)
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            out,
            per_device_train_batch_size=BATCH,
            max_steps=warm + steps,
            bf16=LEVERS[lever][0],
            use_cpu=True,
            save_strategy="no",
            logging_strategy="no",
            report_to="none",
            disable_tqdm=True,
        )
        data = list(range(BATCH * (warm + steps)))
        Trainer(lever_model(lever), args, train_dataset=data, data_collator=collate, callbacks=[Clock()]).train()
    return {
        "lever": lever,
        "s_per_step": round((clock[-1] - clock[warm - 1]) / steps, 4),
        "threads": torch.get_num_threads(),
        "tokens_per_step": BATCH * sum(LENGTHS) / len(LENGTHS),
    }


def run_lever(lever: str, steps: int, logs: Path) -> dict:
    """One lever in its own process (`--child`), timed with the load it met."""
    log_file = logs / f"{lever}-{time.time_ns()}.log"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", lever, "--steps", str(steps)]
    process = timed(cmd, ROOT, log_file)
    lines = [ln for ln in log_file.read_text().splitlines() if ln.startswith("{")]
    return {**json.loads(lines[-1]), **{k: process[k] for k in ("other_cores", "load1_before", "load1_after")}}


def summarise(runs: list[dict], levers: list[str]) -> list[dict]:
    """One row per lever: min/median/max s/step (bench/figures.py compares the levers repeat by repeat)."""
    results = []
    for lever in levers:
        mine = [r for r in runs if r["lever"] == lever]
        results.append(
            {
                "lever": lever,
                "s_per_step_spread": spread(r["s_per_step"] for r in mine),
                "threads": mine[0]["threads"],
                "tokens_per_step": mine[0]["tokens_per_step"],
            }
        )
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=16, help="timed steps per lever (after one warm-up pass)")
    ap.add_argument("--levers", default=",".join(LEVERS), help=f"comma-separated, from {', '.join(LEVERS)}")
    ap.add_argument("--out", type=Path, help="JSON path (default bench/results/step-levers-<date>.json)")
    ap.add_argument("--repeats", type=int, default=3, help="runs per lever, the order reversed every other repeat")
    ap.add_argument("--child", metavar="LEVER", help="time one lever in this process and print its JSON line")
    args = ap.parse_args()
    levers = [args.child] if args.child else args.levers.split(",")
    unknown = sorted(set(levers) - set(LEVERS))
    if unknown:
        raise SystemExit(f"step_levers: unknown lever(s) {unknown}; choose from {', '.join(LEVERS)}")
    if args.steps < 1 or args.repeats < 1:
        raise SystemExit("step_levers: --steps and --repeats must be at least 1")
    if args.child:
        print(json.dumps(one_lever(args.child, args.steps)), flush=True)
        return
    runs = []
    with tempfile.TemporaryDirectory(prefix="step-levers-") as logs:
        for repeat in range(args.repeats):
            for lever in levers if repeat % 2 == 0 else levers[::-1]:  # A B C, then C B A: drift hits all alike
                runs.append({**run_lever(lever, args.steps, Path(logs)), "repeat": repeat})
                print(json.dumps(runs[-1]), flush=True)
    record = {
        "command": " ".join(["python bench/step_levers.py", *sys.argv[1:]]),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "host": host_info(),
        **{"results": summarise(runs, levers), "repeats": args.repeats, "steps": args.steps, "runs": runs},
    }
    print(f"wrote {write_json(args.out or RESULTS / f'step-levers-{stamp()}.json', record)}")


if __name__ == "__main__":
    main()
