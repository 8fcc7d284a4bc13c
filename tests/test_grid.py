"""Grid expansion for `lora-dvc sky launch` (lora_dvc/grid.py): the grid `dvc exp run --queue -S`
would queue, one SkyPilot job command per point, and the command's checks."""

from __future__ import annotations

import shlex
import sys

import pytest
from conftest import ROOT, run

from lora_dvc.cli import COMMANDS
from lora_dvc.errors import UserError
from lora_dvc.grid import TASK_FILE, check_committed, expand, launch_commands


def test_comma_lists_expand_to_the_cartesian_product_last_key_fastest():
    assert expand(["lora.r=4,16,32", "lora.targets=qv,all"]) == [
        ["lora.r=4", "lora.targets=qv"],
        ["lora.r=4", "lora.targets=all"],
        ["lora.r=16", "lora.targets=qv"],
        ["lora.r=16", "lora.targets=all"],
        ["lora.r=32", "lora.targets=qv"],
        ["lora.r=32", "lora.targets=all"],
    ]


def test_range_and_choice_follow_dvc_and_hydra_stop_exclusive():
    assert expand(["train.epochs=range(1,7,2)"]) == [["train.epochs=1"], ["train.epochs=3"], ["train.epochs=5"]]
    assert expand(["lora.targets=choice(qv,all)"]) == [["lora.targets=qv"], ["lora.targets=all"]]


def test_fixed_values_repeat_in_every_point_and_no_sweep_is_one_point():
    assert expand(["lora.r=4,8", "train.epochs=1"]) == [["lora.r=4", "train.epochs=1"], ["lora.r=8", "train.epochs=1"]]
    assert expand(["train.epochs=1"]) == [["train.epochs=1"]]
    assert expand([]) == [[]]


def test_other_params_files_keep_their_prefix():
    points = expand(["lora.r=4,8", "other.yaml:seed=1,2"])
    assert len(points) == 4
    assert points[0] == ["lora.r=4", "other.yaml:seed=1"] and points[-1] == ["lora.r=8", "other.yaml:seed=2"]


def test_list_values_stay_one_value():
    assert expand(["lora.modules_to_save=[classifier,pooler]"]) == [["lora.modules_to_save=[classifier,pooler]"]]


@pytest.mark.parametrize("bad", ["lora.r=4,[", "lora.r=glob(*)", "lora.r"])
def test_bad_grid_is_a_one_line_user_error(bad):
    with pytest.raises(UserError, match="dvc exp run --queue syntax") as err:
        expand([bad])
    assert "\n" not in str(err.value)


def test_one_sky_jobs_launch_per_point_with_overrides_the_job_script_can_split():
    points = expand(["lora.r=4,16", "lora.targets=qv,all"])
    commands = launch_commands(TASK_FILE, "night", points, "gs://b/ckpt", ["--gpus", "L4:1"])
    assert len(commands) == 4
    first = commands[0]
    assert first[:4] == ["sky", "jobs", "launch", str(TASK_FILE)] and first[-3:] == ["-y", "--gpus", "L4:1"]
    env = dict(first[i + 1].split("=", 1) for i, arg in enumerate(first) if arg == "--env")
    assert env == {
        "OVERRIDES": "lora.r=4 lora.targets=qv",
        "EXP_NAME": "night-1",
        "LORA_DVC_CHECKPOINTS": "gs://b/ckpt",
    }
    assert [c[c.index("--name") + 1] for c in commands] == ["night-1", "night-2", "night-3", "night-4"]
    # a value with a space survives the trip through OVERRIDES
    (odd,) = launch_commands(TASK_FILE, "x", [["data.text_column=news text"]], None, [])
    overrides = dict(odd[i + 1].split("=", 1) for i, arg in enumerate(odd) if arg == "--env")["OVERRIDES"]
    assert shlex.split(overrides) == ["data.text_column=news text"]
    assert not any("LORA_DVC_CHECKPOINTS" in arg for arg in odd)


def test_dry_run_prints_every_job_and_launches_nothing(tmp_path):
    result = run(
        [
            sys.executable,
            "-m",
            "lora_dvc.cli",
            "sky",
            "launch",
            "-S",
            "lora.r=4,16,32",
            "-S",
            "lora.targets=qv,all",
            "--name",
            "demo",
            "--dry-run",
        ],
        ROOT,
        env={"PATH": "/nonexistent"},
    )
    assert "6 job(s):" in result.stdout
    assert result.stdout.count("sky jobs launch sky/sweep.yaml --name demo-") == 6
    assert "--env 'OVERRIDES=lora.r=32 lora.targets=all' --env EXP_NAME=demo-6 -y" in result.stdout
    assert "sky" in COMMANDS


def test_bad_grid_exits_2_with_one_line():
    result = run(
        [sys.executable, "-m", "lora_dvc.cli", "sky", "launch", "-S", "lora.r=4,[", "--dry-run"], ROOT, check=False
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: -S ") and result.stderr.count("\n") == 1


def test_launch_refuses_uncommitted_changes(tmp_path):
    run(["git", "init", "-q"], tmp_path)
    (tmp_path / "params.yaml").write_text("lora: {r: 4}\n")
    run(["git", "add", "params.yaml"], tmp_path)
    run(["git", "-c", "user.email=t@e", "-c", "user.name=t", "commit", "-qm", "x"], tmp_path)
    check_committed(tmp_path)  # clean: fine
    (tmp_path / "params.yaml").write_text("lora: {r: 8}\n")
    with pytest.raises(UserError, match=r"uncommitted changes \(params.yaml\)"):
        check_committed(tmp_path)
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / ".git").write_text("gitdir: /nonexistent\n")  # a broken clone: git status fails there
    with pytest.raises(UserError, match="not a git repository"):
        check_committed(plain)
