"""The one-GPU bench: the pipeline's speed on one CUDA GPU against the stock recipe and the chip's own peak.

    bash .gpu-kit/setup.sh && source .gpu-kit/env.sh && python bench/gpu.py     # on the GPU host (< 8 min)
    python bench/gpu.py --dry-run [--repro]                                     # the same code paths on the CPU

One process, one GPU, bf16, in a temporary git + DVC copy of this working tree (bench/run.py's make_copy):
AG News with the packaged all-MiniLM-L6-v2 (on a kit host: random weights of the same shape, .gpu-kit/setup.sh).

- **peak**: the best rate of a big bf16 matmul (8192^3, bursts of 10 between synchronizes), measured first;
  every MFU below is against it.
- **default study** (`--repro`, on by default on a GPU): `dvc repro` from scratch in the copy with the default
  params; per-stage seconds from the moment each "Running stage" line arrives; the train stage's own figures.
- **train loop at batch 32**: the train stage itself (`stages.train.main()` in this process, the copy's
  params with train.min_steps=null: one epoch; its own `train_samples_per_second`, which includes its val pass
  and epoch-end checkpoint) against the stock recipe (bench/peer_trainer.py --recipe stock, in this process:
  its Trainer's runtime, val pass included), alternating (benchlib.alternate), --repeats times each.
- **batch sweep**: the train stage at each of --batches: samples/s, and the epoch's model FLOPs (train rows
  forward and backward, one forward val pass, real tokens only) over its loop seconds as a share of the peak.
- **levers**: the pipeline's own Trainer set-up (lora_dvc.training: TallyingTrainer, its TrainingArguments,
  make_optimizer, the model readied by ready_for_device) with one thing changed, steady-state samples/s after a
  warm-up: static bucketed shapes, torch.compile through TrainingArguments.torch_compile (static shapes), CUDA
  graphs (torch_compile_mode="reduce-overhead"), fused vs foreach AdamW, pinned memory, non-blocking copies,
  the train-accuracy tally; padding-free batches (DataCollatorWithFlattening) are probed and recorded plainly
  when the model cannot take them; evaluate.batch_size (a pipeline knob) through the evaluate stage itself.
- **roberta-base-shaped model** (random weights from a config: 12 layers, hidden 768, 12 heads, FFN 3072; LoRA
  from params.yaml) at batch 32 x 128 tokens through the same Trainer set-up, eager and compiled: MFU.

Every figure carries min/median/max over its runs; `goals` (target, measured, met) closes the JSON,
bench/results/gpu-<UTC time>.json. `--dry-run` runs the same paths on the CPU (one thread, torch's dropout as on
a GPU, torch.compile with the eager backend: inductor's code generation takes minutes on a small CPU, CUDA
graphs need a GPU) with a 2-layer 32-wide model and the real MiniLM tokenizer on a few dozen rows, writes its
JSON to a temporary folder (never bench/results) and reports the goals without asserting them; its peak is the
CPU's bf16 matmul peak. --budget-s bounds the whole run: a part that would not fit is skipped and named in
`budget.skipped`, and a part still running at the end of the budget is stopped and named in `budget.stopped`.
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()  # the budget counts from here: imports included

import argparse  # noqa: E402
import contextlib  # noqa: E402
import dataclasses  # noqa: E402
import datetime as dt  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
sys.path[:0] = [str(BENCH), str(ROOT)]  # benchlib, run, peer_trainer; lora_dvc and stages on a kit host

for _key, _value in {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "DVC_NO_ANALYTICS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "TQDM_DISABLE": "1",
}.items():
    os.environ.setdefault(_key, _value)

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
ROBERTA_BASE = {"num_hidden_layers": 12, "hidden_size": 768, "num_attention_heads": 12, "intermediate_size": 3072}
ROBERTA_TINY = {"num_hidden_layers": 2, "hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64}
FLOPS_FORMULA = (
    "per token, summed over every nn.Linear inside the encoder layers (the frozen base projections and the LoRA "
    "A and B factors, each at its real in x out shape): forward 2*in*out, backward to the input 2*in*out, "
    "backward to the weight 2*in*out only where the weight is trainable (the adapters); plus per layer the "
    "attention matmuls QK^T and PV on a row of L real tokens: forward 2*2*L*d, backward 4*2*L*d (both operands "
    "are activations), d = hidden size. A val row counts its forward only. Embeddings, LayerNorm, softmax, GELU, "
    "dropout and the per-row pooler and head are left out; padding tokens are waste, not work"
)
# issue 25's goals; a dry run reports them and asserts nothing
GOALS = {
    "default_repro_s": ("<=", 25.0, "default `dvc repro` from scratch on one GPU, s"),
    "train_loop_samples_per_s": (">=", 5000.0, "train loop at batch 32 (the train stage's own figure), samples/s"),
    "train_loop_vs_stock": (">=", 2.0, "train loop at batch 32 against the stock recipe, ratio of medians"),
    "best_batch_mfu": (">=", 0.10, "MFU of the train stage at its best batch, share of the measured bf16 peak"),
    "roberta_mfu": (">=", 0.35, "MFU of a roberta-base-shaped model at batch 32 x 128 tokens, its best mode"),
}


def log(msg: str) -> None:
    print(f"[gpu-bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def stats(values) -> dict:
    """min / median / max over a figure's runs, and the runs."""
    values = [float(v) for v in values]
    return {
        "n": len(values),
        "min": min(values),
        "median": statistics.median(values),
        "max": max(values),
        "runs": values,
    }


class BudgetExceeded(Exception):
    pass


