"""A resume that cannot wedge: real checkpoints of the tiny model, written once per module by the train
stage, are copied and one file of the newest damaged (truncated, or a byte flipped), in a folder store
and in a bucket on the GCS emulator; the store sets it aside with one warning and picks the older intact
one. A checkpoint of other library versions is not resumed; `lora-dvc checkpoints` lists and clears."""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from pathlib import Path

# gcsfs reads this on import: its experimental bucket-type probe speaks gRPC the emulator does not answer
os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"

import fsspec  # noqa: E402
import pytest
from helpers import make_repo, run, write_params

from lora_dvc import checkpoints
from lora_dvc.checkpoints import COMPLETE, CheckpointStore, fingerprint, write_marker
from lora_dvc.params import load_params

# the train stage, its checkpoints kept after success (they are otherwise deleted with the run done)
TRAIN_KEEPING_CHECKPOINTS = """
from lora_dvc.checkpoints import CheckpointStore
CheckpointStore.clean = lambda self: None
from lora_dvc.runner import run_stage
from stages.train import run
run_stage(run)
"""

FILES = {
    "weights": "adapter_model.safetensors",
    "optimizer": "optimizer.pt",
    "scheduler": "scheduler.pt",
    "rng state": "rng_state.pth",
    "trainer state": "trainer_state.json",
    "marker": COMPLETE,
}


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


DAMAGE = {"truncated": truncate, "a byte flipped": flip_a_byte}
# in a bucket, each kind of file once, the two kinds of damage in turn: the check is the folder store's own
# (tested over every pair), the bucket adds the download and the fallback there (seconds per case)
ON_GCS = [(kind, list(DAMAGE)[i % 2]) for i, kind in enumerate(FILES)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model) -> tuple[Path, Path]:
    """(the repository, its run's checkpoint folder) after a real train run that kept its checkpoints."""
    repo = make_repo(tmp_path_factory.mktemp("ckpt") / "repo", tiny_model)
    store = repo.parent / "store"
    write_params(repo, {"data": {"max_train_rows": 96}, "train": {"epochs": 1, "checkpoint_every": 2}})
    run([sys.executable, "-m", "stages.prepare"], repo)
    run([sys.executable, "-m", "stages.tokenize"], repo)
    run([sys.executable, "-c", TRAIN_KEEPING_CHECKPOINTS], repo, env={"LORA_DVC_CHECKPOINTS": str(store)})
    (folder,) = store.iterdir()
    return repo, folder


def steps(folder: Path) -> list[str]:
    """The complete checkpoints in a run folder, newest first."""
    found = [p.parent.name for p in folder.glob("checkpoint-*/" + COMPLETE)]
    return sorted(found, key=checkpoints.step_number, reverse=True)


def test_the_run_keeps_two_complete_checkpoints_with_every_kind_of_file(trained):
    _, folder = trained
    newest, older = steps(folder)[:2]
    for name in FILES.values():
        assert (folder / newest / name).is_file() and (folder / older / name).is_file(), name
    recorded = json.loads((folder / newest / COMPLETE).read_text())["files"]
    assert set(FILES.values()) - {COMPLETE} <= set(recorded)
    assert CheckpointStore(folder.name, url=str(folder.parent)).latest().name == newest


def assert_set_aside(store: CheckpointStore, newest: str, older: str, name: str, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="train"):
        latest = store.latest()
    assert latest is not None and latest.name == older
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    assert f"{newest}: {name}: " in warnings[0] and f"damaged-{newest}" in warnings[0]
    assert (store.local / f"damaged-{newest}").is_dir() and not (store.local / newest).exists()


@pytest.mark.parametrize("how", DAMAGE)
@pytest.mark.parametrize("kind", FILES)
def test_damaged_newest_checkpoint_is_set_aside_in_a_folder(trained, tmp_path, caplog, kind, how):
    _, folder = trained
    copy = shutil.copytree(folder, tmp_path / "store" / folder.name)
    newest, older = steps(copy)[:2]
    DAMAGE[how](copy / newest / FILES[kind])
    assert_set_aside(CheckpointStore(folder.name, url=str(tmp_path / "store")), newest, older, FILES[kind], caplog)


def test_a_file_that_matches_its_hash_but_does_not_load_is_damage(trained, tmp_path, caplog):
    """The marker re-written over a truncated optimizer: its hash matches, torch's archive does not load."""
    _, folder = trained
    copy = shutil.copytree(folder, tmp_path / "store" / folder.name)
    newest, older = steps(copy)[:2]
    truncate(copy / newest / "optimizer.pt")
    write_marker(copy / newest, json.loads((folder / newest / COMPLETE).read_text())["state"])
    with caplog.at_level(logging.WARNING, logger="train"):
        assert CheckpointStore(folder.name, url=str(tmp_path / "store")).latest().name == older
    assert "optimizer.pt: does not load (BadZipFile" in caplog.text


def test_no_intact_checkpoint_starts_over_with_a_line(trained, tmp_path, caplog):
    _, folder = trained
    copy = shutil.copytree(folder, tmp_path / "store" / folder.name)
    for step in steps(copy):
        flip_a_byte(copy / step / "scheduler.pt")
    with caplog.at_level(logging.WARNING, logger="train"):
        assert CheckpointStore(folder.name, url=str(tmp_path / "store")).latest() is None
    assert caplog.records[-1].getMessage().endswith("starting over from step 0")


@pytest.fixture(scope="module")
def gcs(tmp_path_factory):
    from test_remote import Emulator, Sandbox

    emulator = Emulator(
        tmp_path_factory.mktemp("gcs"), "lora-dvc-ckpt", Sandbox(tmp_path_factory.mktemp("sb"))
    ).start()
    yield emulator
    emulator.stop()


