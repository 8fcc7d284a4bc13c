"""The bench's shared helpers: the one FLOP count of a BERT encoder under LoRA (forward; backward to the
inputs, where both operands of the attention matmuls are activations, so those count twice; backward to the
adapters only), ratios, spreads and run order, and the host, timing, working-tree copy and record helpers.
A multiply-add is 2 FLOPs; embeddings, LayerNorm, softmax, GELU, dropout and the head are left out.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
# pipeline outputs and results: never copied into a bench's temporary repository
GENERATED = ("data/prepared", "data/tokenized", "models/", "metrics/", "records/", "plots/", "reports/", "dvc.lock")
GENERATED += ("checkpoints/", "bench/results")


@dataclass(frozen=True)
class Encoder:
    layers: int
    hidden: int
    ffn: int
    lora_r: int = 0
    adapted: tuple[tuple[int, int], ...] = ()  # (in, out) features of each LoRA-adapted Linear in one layer

    @classmethod
    def from_model(cls, model) -> Encoder:
        """Read off a (peft-wrapped) model: its config, and the adapted Linears of its first encoder layer."""
        config, adapted, rank = model.config, [], 0
        for name, module in model.named_modules():
            if ".layer.0." in f".{name}." and hasattr(module, "lora_A") and module.lora_A:
                a = next(iter(module.lora_A.values()))
                adapted.append((module.in_features, module.out_features))
                rank = a.out_features
        return cls(config.num_hidden_layers, config.hidden_size, config.intermediate_size, rank, tuple(adapted))

    @classmethod
    def from_params(cls, params, labels: int = 4) -> Encoder:
        """The model the train stage builds for these params (the library's own targets and wrapping)."""
        from lora_dvc.modeling import apply_method, load_base_model

        base = load_base_model(params.model.name, [str(i) for i in range(labels)])
        return cls.from_model(apply_method(base, params.train.method, params.lora))

    def lora_params(self) -> int:
        """Trainable LoRA parameters of one layer: r x (in + out) per adapted Linear."""
        return sum(self.lora_r * (i + o) for i, o in self.adapted)


def layer_flops(enc: Encoder, length: int) -> dict[str, float]:
    """FLOPs per token of one layer for a row of `length` tokens: forward, backward to inputs, to adapters."""
    d, f = enc.hidden, enc.ffn
    projections, scores, ffn = 4 * 2 * d * d, 2 * 2 * length * d, 2 * 2 * d * f
    lora = 2 * enc.lora_params()
    return {
        "forward": projections + scores + ffn + lora,
        "backward_inputs": projections + 2 * scores + ffn + lora,
        "backward_adapters": lora,
    }


def flops_per_token(enc: Encoder, lengths: list[int], train: bool = True) -> float:
    """Mean model FLOPs per real (non-pad) token over rows of these lengths; train adds the backward."""
    total = 0.0
    for length in lengths:
        per_layer = layer_flops(enc, length)
        per_token = per_layer["forward"] + (
            per_layer["backward_inputs"] + per_layer["backward_adapters"] if train else 0
        )
        total += enc.layers * per_token * length
    return total / max(1, sum(lengths))


def run_flops(enc: Encoder, train_lengths: list[int], val_lengths: list[int], epochs: float = 1.0) -> float:
    """Model FLOPs of one training run: train rows forward + backward, one forward val pass per epoch."""
    train = flops_per_token(enc, train_lengths) * sum(train_lengths) * epochs
    return train + flops_per_token(enc, val_lengths, train=False) * sum(val_lengths) * epochs


def token_lengths(repo: Path) -> dict:
    """The tokenize stage's real (non-pad) token count of each train and val row in `repo`, and the train stage's
    model for its params.yaml (`Encoder`): what a FLOP count of a run there needs."""
    from lora_dvc.artifacts import read_tokenized
    from lora_dvc.params import load_params

    lengths = {split: read_tokenized(split, repo).lengths.tolist() for split in ("train", "val")}
    return {**lengths, "encoder": Encoder.from_params(load_params(repo / "params.yaml"))}


def run_order(default: str, precisions: tuple[str, ...] = ("fp32", "bf16")) -> list[tuple[str, str]]:
    """One repeat's (side, precision) runs, each within two places of the runs it is compared with, so that
    drift of a shared machine's speed falls on both sides of a
    ratio: ours in the default precision first (its step count sets the peers'), then the stock default
    (fp32), the stock recipe in our default precision, then the other precision of `precisions` (stock, ours)."""
    order = [("ours", default), ("stock", "fp32")]
    order += [("stock", default)] if default != "fp32" else []
    others = [p for p in precisions if p != default]
    if default == "fp32":
        order += [("stock", p) for p in others]
    return order + [("ours", p) for p in others]


def alternate(sides: list[str], repeats: int) -> list[str]:
    """A B C, B C A, ...: each side leads in turn so drift and other load fall on all sides alike."""
    order = []
    for i in range(repeats):
        k = i % len(sides)
        order += sides[k:] + sides[:k]
    return order


def mean_std(values, digits: int = 4) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for a single value), rounded: a bench row over seeds."""
    values = list(values)
    std = round(statistics.stdev(values), digits) if len(values) > 1 else None
    return round(statistics.mean(values), digits), std


def spread(values, digits: int = 4) -> dict[str, float]:
    """min / median / max of repeated measurements (rounded): what a bench row on a busy machine quotes."""
    values = sorted(values)
    if not values:
        raise ValueError("spread of no values")
    return {
        k: round(v, digits)
        for k, v in zip(("min", "median", "max"), (values[0], statistics.median(values), values[-1]))
    }


def paired_ratios(runs: list[dict], ours: tuple[str, str], peer: tuple[str, str], key: str = "wall_s") -> list[float]:
    """Per repeat, peer seconds / our seconds: the i-th run of `ours` (side, precision) against the i-th of `peer`,
    which ran next to it in the same repeat (benchlib.run_order), so drift falls on both sides of each ratio."""

    def pick(side_precision):
        side, precision = side_precision
        return [r[key] for r in runs if (r["side"], r["precision"]) == (side, precision) and r.get(key)]

    return [round(p / o, 3) for o, p in zip(pick(ours), pick(peer), strict=False)]


# ---- the machine, the environment and timing (I/O from here on) ----


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def env(**extra: str) -> dict:
    """The environment a bench child runs in: this venv first on PATH, offline, no DVC analytics; tokenizer
    threads left at the library's default (tests/helpers.py turns them off for the tests)."""
    e = os.environ.copy()
    e["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{e.get('PATH', '')}"
    e.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", DVC_NO_ANALYTICS="1", **extra)
    e.pop("TOKENIZERS_PARALLELISM", None)
    return e


def load1() -> float:
    return round(os.getloadavg()[0], 2)


TICK = os.sysconf("SC_CLK_TCK")


def cpu_busy_s() -> float:
    """CPU-seconds all processes on this machine have used since boot (/proc/stat, idle and iowait excluded)."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0.0
    return (sum(fields[:8]) - fields[3] - fields[4]) / TICK  # user nice system idle iowait irq softirq steal


def wait_for_quiet(max_cores: float, max_wait: float, window: float = 3.0) -> float:
    """Wait (up to max_wait s) until other processes use less than max_cores; returns the last reading."""
    deadline = time.time() + max_wait
    while True:
        before = cpu_busy_s()
        time.sleep(window)
        busy = (cpu_busy_s() - before) / window
        if busy < max_cores or time.time() >= deadline:
            return round(busy, 2)


def timed(cmd: list[str], cwd: Path, log_file: Path, extra_env: dict | None = None) -> dict:
    """Run cmd (output appended to log_file); wall and CPU seconds and peak RSS of its process tree, and how many
    cores other processes used meanwhile (machine busy time minus the tree's own), with the load average."""
    before = load1()
    busy0 = cpu_busy_s()
    t0 = time.perf_counter()
    with open(log_file, "a") as out:
        out.write(f"\n$ {' '.join(cmd)}\n")
        out.flush()
        proc = subprocess.Popen(cmd, cwd=cwd, env={**env(), **(extra_env or {})}, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    busy = cpu_busy_s() - busy0
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"bench: {' '.join(cmd)} exited {code}\n{log_file.read_text()[-4000:]}")
    # ru_maxrss of a reaped child covers its reaped descendants too: max over dvc and the stage
    cpu = usage.ru_utime + usage.ru_stime
    others = max(0.0, busy - cpu) / wall if busy else None
    return {
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 2),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "other_cores": round(others, 2) if others is not None else None,
        "load1_before": before,
        "load1_after": load1(),
    }


def cpu_model_and_flags() -> tuple[str, set[str]]:
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    lines = info.splitlines()
    cpu = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), platform.processor())
    flags = set(next((ln.split(":", 1)[1].split() for ln in lines if ln.startswith("flags")), []))
    return cpu, flags


