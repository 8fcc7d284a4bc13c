"""Where the train stage's time goes: py-spy over `python -m stages.train`, plus torch.profiler ops.

    python bench/profile_train.py                    # same slice as bench/run.py's default
    python bench/profile_train.py --rows 1500 --torch-steps 20

Builds the same temporary git + DVC copy as bench/run.py, runs prepare and tokenize there, then:
1. samples the whole train stage process with py-spy (`pip install py-spy`; not a project
   requirement) and attributes every sample to one phase of the stage (imports, model load,
   forward, backward, optimizer, the val pass, DVCLive, checkpoints, ...), and the forward and
   backward samples further to the layer kind they were in;
2. with --torch-steps N, runs N training steps in-process with the stage's own model loading,
   LoRA wrapping, batching and collate under torch.profiler and prints the top operators.
Writes the text report to bench/results/profile-<time>.txt as well as stdout.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # noqa: E402

# (phase, frame substrings; the first phase with any frame in the stack wins)
PHASES = [
    ("val pass (predict_proba)", ("predict_proba",)),
    ("checkpoint save", ("save_checkpoint",)),
    ("adapter save", ("save_model",)),
    ("backward", ("Tensor.backward", "_engine_run_backward")),
    ("grad clipping", ("clip_grad_norm_",)),
    (
        "optimizer step",
        (
            "AdamW.step",
            "Optimizer.step",
            "adamw ",
            "_single_tensor_adamw",
            "_multi_tensor_adamw",
            "LambdaLR.step",
            "LRScheduler.step",
        ),
    ),
    ("zero_grad", ("zero_grad",)),
    ("forward (train)", ("PeftModelForSequenceClassification.forward", "BertForSequenceClassification.forward")),
    ("collate", ("collate ",)),
    ("make_batches", ("make_batches",)),
    ("DVCLive logging", ("Live.", "log_metric", "make_summary")),
    ("fingerprint", ("fingerprint",)),
    ("model load", ("load_base_model", "from_pretrained")),
    ("LoRA wrap", ("apply_method", "get_peft_model")),
    ("imports", ("_find_and_load", "_handle_fromlist")),
]
# inside forward: the innermost of these frames names the layer kind
LAYERS = [
    ("attention kernel (sdpa)", ("sdpa_attention_forward",)),
    ("dropout (BERT's own)", ("Dropout.forward",)),
    ("LayerNorm", ("LayerNorm.forward",)),
    ("GELU", ("GELUActivation", "gelu")),
    ("embeddings", ("BertEmbeddings.forward",)),
    ("frozen dense Linear", ("Linear.forward linear.py",)),
]


def peft_line(frame: str) -> str | None:
    """Source line of a peft LoRA-layer frame ('Linear.forward (/.../peft/tuners/lora/layer.py:1102)')."""
    import linecache

    if "peft" not in frame or "layer.py:" not in frame:
        return None
    path, _, line = frame.rstrip(")").split(" (", 1)[1].rpartition(":")
    return linecache.getline(path, int(line)) if line.isdigit() else None


def layer_kind(frames: list[str], names: list[str]) -> str:
    for i, frame in enumerate(frames):
        src = peft_line(frame)
        if src is None:
            continue
        if "lora_B(" in src:
            return "LoRA dropout" if any("Dropout.forward" in n for n in names[i:]) else "LoRA A/B matmuls"
        if "base_layer(" in src:
            return "frozen dense Linear (LoRA-wrapped q/v)"
    return innermost(names, LAYERS)


def frame_name(frame: str) -> str:
    """'func (path/file.py:12)' -> 'func file.py'."""
    if " (" not in frame:
        return frame
    func, where = frame.split(" (", 1)
    return f"{func} {where.rsplit('/', 1)[-1].split(':')[0]}"


def classify(frames: list[str], table) -> str | None:
    for name, needles in table:
        if any(n in f for f in frames for n in needles):
            return name
    return None


def innermost(frames: list[str], table) -> str:
    for f in reversed(frames):
        for name, needles in table:
            if any(n in f for n in needles):
                return name
    return "other"


def aggregate(raw: Path) -> str:
    phases, layers, leaves = collections.Counter(), collections.Counter(), collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        frames = stack.split(";")
        if frames and frames[0].startswith(("Thread._bootstrap", "_bootstrap ")):
            continue  # helper threads (tqdm's monitor) sleeping
        n = int(n)
        total += n
        names = [frame_name(f) for f in frames]
        phase = classify(names, PHASES) or "other"
        phases[phase] += n
        if phase in ("forward (train)", "val pass (predict_proba)"):
            layers[(phase.split(" ")[0], layer_kind(frames, names))] += n
        leaves[names[-1]] += n
    lines = [f"py-spy samples (main thread): {total}", "", "| phase | share |", "|---|---|"]
    lines += [f"| {k} | {100 * v / total:.1f}% |" for k, v in phases.most_common()]
    lines += ["", "| inside forward | layer kind | share of all |", "|---|---|---|"]
    lines += [f"| {p} | {k} | {100 * v / total:.1f}% |" for (p, k), v in layers.most_common()]
    lines += ["", "top leaf frames:"] + [f"  {100 * v / total:5.1f}%  {k}" for k, v in leaves.most_common(15)]
    return "\n".join(lines)


TORCH_PROFILE = r"""
import json, sys, time
import numpy as np, torch
from torch.profiler import profile, ProfilerActivity, record_function
from transformers import get_linear_schedule_with_warmup
from lora_dvc.batching import TokenizedSplit, collate, make_batches
from lora_dvc.modeling import apply_method, load_base_model
from lora_dvc.params import load_params
steps = int(sys.argv[1])
params = load_params(); tp = params.train
labels = json.load(open("data/prepared/labels.json"))
meta = json.load(open("data/tokenized/meta.json"))
split = TokenizedSplit.load("data/tokenized/train.npz")
torch.manual_seed(tp.seed)
torch.use_deterministic_algorithms(True)
model = apply_method(load_base_model(params.model.name, labels), params.train.method, params.lora)
opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=tp.lr, weight_decay=tp.weight_decay)
sched = get_linear_schedule_with_warmup(opt, 1, 1000)
batches = make_batches(split, params.buckets, tp.batch_size, shuffle=True, seed=tp.seed)
model.train()
def step(length, rows):
    with record_function("collate"):
        batch = collate(split, length, rows, meta["pad_token_id"])
    with record_function("forward"):
        out = model(**batch)
    with record_function("backward"):
        out.loss.backward()
    with record_function("clip+step"):
        torch.nn.utils.clip_grad_norm_(model.parameters(), tp.max_grad_norm)
        opt.step(); sched.step(); opt.zero_grad(set_to_none=True)
