"""Data parallel on the CPU: train.processes=2 starts the stage under torchrun (gloo), rank 0 writes.

Same global batch (16 rows: 1 x 16 against 2 x 8), same seed: the outputs have the same files and
metrics keys, and the loss curve of the 2-process run follows the 1-process one. The curves cannot
be equal: the two runs see the rows in a different order (accelerate deals each process every
other batch of the length-grouped order; dropout is off here). Stated tolerance: every logged
window loss within LOSS_TOLERANCE of the 1-process run's. Measured: largest gap 0.006 nats. The
tiny random model barely learns in 44 steps (its loss stays near ln 4 = 1.386), so this checks
that DDP averages the loss and gradients rightly (a process-count factor shows as a gap of 1.4,
which is how this test caught Trainer doubling the loss), not that two learning curves coincide.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from conftest import run, write_params
from helpers import train_pids

LOSS_TOLERANCE = 0.02  # nats, per logged window of 5 steps


def losses(repo: Path) -> dict[int, float]:
    rows = (repo / "records/train/plots/metrics/train_step/loss.tsv").read_text().splitlines()[1:]
    return {int(step): float(loss) for step, loss in (row.split("\t") for row in rows)}


def train(repo: Path, processes: int, store: Path) -> tuple[dict, dict[int, float], list[str], str]:
    write_params(repo, {"train": {"processes": processes}})
    result = run([sys.executable, "-m", "stages.train"], repo, env={"LORA_DVC_CHECKPOINTS": str(store)})
    metrics = json.loads((repo / "records/train/metrics.json").read_text())
    files = sorted(p.relative_to(repo).as_posix() for p in (repo / "models/classifier").rglob("*"))
    files += sorted(p.relative_to(repo).as_posix() for p in (repo / "records/train").rglob("*"))
    curve = losses(repo)
    shutil.rmtree(repo / "models/classifier")
    shutil.rmtree(repo / "records/train")
    return metrics, curve, files, result.stderr


def prepared(repo: Path, train: dict) -> None:
    """params.yaml's train section updated (LoRA dropout off: it draws per process), then prepare and tokenize."""
    write_params(repo, {"train": train, "lora": {"dropout": 0.0}})
    run([sys.executable, "-m", "stages.prepare"], repo)
    run([sys.executable, "-m", "stages.tokenize"], repo)


def test_two_gloo_processes_match_one(repo, tmp_path):
    prepared(repo, {"epochs": 2, "batch_size": 16, "lr": 0.02, "log_every": 5, "checkpoint_every": 0})
    one, one_curve, one_files, _ = train(repo, 1, tmp_path / "ckpt")
    two, two_curve, two_files, log = train(repo, 2, tmp_path / "ckpt")

    assert "starting 2 data-parallel processes with torchrun" in log
    assert "2 process(es) x 8 rows (1 micro-batch(es) of 8) = global batch 16" in log
    assert two_files == one_files
    assert set(two) == set(one)
    assert (two["processes"], two["per_process_batch_size"], two["global_batch_size"]) == (2, 8, 16)
    assert (one["processes"], one["per_process_batch_size"], one["global_batch_size"]) == (1, 16, 16)
    assert two["steps"] == one["steps"] and two["trainable_params"] == one["trainable_params"]
    assert set(two_curve) == set(one_curve)
    gaps = np.abs(np.array([two_curve[s] - one_curve[s] for s in sorted(one_curve)]))
    print(f"\nloss 1 process {one_curve}\nloss 2 processes {two_curve}\nlargest gap {gaps.max():.4f}")
    assert gaps.max() < LOSS_TOLERANCE, (one_curve, two_curve)
    assert not list((tmp_path / "ckpt").glob("*/checkpoint-*"))


def test_batch_that_does_not_split_is_refused(repo):
    prepared(repo, {"processes": 3, "batch_size": 16})
    result = run([sys.executable, "-m", "stages.train"], repo, check=False)
    assert result.returncode == 2
    assert "error: train.batch_size=16 does not split over train.processes=3" in result.stderr
    assert "Traceback" not in result.stderr


def test_killed_two_process_run_resumes_to_the_same_adapter(repo, tmp_path):
    """SIGKILL to the whole torchrun group mid-run; the re-run resumes from rank 0's checkpoint and
    ends with the adapter an uninterrupted 2-process run writes."""
    prepared(repo, {"epochs": 3, "batch_size": 16, "processes": 2, "log_every": 5, "checkpoint_every": 5})

    def adapter_md5() -> str:
        return hashlib.md5((repo / "models/classifier/adapter_model.safetensors").read_bytes()).hexdigest()

    whole_store, store = tmp_path / "whole", tmp_path / "killed"
    run([sys.executable, "-m", "stages.train"], repo, env={"LORA_DVC_CHECKPOINTS": str(whole_store)})
    whole = adapter_md5()
    shutil.rmtree(repo / "models/classifier")
    shutil.rmtree(repo / "records/train")

    env = {**os.environ, "LORA_DVC_CHECKPOINTS": str(store)}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "stages.train"],
        cwd=repo,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: torchrun and both workers
    )
    deadline = time.time() + 180
    while not list(store.glob("*/checkpoint-*/lora_dvc_state.json")):
        assert proc.poll() is None, "the run ended before any checkpoint"
        assert time.time() < deadline, "no checkpoint within 180 s"
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    # torchrun may put its workers in sessions of their own: kill whatever runs the stage here
    for pid in train_pids(repo):
        os.kill(pid, signal.SIGKILL)
    proc.wait()
    time.sleep(1)
    assert not (repo / "models/classifier").exists()

    again = run([sys.executable, "-m", "stages.train"], repo, env={"LORA_DVC_CHECKPOINTS": str(store)})
    assert "resuming from" in again.stderr, again.stderr[-3000:]
    assert adapter_md5() == whole
    assert not list(store.glob("*/checkpoint-*"))
