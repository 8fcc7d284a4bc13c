"""Queued runs survive being killed: `dvc queue kill` or SIGKILL mid-run, checkpoints in a folder or a
bucket on the GCS emulator, the same params queued again resume and end byte-identical; and a queued
run on a fresh clone (no default remote committed) starts at once. Real dvc queues in temp repos
with the tiny model; its own module, the suite's longest, which pytest-xdist starts first (conftest.py)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml
from conftest import dvc, run, write_params
from helpers import train_pids
from test_experiments import commit_small, queue_state, stop_queue_workers, wait_for

# long enough (88 tiny steps) to be killed mid-epoch, well before its end, with a checkpoint every 20 steps
RESUME_LONG = {
    "data": {"max_train_rows": None},
    "train": {"epochs": 4, "checkpoint_every": 20, "log_every": 10},
}


def exp_outcome(repo: Path, name: str) -> dict:
    """An experiment's adapter (its md5 in the experiment's dvc.lock), step history and train metrics
    less timings and provenance, read from the experiment's git commit."""
    revs = [
        exp["revs"][0]["rev"]
        for commit in json.loads(dvc(["exp", "show", "--json", "-A"], repo).stdout)
        for exp in commit.get("experiments") or []
        if exp["name"] == name
    ]
    assert len(revs) == 1, name

    def show(path: str) -> str:
        return run(["git", "show", f"{revs[0]}:{path}"], repo).stdout

    lock = yaml.safe_load(show("dvc.lock"))
    adapter = next(o["md5"] for o in lock["stages"]["train"]["outs"] if o["path"] == "models/classifier")
    metrics = json.loads(show("records/train/metrics.json"))
    skip = {"train_seconds", "train_samples_per_second", "provenance"}
    return {
        "adapter_md5": adapter,
        "steps": show("records/train/plots/metrics/train_step/loss.tsv"),
        "metrics": {k: v for k, v in metrics.items() if k not in skip},
    }


def start_queue(repo: Path, env: dict | None = None) -> None:
    """`dvc queue start`, returning as soon as the worker is up: the daemonised worker inherits the
    command's stdout, so a captured run() would wait on that pipe until the queue had drained."""
    full = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        **(env or {}),
    }
    subprocess.run(
        [sys.executable, "-m", "dvc", "queue", "start"],
        cwd=repo,
        env=full,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=True,
    )


def queue_logs(repo: Path, name: str) -> str:
    result = dvc(["queue", "logs", name], repo, check=False)
    return result.stdout + result.stderr


def checkpoint_store(kind: str, tmp_path: Path):
    """(env, list of complete checkpoints) for a folder of the test's own or a bucket on the GCS emulator."""
    if kind == "folder":
        store = tmp_path / "checkpoints"
        return (
            {"LORA_DVC_CHECKPOINTS": str(store)},
            lambda: list(store.glob("*/checkpoint-*/lora_dvc_state.json")),
            None,
        )
    from test_remote import PREFIX, Emulator, Sandbox

    sandbox = Sandbox(tmp_path / "sandbox")
    gcs = Emulator(tmp_path / "gcs", "lora-dvc-ckpt", sandbox).start()
    env = {
        **sandbox.env,
        "LORA_DVC_CHECKPOINTS": f"gs://{gcs.bucket}/{PREFIX}/checkpoints",
        # fsspec's own settings from the environment: the emulator's endpoint, no credentials
        "FSSPEC_GCS_ENDPOINT_URL": gcs.url,
        "FSSPEC_GCS_TOKEN": "anon",
    }
    return env, lambda: [o for o in gcs.objects() if o.endswith("/lora_dvc_state.json")], gcs


def test_killed_queued_runs_resume_when_queued_again(repo, tmp_path):
    """One uninterrupted run, then each kill with each store once (SIGKILL with a folder store is the
    workspace case of tests/test_reliability.py): the run queued again resumes and ends like it."""
    write_params(repo, RESUME_LONG)
    run(["git", "commit", "-qam", "resume study"], repo)
    dvc(["exp", "run", "-n", "whole", "train"], repo, env={"LORA_DVC_CHECKPOINTS": str(tmp_path / "whole")})
    whole = exp_outcome(repo, "whole")
    assert not list((tmp_path / "whole").glob("*/checkpoint-*")), "a finished run leaves no checkpoint behind"
    run(["git", "checkout", "--", "."], repo)  # the queued runs start from the committed state
    for kill, where in (("dvc queue kill", "folder"), ("SIGKILL", "gcs")):
        (tmp_path / where).mkdir()
        env, checkpoints, emulator = checkpoint_store(where, tmp_path / where)
        try:
            kill_queued_run(repo, env, checkpoints, f"killed-{where}", kill)
            logs = run_queued(repo, env, f"again-{where}")
            assert_resumed_like_whole(repo, f"again-{where}", kill, whole, logs, checkpoints)
        finally:
            stop_queue_workers(repo)
            if emulator is not None:
                emulator.stop()


