"""Benchmark: the pipeline's train stage ("ours") against the seeds' HF Trainer recipe ("peer").

One command, from the repository root:

    python bench/run.py --rows 1500 --repeats 3

It builds a temporary git + DVC copy of this working tree (generated outputs left out), sets the
BanglaSenti study's params there (packaged all-MiniLM-L6-v2, `data.max_train_rows=--rows`, one
epoch, the rest of params.yaml as is) and measures, on this machine, in this run:

- ours: `dvc repro -f -s train` exactly as the pipeline runs it; samples/s is the stage's own
  `train_samples_per_second` (metrics/train/metrics.json), peak RSS is that of the process tree
  (`os.wait4`), accuracy is the stage's val accuracy and the evaluate stage's test accuracy;
- peer: `bench/peer_trainer.py`, HF `Trainer` + peft, padding to max_length=128, same rows, base
  model, batch size, lr, warmup, weight decay, clipping, seed and LoRA config, and exactly as many
  optimizer steps as ours took;
- tokenize rows/s (the tokenize stage in-process on the whole BanglaSenti corpus, and the stage's
  wall time inside `dvc repro`), evaluation samples/s (the evaluate stage's own figure, and the
  peer's `Trainer.predict`), and the wall time of a no-op `dvc repro` with every stage cached.

Ours and peer runs alternate (ours first in odd repeats, peer first in even ones) so that load
from other processes falls on both alike; the table reports medians, and the 1-minute load
average around every timed run. Results go to bench/results/<time>.json; the table is printed
and written into bench/README.md between the results markers (--no-readme to skip).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
GENERATED = ("data/prepared", "data/tokenized", "models/", "metrics/", "plots/", "reports/", "dvc.lock",
             "checkpoints/", "bench/results")
MODEL = "sentence-transformers/all-MiniLM-L6-v2"
DATASETS = {"banglasenti": (ROOT / "data/raw/banglasenti", "val.csv", "test.csv"),
            "ag_news": (ROOT / "data/raw/ag_news", "dev.tsv", "test.tsv")}
MARK_START, MARK_END = "<!-- bench:results:start -->", "<!-- bench:results:end -->"


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def env() -> dict:
    e = os.environ.copy()
    e["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{e.get('PATH', '')}"
    e.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", DVC_NO_ANALYTICS="1")
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


def timed(cmd: list[str], cwd: Path, what: str) -> dict:
    """Run cmd; wall and CPU seconds and peak RSS of its process tree, and what else ran meanwhile."""
    before = load1()
    busy0 = cpu_busy_s()
    t0 = time.perf_counter()
    with open(cwd.parent / f"{what}.log", "a") as out:
        out.write(f"\n$ {' '.join(cmd)}\n")
        out.flush()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env(), stdout=out, stderr=subprocess.STDOUT)
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
    return {"wall_s": round(wall, 3), "cpu_s": round(cpu, 2), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
            "other_cores": round(others, 2) if others is not None else None,
            "load1_before": before, "load1_after": load1()}


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


def make_copy(dest: Path, dataset: str, rows: int, val_rows: int, test_rows: int, seed: int,
              overrides: list[str] = ()) -> Path:
    """A fresh git + DVC repository with this working tree's files and the bench's params."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split("\n")
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
        test = test.groupby(label, group_keys=False).sample(frac=frac, random_state=seed).sample(frac=1, random_state=seed)
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
            scratch / f"data/prepared/{name}.csv", index=False)
    rows = len(pool) + len(test)
    e = env()
    e["PYTHONPATH"] = str(copy)
    runs = []
    for _ in range(repeats):
        if quiet:
            wait_for_quiet(*quiet)
        before = load1()
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", TOKENIZE_PROBE], cwd=scratch, env=e, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if out.returncode != 0:
            raise SystemExit(f"bench: tokenize probe failed\n{out.stderr[-3000:]}")
        probe = json.loads(out.stdout.strip().splitlines()[-1])
        runs.append({"main_s": round(probe["main_s"], 3), "process_wall_s": round(wall, 3), "load1_before": before})
    main_s = statistics.median(r["main_s"] for r in runs)
    wall_s = statistics.median(r["process_wall_s"] for r in runs)
    return {"rows": rows, "runs": runs, "rows_per_second": round(rows / main_s, 1),
            "rows_per_second_process": round(rows / wall_s, 1)}