def host_kind(host: dict) -> str:
    """The kind of host a speed figure holds for: AMX, AVX512-BF16 without AMX, or neither (no native bf16)."""
    if host.get("amx"):
        return "AMX"
    if host.get("avx512_bf16"):
        return "AVX512-BF16, no AMX"
    return "no native bf16: AVX2-only or older"


def host_info() -> dict:
    """Host, CPU model and the flags that decide bf16 speed, torch version and threads, the tree measured."""
    import torch

    cpu, flags = cpu_model_and_flags()
    return {
        "hostname": socket.gethostname(),
        "cpu": cpu,
        "avx512f": "avx512f" in flags,
        "avx512_bf16": "avx512_bf16" in flags,
        "amx": "amx_bf16" in flags,
        "torch": torch.__version__,
        "transformers": metadata.version("transformers"),
        "peft": metadata.version("peft"),
        "threads": torch.get_num_threads(),
        "cores": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "tree": tree_version(),
    }


def tree_version() -> str:
    """The commit this working tree is on, and whether it had uncommitted changes (they are measured too)."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    return f"{head.strip() or 'unknown'}{' + uncommitted changes' if dirty else ''}"


def best_seconds(fn, seconds: float) -> float:
    """The best time of fn() over `seconds` of repeats, after one warm-up call (oneDNN picks and caches its
    kernel): another process on a core only ever slows a call down."""
    fn()
    best, deadline = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def matmul_peak(n: int = 2048, seconds: float = 3.0, device: str = "cpu", burst: int = 1) -> dict:
    """Best achieved FLOP/s of an n x n matmul (bursts of `burst` between synchronizes on a GPU), fp32 and bf16:
    the device's practical peak, which every model-FLOP share is taken against."""
    import torch

    peak = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a, b = (torch.randn(n, n, dtype=dtype, device=device) for _ in range(2))

        def step(a=a, b=b) -> None:
            for _ in range(burst):
                torch.matmul(a, b)
            if device == "cuda":
                torch.cuda.synchronize()

        peak[name] = burst * 2.0 * n**3 / best_seconds(step, seconds)  # a multiply-add is 2 FLOPs
    return {"n": n, "device": device, "threads": torch.get_num_threads(), "flops_per_s": peak}


