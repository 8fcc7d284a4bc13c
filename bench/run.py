"""The honest bench: the pipeline's train stage against the stock Hugging Face Trainer recipe, one run, one table.

    python bench/run.py --quick          # 256 rows, 1 repeat: checks the harness (minutes), figures meaningless
    python bench/run.py                  # the published table (see bench/README.md for its wall time)

It builds a temporary git + DVC copy of this working tree (generated outputs left out) with AG News,
the packaged all-MiniLM-L6-v2, `data.max_train_rows=--rows` and the rest of params.yaml as is
(epochs, min_steps), and measures, in the same run, with compared runs next to each other
(benchlib.run_order, rotated from repeat to repeat) so that drift falls on both sides:

- ours: `dvc repro -f -s train` (whole process, wall clock) with `train.precision` fp32 and bf16;
- stock peer (bench/peer_trainer.py --recipe stock): Trainer + peft, DataCollatorWithPadding,
  `train_sampling_strategy="group_by_length"`, same rows, LoRA config, steps and val pass, fp32 and bf16;
- padded peer (--recipe padded): the seeds' recipe, every row padded to 128, fp32;
- val and test accuracy of each config (test: ours' evaluate stage; peers: merged adapter);
- model FLOPs per trained token, achieved FLOP/s and its share of this machine's matmul peak (same run,
  same precision); tokenize rows/s; no-op `dvc repro`; peak RSS of the train stage;
- 2 processes x 1 thread against 1 process x 2 threads (`train.processes`), when the param exists.

Raw results go to bench/results/<time>.json (committed); the table is printed and written into
bench/README.md between the results markers (--no-readme to skip).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import (  # noqa: E402
    Encoder,
    alternate,
    epochs_trained,
    fmt,
    matmul_flops,
    ratio,
    run_flops,
    run_order,
    schema_errors,
)

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
GENERATED = (
    "data/prepared",
    "data/tokenized",
    "models/",
    "metrics/",
    "records/",
    "plots/",
    "reports/",
    "dvc.lock",
    "checkpoints/",
    "bench/results",
)
MODEL = "sentence-transformers/all-MiniLM-L6-v2"
DATASETS = {
    "banglasenti": (ROOT / "data/raw/banglasenti", "val.csv", "test.csv"),
    "ag_news": (ROOT / "data/raw/ag_news", "dev.tsv", "test.tsv"),
}
MARK_START, MARK_END = "<!-- bench:results:start -->", "<!-- bench:results:end -->"
SIDES = ("ours", "stock", "padded")
ACCURACY_BAR = 0.80  # both sides must clear the majority class (0.25 on AG News) by this much


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def env() -> dict:
    e = os.environ.copy()
    e["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{e.get('PATH', '')}"
    e.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", DVC_NO_ANALYTICS="1")
    # tests/helpers.py (imported for its repo helpers) turns tokenizer threads off for the tests; the
    # timed runs get the tokenizers library's default, as a user's `dvc repro` does
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


def timed(cmd: list[str], cwd: Path, what: str, extra_env: dict | None = None) -> dict:
    """Run cmd; wall and CPU seconds and peak RSS of its process tree, and what else ran meanwhile."""
    before = load1()
    busy0 = cpu_busy_s()
    t0 = time.perf_counter()
    with open(cwd.parent / f"{what}.log", "a") as out:
        out.write(f"\n$ {' '.join(cmd)}\n")
        out.flush()
        proc = subprocess.Popen(cmd, cwd=cwd, env={**env(), **(extra_env or {})}, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    busy = cpu_busy_s() - busy0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        tail = (cwd.parent / f"{what}.log").read_text()[-4000:]
        raise SystemExit(f"bench: {' '.join(cmd)} exited {proc.returncode}\n{tail}")
    # ru_maxrss of a reaped child covers its reaped descendants too: max over dvc and the stage
    cpu = usage.ru_utime + usage.ru_stime
    # other processes' CPU use during the run, in cores (machine busy time minus this tree's own)
    others = max(0.0, busy - cpu) / wall if busy else None
    return {
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 2),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "other_cores": round(others, 2) if others is not None else None,
        "load1_before": before,
        "load1_after": load1(),
    }


def dvc(args: list[str], repo: Path, what: str = "dvc") -> dict:
    return timed([sys.executable, "-m", "dvc", *args], repo, what)


def git(args: list[str], cwd: Path) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, env=env())


def read_raw(path: Path):
    import pandas as pd

    if path.suffix == ".tsv":  # AG News (alps): headerless description<TAB>class, one row a line
        return pd.read_csv(path, sep="\t", header=None, dtype=str, keep_default_na=False, quoting=3)
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def write_raw(frame, path: Path) -> None:
    if path.suffix == ".tsv":
        frame.to_csv(path, sep="\t", header=False, index=False, quoting=3)
    else:
        frame.to_csv(path, index=False)


def set_param(params: dict, assignment: str) -> None:
    """'train.precision=bf16' or 'model.length_buckets=[16,32,64,128]' (values parsed as YAML)."""
    key, _, value = assignment.partition("=")
    *path, leaf = key.strip().split(".")
    node = params
    for part in path:
        node = node.setdefault(part, {})
    node[leaf] = yaml.safe_load(value)


def make_copy(
    dest: Path, dataset: str, rows: int, val_rows: int, test_rows: int, seed: int, overrides: list[str] = ()
) -> Path:
    """A fresh git + DVC repository with this working tree's files and the bench's params."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split("\n")
    for name in filter(None, files):
        if name.startswith(GENERATED) or not (ROOT / name).is_file():
            continue
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, dest / name)
    # the dataset's own files; test cut to a seeded, stratified sample so the peer's
    # padded-to-128 predict pass stays affordable on 2 cores (both sides see the same rows)
    raw, pool_name, test_name = DATASETS[dataset]
    data = dest / f"data/bench_{dataset}"
    data.mkdir(parents=True)
    shutil.copy2(raw / pool_name, data / pool_name)
    pool_rows = len(read_raw(raw / pool_name))
    test = read_raw(raw / test_name)
    label = test.columns[-1] if dataset == "ag_news" else "label"
    if test_rows and test_rows < len(test):
        frac = test_rows / len(test)
        test = test.groupby(label, group_keys=False).sample(frac=frac, random_state=seed)
        test = test.sample(frac=1, random_state=seed)
    write_raw(test, data / test_name)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    params["data"].update(dataset=dataset, path=f"data/bench_{dataset}", max_train_rows=rows)
    if val_rows:  # val is carved from the pool before max_train_rows; keep its pass small
        params["data"]["val_fraction"] = round(val_rows / pool_rows, 5)
    params["model"]["name"] = MODEL
    params["train"]["epochs"] = 1
    for assignment in overrides:
        set_param(params, assignment)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git(["init", "-q", "-b", "main"], dest)
    git(["config", "user.email", "bench@example.com"], dest)
    git(["config", "user.name", "bench"], dest)
    git(["add", "-A"], dest)
    git(["commit", "-qm", "bench copy"], dest)
    return dest


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def dig(d: dict, *keys, default=None):
    """d['a']['b'] or d['a/b'] (DVCLive nests 'val/accuracy' as {'val': {'accuracy': ...}})."""
    for variant in (keys, ("/".join(keys),)):
        cur = d
        try:
            for k in variant:
                cur = cur[k]
            return cur
        except (KeyError, TypeError):
            continue
    return default