class Budget:
    """The wall-clock budget, from the script's start: a part that would not fit is skipped (and named); an alarm
    at the end of the budget stops a part that overran its estimate (and names it)."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.skipped, self.stopped = seconds, [], []

    def left(self) -> float:
        return self.seconds - (time.perf_counter() - STARTED)

    def fits(self, what: str, needs: float) -> bool:
        if self.left() >= needs:
            return True
        self.skipped.append(f"{what}: needs about {needs:.0f} s, {max(self.left(), 0):.0f} s left")
        log(f"skipped (budget) {self.skipped[-1]}")
        return False

    @contextlib.contextmanager
    def alarm(self):
        def stop(signum, frame):
            raise BudgetExceeded(f"the budget of {self.seconds:.0f} s ran out")

        old = signal.signal(signal.SIGALRM, stop)
        signal.setitimer(signal.ITIMER_REAL, max(self.left(), 0.001))
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)

    def summary(self) -> dict:
        return {
            "budget_s": self.seconds,
            "elapsed_s": time.perf_counter() - STARTED,
            "skipped": self.skipped,
            "stopped": self.stopped,
        }


@contextlib.contextmanager
def cwd(path: Path):
    """The stages read params.yaml and their inputs from the working directory."""
    before = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0] if text else ''}"


# -- sizes ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Setting:
    """The sizes of a run: the GPU's, or the dry run's (seconds on a CPU)."""

    rows: int | None  # train rows (None: the AG News pool less val, as the default study)
    val_rows: int  # 0: params.yaml's val_fraction
    test_rows: int  # 0: the official test split
    batch: int
    batches: list[int]
    eval_batches: list[int]
    repeats: int  # ours and the stock recipe at `batch`
    lever_repeats: int  # each eager lever, and each evaluate batch
    peak_n: int
    peak_seconds: float
    lever_steps: int
    lever_warm: int
    compile_steps: int
    compile_warm: int
    roberta: dict
    roberta_batch: int
    roberta_tokens: int
    roberta_steps: int
    roberta_warm: int
    compile_backend: str
    cuda_graphs: bool
    sets: list[str]  # params for every run of the copy, beyond the loops' own
    estimates: dict  # seconds a part needs (the budget's guess before it starts; runs raise it)


GPU = Setting(
    rows=None,
    val_rows=0,
    test_rows=0,
    batch=32,
    batches=[32, 64, 128, 256, 512],
    eval_batches=[128, 1024],
    repeats=3,
    lever_repeats=2,
    peak_n=8192,
    peak_seconds=2.0,
    lever_steps=100,
    lever_warm=30,
    compile_steps=150,
    compile_warm=60,
    roberta=ROBERTA_BASE,
    roberta_batch=32,
    roberta_tokens=128,
    roberta_steps=60,
    roberta_warm=20,
    compile_backend="inductor",
    cuda_graphs=True,
    sets=[],
    estimates={"repro": 90, "ours": 20, "stock": 25, "lever": 8, "compile": 120, "roberta": 20, "eval": 10},
)
DRY = Setting(
    rows=96,
    val_rows=24,
    test_rows=32,
    batch=32,
    batches=[16, 32],
    eval_batches=[8, 64],
    repeats=3,
    lever_repeats=1,
    peak_n=256,
    peak_seconds=0.3,
    lever_steps=6,
    lever_warm=2,
    compile_steps=6,
    compile_warm=2,
    roberta=ROBERTA_TINY,
    roberta_batch=8,
    roberta_tokens=32,
    roberta_steps=6,
    roberta_warm=2,
    compile_backend="eager",
    cuda_graphs=False,
    # the CUDA path's dropout (the CPU's fast masks break torch.compile's graph at every mask: 39 graphs)
    sets=["train.fast_dropout=false"],
    estimates={"repro": 60, "ours": 3, "stock": 3, "lever": 2, "compile": 5, "roberta": 2, "eval": 2},
)


# -- the chip ----------------------------------------------------------------------------------------


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device, n: int, seconds: float, precision: str = "bf16", windows: int = 5) -> dict:
    """The best rate of an n x n x n matmul in the run's precision (benchlib.best_seconds in each of `windows`
    windows; on a GPU bursts of 10 between synchronizes). MFU is taken against the best window. (The dry run
    trains in fp32 on a CPU that may emulate bf16: its peak is fp32's, so its MFU stays a share.)"""
    import torch
    from benchlib import best_seconds, matmul_flops

    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    burst = 10 if device.type == "cuda" else 1

    def step() -> None:
        for _ in range(burst):
            torch.matmul(a, b)
        sync(device)

    rates = [burst * matmul_flops(n) / best_seconds(step, seconds / windows) for _ in range(windows)]
    return {"dtype": precision, "n": n, "burst": burst, "flops_per_s": stats(rates), "used_flops_per_s": max(rates)}


def versions(device) -> dict:
    import peft
    import torch
    import transformers

    found = {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "python": sys.version.split()[0],
        "threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        found.update(
            gpu=torch.cuda.get_device_name(device),
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            capability=f"{props.major}.{props.minor}",
            gpus_visible=torch.cuda.device_count(),
        )
    return found


# -- FLOPs from the model's shapes --------------------------------------------------------------------

LAYER = re.compile(r"(?:^|\.)layer\.(\d+)\.")


def encoder_shapes(model) -> dict:
    """Every nn.Linear inside the encoder layers as (in, out, trainable); the layer count and hidden size."""
    import torch

    linears, layers = [], set()
    for name, module in model.named_modules():
        found = LAYER.search(name)
        if found and isinstance(module, torch.nn.Linear):
            layers.add(found.group(1))
            linears.append((module.in_features, module.out_features, module.weight.requires_grad))
    return {"linears": linears, "layers": len(layers), "hidden": model.config.hidden_size}


def token_flops(shapes: dict, length: int, train: bool = True) -> float:
    """Model FLOPs per real token of a row of `length` tokens (FLOPS_FORMULA)."""
    matmuls = sum(2 * i * o for i, o, _ in shapes["linears"])
    adapters = sum(2 * i * o for i, o, trainable in shapes["linears"] if trainable)
    attention = shapes["layers"] * 2 * 2 * length * shapes["hidden"]
    forward = matmuls + attention
    return forward + (matmuls + 2 * attention + adapters if train else 0)


def epoch_flops(shapes: dict, train_lengths, val_lengths) -> float:
    """One epoch of the train stage: every train row forward and backward, one forward val pass."""
    train = sum(token_flops(shapes, int(n)) * int(n) for n in train_lengths)
    return train + sum(token_flops(shapes, int(n), train=False) * int(n) for n in val_lengths)


# -- the default study -----------------------------------------------------------------------------------


def default_repro(copy: Path) -> dict:
    """`dvc repro` from scratch in the copy; each stage's seconds from its "Running stage" line to the next."""
    from benchlib import env

    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "dvc", "repro"],
        cwd=copy,
        env=env(PYTHONUNBUFFERED="1"),  # each stage's lines arrive as they are written: per-stage times
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    marks, lines = [], []
    try:
        for line in proc.stdout:
            lines.append(line)
            found = re.search(r"Running stage '([^']+)'", line)
            if found:
                marks.append((found.group(1), time.perf_counter() - started))
        code = proc.wait()
    finally:
        if proc.poll() is None:  # stopped at the budget
            proc.kill()
            proc.wait()
    total = time.perf_counter() - started
    if code != 0 or not marks:
        raise RuntimeError(f"dvc repro failed in {copy} (exit {code}):\n{''.join(lines)[-3000:]}")
    ends = [t for _, t in marks[1:]] + [total]
    train = json.loads((copy / "records/train/metrics.json").read_text())
    test = json.loads((copy / "records/evaluate/metrics.json").read_text())["test"]
    return {
        "command": "dvc repro",
        "total_s": total,
        "dvc_start_s": marks[0][1],
        "stage_seconds": {name: end - t for (name, t), end in zip(marks, ends, strict=True)},
        "stage_seconds_note": "from the stage's 'Running stage' line to the next stage's (the last: to dvc's exit, "
        "dvc.lock written); dvc_start_s is dvc's own start-up before the first stage",
        "train_stage": {
            "train_seconds": train["train_seconds"],
            "samples_per_s": train["train_samples_per_second"],
            "steps": train["steps"],
            "device": train["device"],
            "precision": train["precision"],
        },
        "evaluate_samples_per_s": test["samples_per_second"],
    }