for length, rows in batches[:2]:
    step(length, rows)  # warm-up
t0 = time.perf_counter(); n = 0
with profile(activities=[ProfilerActivity.CPU]) as prof:
    for length, rows in batches[2:2 + steps]:
        step(length, rows); n += len(rows)
lengths = [length for length, _ in batches[2:2 + steps]]
print(f"{n} samples in {time.perf_counter() - t0:.1f} s under the profiler; batch lengths {lengths}")
print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25, max_name_column_width=48))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description="profile the train stage")
    ap.add_argument("--dataset", choices=sorted(bench.DATASETS), default="banglasenti")
    ap.add_argument("--rows", type=int, default=600)
    ap.add_argument("--val-rows", type=int, default=200)
    ap.add_argument("--test-rows", type=int, default=500)
    ap.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    ap.add_argument("--torch-steps", type=int, default=0, help="also profile this many steps with torch.profiler")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    if shutil.which("py-spy") is None and not (Path(sys.executable).parent / "py-spy").exists():
        raise SystemExit("py-spy not found: pip install py-spy")
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")

    work = Path(tempfile.mkdtemp(prefix="lora-profile-"))
    copy = bench.make_copy(work / "repo", args.dataset, args.rows, args.val_rows, args.test_rows, seed=0)
    for stage in ("prepare", "tokenize"):
        bench.dvc(["repro", "-s", stage], copy, what="pipeline")
    raw = work / "train.raw"
    load = bench.load1()
    t0 = time.perf_counter()
    bench.timed(
        [
            pyspy,
            "record",
            "-r",
            str(args.rate),
            "-f",
            "raw",
            "-o",
            str(raw),
            "--",
            sys.executable,
            "-m",
            "stages.train",
        ],
        copy,
        "profile",
    )
    wall = time.perf_counter() - t0
    metrics = bench.read_json(copy / "records/train/metrics.json")
    report = [
        f"# train stage profile, {dt.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"`python bench/profile_train.py {' '.join(sys.argv[1:])}`",
        f"{args.dataset}, {args.rows} train rows, params as bench/run.py sets them; "
        f"stage wall {wall:.1f} s under py-spy at {args.rate} Hz, "
        f"train_samples_per_second {metrics.get('train_samples_per_second')}, "
        f"steps {metrics.get('steps')}, 1-min load {load} -> {bench.load1()}",
        "",
        aggregate(raw),
    ]
    if args.torch_steps:
        e = bench.env()
        out = subprocess.run(
            [sys.executable, "-c", TORCH_PROFILE, str(args.torch_steps)],
            cwd=copy,
            env=e,
            capture_output=True,
            text=True,
        )
        report += [
            "",
            f"## torch.profiler, {args.torch_steps} training steps (stage code, in-process)",
            "",
            out.stdout if out.returncode == 0 else out.stderr[-3000:],
        ]
    text = "\n".join(report) + "\n"
    print(text)
    results = bench.BENCH / "results"
    results.mkdir(exist_ok=True)
    (results / f"profile-{time.strftime('%Y%m%d-%H%M%S')}.txt").write_text(text)
    if args.keep:
        print(f"kept {work}", file=sys.stderr)
    else:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
