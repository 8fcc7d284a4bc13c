"""SkyPilot sweeps, offline: the task file through SkyPilot's own parser, and one job's script
(scripts/sky_job.sh: pull -> dvc exp run -> dvc exp push) against the GCS emulator and a bare git
"origin", after which another clone's `dvc exp pull` gets the experiment and its adapter.

SkyPilot is an optional dependency (requirements-sky.txt). The parser test runs with `import sky`
in this interpreter or, when SKY_PYTHON names another interpreter that has it (a separate venv:
SkyPilot pins versions this project's venv does not share), in that one; otherwise it is skipped.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, run
from test_remote import PREFIX, Emulator, Sandbox, clone, make_study, remote_name

JOB = ROOT / "scripts" / "sky_job.sh"
TASK = ROOT / "sky" / "sweep.yaml"
PARSE = (
    "import json, sys, sky\n"
    "task = sky.Task.from_yaml(sys.argv[1])\n"
    "(res,) = task.resources\n"
    "print(json.dumps({'envs': task.envs, 'run': task.run, 'setup': task.setup, 'workdir': task.workdir,\n"
    "                  'spot': res.use_spot, 'accelerators': res.accelerators}))\n"
)


def sky_python() -> str:
    if os.environ.get("SKY_PYTHON"):
        return os.environ["SKY_PYTHON"]
    try:
        import sky
    except ImportError:
        sky = None
    # without skypilot installed, `import sky` finds this repository's sky/ folder (a namespace package)
    if not hasattr(sky, "Task"):
        pytest.skip(
            "skypilot is not importable (optional: pip install -r requirements-sky.txt, "
            "or SKY_PYTHON=/path/to/venv/bin/python with skypilot in it)"
        )
    return sys.executable


def parse_task(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sky_python(), "-c", PARSE, str(path)], capture_output=True, text=True, timeout=300)


def test_task_file_validates_with_skypilots_parser():
    parsed = parse_task(TASK)
    assert parsed.returncode == 0, parsed.stderr[-3000:]
    task = json.loads(parsed.stdout.strip().splitlines()[-1])
    assert set(task["envs"]) >= {"OVERRIDES", "EXP_NAME", "GIT_REMOTE", "DVC_REMOTE", "LORA_DVC_CHECKPOINTS"}
    assert task["spot"] is True and task["accelerators"]
    assert task["workdir"] == "." and "scripts/sky_job.sh" in task["run"]


def test_skypilots_parser_rejects_a_broken_task_file(tmp_path):
    """The check above can fail: a misspelt key in the same file does not get through."""
    broken = tmp_path / "sweep.yaml"
    broken.write_text(TASK.read_text().replace("use_spot:", "use_spots:"))
    parsed = parse_task(broken)
    assert parsed.returncode != 0 and "use_spots" in parsed.stderr


def test_job_script_outside_a_git_clone_says_so(tmp_path):
    result = run(["bash", str(JOB)], tmp_path, check=False, env={"OVERRIDES": "lora.r=2"})
    assert result.returncode == 2 and "is not a git clone" in result.stderr


@pytest.fixture(scope="module")
def study(tmp_path_factory, tiny_model):
    """A trained, committed, pushed study: bare git origin + bucket on the emulator."""
    base = tmp_path_factory.mktemp("sky")
    sandbox = Sandbox(base / "sandbox")
    gcs = Emulator(base / "gcs", "lora-dvc-sky", sandbox).start()
    origin = base / "origin.git"
    run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], base)
    work = make_study(base / "work", tiny_model)
    for key, value in (
        ("url", f"gs://{gcs.bucket}/{PREFIX}"),
        ("endpointurl", gcs.url),
        ("allow_anonymous_login", "true"),
    ):
        sandbox.dvc(["remote", "modify", "--local", remote_name(), key, value], work)
    sandbox.dvc(["remote", "default", "--local", remote_name()], work)
    sandbox.dvc(["repro"], work)
    run(["git", "add", "-A"], work)
    run(["git", "commit", "-qm", "trained"], work)
    run(["git", "remote", "add", "origin", str(origin)], work)
    run(["git", "push", "-q", "origin", "main"], work)
    sandbox.dvc(["push"], work)
    yield base, sandbox, gcs, origin
    gcs.stop()


def test_job_pulls_trains_and_pushes_an_experiment_another_clone_pulls(study):
    base, sandbox, gcs, origin = study
    job = clone(origin, base / "job", gcs)  # what SkyPilot's workdir is: a clone with no DVC cache
    env = {
        "OVERRIDES": "'lora.r=2' 'train.seed=7'",
        "EXP_NAME": "sky-r2",
        "GIT_REMOTE": "origin",
        "DVC_REMOTE": remote_name(),
        "LORA_DVC_CHECKPOINTS": str(base / "checkpoints"),
    }
    ran = sandbox.run(["bash", str(JOB)], job, env=env)
    out = ran.stdout + ran.stderr
    assert "Running stage 'train'" in out, out[-3000:]
    # --pull --allow-missing: the unchanged data stages are fetched from the bucket, not re-run
    assert "Running stage 'prepare'" not in out and "Running stage 'tokenize'" not in out, out[-3000:]
    assert "pushed experiment 'sky-r2'" in out

    bob = clone(origin, base / "bob", gcs)
    listed = sandbox.dvc(["exp", "list", "origin", "--all-commits"], bob)
    assert "sky-r2" in listed.stdout, listed.stdout
    sandbox.dvc(["exp", "pull", "origin", "sky-r2"], bob)
    sandbox.dvc(["exp", "apply", "sky-r2"], bob)
    sandbox.dvc(["checkout"], bob)  # the adapter's bytes came from the bucket with exp pull
    config = json.loads((bob / "models" / "classifier" / "adapter_config.json").read_text())
    assert config["r"] == 2
    metrics = json.loads((bob / "metrics" / "train.json").read_text())
    assert metrics["fit"]["trainable_params"] > 0, "the experiment's train metrics travelled with it"