def prepare_in_process(copy: Path) -> dict:
    """prepare and tokenize in-process (a dry run without --repro): the loops need data/tokenized."""
    import stages.prepare
    import stages.tokenize

    t0 = time.perf_counter()
    with cwd(copy):
        stages.prepare.main()
        stages.tokenize.main()
    return {"prepare_and_tokenize_s": time.perf_counter() - t0}


# -- the train stage and the stock recipe, in this process ---------------------------------------------


def free(device) -> None:
    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def run_ours(copy: Path, sets: list[str], device) -> dict:
    """The train stage's main() in the copy under these params (as `dvc exp run -S` sets them): its own figures."""
    from run import write_params

    import stages.train

    write_params(copy, sets)
    t0 = time.perf_counter()
    with cwd(copy):
        stages.train.main()
    wall = time.perf_counter() - t0
    free(device)
    m = json.loads((copy / "records/train/metrics.json").read_text())
    samples = json.loads((copy / "records/prepare.json").read_text())["rows"]["train"] * m["epochs_run"]
    return {
        "samples_per_s": m["train_samples_per_second"],
        "loop_s": samples / m["train_samples_per_second"],
        "samples": samples,
        "steps": m["steps"],
        "wall_s": wall,
        "val_accuracy": m["val"]["accuracy"],
    }


def run_stock(copy: Path, precision: str, out: Path, device) -> dict:
    """bench/peer_trainer.py --recipe stock in this process on the copy's rows and params: its Trainer's loop."""
    import peer_trainer

    argv = ["--repo", str(copy), "--recipe", "stock", "--out", str(out)] + (["--bf16"] if precision == "bf16" else [])
    t0 = time.perf_counter()
    peer_trainer.main(argv)
    wall = time.perf_counter() - t0
    free(device)
    r = json.loads(out.read_text())
    return {
        "samples_per_s": r["train_samples_per_second"],
        "loop_s": r["train_runtime"],
        "samples": r["samples"],
        "steps": r["steps"],
        "wall_s": wall,
        "val_accuracy": r["val_accuracy"],
    }


def train_loop(copy: Path, s: Setting, loop_sets: list[str], precision: str, work: Path, device, budget) -> dict:
    """Ours against the stock recipe at s.batch, alternating (benchlib.alternate), s.repeats times each."""
    from benchlib import alternate

    runs = {"ours": [], "stock": []}
    order = alternate(["ours", "stock"], s.repeats)
    done = []
    for i, side in enumerate(order):
        if not budget.fits(f"train loop run {i + 1}/{len(order)} ({side})", s.estimates[side]):
            break
        t0 = time.perf_counter()
        if side == "ours":
            runs[side].append(run_ours(copy, [*loop_sets, f"train.batch_size={s.batch}"], device))
        else:
            runs[side].append(run_stock(copy, precision, work / f"stock-{i}.json", device))
        done.append(side)
        s.estimates[side] = max(s.estimates[side], time.perf_counter() - t0)
        log(f"{side} at batch {s.batch}: {runs[side][-1]['samples_per_s']:,.0f} samples/s")
    out = {"batch": s.batch, "precision": precision, "order": done}
    for side, found in runs.items():
        out[side] = {"runs": found, "samples_per_s": stats([r["samples_per_s"] for r in found])} if found else None
    if out["ours"] and out["stock"]:
        out["ours_vs_stock"] = out["ours"]["samples_per_s"]["median"] / out["stock"]["samples_per_s"]["median"]
    return out


