"""The model registry entry: `dvc artifacts get <git remote> text-classifier --rev <version>` from elsewhere.

One tiny pipeline (cut after train) is trained, committed and pushed to a bare git remote, its DVC
outputs to a local folder remote and to the GCS emulator (test_remote's Emulator and loopback
Sandbox), and the commit is registered as version v0.1.0 and assigned to stage prod with GTO (git tags,
as DVC Studio writes them); each test then fetches the registered classifier from outside the repository and
compares it byte for byte with what was trained.
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, dvc, make_repo, run, write_params
from test_remote import PREFIX, Emulator, Sandbox, remote_name

ARTIFACT = "text-classifier"
MODEL = "models/classifier"
VERSION = "v0.1.0"
FAST = {"data": {"max_train_rows": 48}, "train": {"epochs": 1, "checkpoint_every": 0}}


def files_of(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@dataclass
class Trained:
    origin: Path  # bare git remote
    model: dict[str, str]  # files_of() the trained classifier
    local_store: Path  # folder DVC remote


def test_dvc_yaml_registers_the_classifier():
    artifact = yaml.safe_load((ROOT / "dvc.yaml").read_text())["artifacts"][ARTIFACT]
    assert artifact["path"] == MODEL and artifact["type"] == "model"
    assert {"peft", "lora", "text-classification", "ag_news"} <= set(artifact["labels"]) and artifact["desc"]


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory) -> Sandbox:
    return Sandbox(tmp_path_factory.mktemp("sandbox"))


@pytest.fixture(scope="module")
def gcs(tmp_path_factory, sandbox):
    emulator = Emulator(tmp_path_factory.mktemp("gcs"), "lora-dvc-registry", sandbox).start()
    yield emulator
    emulator.stop()


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model, sandbox, gcs) -> Trained:
    base = tmp_path_factory.mktemp("registry")
    work = make_repo(base / "work", tiny_model)
    write_params(work, FAST)
    pipeline = yaml.safe_load((work / "dvc.yaml").read_text())
    pipeline["stages"] = {k: v for k, v in pipeline["stages"].items() if k in ("prepare", "tokenize", "train")}
    pipeline.pop("plots", None)  # they read evaluate's outputs
    (work / "dvc.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))
    dvc(["repro"], work)
    run(["git", "add", "-A"], work)
    run(["git", "commit", "-qm", "trained"], work)
    origin = base / "origin.git"
    run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], base)
    # a version is a GTO git tag (text-classifier@v0.1.0); a stage another one (text-classifier#prod#1)
    run(["gto", "register", ARTIFACT, "--version", VERSION], work)
    run(["gto", "assign", ARTIFACT, "--version", VERSION, "--stage", "prod"], work)
    run(["git", "push", "-q", "--tags", str(origin), "main"], work)
    local_store = base / "store"
    dvc(["remote", "add", "--local", "local-store", str(local_store)], work)
    dvc(["push", "-r", "local-store"], work)
    gs = f"gs://{gcs.bucket}/{PREFIX}"
    for key, value in (("url", gs), ("endpointurl", gcs.url), ("allow_anonymous_login", "true")):
        sandbox.dvc(["remote", "modify", "--local", remote_name(), key, value], work)
    sandbox.dvc(["push", "-r", remote_name()], work)
    return Trained(origin, files_of(work / MODEL), local_store)


@pytest.mark.parametrize("which", [["--rev", VERSION], ["--stage", "prod"]])
def test_artifacts_get_from_a_local_remote(trained, tmp_path, which):
    out = tmp_path / "fetched"
    get = ["artifacts", "get", str(trained.origin), ARTIFACT, *which, "-o", str(out)]
    config = tmp_path / "local-store.config"  # a remote of its own, made the default with --remote
    config.write_text(f"['remote \"local-store\"']\n    url = {trained.local_store}\n")
    dvc([*get, "--config", str(config), "--remote", "local-store"], tmp_path)
    assert files_of(out) == trained.model
    assert any(name.endswith(".safetensors") for name in trained.model)


def test_artifacts_get_from_the_gcs_emulator(trained, sandbox, gcs, tmp_path):
    out = tmp_path / "fetched"
    get = ["artifacts", "get", str(trained.origin), ARTIFACT, "--rev", VERSION, "-o", str(out)]
    remote = [f"url=gs://{gcs.bucket}/{PREFIX}", f"endpointurl={gcs.url}", "allow_anonymous_login=true"]
    # the repository declares `gcs` but commits no default remote: name it
    sandbox.run([sys.executable, "-m", "dvc", *get, "--remote", remote_name(), "--remote-config", *remote], tmp_path)
    assert files_of(out) == trained.model
