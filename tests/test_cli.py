"""`lora-dvc`, the installed console script: every command answers --help from outside the checkout,
both from this environment's (editable) install and from a wheel built from pyproject.toml. The real
`lora-dvc export` run on a trained model is in test_predict_export.py, which trains the tiny model once
for every export test."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
from helpers import ROOT, run

from lora_dvc.cli import COMMANDS

SCRIPT = "lora-dvc"


@pytest.fixture(scope="module")
def wheel_install(tmp_path_factory) -> Path:
    """The package as a user installs it: a wheel built from a copy of the sources, installed into a
    folder of its own (its `bin/lora-dvc` finds it through PYTHONPATH, torch and the rest in the venv)."""
    pytest.importorskip("setuptools", reason="builds offline with the environment's setuptools (pyproject.toml)")
    base = tmp_path_factory.mktemp("wheel")
    src = base / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for folder in ("lora_dvc", "stages"):  # stages too: the wheel must leave it out, not lack it by chance
        shutil.copytree(ROOT / folder, src / folder, ignore=ignore)
    shutil.copy2(ROOT / "pyproject.toml", src)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", str(base / "dist"), "."], src)
    (wheel,) = (base / "dist").glob("lora_dvc-*.whl")
    target = base / "site"
    run([*pip, "install", "--no-deps", "--no-index", "-q", "--target", str(target), str(wheel)], base)
    return target


@pytest.fixture(params=["editable", "wheel"])
def cli(request, tmp_path):
    """Run `lora-dvc ARGS` from tmp_path, outside the checkout (no `stages` package beside it), with
    this environment's script (pip install -e .) or the wheel's."""
    script, env = Path(sys.executable).parent / SCRIPT, {}
    if request.param == "wheel":
        target = request.getfixturevalue("wheel_install")
        script, env = target / "bin" / SCRIPT, {"PYTHONPATH": str(target)}
    assert script.is_file(), f"{script}: not installed"
    return lambda *args: run([str(script), *args], tmp_path, check=False, env=env)


def test_lora_dvc_help_lists_every_command(cli):
    result = cli("--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: lora-dvc COMMAND")
    for name in COMMANDS:
        assert f"\n  {name} " in result.stdout, name


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_answers_help_from_outside_the_checkout(cli, name):
    result = cli(name, "--help")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith(f"usage: lora-dvc {name} "), result.stdout[:200]


def test_an_unknown_command_is_one_line_and_exit_2(cli):
    result = cli("frobnicate")
    assert result.returncode == 2 and result.stderr.strip().startswith("error: unknown command 'frobnicate'")
    assert len(result.stderr.strip().splitlines()) == 1


def test_the_wheel_holds_the_commands_and_no_stages(wheel_install):
    assert not (wheel_install / "stages").exists()
    for name, (module, _) in COMMANDS.items():
        assert (wheel_install / module.replace(".", "/")).with_suffix(".py").is_file(), name