@pytest.fixture
def bucket(gcs, tmp_path, monkeypatch) -> str:
    """A fresh folder in the emulator's bucket as the checkpoint store, reached in-process by fsspec."""
    monkeypatch.setitem(fsspec.config.conf, "gcs", {"endpoint_url": gcs.url, "token": "anon"})
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # the staging copies: empty, a fresh VM
    return f"gs://{gcs.bucket}/{tmp_path.name}"


@pytest.mark.parametrize("kind, how", ON_GCS)
def test_damaged_newest_checkpoint_is_set_aside_on_gcs(trained, bucket, tmp_path, caplog, kind, how):
    _, folder = trained
    newest, older = steps(folder)[:2]
    fs, path = fsspec.core.url_to_fs(f"{bucket}/{folder.name}")
    for step in (older, newest):
        fs.put(str(folder / step), f"{path}/{step}", recursive=True)
    damaged = tmp_path / "damaged"
    shutil.copytree(folder / newest, damaged)
    DAMAGE[how](damaged / FILES[kind])
    fs.pipe(f"{path}/{newest}/{FILES[kind]}", (damaged / FILES[kind]).read_bytes())
    store = CheckpointStore(folder.name, url=bucket)
    assert_set_aside(store, newest, older, FILES[kind], caplog)
    assert not fs.exists(f"{path}/{newest}") and fs.exists(f"{path}/{older}/{COMPLETE}")  # the damaged copy deleted


def test_other_library_versions_are_not_resumed(trained, monkeypatch):
    import peft
    import torch
    import transformers

    repo, folder = trained
    monkeypatch.chdir(repo)
    params = load_params()
    installed = checkpoints.library_versions()
    assert [installed["torch"], installed["transformers"], installed["peft"]] == [
        torch.__version__,
        transformers.__version__,
        peft.__version__,
    ]
    assert fingerprint(params) == folder.name  # the run's own: it resumes
    monkeypatch.setattr(checkpoints, "library_versions", lambda: {**installed, "transformers": "4.0.0"})
    other = fingerprint(params)
    assert other != folder.name  # after `pip install -U transformers`: a folder of its own, started afresh
    assert CheckpointStore(other, url=str(folder.parent)).latest() is None
    assert steps(folder)  # the old one stays until pruned or cleared


def lora_dvc(args: list[str], cwd: Path, store: str, **env) -> object:
    """`lora-dvc` as installed (the console script beside this interpreter)."""
    command = [str(Path(sys.executable).parent / "lora-dvc"), *args]
    return run(command, cwd, check=False, env={"LORA_DVC_CHECKPOINTS": store, **env})


def test_checkpoints_command_lists_and_clears(trained, tmp_path):
    repo, folder = trained
    store = tmp_path / "store"
    copy = shutil.copytree(folder, store / folder.name)
    other = shutil.copytree(folder, store / "0123456789abcdef0123456789abcdef")
    info = json.loads((other / checkpoints.RUN_INFO).read_text())
    info["params"]["lora.r"] = 16
    info["versions"]["transformers"] = "4.0.0"
    (other / checkpoints.RUN_INFO).write_text(json.dumps(info))

    listed = lora_dvc(["checkpoints"], repo, str(store))
    assert listed.returncode == 0, listed.stderr
    lines = {line.split()[0]: line for line in listed.stdout.splitlines()[1:]}
    assert set(lines) == {copy.name, other.name}
    assert f"step {steps(folder)[0].removeprefix('checkpoint-')} " in lines[copy.name]
    assert "params.yaml's params" in lines[copy.name]
    assert "lora.r=16 (params.yaml: 4)" in lines[other.name] and "transformers 4.0.0 (installed: " in lines[other.name]

    unknown = lora_dvc(["checkpoints", "--clear", "feedface"], repo, str(store))
    assert unknown.returncode == 2 and unknown.stderr.strip().splitlines() == [
        f"error: no cached checkpoints with fingerprint 'feedface' in {store}; `lora-dvc checkpoints` lists them"
    ]
    cleared = lora_dvc(["checkpoints", "--clear", other.name], repo, str(store))
    assert cleared.returncode == 0 and not other.exists() and copy.exists()
    assert lora_dvc(["checkpoints", "--clear", "all"], repo, str(store)).returncode == 0
    assert not copy.exists()
    assert "no cached checkpoints in" in lora_dvc(["checkpoints"], repo, str(store)).stdout


def test_checkpoints_command_on_a_bucket(trained, gcs, tmp_path):
    repo, folder = trained
    url = f"gs://{gcs.bucket}/{tmp_path.name}"
    env = {"FSSPEC_GCS_ENDPOINT_URL": gcs.url, "FSSPEC_GCS_TOKEN": "anon", **gcs.sandbox.env}
    env["PYTHONPATH"] = os.pathsep.join([env["PYTHONPATH"], *filter(None, [os.environ.get("PYTHONPATH")])])
    fs = fsspec.filesystem("gcs", endpoint_url=gcs.url, token="anon")
    fs.put(str(folder), f"{gcs.bucket}/{tmp_path.name}/{folder.name}", recursive=True)
    listed = lora_dvc(["checkpoints"], repo, url, **env)
    assert listed.returncode == 0 and folder.name in listed.stdout, listed.stderr
    cleared = lora_dvc(["checkpoints", "--clear", folder.name], repo, url, **env)
    assert cleared.returncode == 0, cleared.stderr
    fs.invalidate_cache()
    assert not fs.exists(f"{gcs.bucket}/{tmp_path.name}/{folder.name}")
