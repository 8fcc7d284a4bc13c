"""The model registry entry: `dvc artifacts get <git remote> text-classifier --rev <version>` from elsewhere.

One tiny pipeline (prepare .. evaluate, then export; no report) is run, committed and pushed to a bare
git remote, its DVC outputs to a local folder remote and to the GCS emulator (test_remote's Emulator
and loopback Sandbox), and the commit is registered as version v0.1.0 and assigned to stage prod with
GTO (git tags, as DVC Studio writes them); each test then fetches the registered model, the export
folder, from outside the repository and compares it byte for byte with what was exported, or loads
it with transformers + peft alone and classifies with it.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import ROOT, dvc, make_repo, run, write_params
from test_remote import PREFIX, Emulator, Sandbox, remote_name

ARTIFACT = "text-classifier"
MODEL = "models/export"  # the export stage's folder: adapter, config.json with the labels, tokenizer, card
VERSION = "v0.1.0"
FAST = {"data": {"max_train_rows": 48}, "train": {"epochs": 1, "checkpoint_every": 0}}
STAGES = ("prepare", "tokenize", "train", "evaluate", "export")  # export reads evaluate's record
LABELS = ["World", "Sports", "Business", "Sci/Tech"]
CHECKED_ROWS = 8  # test rows the fetched model classifies

# a user with the fetched folder: the model card's recipe, transformers + peft and nothing of ours
FRESH_LOAD = r"""
import json, sys
import torch
from peft import PeftModel
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

folder, texts_file = sys.argv[1:3]
texts = json.load(open(texts_file))
config = AutoConfig.from_pretrained(folder)
base = json.load(open(f"{folder}/adapter_config.json"))["base_model_name_or_path"]
model = PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(base, config=config), folder)
tokenizer = AutoTokenizer.from_pretrained(folder)
with torch.no_grad():
    probs = model.eval()(**tokenizer(texts, padding=True, truncation=True, return_tensors="pt")).logits.softmax(-1)
ours = sorted(m for m in sys.modules if m.split(".")[0] in ("stages", "lora_dvc"))
print(json.dumps({"labels": [config.id2label[i] for i in probs.argmax(-1).tolist()], "probs": probs.tolist(),
                  "ours": ours}))
"""


def files_of(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@dataclass
class Trained:
    origin: Path  # bare git remote
    model: dict[str, str]  # files_of() the export folder
    local_store: Path  # folder DVC remote
    texts: list[str]  # the first test rows
    probs: np.ndarray  # the trained model's probabilities for them (what the export check compares)
    confidence: np.ndarray  # records/evaluate/predictions.csv's confidence for them


def test_dvc_yaml_registers_the_export():
    pipeline = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    artifact = pipeline["artifacts"][ARTIFACT]
    assert artifact["path"] == MODEL and artifact["type"] == "model"
    assert MODEL in pipeline["stages"]["export"]["outs"]  # a cached output: `dvc push` carries it
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
    pipeline["stages"] = {k: v for k, v in pipeline["stages"].items() if k in STAGES}
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
    return Trained(origin, files_of(work / MODEL), local_store, *trained_predictions(work))


def trained_predictions(work: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The first test rows, the trained classifier's probabilities for them (on the CPU, unmerged: as
    the export check computes them) and the evaluate stage's confidence."""
    import pandas as pd

    from lora_dvc.classifier import load_classifier

    texts = pd.read_csv(work / "data/prepared/test.csv", keep_default_na=False)["text"].head(CHECKED_ROWS).tolist()
    probs = load_classifier("models/classifier", root=work, device="cpu", merge=False).probabilities(texts)
    evaluated = pd.read_csv(work / "records/evaluate/predictions.csv").head(CHECKED_ROWS)
    return texts, probs, evaluated["confidence"].to_numpy()


def get_from_local_store(trained: Trained, where: Path, which: list[str], out: Path) -> None:
    """`dvc artifacts get` run in `where`, with the folder remote made the default by a config file."""
    config = where / "local-store.config"
    config.write_text(f"['remote \"local-store\"']\n    url = {trained.local_store}\n")
    get = ["artifacts", "get", str(trained.origin), ARTIFACT, *which, "-o", str(out)]
    dvc([*get, "--config", str(config), "--remote", "local-store"], where)


@pytest.mark.parametrize("which", [["--rev", VERSION], ["--stage", "prod"]])
def test_artifacts_get_from_a_local_remote(trained, tmp_path, which):
    out = tmp_path / "fetched"
    get_from_local_store(trained, tmp_path, which, out)
    assert files_of(out) == trained.model
    layout = {"adapter_model.safetensors", "adapter_config.json", "config.json", "tokenizer.json", "README.md"}
    assert layout <= set(trained.model)


def test_the_fetched_model_classifies_with_transformers_and_peft_alone(trained, tmp_path):
    out = tmp_path / "text-classifier"  # tmp_path: outside any git or DVC repository
    get_from_local_store(trained, tmp_path, ["--rev", VERSION], out)
    texts = tmp_path / "texts.json"
    texts.write_text(json.dumps(trained.texts))
    script = tmp_path / "fresh_load.py"
    script.write_text(FRESH_LOAD)
    # -I: neither the checkout nor PYTHONPATH on sys.path
    fresh = json.loads(
        run([sys.executable, "-I", str(script), str(out), str(texts)], tmp_path).stdout.splitlines()[-1]
    )
    assert fresh["ours"] == []
    assert set(fresh["labels"]) <= set(LABELS) and len(fresh["labels"]) == CHECKED_ROWS
    probs = np.array(fresh["probs"])
    np.testing.assert_allclose(probs, trained.probs, atol=1e-4)
    assert fresh["labels"] == [LABELS[i] for i in trained.probs.argmax(axis=1)]
    # evaluate may run under bf16 autocast (train.precision auto): 1e-4-level differences
    np.testing.assert_allclose(probs.max(axis=1), trained.confidence, atol=5e-4)


def test_artifacts_get_from_the_gcs_emulator(trained, sandbox, gcs, tmp_path):
    out = tmp_path / "fetched"
    get = ["artifacts", "get", str(trained.origin), ARTIFACT, "--rev", VERSION, "-o", str(out)]
    remote = [f"url=gs://{gcs.bucket}/{PREFIX}", f"endpointurl={gcs.url}", "allow_anonymous_login=true"]
    # the repository declares `gcs` but commits no default remote: name it
    sandbox.run([sys.executable, "-m", "dvc", *get, "--remote", remote_name(), "--remote-config", *remote], tmp_path)
    assert files_of(out) == trained.model