def batch_sweep(copy, s: Setting, loop_sets, first: list[dict], flops_epoch: float, peak: float, device, budget):
    """The train stage at each of s.batches (s.batch's runs reused from the train loop): samples/s and MFU."""
    sweep = {}
    for batch in s.batches:
        runs = list(first) if batch == s.batch else []
        if not runs:
            if not budget.fits(f"batch sweep at {batch}", s.estimates["ours"]):
                continue
            runs.append(run_ours(copy, [*loop_sets, f"train.batch_size={batch}"], device))
            log(f"ours at batch {batch}: {runs[-1]['samples_per_s']:,.0f} samples/s")
        if runs:
            rates = [flops_epoch / r["loop_s"] for r in runs]
            sweep[str(batch)] = {
                "samples_per_s": stats([r["samples_per_s"] for r in runs]),
                "model_flops_per_s": stats(rates),
                "mfu": stats([x / peak for x in rates]),
                "steps": runs[0]["steps"],
            }
    best = max(sweep, key=lambda b: sweep[b]["mfu"]["median"]) if sweep else None
    return {"batches": sweep, "best_batch": int(best) if best else None}


# -- one Trainer loop: the pipeline's set-up with one thing changed ----------------------------------


class _NoTallies:
    """Stands in for lora_dvc.callbacks.Tallies: the train-accuracy tally off (the `no_tallies` lever)."""

    def add(self, *args) -> None:
        pass


def dynamo_counters() -> tuple[int, dict]:
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"], dict(counters["graph_break"])


