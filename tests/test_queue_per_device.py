"""scripts/queue_per_device.sh: one DVC queue worker per device, each experiment sees its worker's device.

A two-stage-free toy project (no model: the stage sleeps and records the device variable it was
started with) keeps this to seconds; the real pipeline under the same script is measured in
docs/scaling.md.
"""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import ROOT, dvc, run

SCRIPT = ROOT / "scripts" / "queue_per_device.sh"
# the sleep outlasts the second worker's start (seconds on a loaded 2-core host): each worker takes one experiment
STAGE = {
    "stages": {
        "probe": {
            "cmd": 'sleep 15 && printf \'{"device": "%s"}\' "$PROBE_DEVICE" > device.json',
            "params": ["value"],
            "metrics": [{"device.json": {"cache": False}}],
        }
    }
}


def toy_project(path):
    path.mkdir()
    (path / "params.yaml").write_text("value: 0\n")
    (path / "dvc.yaml").write_text(json.dumps(STAGE))
    run(["git", "init", "-q", "-b", "main"], path)
    dvc(["init", "-q"], path)
    run(["git", "add", "-A"], path)
    run(["git", "-c", "user.email=t@e", "-c", "user.name=t", "commit", "-qm", "toy"], path)
    return path


def test_each_worker_pins_its_own_device(tmp_path):
    project = toy_project(tmp_path / "toy")
    dvc(["exp", "run", "--queue", "-S", "value=1,2"], project)
    ran = run(["bash", str(SCRIPT), "--var", "PROBE_DEVICE", "--values", "gpu0,gpu1"], project, timeout=300)
    assert "worker 2: PROBE_DEVICE=gpu1" in ran.stdout
    assert ran.stdout.count("Success") == 2, ran.stdout  # treeverse/dvc#10673 would show as Failed here
    shown = json.loads(dvc(["exp", "show", "--json"], project).stdout)
    devices = sorted(
        exp["data"]["metrics"]["device.json"]["data"]["device"]
        for baseline in shown
        for experiment in baseline.get("experiments") or []
        for exp in experiment["revs"]
    )
    assert devices == ["gpu0", "gpu1"], devices


def test_no_nvidia_smi_and_no_values_is_a_one_line_error(tmp_path):
    if shutil.which("nvidia-smi"):
        pytest.skip("nvidia-smi is installed here: the script would count GPUs instead")
    result = run(["bash", str(SCRIPT)], tmp_path, check=False)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "pass --values" in result.stderr