def run_queued(repo: Path, env: dict, name: str) -> str:
    """Queue a run of train, start the queue, wait for the run's end; its log."""
    dvc(["exp", "run", "--queue", "-n", name, "train"], repo, env=env)
    start_queue(repo, env)
    wait_for(lambda: queue_state(repo, name) in ("Success", "Failed"), 300, f"the queued run {name}")
    return queue_logs(repo, name)


def kill_queued_run(repo: Path, env: dict, checkpoints, name: str, kill: str) -> None:
    """Queue a run, kill it (`dvc queue kill`, or SIGKILL to its train stage) once it has a checkpoint."""
    dvc(["exp", "run", "--queue", "-n", name, "train"], repo, env=env)
    start_queue(repo, env)
    try:
        wait_for(checkpoints, 240, "a checkpoint of the queued run")
    except AssertionError:
        raise AssertionError(f"no checkpoint; the run's log:\n{queue_logs(repo, name)[-3000:]}") from None
    if kill == "SIGKILL":
        pids = train_pids(repo / ".dvc/tmp/exps")
        assert pids, "the queued run's train stage is not running"
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
    else:
        dvc(["queue", "kill", name], repo)
    wait_for(lambda: queue_state(repo, name) not in ("Running", "Queued"), 120, "the killed run to end")
    assert queue_state(repo, name) != "Success"
    assert checkpoints(), "the checkpoint died with the queued run's temporary workspace"


def assert_resumed_like_whole(repo: Path, name: str, kill: str, whole: dict, logs: str, checkpoints) -> None:
    """The queued-again run resumed and ended where the uninterrupted run did."""
    assert queue_state(repo, name) == "Success", logs[-3000:]
    resumed = re.search(r"resuming from \S+ at step ([1-9]\d*)", logs)
    assert resumed, logs[-3000:]
    print(resumed.group(0))
    again = exp_outcome(repo, name)
    assert again["adapter_md5"] == whole["adapter_md5"]  # byte-identical adapter
    assert again["metrics"] == whole["metrics"]
    whole_rows, again_rows = whole["steps"].splitlines(), again["steps"].splitlines()
    logged_steps = {row.split("\t")[0] for row in whole_rows[1:]}
    if kill == "SIGKILL" or resumed.group(1) in logged_steps:
        assert again_rows == whole_rows  # resumed from a step the loss log has a row for: the same log
    else:
        # `dvc queue kill` sends SIGTERM: the run saves a checkpoint at the step it stopped on, so the
        # resumed loss log has that step as an extra row (its window cut there), the other steps unchanged
        again_steps = [row.split("\t")[0] for row in again_rows[1:]]
        assert sorted(again_steps, key=int) == sorted(logged_steps | {resumed.group(1)}, key=int), again_steps
    assert not checkpoints(), "a finished run leaves no checkpoint behind"


def test_queued_run_on_a_fresh_clone_starts_at_once(repo, tmp_path):
    """No default remote is committed: a clone whose cache lacks the baseline's outputs reproduces
    them at once instead of retrying a bucket it cannot reach."""
    commit_small(repo)
    dvc(["repro", "tokenize"], repo)  # outputs in dvc.lock that the clone's cache lacks; no training needed
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "baseline"], repo)
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(repo), str(clone)], tmp_path)
    default = dvc(["remote", "default"], clone, check=False)
    assert "No default remote set" in default.stdout + default.stderr  # none committed
    dvc(["exp", "run", "--queue", "-n", "fresh", "tokenize"], clone)
    try:
        start_queue(clone)
        wait_for(lambda: queue_state(clone, "fresh") == "Running", 120, "the queued run to start")
        started = time.monotonic()
        wait_for(lambda: "Running stage 'tokenize'" in queue_logs(clone, "fresh"), 120, "the tokenize stage to start")
        waited = time.monotonic() - started
        wait_for(lambda: queue_state(clone, "fresh") in ("Success", "Failed"), 300, "the queued run to end")
    finally:
        stop_queue_workers(clone)
    logs = queue_logs(clone, "fresh")
    assert queue_state(clone, "fresh") == "Success", logs[-3000:]
    # prepare re-runs on the tiny data in a few seconds; remote retries would take minutes
    assert waited < 30, f"tokenize started {waited:.0f} s after the run did:\n{logs[-3000:]}"
    assert "gs://" not in logs and "remote" not in logs.lower(), logs[-3000:]