def trainer_loop(model, params, n_labels: int, train_set, collator, device, precision, batch, steps, warm, change):
    """`steps` optimizer steps of the pipeline's TallyingTrainer under the train stage's TrainingArguments
    (lora_dvc.training.training_arguments) and optimizer (make_optimizer), no eval, no checkpoints, every batch
    full. `change` alters one thing: args (TrainingArguments fields), fused (AdamW), tallies. Returns the
    steady-state samples/s after `warm` steps, the warm-up seconds and, compiled, the graphs dynamo made."""
    import torch
    from transformers import PrinterCallback, TrainerCallback

    from lora_dvc.callbacks import Tallies
    from lora_dvc.training import TallyingTrainer, make_optimizer, training_arguments

    compiled = bool(change.get("args", {}).get("torch_compile"))

    class Clock(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            self.begin = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            if state.global_step == warm:
                sync(device)
                self.warm = time.perf_counter()
                self.graphs_warm = dynamo_counters()[0] if compiled else None

        def on_train_end(self, args, state, control, **kw):
            sync(device)
            self.end = time.perf_counter()

    out = Path(tempfile.mkdtemp(prefix="trainer-", dir=os.environ["LORA_DVC_CHECKPOINTS"]))
    args = dataclasses.replace(
        training_arguments(params, str(out), precision, device.type),
        per_device_train_batch_size=batch,
        max_steps=steps,
        eval_strategy="no",
        save_strategy="no",
        load_best_model_at_end=False,
        logging_strategy="no",
        dataloader_drop_last=True,  # every step `batch` rows: samples = steps x batch
        **change.get("args", {}),
    )
    model = model.to(args.device)
    if change.get("fused", True):
        optimizer = make_optimizer(model, params)
    else:
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(
            trainable, lr=params.train.lr, weight_decay=params.train.weight_decay, foreach=True
        )
    saved = {}
    if compiled:
        import torch._dynamo

        torch._dynamo.reset()
        config = torch._dynamo.config
        # one static graph per bucket shape (no automatic dynamic shapes), and room for every bucket's graphs
        saved = {k: getattr(config, k) for k in ("automatic_dynamic_shapes", "recompile_limit") if hasattr(config, k)}
        config.automatic_dynamic_shapes = False
        if "recompile_limit" in saved:
            config.recompile_limit = 64
        graphs0, breaks0 = dynamo_counters()
    seen, clock = [], Clock()

    def collate(rows):
        batch_tensors = collator(rows)
        seen.append(tuple(batch_tensors["input_ids"].shape))
        return batch_tensors

    trainer = TallyingTrainer(
        model=model,
        args=args,
        train_dataset=train_set,
        data_collator=collate,
        optimizers=(optimizer, None),
        callbacks=[clock],
        tallies=Tallies(n_labels),
    )
    trainer.remove_callback(PrinterCallback)
    if not change.get("tallies", True):
        trainer.tallies = _NoTallies()
    try:
        trainer.train()
    finally:
        del trainer, optimizer
        shutil.rmtree(out, ignore_errors=True)
        if compiled:
            graphs, breaks = dynamo_counters()
            for key, value in saved.items():
                setattr(torch._dynamo.config, key, value)
            torch._dynamo.reset()
    result = {
        "samples_per_s": (steps - warm) * batch / (clock.end - clock.warm),
        "warmup_s": clock.warm - clock.begin,
        "steps": steps,
        "warm_steps": warm,
        "shapes": len(set(seen)),
        # accelerate's loader reads one batch ahead: a shape first seen after batch warm + 1 came in the timed steps
        "new_shapes_after_warmup": len(set(seen[warm + 1 :]) - set(seen[: warm + 1])),
    }
    if compiled:
        result.update(
            graphs_compiled=graphs - graphs0,
            graphs_after_warmup=graphs - clock.graphs_warm,
            graph_breaks={k[:160]: v - breaks0.get(k, 0) for k, v in breaks.items() if v > breaks0.get(k, 0)},
        )
    return result


LEVERS = {
    "base": {
        "does": "the train stage's Trainer set-up: TallyingTrainer with its length-grouped batches padded to their "
        "longest row (a multiple of 8), fused AdamW, pinned memory on CUDA, bf16 autocast, the model readied by "
        "lora_dvc.training.ready_for_device; no eval, no checkpoints",
        "in_pipeline": "yes: the train stage's default",
    },
    "static_buckets": {
        "does": "every batch padded to its length bucket (model.length_buckets, lora_dvc.collators.BucketCollator)",
        "in_pipeline": "not in the pipeline yet on CUDA (the XLA path's collator; no param selects it)",
        "buckets": True,
    },
    "adamw_foreach": {
        "does": "torch's foreach AdamW instead of the fused one",
        "in_pipeline": "fused AdamW is the pipeline's default on CUDA and CPU (lora_dvc.training.make_optimizer); "
        "no param turns it off: measured here with Trainer",
        "change": {"fused": False},
    },
    "no_pin_memory": {
        "does": "TrainingArguments(dataloader_pin_memory=False)",
        "in_pipeline": "pinned memory is the pipeline's default on CUDA (no param): measured here with Trainer",
        "change": {"args": {"dataloader_pin_memory": False}},
    },
    "non_blocking": {
        "does": "pinned memory and non-blocking host-to-device copies (accelerator_config non_blocking=True)",
        "in_pipeline": "not in the pipeline yet: measured here with Trainer",
        "change": {"args": {"accelerator_config": {"non_blocking": True}}},
    },
    "no_tallies": {
        "does": "the train-accuracy tally (lora_dvc.callbacks.Tallies, fed from every step's logits) off",
        "in_pipeline": "the tally is always on in the train stage (no param): measured here with Trainer",
        "change": {"tallies": False},
    },
    "compile": {
        "does": "torch.compile through TrainingArguments(torch_compile=True), static bucketed shapes "
        "(BucketCollator; automatic dynamic shapes off: one graph per bucket)",
        "in_pipeline": "not in the pipeline yet: measured here with Trainer",
        "buckets": True,
        "compile": "default",
    },
    "cuda_graphs": {
        "does": "torch.compile mode 'reduce-overhead' (CUDA graphs) through TrainingArguments(torch_compile_mode), "
        "static bucketed shapes",
        "in_pipeline": "not in the pipeline yet: measured here with Trainer",
        "buckets": True,
        "compile": "reduce-overhead",
    },
}
# effect = samples/s with the lever / samples/s without it (both from LEVERS' runs, medians)
EFFECTS = {
    "static_buckets": ("static_buckets", "base"),
    "fused_adamw": ("base", "adamw_foreach"),
    "pinned_memory": ("base", "no_pin_memory"),
    "non_blocking": ("non_blocking", "base"),
    "tally_off": ("no_tallies", "base"),
    "compile": ("compile", "static_buckets"),
    "cuda_graphs": ("cuda_graphs", "static_buckets"),
    "compile_vs_base": ("compile", "base"),
    "cuda_graphs_vs_base": ("cuda_graphs", "base"),
}


def lever_change(name: str, s: Setting) -> dict:
    """A lever's `change` for trainer_loop, with the compile backend and mode of this run."""
    spec = LEVERS[name]
    change = dict(spec.get("change", {}))
    if spec.get("compile"):
        args = {"torch_compile": True, "torch_compile_backend": s.compile_backend}
        if spec["compile"] != "default":
            args["torch_compile_mode"] = spec["compile"]
        change["args"] = {**change.get("args", {}), **args}
    return change


def pipeline_model(params, labels: list[str], device, precision: str):
    """The model the train stage trains: built (lora_dvc.training.build_model) and readied for the device."""
    from lora_dvc.training import build_model, ready_for_device

    model = build_model(params, labels)
    ready_for_device(model, device.type, precision, params.train.fast_dropout)
    return model


def levers(copy: Path, s: Setting, params, device, precision: str, budget) -> dict:
    """The eager levers alternating with base (s.lever_repeats each), then the compiled ones once each."""
    from benchlib import alternate

    from lora_dvc.artifacts import read_labels, read_tokenized, read_tokenized_meta
    from lora_dvc.collators import BucketCollator, SplitDataset, make_collator
    from lora_dvc.modeling import load_tokenizer

    with cwd(copy):
        labels, train = read_labels(), SplitDataset(read_tokenized("train"))
        pad_id = read_tokenized_meta()["pad_token_id"]
    dynamic = make_collator(load_tokenizer(params.model.name), False, params.buckets, pad_id)
    buckets = BucketCollator(params.buckets, pad_id)
    eager = [n for n in LEVERS if not LEVERS[n].get("compile")]
    compiled = [n for n in LEVERS if LEVERS[n].get("compile") and (s.cuda_graphs or n != "cuda_graphs")]
    runs, errors = {n: [] for n in LEVERS}, {}
    for name in alternate(eager, s.lever_repeats) + compiled:
        kind = "compile" if name in compiled else "lever"
        if name in errors or not budget.fits(f"lever {name}", s.estimates[kind]):
            continue
        steps, warm = (s.compile_steps, s.compile_warm) if kind == "compile" else (s.lever_steps, s.lever_warm)
        t0 = time.perf_counter()
        model = None
        try:
            model = pipeline_model(params, labels, device, precision)
            collator = buckets if LEVERS[name].get("buckets") else dynamic
            change = lever_change(name, s)
            r = trainer_loop(
                model, params, len(labels), train, collator, device, precision, s.batch, steps, warm, change
            )
            runs[name].append(r)
            log(f"lever {name}: {r['samples_per_s']:,.0f} samples/s (warm-up {r['warmup_s']:.1f} s)")
        except BudgetExceeded as err:
            budget.stopped.append(f"lever {name}: {err}")
            errors[name] = first_line(err)
        except Exception as err:  # a lever this stack cannot run (CUDA graphs in training, say) is a finding
            errors[name] = first_line(err)
            log(f"lever {name} failed: {errors[name]}")
        finally:
            model = None
            free(device)
        s.estimates[kind] = max(s.estimates[kind], time.perf_counter() - t0)
    out = {}
    for name, spec in LEVERS.items():
        entry = {"does": spec["does"], "in_pipeline": spec["in_pipeline"]}
        if spec.get("compile"):
            entry["compile"] = {"backend": s.compile_backend, "mode": spec["compile"]}
        if name == "cuda_graphs" and not s.cuda_graphs:
            entry["not_run"] = "CUDA graphs need a CUDA device"
        if name in errors:
            entry["error"] = errors[name]
        if runs[name]:
            entry.update(samples_per_s=stats([r["samples_per_s"] for r in runs[name]]), runs=runs[name])
        out[name] = entry
    effects = {
        effect: {
            "with": on,
            "without": off,
            "speedup": out[on]["samples_per_s"]["median"] / out[off]["samples_per_s"]["median"],
        }
        for effect, (on, off) in EFFECTS.items()
        if runs[on] and runs[off]
    }
    return {"batch": s.batch, "runs": out, "effects": effects}


def padding_free_probe(copy: Path, params, device, precision: str) -> dict:
    """Can the model train on padding-free batches (transformers' DataCollatorWithFlattening)? Asked of the
    collator with the pipeline's rows (one label a row), and of the model with 4 packed rows."""
    import importlib.util

    import torch
    from transformers import DataCollatorWithFlattening

    from lora_dvc.artifacts import read_labels, read_tokenized
    from lora_dvc.collators import SplitDataset

    with cwd(copy):
        labels, train = read_labels(), SplitDataset(read_tokenized("train"))
    rows = [train[i] for i in range(4)]
    model = pipeline_model(params, labels, device, precision).to(device)
    found = {
        "does": "DataCollatorWithFlattening: a batch as one row of every sequence's tokens, position_ids restarting "
        "at each sequence, no padding",
        "in_pipeline": "not in the pipeline yet",
        "attn_implementation": model.config._attn_implementation,
        "flash_attn_installed": importlib.util.find_spec("flash_attn") is not None,
    }
    try:
        DataCollatorWithFlattening()(rows)
        found["collator_with_row_labels"] = "ok"
    except Exception as err:
        found["collator_with_row_labels"] = first_line(err)
    packed = DataCollatorWithFlattening()([{"input_ids": r["input_ids"]} for r in rows])
    with torch.no_grad(), torch.autocast(device.type, torch.bfloat16, enabled=precision == "bf16"):
        logits = model(input_ids=packed["input_ids"].to(device), position_ids=packed["position_ids"].to(device)).logits
    found.update(rows_packed=len(rows), logits_rows=int(logits.shape[0]))
    found["supported"] = found["collator_with_row_labels"] == "ok" and found["logits_rows"] == len(rows)
    if not found["supported"]:
        found["why_not"] = (
            f"not supported for this model: a sequence classifier pools each row's first token, so "
            f"{len(rows)} packed sequences gave {found['logits_rows']} row(s) of logits, and the collator "
            + ("takes" if found["collator_with_row_labels"] == "ok" else "fails on")
            + " one integer label per row (it is written for token labels). Padding-free training of a "
            "classifier needs per-sequence pooling of packed rows, which neither transformers' BERT classes nor "
            "the pipeline have"
        )
    del model
    free(device)
    return found


def eval_batch_lever(copy: Path, s: Setting, device, budget) -> dict:
    """evaluate.batch_size, a pipeline knob: the evaluate stage's own test samples/s at each of s.eval_batches."""
    from benchlib import alternate
    from run import write_params

    import stages.evaluate

    runs = {b: [] for b in s.eval_batches}
    for batch in alternate(s.eval_batches, s.lever_repeats):
        if not budget.fits(f"evaluate at batch {batch}", s.estimates["eval"]):
            continue
        write_params(copy, [f"evaluate.batch_size={batch}"])
        with cwd(copy):
            stages.evaluate.main()
        free(device)
        runs[batch].append(
            json.loads((copy / "records/evaluate/metrics.json").read_text())["test"]["samples_per_second"]
        )
        log(f"evaluate at batch {batch}: {runs[batch][-1]:,.0f} samples/s")
    write_params(copy, [f"evaluate.batch_size={s.eval_batches[0]}"])
    out = {
        "does": "the evaluate stage's batch size (also the train stage's val pass batch)",
        "in_pipeline": "yes: evaluate.batch_size",
        "batches": {str(b): {"samples_per_s": stats(r)} for b, r in runs.items() if r},
    }
    small, large = str(s.eval_batches[0]), str(s.eval_batches[-1])
    if small in out["batches"] and large in out["batches"]:
        out["speedup"] = (
            out["batches"][large]["samples_per_s"]["median"] / out["batches"][small]["samples_per_s"]["median"]
        )
    return out


# -- the roberta-base-shaped model ------------------------------------------------------------------


def roberta(s: Setting, params, device, precision: str, peak: float, budget) -> dict:
    """A roberta-shaped classifier with random weights from a config, LoRA from params.yaml, readied as the train
    stage readies its model, through the same Trainer set-up at s.roberta_batch x s.roberta_tokens real tokens:
    eager, then compiled (and with CUDA graphs on a GPU). MFU against the peak."""
    import torch
    from transformers import AutoModelForSequenceClassification, RobertaConfig

    from lora_dvc.artifacts import TokenizedSplit
    from lora_dvc.collators import BucketCollator, SplitDataset
    from lora_dvc.modeling import apply_method
    from lora_dvc.training import ready_for_device

    config = RobertaConfig(vocab_size=50265, max_position_embeddings=s.roberta_tokens + 2, num_labels=4, **s.roberta)
    rows = (s.roberta_steps + 1) * s.roberta_batch
    ids = torch.randint(5, config.vocab_size, (rows, s.roberta_tokens), generator=torch.Generator().manual_seed(0))
    ids[:, 0], ids[:, -1] = config.bos_token_id, config.eos_token_id
    data = SplitDataset(TokenizedSplit.from_ids(ids.tolist(), (torch.arange(rows) % 4).tolist()))
    collator = BucketCollator([s.roberta_tokens], config.pad_token_id)
    modes = {"eager": {}, "compile": lever_change("compile", s)}
    if s.cuda_graphs:
        modes["cuda_graphs"] = lever_change("cuda_graphs", s)
    shapes, found = None, {}
    for mode, change in modes.items():
        kind = "roberta" if mode == "eager" else "compile"
        if not budget.fits(f"roberta {mode}", s.estimates[kind]):
            continue
        t0 = time.perf_counter()
        torch.manual_seed(0)
        model = apply_method(AutoModelForSequenceClassification.from_config(config), "lora", params.lora)
        ready_for_device(model, device.type, precision, params.train.fast_dropout)
        shapes = shapes or encoder_shapes(model)
        try:
            r = trainer_loop(
                model,
                params,
                4,
                data,
                collator,
                device,
                precision,
                s.roberta_batch,
                s.roberta_steps,
                s.roberta_warm,
                change,
            )
        except BudgetExceeded as err:
            budget.stopped.append(f"roberta {mode}: {err}")
            found[mode] = {"error": first_line(err)}
            continue
        except Exception as err:
            found[mode] = {"error": first_line(err)}
            log(f"roberta {mode} failed: {found[mode]['error']}")
            continue
        finally:
            model = None
            free(device)
        rate = r["samples_per_s"] * s.roberta_tokens * token_flops(shapes, s.roberta_tokens)
        found[mode] = {**r, "samples_per_s": stats([r["samples_per_s"]]), "mfu": stats([rate / peak])}
        s.estimates[kind] = max(s.estimates[kind], time.perf_counter() - t0)
        log(f"roberta {mode}: {r['samples_per_s']:,.0f} samples/s, MFU {rate / peak:.1%}")
    measured = {m: v for m, v in found.items() if "mfu" in v}
    return {
        "config": {**s.roberta, "vocab_size": config.vocab_size, "weights": "random, from the config"},
        "lora": {"r": params.lora.r, "alpha": params.lora.alpha, "targets": params.lora.targets},
        "batch": s.roberta_batch,
        "tokens_per_row": s.roberta_tokens,
        "train_flops_per_token": token_flops(shapes, s.roberta_tokens) if shapes else None,
        "modes": found,
        "best_mode": max(measured, key=lambda m: measured[m]["mfu"]["median"]) if measured else None,
    }


# -- goals ----------------------------------------------------------------------------------------------


def goal(name: str, measured) -> dict:
    op, target, what = GOALS[name]
    ok = measured is not None and math.isfinite(measured)
    met = ok and (measured >= target if op == ">=" else measured <= target)
    return {"what": what, "target": f"{op} {target:g}", "measured": measured if ok else None, "met": bool(met)}


def goals(result: dict) -> dict:
    repro, loop = result.get("default_repro") or {}, result.get("train_loop") or {}
    sweep, rob = result.get("batch_sweep") or {}, result.get("roberta") or {}
    best = sweep.get("best_batch")
    return {
        "default_repro_s": goal("default_repro_s", repro.get("total_s")),
        "train_loop_samples_per_s": goal(
            "train_loop_samples_per_s", ((loop.get("ours") or {}).get("samples_per_s") or {}).get("median")
        ),
        "train_loop_vs_stock": goal("train_loop_vs_stock", loop.get("ours_vs_stock")),
        "best_batch_mfu": goal("best_batch_mfu", sweep["batches"][str(best)]["mfu"]["median"] if best else None),
        "roberta_mfu": goal(
            "roberta_mfu", rob["modes"][rob["best_mode"]]["mfu"]["median"] if rob.get("best_mode") else None
        ),
    }


# -- the run ----------------------------------------------------------------------------------------------


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true", help="the same code paths on the CPU, tiny model, seconds")
    ap.add_argument(
        "--repro",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="time the default `dvc repro` from scratch (default: on with a GPU, off in a dry run)",
    )
    ap.add_argument("--budget-s", type=float, default=450.0, help="wall-clock budget from the start (default 450)")
    ap.add_argument("--repeats", type=int, help="runs of ours and of the stock recipe at batch 32 (default 3)")
    ap.add_argument("--lever-repeats", type=int, help="runs of each eager lever (default 2; dry run 1)")
    ap.add_argument("--batches", help="batch sweep, comma separated (default 32,64,128,256,512; dry run 16,32)")
    ap.add_argument("--out", type=Path, help="result JSON (default bench/results/gpu-<UTC>.json; dry run: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary repository")
    args = ap.parse_args(argv)
    problems = []
    if (args.repeats is not None and args.repeats < 1) or (args.lever_repeats is not None and args.lever_repeats < 1):
        problems.append("--repeats and --lever-repeats take an integer >= 1")
    if args.budget_s <= 0:
        problems.append("--budget-s must be > 0")
    if args.batches is not None:
        try:
            args.batches = [int(b) for b in args.batches.split(",")]
            if any(b < 1 for b in args.batches):
                raise ValueError
        except ValueError:
            problems.append(f"--batches takes positive integers separated by commas, not {args.batches!r}")
    if args.dry_run and args.out is not None and args.out.resolve().is_relative_to(RESULTS.resolve()):
        problems.append(f"dry-run figures never go into {RESULTS.relative_to(ROOT)}; give --out another folder")
    if problems:
        print(f"error: {'; '.join(problems)}", file=sys.stderr)
        sys.exit(2)
    return args


def quiet() -> None:
    """The bench's own lines and the stages' warnings; the libraries' chatter and progress bars stay out."""
    import logging
    import warnings

    import transformers

    from lora_dvc.runner import setup_logging

    setup_logging()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    for name in ("accelerate", "torch._dynamo", "torch._inductor", "train", "evaluate", "prepare", "tokenize"):
        logging.getLogger(name).setLevel(logging.WARNING if name in ("train", "evaluate") else logging.ERROR)
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)