def machine() -> dict:
    import torch

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = None
    try:
        mem_gb = round(int(Path("/proc/meminfo").read_text().split()[1]) / 1024 / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    flags = set()
    try:
        flags = set(next(line for line in Path("/proc/cpuinfo").read_text().splitlines()
                         if line.startswith("flags")).split(":", 1)[1].split())
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cpu_features": sorted(flags & {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "avx512_vnni"}),
            "logical_cores": os.cpu_count(), "affinity_cores": len(os.sched_getaffinity(0)),
            "memory_gb": mem_gb, "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "cuda": torch.cuda.is_available(), "python": platform.python_version(), "platform": platform.platform()}


def tree_version() -> str:
    """The commit this working tree is on, and whether it had uncommitted changes (they are measured too)."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True,
                           text=True).stdout.strip()
    return f"{head or 'unknown'}{' + uncommitted changes' if dirty else ''}"


def med(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 3) if values else None


def fmt(v, digits: int = 1) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def table(r: dict) -> str:
    o, p, s = r["ours"], r["peer"], r["summary"]
    rows = [
        ("train samples/s (median)", fmt(s["ours_train_sps"]), fmt(s["peer_train_sps"]),
         f"**{fmt(s['train_sps_ratio'], 2)}x**", ">= 2.0x"),
        (f"train samples/s (median of runs with other processes < {r['args']['clean_cores']} cores: "
         f"{s['clean_runs'][0]} ours, {s['clean_runs'][1]} peer)", fmt(s["ours_train_sps_clean"]),
         fmt(s["peer_train_sps_clean"]), f"{fmt(s['train_sps_ratio_clean'], 2)}x", ""),
        ("train samples/s (best run)", fmt(s["ours_train_sps_best"]), fmt(s["peer_train_sps_best"]),
         f"{fmt(s['train_sps_ratio_best'], 2)}x", ""),
        ("train samples/s (each run)", ", ".join(fmt(x["train_samples_per_second"]) for x in o["runs"]),
         ", ".join(fmt(x["train_samples_per_second"]) for x in p["runs"]), "", ""),
        ("other processes' CPU during the runs, cores (mean)", fmt(s["ours_other_cores"], 2),
         fmt(s["peer_other_cores"], 2), "", "0"),
        ("optimizer steps", fmt(o["steps"]), fmt(p["steps"]), "", "equal"),
        ("val accuracy after those steps", fmt(o["val_accuracy"], 4), fmt(p["val_accuracy"], 4),
         fmt(s["val_accuracy_delta"], 4) + " (ours - peer)", "equal"),
        ("test accuracy", fmt(o["test_accuracy"], 4), fmt(p.get("test_accuracy"), 4),
         fmt(s["test_accuracy_delta"], 4) + " (ours - peer)", "equal"),
        ("majority-class test accuracy", fmt(o["majority_accuracy"], 4), "", "", ""),
        ("peak RSS of training, MB (max)", fmt(s["ours_peak_rss_mb"], 0), fmt(s["peer_peak_rss_mb"], 0), "",
         "< 3,000"),
        ("evaluation samples/s (test, median)", fmt(s["ours_eval_sps"]), fmt(s["peer_eval_sps"]),
         f"{fmt(s['eval_sps_ratio'], 2)}x", ""),
        ("tokenize rows/s (stage main(), 24k rows)", fmt(r["tokenize"]["rows_per_second"]), "", "", ">= 20,000"),
        ("tokenize rows/s (whole stage process)", fmt(r["tokenize"]["rows_per_second_process"]), "", "", ""),
        ("tokenize stage in `dvc repro -s tokenize`, s (wall)", fmt(r["pipeline"]["stage_wall_s"].get("tokenize"), 2), "", "", ""),
        ("no-op `dvc repro`, s (median; first)", f"{fmt(s['noop_repro_s'], 2)}; {fmt(r['pipeline']['noop_repro'][0]['wall_s'], 2)}",
         "", "", "< 3"),
        ("1-min load average during timed runs", f"{fmt(s['load_min'], 2)} - {fmt(s['load_max'], 2)}", "", "", ""),
    ]
    head = "| measure | ours | peer (HF Trainer) | ratio / delta | target |\n|---|---|---|---|---|\n"
    return head + "\n".join("| " + " | ".join(row) + " |" for row in rows)


def describe(r: dict) -> str:
    m, a = r["machine"], r["args"]
    return (f"{m['cpu']} ({', '.join(m.get('cpu_features', []))}), {m['affinity_cores']} cores usable ({m['logical_cores']} logical), "
            f"{m['memory_gb']} GB RAM, torch {m['torch']} with {m['torch_threads']} threads, "
            f"Python {m['python']}; CUDA {'yes' if m['cuda'] else 'no'}. "
            f"Tree {r.get('tree', '?')}. {a['dataset']}, {r['ours']['train_rows']} train rows, {r['pipeline']['val_rows']} val rows, "
            f"{r['ours']['test_rows']} test rows, {a['repeats']} repeats, taken {r['finished']}.")


def write_readme(r: dict, md: str) -> None:
    path = BENCH / "README.md"
    text = path.read_text() if path.exists() else f"# Benchmarks\n\n{MARK_START}\n{MARK_END}\n"
    if MARK_START not in text:
        text += f"\n{MARK_START}\n{MARK_END}\n"
    head, rest = text.split(MARK_START, 1)
    _, tail = rest.split(MARK_END, 1)
    block = (f"{MARK_START}\n`{r['command']}`\n\n{describe(r)}\n\n{md}\n{MARK_END}")
    path.write_text(head + block + tail)


def main() -> None:
    ap = argparse.ArgumentParser(description="ours (dvc repro) vs peer (HF Trainer), one run, one table")
    ap.add_argument("--dataset", choices=sorted(DATASETS), default="banglasenti")
    ap.add_argument("--rows", type=int, default=600, help="training rows (data.max_train_rows)")
    ap.add_argument("--repeats", type=int, default=3, help="timed training runs per side")
    ap.add_argument("--val-rows", type=int, default=200, help="about this many val rows (sets data.val_fraction)")
    ap.add_argument("--test-rows", type=int, default=500, help="stratified sample of the official test split")
    ap.add_argument("--noop-repeats", type=int, default=3)
    ap.add_argument("--quiet-cores", type=float, default=0.3,
                    help="before each timed run wait until other processes use fewer cores than this ...")
    ap.add_argument("--clean-cores", type=float, default=0.25,
                    help="a run is 'clean' if other processes used fewer cores than this during it")
    ap.add_argument("--quiet-wait", type=float, default=120, help="... for at most this many seconds (0: never wait)")
    ap.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE",
                    help="extra params.yaml override for the copy, as `dvc exp run -S` (the peer reads them too)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary repository")
    ap.add_argument("--no-readme", action="store_true", help="do not write the table into bench/README.md")
    ap.add_argument("--peer-bf16", action="store_true",
                    help="peer with bf16 autocast (compare with ours under -S train.precision=bf16)")
    ap.add_argument("--skip-peer", action="store_true", help="measure ours only (no ratio)")
    args = ap.parse_args()

    started = dt.datetime.now().astimezone()
    work = Path(tempfile.mkdtemp(prefix="lora-bench-"))
    copy = make_copy(work / "repo", args.dataset, args.rows, args.val_rows, args.test_rows, seed=0, overrides=args.set)
    log(f"temporary repository {copy} (load {load1()})")

    # the whole pipeline once, stage by stage, so each stage's wall time is known
    stage_wall = {}
    for stage in ("prepare", "tokenize", "train", "evaluate"):
        res = dvc(["repro", "-s", stage], copy, what="pipeline")
        stage_wall[stage] = res["wall_s"]
        log(f"dvc repro -s {stage}: {res['wall_s']:.1f} s")
    res = dvc(["repro"], copy, what="pipeline")  # the rest of the pipeline (report, export, ...)
    stage_wall["rest (dvc repro)"] = res["wall_s"]
    log(f"dvc repro (remaining stages): {res['wall_s']:.1f} s")
    prep = read_json(copy / "metrics/prepare.json")
    noop = []
    for _ in range(args.noop_repeats):
        if args.quiet_wait:
            wait_for_quiet(args.quiet_cores, args.quiet_wait / 4)
        noop.append(dvc(["repro"], copy, what="noop"))
    log(f"no-op dvc repro: {[n['wall_s'] for n in noop]}")
    status = subprocess.run([sys.executable, "-m", "dvc", "status"], cwd=copy, env=env(), capture_output=True, text=True).stdout
    tok = tokenize_throughput(copy, work / "tokenize-probe",
                              quiet=(args.quiet_cores, args.quiet_wait / 4) if args.quiet_wait else None)
    log(f"tokenize: {tok['rows_per_second']:.0f} rows/s in-process, {tok['rows_per_second_process']:.0f} with startup")

    ours_runs, peer_runs, peer_first = [], [], None

    def run_ours(i: int) -> None:
        quiet = wait_for_quiet(args.quiet_cores, args.quiet_wait) if args.quiet_wait else None
        t = dvc(["repro", "-f", "-s", "train"], copy, what="ours")
        m = read_json(copy / "metrics/train/metrics.json")
        e = dvc(["repro", "-f", "-s", "evaluate"], copy, what="ours")
        ev = read_json(copy / "metrics/evaluate/metrics.json")
        ours_runs.append({**t, "busy_cores_before": quiet, "train_samples_per_second": m["train_samples_per_second"],
                          "train_seconds": m.get("train_seconds"), "steps": m.get("steps"),
                          "val_accuracy": dig(m, "val", "accuracy"),
                          "test_accuracy": dig(ev, "test", "accuracy"),
                          "eval_samples_per_second": dig(ev, "test", "samples_per_second"),
                          "evaluate_wall_s": e["wall_s"], "evaluate_other_cores": e["other_cores"]})
        log(f"ours #{i}: {m['train_samples_per_second']} samples/s, rss {t['peak_rss_mb']} MB, "
            f"other processes {t['other_cores']} cores, load {t['load1_before']}")

    def run_peer(i: int, steps: int) -> None:
        nonlocal peer_first
        quiet = wait_for_quiet(args.quiet_cores, args.quiet_wait) if args.quiet_wait else None
        out = work / f"peer-{i}.json"
        cmd = [sys.executable, str(copy / "bench/peer_trainer.py"), "--repo", str(copy), "--max-steps", str(steps),
               "--out", str(out), "--test"] + (["--bf16"] if args.peer_bf16 else [])
        t = timed(cmd, copy, "peer")
        res = read_json(out)
        if peer_first is None:
            peer_first = res
        peer_runs.append({**t, "busy_cores_before": quiet, **res})
        log(f"peer #{i}: {res['train_samples_per_second']} samples/s, rss {t['peak_rss_mb']} MB, "
            f"other processes {t['other_cores']} cores, load {t['load1_before']}")

    for i in range(1, args.repeats + 1):
        if i % 2 == 1 or args.skip_peer:
            run_ours(i)
            if not args.skip_peer:
                run_peer(i, ours_runs[0]["steps"])
        else:
            run_peer(i, ours_runs[0]["steps"])
            run_ours(i)

    val_rows = prep["rows"]["val"]
    test_rows = prep["rows"]["test"]
    ev0 = read_json(copy / "metrics/evaluate/metrics.json")
    ours = {"runs": ours_runs, "train_rows": prep["rows"]["train"], "test_rows": test_rows,
            "steps": ours_runs[0]["steps"], "val_accuracy": ours_runs[0]["val_accuracy"],
            "test_accuracy": ours_runs[0]["test_accuracy"], "majority_accuracy": dig(ev0, "test", "majority_accuracy")}
    peer = {"runs": peer_runs, **({k: peer_first.get(k) for k in ("steps", "val_accuracy", "test_accuracy",
                                  "test_samples_per_second", "tokenize_rows_per_second")} if peer_first else
                                  {"steps": None, "val_accuracy": None, "test_accuracy": None})}
    o_sps = med([r["train_samples_per_second"] for r in ours_runs])
    p_sps = med([r["train_samples_per_second"] for r in peer_runs])

    def clean(runs):  # runs during which other processes used less than --clean-cores
        return [r for r in runs if r.get("other_cores") is not None and r["other_cores"] < args.clean_cores]

    o_clean, p_clean = clean(ours_runs), clean(peer_runs)
    o_sps_clean = med([r["train_samples_per_second"] for r in o_clean])
    p_sps_clean = med([r["train_samples_per_second"] for r in p_clean])
    o_eval = med([r["eval_samples_per_second"] for r in ours_runs])
    p_eval = med([r.get("test_samples_per_second") for r in peer_runs])
    loads = [x for r in ours_runs + peer_runs for x in (r["load1_before"], r["load1_after"])]
    o_best = max(r["train_samples_per_second"] for r in ours_runs)
    p_best = max((r["train_samples_per_second"] for r in peer_runs), default=None)

    def others(runs):
        vals = [r["other_cores"] for r in runs if r.get("other_cores") is not None]
        return round(statistics.mean(vals), 2) if vals else None

    def delta(a, b):
        return round(a - b, 4) if a is not None and b is not None else None

    summary = {
        "ours_train_sps": o_sps, "peer_train_sps": p_sps,
        "train_sps_ratio": round(o_sps / p_sps, 3) if p_sps else None,
        "ours_train_sps_clean": o_sps_clean, "peer_train_sps_clean": p_sps_clean,
        "clean_runs": [len(o_clean), len(p_clean)],
        "train_sps_ratio_clean": round(o_sps_clean / p_sps_clean, 3) if o_sps_clean and p_sps_clean else None,
        "ours_train_sps_best": o_best, "peer_train_sps_best": p_best,
        "train_sps_ratio_best": round(o_best / p_best, 3) if p_best else None,
        "ours_other_cores": others(ours_runs), "peer_other_cores": others(peer_runs),
        "val_accuracy_delta": delta(ours["val_accuracy"], peer.get("val_accuracy")),
        "test_accuracy_delta": delta(ours["test_accuracy"], peer.get("test_accuracy")),
        "ours_peak_rss_mb": max(r["peak_rss_mb"] for r in ours_runs),
        "peer_peak_rss_mb": max((r["peak_rss_mb"] for r in peer_runs), default=None),
        "ours_eval_sps": o_eval,
        "peer_eval_sps": p_eval,
        "eval_sps_ratio": round(o_eval / p_eval, 3) if p_eval else None,
        "noop_repro_s": med([n["wall_s"] for n in noop]),
        "load_min": min(loads), "load_max": max(loads),
    }
    result = {
        "command": " ".join(["python bench/run.py", *sys.argv[1:]]),
        "tree": tree_version(),
        "started": started.isoformat(timespec="seconds"),
        "finished": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "args": vars(args), "machine": machine(),
        "params": yaml.safe_load((copy / "params.yaml").read_text()),
        "pipeline": {"stage_wall_s": stage_wall, "prepare_rows": prep["rows"], "val_rows": val_rows,
                     "noop_repro": noop, "dvc_status_after": status.strip()},
        "tokenize": tok, "ours": ours, "peer": peer, "summary": summary,
    }
    results_dir = BENCH / "results"
    results_dir.mkdir(exist_ok=True)
    out = results_dir / f"{started.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    md = table(result)
    print(f"\n{describe(result)}\n\n{md}\n\nresults: {out}")
    if not args.no_readme:
        write_readme(result, md)
    if args.keep:
        log(f"kept {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