TOKENIZE_PROBE = r"""
import json, sys, time
t0 = time.perf_counter()
import stages.tokenize as stage
from lora_dvc.runner import setup_logging
from transformers import AutoTokenizer  # the import counts as start-up whether the stage imports it early or late
setup_logging()
t1 = time.perf_counter()
stage.main()
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "main_s": t2 - t1}))
"""


def tokenize_throughput(copy: Path, scratch: Path, repeats: int = 3, quiet: tuple | None = None) -> dict:
    """The tokenize stage's main(), in-process, on the whole BanglaSenti corpus (24k rows); medians."""
    import pandas as pd

    (scratch / "data/prepared").mkdir(parents=True)
    shutil.copy2(copy / "params.yaml", scratch / "params.yaml")
    shutil.copy2(copy / "data/prepared/labels.json", scratch / "data/prepared/labels.json")
    raw = DATASETS["banglasenti"][0]
    pool = pd.read_csv(raw / "val.csv", dtype=str, keep_default_na=False)
    test = pd.read_csv(raw / "test.csv", dtype=str, keep_default_na=False)
    split = int(len(pool) * 0.9)
    for name, frame in {"train": pool[:split], "val": pool[split:], "test": test}.items():
        frame.assign(label=pd.to_numeric(frame["label"], errors="coerce").fillna(0).astype(int).clip(0, 2)).to_csv(
            scratch / f"data/prepared/{name}.csv", index=False
        )
    rows = len(pool) + len(test)
    e = env()
    e["PYTHONPATH"] = str(copy)
    runs = []
    for _ in range(repeats):
        if quiet:
            wait_for_quiet(*quiet)
        before = load1()
        t0 = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-c", TOKENIZE_PROBE], cwd=scratch, env=e, capture_output=True, text=True
        )
        wall = time.perf_counter() - t0
        if out.returncode != 0:
            raise SystemExit(f"bench: tokenize probe failed\n{out.stderr[-3000:]}")
        probe = json.loads(out.stdout.strip().splitlines()[-1])
        runs.append({"main_s": round(probe["main_s"], 3), "process_wall_s": round(wall, 3), "load1_before": before})
    main_s = statistics.median(r["main_s"] for r in runs)
    wall_s = statistics.median(r["process_wall_s"] for r in runs)
    return {
        "rows": rows,
        "runs": runs,
        "rows_per_second": round(rows / main_s, 1),
        "rows_per_second_process": round(rows / wall_s, 1),
    }