def setting_for(args) -> Setting:
    s = dataclasses.replace(DRY if args.dry_run else GPU)
    s.estimates, s.sets = dict(s.estimates), list(s.sets)
    s.repeats = args.repeats or s.repeats
    s.lever_repeats = args.lever_repeats or s.lever_repeats
    s.batches = sorted({s.batch, *(args.batches or s.batches)})
    return s


def main(argv=None) -> None:
    args = parse_args(argv)
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        print(
            "error: torch sees no CUDA GPU here; python bench/gpu.py --dry-run runs the CPU dry run", file=sys.stderr
        )
        sys.exit(2)
    if args.dry_run:
        torch.set_num_threads(1)  # a busy shared CPU (CI runs tests side by side) stalls 2 spinning threads
    s = setting_for(args)
    repro = args.repro if args.repro is not None else not args.dry_run
    device = torch.device("cpu" if args.dry_run else "cuda")
    budget = Budget(args.budget_s)
    now = dt.datetime.now(dt.timezone.utc)
    work = Path(tempfile.mkdtemp(prefix="gpu-bench-"))
    os.environ["LORA_DVC_CHECKPOINTS"] = str(work / "checkpoints")  # never the user's ~/.cache
    (work / "checkpoints").mkdir()
    quiet()
    from benchlib import host_info, write_json
    from run import make_copy, write_params

    from lora_dvc.artifacts import read_labels, read_tokenized
    from lora_dvc.device import resolve_precision
    from lora_dvc.params import load_params
    from lora_dvc.tokenization import tokenized_params

    precision = resolve_precision(device.type, "auto")
    result = {
        "bench": "gpu",
        "command": " ".join(["python bench/gpu.py", *(sys.argv[1:] if argv is None else argv)]),
        "date": now.isoformat(timespec="seconds"),
        "dry_run": args.dry_run,
        "device": device.type,
        "precision": precision,
        "versions": versions(device),
        "host": host_info(),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
    }
    log(f"{device.type}: {result['versions'].get('gpu', result['host']['cpu'])}, {precision}; work in {work}")
    if args.dry_run:
        sys.path.insert(0, str(ROOT / "tests"))
        from helpers import build_tiny_model

        tiny = build_tiny_model(work / "tiny-model")
        s.sets += [f"model.name={tiny}", "model.max_length=64", "model.length_buckets=[16,32,64]"]
        result["model"] = "tiny BERT from a config: 2 layers x 32 wide, the real MiniLM tokenizer"
    else:
        result["model"] = f"{MINILM} (on a kit host: random weights of its shape)"
    result["setting"] = dataclasses.asdict(s)
    copy = make_copy(work / "repo", "ag_news", s.rows, s.val_rows, s.test_rows, seed=0, overrides=s.sets)
    sections = {}

    def part(name: str, fn, *a):
        """One part of the run, timed; stopped at the end of the budget, and then recorded as stopped."""
        t0 = time.perf_counter()
        try:
            with budget.alarm():
                return fn(*a)
        except BudgetExceeded as err:
            budget.stopped.append(f"{name}: {err}")
            log(f"stopped (budget) {name}")
            return None
        finally:
            sections[name] = time.perf_counter() - t0

    # 1. the peak, first: every MFU is against it
    result["peak"] = part("peak", matmul_peak, device, s.peak_n, s.peak_seconds, precision)
    peak = result["peak"]["used_flops_per_s"]
    log(f"{precision} matmul peak {peak / 1e12:,.3f} TFLOP/s")

    # 2. the default study from scratch (else prepare + tokenize in this process: the loops need their outputs)
    result["default_repro"] = None
    if repro and budget.fits("default dvc repro", s.estimates["repro"]):
        result["default_repro"] = part("default_repro", default_repro, copy)
        if result["default_repro"]:
            log(f"dvc repro from scratch: {result['default_repro']['total_s']:.1f} s")
    if not (copy / "data/tokenized/meta.json").exists():
        result["prepare_in_process"] = part("prepare", prepare_in_process, copy)

    # the loops' params: one epoch at any batch, checkpoints only at its end, the device and precision named
    loop_sets = [
        "train.min_steps=null",
        "train.epochs=1",
        "train.checkpoint_every=0",
        f"train.device={device.type}",
        f"train.precision={precision}",
    ]
    write_params(copy, loop_sets)
    with cwd(copy):
        params = tokenized_params(load_params())
        labels = read_labels()
        lengths = {split: read_tokenized(split).lengths for split in ("train", "val")}
    cpu = torch.device("cpu")
    shapes = encoder_shapes(pipeline_model(params, labels, cpu, "fp32"))
    flops_epoch = epoch_flops(shapes, lengths["train"], lengths["val"])
    result["flops"] = {
        "formula": FLOPS_FORMULA,
        "train_rows": len(lengths["train"]),
        "val_rows": len(lengths["val"]),
        "mean_train_tokens": float(lengths["train"].mean()),
        "train_flops_per_token": sum(token_flops(shapes, int(n)) * int(n) for n in lengths["train"])
        / float(lengths["train"].sum()),
        "epoch_flops": flops_epoch,
    }

    # 3. the train loop at batch 32, ours against the stock recipe, alternating; then the batch sweep
    loop = part("train_loop", train_loop, copy, s, loop_sets, precision, work, device, budget) or {}
    for side in ("ours", "stock"):
        if loop.get(side):
            loop[side]["mfu"] = stats([flops_epoch / r["loop_s"] / peak for r in loop[side]["runs"]])
    result["train_loop"] = loop
    first = (loop.get("ours") or {}).get("runs", [])
    result["batch_sweep"] = part(
        "batch_sweep", batch_sweep, copy, s, loop_sets, first, flops_epoch, peak, device, budget
    )
    write_params(copy, [f"train.batch_size={s.batch}"])

    # 4. the levers (eager ones first), padding-free, evaluate's batch; the roberta-shaped model last
    result["levers"] = part("levers", levers, copy, s, params, device, precision, budget) or {"runs": {}}
    result["levers"]["runs"]["padding_free"] = part(
        "padding_free", padding_free_probe, copy, params, device, precision
    )
    if (copy / "models/classifier").exists():
        result["levers"]["runs"]["eval_batch"] = part("eval_batch", eval_batch_lever, copy, s, device, budget)
    result["roberta"] = part("roberta", roberta, s, params, device, precision, peak, budget)

    result["goals"] = goals(result)
    result["goals_asserted"] = not args.dry_run
    result["section_s"] = sections
    result["budget"] = budget.summary()
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    out = args.out or (work / f"gpu-dry-{stamp}.json" if args.dry_run else RESULTS / f"gpu-{stamp}.json")
    write_json(out, result)
    for name, g in result["goals"].items():
        log(f"goal {name}: {g['target']}, measured {g['measured']}, met {g['met']}")
    print(f"wrote {out} ({result['budget']['elapsed_s']:.1f} s)")
    if not args.keep:
        shutil.rmtree(work / "repo", ignore_errors=True)
        shutil.rmtree(work / "checkpoints", ignore_errors=True)


if __name__ == "__main__":
    main()