# ---- working-tree copies and result files ----


def copy_tree(dest: Path, skip: tuple[str, ...] = ()) -> Path:
    """This working tree's files (tracked and untracked, not ignored), pipeline outputs and `skip` left out."""
    names = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split("\n")
    for name in filter(None, names):
        if name.startswith(GENERATED + skip) or not (ROOT / name).is_file():
            continue
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, dest / name)
    return dest


def git_commit_all(repo: Path) -> Path:
    """Make `repo` a git repository with everything in it committed (DVC needs one)."""
    for cmd in (
        ["git", "init", "-q", "-b", "main"],
        ["git", "add", "-A"],
        ["git", "-c", "user.name=bench", "-c", "user.email=bench@example.com", "commit", "-qm", "bench copy"],
    ):
        subprocess.run(cmd, cwd=repo, check=True, capture_output=True)
    return repo


def stamp() -> str:
    return time.strftime("%Y%m%dT%H%M%S")


def write_json(path: Path, record: dict) -> Path:
    """Write atomically: a half-written result never lands under bench/results."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2, default=str) + "\n")
    tmp.replace(path)
    return path


def set_param(params: dict, assignment: str) -> None:
    """'train.precision=bf16' or 'model.length_buckets=[16,32,64,128]' (values parsed as YAML), as `dvc exp run -S`."""
    import yaml

    key, _, value = assignment.partition("=")
    *path, leaf = key.strip().split(".")
    node = params
    for part in path:
        node = node.setdefault(part, {})
    node[leaf] = yaml.safe_load(value)


def write_params(repo: Path, overrides: list[str]) -> None:
    """Apply `key=value` overrides to the repository's params.yaml, as `dvc exp run -S` would."""
    import yaml

    params = yaml.safe_load((repo / "params.yaml").read_text())
    for assignment in overrides:
        set_param(params, assignment)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def read_raw(path: Path):
    """A shipped raw file: AG News (alps) is headerless `description<TAB>class`, one row a line; CSV has a header."""
    import pandas as pd

    if path.suffix == ".tsv":
        return pd.read_csv(path, sep="\t", header=None, dtype=str, keep_default_na=False, quoting=3)
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def write_raw(frame, path: Path) -> None:
    if path.suffix == ".tsv":
        frame.to_csv(path, sep="\t", header=False, index=False, quoting=3)
    else:
        frame.to_csv(path, index=False)