def host_info() -> dict:
    """Host, CPU model and the flags that decide bf16 speed, torch version and threads."""
    import torch

    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    lines = info.splitlines()
    cpu = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), platform.processor())
    flags = set(next((ln.split(":", 1)[1].split() for ln in lines if ln.startswith("flags")), []))
    return {
        "hostname": socket.gethostname(),
        "cpu": cpu,
        "avx512f": "avx512f" in flags,
        "avx512_bf16": "avx512_bf16" in flags,
        "amx": "amx_bf16" in flags,
        "torch": torch.__version__,
        "transformers": _version("transformers"),
        "peft": _version("peft"),
        "threads": torch.get_num_threads(),
        "cores": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "tree": tree_version(),
    }


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


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


def matmul_peak(n: int = 2048, seconds: float = 3.0) -> dict:
    """Best achieved FLOP/s of an n x n matmul on all threads, fp32 and bf16: the machine's practical peak."""
    import torch

    peak = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        peak[name] = matmul_flops(n) / best_seconds(lambda a=a, b=b: torch.matmul(a, b), seconds)
    return {"n": n, "threads": torch.get_num_threads(), "flops_per_s": peak}


def best_peak(*peaks: dict) -> dict:
    """The best of several peak measurements: another process on a core only ever lowers the figure."""
    best = dict(peaks[0])
    best["flops_per_s"] = {k: max(p["flops_per_s"][k] for p in peaks) for k in peaks[0]["flops_per_s"]}
    best["measurements"] = [p["flops_per_s"] for p in peaks]
    return best


def token_lengths(copy: Path) -> dict[str, list[int]]:
    """Real (non-pad) token count of each train and val row, as the model sees them (truncated at max_length)."""
    import pandas as pd
    from transformers import AutoConfig, AutoTokenizer

    params = yaml.safe_load((copy / "params.yaml").read_text())
    path = model_path(params["model"]["name"])
    tok = AutoTokenizer.from_pretrained(path)
    lengths = {}
    for split in ("train", "val"):
        texts = pd.read_csv(copy / f"data/prepared/{split}.csv", dtype={"text": str}, keep_default_na=False)["text"]
        enc = tok(texts.tolist(), truncation=True, max_length=params["model"]["max_length"])
        lengths[split] = [len(ids) for ids in enc["input_ids"]]
    lengths["encoder"] = Encoder.from_config(
        AutoConfig.from_pretrained(path), params["lora"]["r"], params["lora"]["targets"]
    )
    return lengths


def model_path(name: str) -> str:
    sys.path.insert(0, str(BENCH))
    from peer_trainer import model_path as resolve

    return resolve(name)


def write_params(copy: Path, overrides: list[str]) -> None:
    """Apply `key=value` overrides to the copy's params.yaml, as `dvc exp run -S` would."""
    params = yaml.safe_load((copy / "params.yaml").read_text())
    for assignment in overrides:
        set_param(params, assignment)
    (copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def run_ours(copy: Path, precision: str, with_test: bool, extra_env: dict | None = None) -> dict:
    """`dvc repro -f -s train` at this precision: whole-process wall, the stage's own figures, accuracy."""
    write_params(copy, [f"train.precision={precision}"])
    t = timed([sys.executable, "-m", "dvc", "repro", "-f", "-s", "train"], copy, "ours", extra_env)
    m = read_json(copy / "records/train/metrics.json")
    run = {
        **t,
        "side": "ours",
        "precision": precision,
        "steps": m.get("steps"),
        "loop_s": m.get("train_seconds"),
        "samples_per_second": m.get("train_samples_per_second"),
        "val_accuracy": dig(m, "val", "accuracy"),
    }
    if with_test:
        timed([sys.executable, "-m", "dvc", "repro", "-f", "-s", "evaluate"], copy, "ours")
        ev = read_json(copy / "records/evaluate/metrics.json")
        run.update(test_accuracy=dig(ev, "test", "accuracy"), majority_accuracy=dig(ev, "test", "majority_accuracy"))
    return run


def run_peer(copy: Path, recipe: str, precision: str, steps: int, with_test: bool) -> dict:
    """bench/peer_trainer.py: whole-process wall less its test pass, so it covers what `-s train` covers."""
    out = copy.parent / f"peer-{recipe}-{precision}-{time.time_ns()}.json"
    cmd = [
        sys.executable,
        str(BENCH / "peer_trainer.py"),
        "--repo",
        str(copy),
        "--recipe",
        recipe,
        "--max-steps",
        str(steps),
        "--out",
        str(out),
    ]
    cmd += (["--test"] if with_test else []) + (["--bf16"] if precision == "bf16" else [])
    t = timed(cmd, copy, "peer")
    res = read_json(out)
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
    for side, precision in alternate(run_order(default, args.padded_precisions), args.repeats):
        first = not any(r["side"] == side and r["precision"] == precision for r in runs)
        if args.quiet_wait:
            wait_for_quiet(args.quiet_cores, args.quiet_wait)
        if side == "ours":
            runs.append(run_ours(copy, precision, with_test=first))
            steps = steps or runs[-1]["steps"]  # the same rows and epochs in every precision
        else:
            runs.append(run_peer(copy, side, precision, steps, with_test=first))
        log(f"{side} {precision}: {runs[-1]['wall_s']} s wall, {runs[-1]['other_cores']} other cores")
    return runs


def median_of(runs: list[dict], side: str, precision: str, key: str = "wall_s") -> float | None:
    values = [r[key] for r in runs if r["side"] == side and r["precision"] == precision and r.get(key) is not None]
    return round(statistics.median(values), 3) if values else None


def first_of(runs: list[dict], side: str, precision: str, key: str):
    return next(
        (r[key] for r in runs if r["side"] == side and r["precision"] == precision and r.get(key) is not None), None
    )


def default_precision(copy: Path) -> str:
    """What `train.precision: auto` resolves to on this host, asked of the pipeline's own code."""
    code = "from lora_dvc.device import resolve_precision; print(resolve_precision('cpu', 'auto'))"
    out = subprocess.run([sys.executable, "-c", code], cwd=copy, env=env(), capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "fp32"


def speed_summary(runs: list[dict], default: str) -> dict:
    """Median whole-process seconds per side and precision, and ours-vs-peer ratios (peer time / our time)."""
    rows = {"default": (default, "fp32"), "fp32": ("fp32", "fp32"), "bf16": ("bf16", "bf16")}
    summary = {}
    for row, (ours_p, peer_p) in rows.items():
        ours, stock, padded = (
            median_of(runs, "ours", ours_p),
            median_of(runs, "stock", peer_p),
            median_of(runs, "padded", peer_p),
        )
        summary[row] = {
            "ours_precision": ours_p,
            "peer_precision": peer_p,
            "ours_s": ours,
            "stock_s": stock,
            "padded_s": padded,
            "vs_stock": ratio(ours, stock),
            "vs_padded": ratio(ours, padded),
        }
    return summary


def accuracy_summary(runs: list[dict]) -> dict:
    acc = {}
    for precision in ("fp32", "bf16"):
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


def processes_vs_threads(copy: Path, args) -> dict:
    """2 processes x 1 thread against 1 process x 2 threads, samples/s (issue 15); n/a without the param."""
    code = (
        "import dataclasses as d; from lora_dvc.params import TrainParams as T; print('processes' in "
        "{f.name for f in d.fields(T)})"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=copy, env=env(), capture_output=True, text=True)
    if out.stdout.strip() != "True":
        return {"available": False, "note": "n/a (train.processes not available)"}
    precision, result = default_precision(copy), {"available": True, "runs": []}
    for layout in alternate(["2x1", "1x2"], args.repeats):
        processes, threads = (2, 1) if layout == "2x1" else (1, 2)
        write_params(copy, [f"train.processes={processes}"])
        run = run_ours(copy, precision, False, {"OMP_NUM_THREADS": str(threads)})
        result["runs"].append({"layout": layout, **run})
    write_params(copy, ["train.processes=1"])
    for layout in ("2x1", "1x2"):
        sps = [r["samples_per_second"] for r in result["runs"] if r["layout"] == layout]
        result[layout] = round(statistics.median(sps), 2) if sps and None not in sps else None
    return result


def noop_repro(copy: Path, repeats: int = 3) -> float:
    """Median wall of `dvc repro` with every stage cached (after one run that brings it up to date)."""
    dvc(["repro"], copy, "pipeline")
    return round(statistics.median(dvc(["repro"], copy, "noop")["wall_s"] for _ in range(repeats)), 3)


def table(r: dict) -> str:
    """The one published table: speed ratios, accuracy, FLOPs, the stage figures, processes vs threads."""
    s, a, f, pk = r["speed"], r["accuracy"], r["flops"], r["peak"]["flops_per_s"]
    rows = [
        (
            "| measure | ours | stock Trainer (dynamic padding, length-grouped) | ours vs stock | "
            "padded-to-128 Trainer (seeds') | ours vs padded | goal |"
        ),
        "|---|---|---|---|---|---|---|",
    ]
    goals = {"default": ">= 2.0x vs stock", "fp32": "", "bf16": ">= 1.3x vs stock"}
    for row, v in s.items():
        label = {
            "default": f"train, pipeline default ({v['ours_precision']}) vs stock default (fp32), s",
            "fp32": "train, fp32 both, s",
            "bf16": "train, bf16 both, s",
        }[row]
        rows.append(
            f"| {label} | {fmt(v['ours_s'])} | {fmt(v['stock_s'])} | **{fmt(v['vs_stock'], 2, 'x')}** | "
            f"{fmt(v['padded_s'])} | {fmt(v['vs_padded'], 2, 'x')} | {goals[row]} |"
        )
    for precision, v in a.items():
        rows.append(
            f"| {precision}: optimizer steps; val accuracy | {fmt(v['steps'][0])}; {fmt(v['ours_val'], 4)} | "
            f"{fmt(v['steps'][1])}; {fmt(v['stock_val'], 4)} | | | | equal steps |"
        )
        rows.append(
            f"| {precision}: test accuracy (majority class {fmt(v['majority'], 4)}) | "
            f"{fmt(v['ours_test'], 4)} | {fmt(v['stock_test'], 4)} | {fmt(v['delta_points'], 2)} points | "
            f"| | >= {ACCURACY_BAR:.2f} both, within 0.5 points |"
        )
    rows.append(
        f"| model FLOPs per trained token (fwd + bwd to inputs and adapters) | "
        f"{f['per_train_token'] / 1e6:,.1f} M | same | | same | | |"
    )
    goal = {"fp32": "", "bf16": ">= 50% of peak"}
    for precision in ("fp32", "bf16"):
        cells = [_achieved(f, f"{side}/{precision}", pk[precision]) for side in SIDES]
        rows.append(
            f"| achieved GFLOP/s in the loop, {precision} (share of {pk[precision] / 1e9:,.0f} GFLOP/s "
            f"matmul peak) | {cells[0]} | {cells[1]} | | {cells[2]} | | {goal[precision]} |"
        )
    t = r["tokenize"]
    rss = r["peak_rss_mb"] if isinstance(r["peak_rss_mb"], dict) else {"fp32": r["peak_rss_mb"]}
    rows += [
        f"| tokenize stage, rows/s ({t['rows']:,} rows, stage main()) | {fmt(t['rows_per_second'], 0)} "
        f"| | | | | >= 20,000 |",
        f"| no-op `dvc repro`, s (median of 3) | {fmt(r['noop_repro_s'], 2)} | | | | | < 1 |",
        f"| peak RSS of the train stage, MB, bf16 / fp32 | {fmt(rss.get('bf16'), 0)} / "
        f"{fmt(rss.get('fp32'), 0)} | | | | | < 3,000 |",
        _processes_row(r["processes_vs_threads"]),
    ]
    return "\n".join(rows)


def _achieved(flops: dict, key: str, peak: float) -> str:
    got = flops["achieved"].get(key)
    return f"{got['flops_per_s'] / 1e9:,.1f} ({100 * got['share_of_peak']:.0f}%)" if got else "n/a"


def _processes_row(p: dict) -> str:
    label = "train samples/s, 2 processes x 1 thread vs 1 process x 2 threads"
    if not p.get("available"):
        return f"| {label} | {p['note']} | | | | | |"
    speedup = round(p["2x1"] / p["1x2"], 3) if p["2x1"] and p["1x2"] else None
    return f"| {label} | {fmt(p['2x1'])} vs {fmt(p['1x2'])} | | {fmt(speedup, 2, 'x')} (2x1 / 1x2) | | | |"


def describe(r: dict) -> str:
    h, a = r["host"], r["args"]
    flags = ", ".join(k for k in ("avx512f", "avx512_bf16", "amx") if h[k]) or "no AVX-512"
    return (
        f"{h['cpu']} ({flags}) on {h['hostname']}, {h['cores']} cores, torch {h['torch']} with {h['threads']} "
        f"threads, transformers {h['transformers']}, peft {h['peft']}; tree {h['tree']}. AG News, "
        f"{r['rows']['train']} train / {r['rows']['val']} val / {r['rows']['test']} test rows, "
        f"{_epochs(r)}, {a['repeats']} repeat(s) in benchlib.run_order (medians), taken {r['date']}."
    )


def _epochs(r: dict) -> str:
    epochs = r.get("flops", {}).get("epochs")
    steps = next((run["steps"] for run in r.get("runs", []) if run.get("steps")), None)
    return f"{epochs or 1} epoch(s)" + (f" = {steps} steps" if steps else "")


def write_readme(r: dict, md: str) -> None:
    path = BENCH / "README.md"
    text = path.read_text()
    head, rest = text.split(MARK_START, 1)
    _, tail = rest.split(MARK_END, 1)
    path.write_text(f"{head}{MARK_START}\n`{r['command']}`\n\n{describe(r)}\n\n{md}\n{MARK_END}{tail}")


def parse_args():
    ap = argparse.ArgumentParser(description="ours (dvc repro) vs the stock Trainer recipe, one run, one table")
    ap.add_argument("--rows", type=int, default=4096, help="training rows (data.max_train_rows)")
    ap.add_argument("--repeats", type=int, default=2, help="timed runs per side and precision")
    ap.add_argument("--val-rows", type=int, default=500, help="about this many val rows (sets data.val_fraction)")
    ap.add_argument("--test-rows", type=int, default=1000, help="stratified sample of the official test split")
    ap.add_argument("--padded-precisions", nargs="*", default=["fp32"], help="precisions the padded peer runs in")
    ap.add_argument("--quiet-cores", type=float, default=0.3, help="wait until other processes use fewer cores")
    ap.add_argument("--quiet-wait", type=float, default=120, help="... for at most this many s (0: never wait)")
    ap.add_argument("--quick", action="store_true", help="256 rows, 1 repeat, small val/test: checks the harness")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="params override for both sides, as dvc exp run -S (e.g. train.min_steps=null: one epoch)",
    )
    ap.add_argument("--keep", action="store_true", help="keep the temporary repository")
    ap.add_argument("--no-readme", action="store_true", help="do not write the table into bench/README.md")
    args = ap.parse_args()
    if args.quick:
        args.rows, args.repeats, args.val_rows, args.test_rows, args.quiet_wait = 256, 1, 128, 256, 0
    return args


def save(result: dict, folder: Path) -> Path:
    problems = schema_errors(result)
    if problems:
        raise SystemExit(f"bench: result JSON incomplete: {'; '.join(problems)}")
    out = folder / f"{result['date'][:19].replace(':', '').replace('-', '')}.json"
    out.parent.mkdir(exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2, default=str) + "\n")
    tmp.replace(out)  # atomic: a half-written result never lands under bench/results
    return out


def save_probe(script: str, record: dict, out: Path | None = None) -> Path:
    """A probe's raw figures (bench/step_levers.py, bench/matmul_ceiling.py) with its command, date and host,
    to `out` or bench/results/<script>-<date>.json, written atomically."""
    now = dt.datetime.now(dt.timezone.utc)
    path = out or BENCH / "results" / f"{script}-{now.strftime('%Y%m%dT%H%M%S')}.json"
    full = {
        "command": " ".join([f"python bench/{script.replace('-', '_')}.py", *sys.argv[1:]]),
        "date": now.isoformat(timespec="seconds"),
        "host": host_info(),
        **record,
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(full, indent=2) + "\n")
    tmp.replace(path)
    print(f"\nwrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    return path


def main() -> None:
    args = parse_args()
    date = dt.datetime.now().astimezone().isoformat(timespec="seconds")
    host = host_info()  # at the start: the tree the copy is made from, not one edited while the bench ran
    work = Path(tempfile.mkdtemp(prefix="lora-bench-"))
    copy = make_copy(work / "repo", "ag_news", args.rows, args.val_rows, args.test_rows, seed=0, overrides=args.set)
    log(f"temporary repository {copy}")
    dvc(["repro", "-s", "prepare"], copy, "pipeline")
    dvc(["repro", "-s", "tokenize"], copy, "pipeline")
    peak = matmul_peak()
    log(f"matmul peak: { ({k: round(v / 1e9, 1) for k, v in peak['flops_per_s'].items()}) } GFLOP/s")
    runs = speed_runs(copy, args, default_precision(copy))
    peak = best_peak(peak, matmul_peak())  # again after the runs: the quieter of the two is the peak
    lengths = token_lengths(copy)
    params = yaml.safe_load((copy / "params.yaml").read_text())
    rows = read_json(copy / "records/prepare.json")["rows"]
    result = {
        "command": " ".join(["python bench/run.py", *sys.argv[1:]]),
        "date": date,
        "host": host,
        "args": vars(args),
        "params": params,
        "rows": rows,
        "runs": runs,
        "speed": speed_summary(runs, default_precision(copy)),
        "accuracy": accuracy_summary(runs),
        "flops": flops_summary(runs, lengths, peak, epochs_trained(runs, params["train"], len(lengths["train"]))),
        "peak": peak,
        "peak_rss_mb": {
            p: max((r["peak_rss_mb"] for r in runs if r["side"] == "ours" and r["precision"] == p), default=None)
            for p in ("fp32", "bf16")
        },
        "noop_repro_s": noop_repro(copy),
        "tokenize": tokenize_throughput(copy, work / "tokenize-probe", repeats=1 if args.quick else 3),
        "processes_vs_threads": processes_vs_threads(copy, args),
    }
    # --quick figures are a harness check, not a published table: they stay out of bench/results
    out = save(result, work if args.quick else BENCH / "results")
    md = table(result)
    print(f"\n{describe(result)}\n\n{md}\n\nresults: {out}")
    if not args.no_readme and not args.quick:
        write_readme(result, md)
    if not args.keep and not args.quick:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
