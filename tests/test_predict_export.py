"""predict and export on a real `dvc repro` (tiny model, AG News excerpt), and the exported folder
loaded by plain transformers + peft in a fresh process that imports none of our code."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import dvc, make_repo, run, write_params
from huggingface_hub import ModelCard

from lora_dvc import exporting
from lora_dvc import predict as predict_stage
from lora_dvc.runner import run_stage

LABELS = ["World", "Sports", "Business", "Sci/Tech"]
PROBS = [f"prob_{label}" for label in LABELS]
SAMPLE_ROWS = 30

# what a user does with the export: the model card's recipe, nothing of this repository on sys.path
FRESH_LOAD = r"""
import json, sys
import torch
from peft import AutoPeftModelForSequenceClassification, PeftModel
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

adapter_dir, merged_dir, full_dir, texts_file = sys.argv[1:5]
texts = json.load(open(texts_file))

def run(model, tokenizer, config):
    model.eval()
    with torch.no_grad():
        batch = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
        probs = model(**batch).logits.softmax(-1)
    return {"labels": [config.id2label[i] for i in probs.argmax(-1).tolist()], "probs": probs.tolist(),
            "max_tokens": int(batch["attention_mask"].sum(-1).max())}

out = {}
config = AutoConfig.from_pretrained(adapter_dir)
base = json.load(open(f"{adapter_dir}/adapter_config.json"))["base_model_name_or_path"]
model = PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(base, config=config), adapter_dir)
out["adapter"] = run(model, AutoTokenizer.from_pretrained(adapter_dir), config)
auto = AutoPeftModelForSequenceClassification.from_pretrained(
    adapter_dir, num_labels=config.num_labels, id2label=config.id2label, label2id=config.label2id)
out["auto_peft"] = run(auto, AutoTokenizer.from_pretrained(adapter_dir), config)
for key, folder in (("merged", merged_dir), ("full", full_dir)):
    model = AutoModelForSequenceClassification.from_pretrained(folder)
    out[key] = run(model, AutoTokenizer.from_pretrained(folder), model.config)
out["our_modules"] = sorted(m for m in sys.modules if m.split(".")[0] in ("stages", "lora_dvc"))
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model) -> Path:
    """One real `dvc repro` (prepare .. report, export) in a temp git + DVC copy of the repository."""
    dest = make_repo(tmp_path_factory.mktemp("predict-export") / "repo", tiny_model)
    write_params(dest, {"export": {"merge": True}})  # models/export/merged/ too, for pipeline()
    out = dvc(["repro"], dest)
    assert "Running stage 'export'" in out.stdout
    return dest


@pytest.fixture(scope="module")
def sample(trained) -> Path:
    """The first test rows plus one text far over max_length (64 tokens), with true labels."""
    test = pd.read_csv(trained / "data/prepared/test.csv", dtype={"text": str}, keep_default_na=False)
    rows = test.head(SAMPLE_ROWS)
    long_text = " ".join(test["text"].iloc[SAMPLE_ROWS : SAMPLE_ROWS + 6])
    rows = pd.concat([rows, pd.DataFrame({"text": [long_text], "label": [test["label"].iloc[SAMPLE_ROWS]]})])
    path = trained / "sample.csv"
    rows.to_csv(path, index=False)
    return path


def call(main, argv: list[str]) -> None:
    """A stage's CLI in this process (no interpreter start-up): run_stage as `python -m` runs it."""
    run_stage(lambda: main(argv))


def one_line_error(main, argv: list[str], capsys) -> str:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        call(main, argv)
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    return err


def test_export_stage_is_a_dvc_output_in_hugging_face_layout(trained):
    folder = trained / "models/export"
    names = {p.name for p in folder.iterdir()}
    assert {
        "adapter_model.safetensors",
        "adapter_config.json",
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "README.md",
    } <= names
    trained_adapter = trained / "models/classifier/adapter_model.safetensors"
    assert (folder / "adapter_model.safetensors").read_bytes() == trained_adapter.read_bytes()
    config = json.loads((folder / "config.json").read_text())
    assert config["id2label"] == {str(i): x for i, x in enumerate(LABELS)}
    assert config["label2id"] == {x: i for i, x in enumerate(LABELS)}
    assert json.loads((folder / "tokenizer_config.json").read_text())["model_max_length"] == 64

    lock = (trained / "dvc.lock").read_text()
    assert "\n  export:\n" in lock and "path: models/export" in lock
    assert "up to date" in dvc(["status", "export"], trained).stdout  # cached like any output: `dvc push` carries it

    card = (folder / "README.md").read_text()
    test = json.loads((trained / "records/evaluate/metrics.json").read_text())["test"]
    train = json.loads((trained / "records/train/metrics.json").read_text())
    data = ModelCard.load(folder / "README.md").data  # the Hub's own reading of the metadata
    assert data.library_name == "peft" and data.pipeline_tag == "text-classification" and "lora" in data.tags
    scores = {(r.metric_type, (r.metric_args or {}).get("average")): r.metric_value for r in data.eval_results}
    assert scores == {("accuracy", None): round(test["accuracy"], 4), ("f1", "macro"): round(test["macro_f1"], 4)}
    assert {r.dataset_split for r in data.eval_results} == {"test"}
    for needle in (
        f"| accuracy | {test['accuracy']:.4f} |",
        f"| macro-F1 | {test['macro_f1']:.4f} |",
        f"{train['trainable_params']:,} of {train['total_params']:,}",
        "r=4, alpha=8",
        "`query`, `value` in 2 layers",
        "MIT licence",
        "## Intended use",
        "## Limitations",
        "64 tokens",
        f"| training run | {train['epochs']:g} epoch(s), {train['steps']:,} optimizer steps |",  # what ran
        "| optimisation | AdamW lr 0.005, linear schedule,",
        f"| precision, device | {train['precision']}, cpu |",
        f"train.npz `{train['provenance']['data_md5']['train.npz']}`",
    ):
        assert needle in card, needle
    for label in LABELS:
        assert f"| {label} | " in card and f"{test['per_class'][label]['f1']:.4f}" in card


def test_exported_folders_give_predicts_predictions_in_a_fresh_process(trained, sample, tmp_path, monkeypatch):
    monkeypatch.chdir(trained)
    call(predict_stage.main, ["--file", str(sample), "--out", "preds.csv"])
    preds = pd.read_csv(trained / "preds.csv")
    source = pd.read_csv(sample)
    assert list(preds.columns) == ["text", "label", "predicted", "confidence", *PROBS]
    assert preds["text"].tolist() == source["text"].tolist() and preds["label"].tolist() == source["label"].tolist()
    probs = preds[PROBS].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1, atol=1e-5)
    assert preds["predicted"].tolist() == [LABELS[i] for i in probs.argmax(axis=1)]
    np.testing.assert_allclose(preds["confidence"], probs.max(axis=1), atol=1e-6)
    # the evaluate stage saw the same test rows with the same model
    evaluated = pd.read_csv(trained / "records/evaluate/predictions.csv").head(SAMPLE_ROWS)
    assert preds["predicted"].head(SAMPLE_ROWS).tolist() == evaluated["predicted"].tolist()
    # on a CPU with native bf16 both run under bf16 autocast (train.precision auto), whose rounding
    # depends on the batch's padded shape: 1e-4-level differences, far below the gaps between classes
    np.testing.assert_allclose(preds["confidence"].head(SAMPLE_ROWS), evaluated["confidence"], atol=5e-4)

    # a merged full model (--merge), through the installed `lora-dvc` (no `stages` package on its path:
    # the command is the library's), and the export of a full model (what train.method full trains)
    lora_dvc = Path(sys.executable).parent / "lora-dvc"
    cmd = [str(lora_dvc), "export", "--model", "models/classifier", "--merge", "--out", str(tmp_path / "with_merged")]
    exported = run(cmd, trained)
    assert "checked: the export reloads with transformers + peft" in exported.stderr
    assert "\nlibrary_name: peft\n" in (tmp_path / "with_merged/README.md").read_text()
    merged = tmp_path / "with_merged/merged"
    assert (merged / "model.safetensors").exists() and not (merged / "adapter_config.json").exists()
    call(exporting.main, ["--model", str(merged), "--out", str(tmp_path / "full")])
    assert (tmp_path / "full/model.safetensors").exists()
    assert ModelCard.load(tmp_path / "full/README.md").data.library_name == "transformers"
    call(predict_stage.main, ["--model", str(merged), "--file", str(sample), "--out", str(tmp_path / "full.csv")])
    np.testing.assert_allclose(pd.read_csv(tmp_path / "full.csv")[PROBS].to_numpy(), probs, atol=1e-4)

    texts = tmp_path / "texts.json"
    texts.write_text(json.dumps(source["text"].tolist()))
    script = tmp_path / "fresh_load.py"
    script.write_text(FRESH_LOAD)
    out = run(
        [
            sys.executable,
            "-I",
            str(script),
            str(trained / "models/export"),
            str(merged),
            str(tmp_path / "full"),
            str(texts),
        ],
        tmp_path,
    )
    fresh = json.loads(out.stdout.strip().splitlines()[-1])
    assert fresh["our_modules"] == []
    for key in ("adapter", "auto_peft", "merged", "full"):
        assert fresh[key]["labels"] == preds["predicted"].tolist(), key
        np.testing.assert_allclose(np.array(fresh[key]["probs"]), probs, atol=1e-4, err_msg=key)
        assert fresh[key]["max_tokens"] == 64  # the exported tokenizer truncates where training did


# pipeline() on export.merge's folder in a process where peft cannot be imported
PIPELINE_NO_PEFT = r"""
import json, sys
sys.modules["peft"] = None  # import peft fails: the merged folder must not need it
from transformers import pipeline
classify = pipeline("text-classification", model=sys.argv[1], device="cpu")
print(json.dumps([r["label"] for r in classify(json.load(open(sys.argv[2])), truncation=True)]))
"""


def test_card_snippet_runs_verbatim_and_pipeline_loads_the_merged_folder(trained, tmp_path):
    """Catches: a model card whose load snippet does not run (the label mapping missing from
    AutoPeftModelForSequenceClassification), and a merged folder that needs peft or predicts other labels."""
    export = trained / "models/export"
    card = (export / "README.md").read_text()
    (snippet,) = [b for b in re.findall(r"```python\n(.*?)```", card, re.S) if "AutoPeftModel" in b]
    out = run([sys.executable, "-I", "-c", snippet], export)  # from the folder, as the snippet says
    assert out.stdout.startswith("['") and out.stdout.split("'")[1] in LABELS, out.stdout

    assert 'pipeline("text-classification", model="path/to/this/folder/merged"' in card
    evaluated = pd.read_csv(trained / "records/evaluate/predictions.csv").head(SAMPLE_ROWS)  # test.csv's order
    test = pd.read_csv(trained / "data/prepared/test.csv", dtype={"text": str}, keep_default_na=False)
    texts = tmp_path / "texts.json"
    texts.write_text(json.dumps(test["text"].head(SAMPLE_ROWS).tolist()))
    script = tmp_path / "pipeline_no_peft.py"
    script.write_text(PIPELINE_NO_PEFT)
    out = run([sys.executable, "-I", str(script), str(export / "merged"), str(texts)], tmp_path)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == evaluated["predicted"].tolist()


def test_predict_texts_and_an_experiment_by_name(trained, sample, monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(trained)
    texts = pd.read_csv(sample)["text"].head(3).tolist()
    capsys.readouterr()
    call(predict_stage.main, texts)  # JSONL on stdout by default
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["text"] for r in records] == texts
    for r in records:
        assert set(r["probabilities"]) == set(LABELS) and abs(sum(r["probabilities"].values()) - 1) < 1e-5
        assert r["predicted"] == max(r["probabilities"], key=r["probabilities"].get)
        assert r["confidence"] == max(r["probabilities"].values())

    call(predict_stage.main, [*texts, "--table"])
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:2] == ["predicted", "confidence"] and len(table) == 1 + len(texts)
    assert [line.split()[0] for line in table[1:]] == [r["predicted"] for r in records]

    # the workspace as an experiment; then the workspace loses its model, the experiment keeps it
    dvc(["exp", "save", "-n", "tiny-exp"], trained)
    moved = tmp_path / "adapter"
    shutil.move(trained / "models/classifier", moved)
    try:
        err = one_line_error(predict_stage.main, texts, capsys)
        assert "models/classifier" in err and "dvc repro train" in err
        call(predict_stage.main, ["--rev", "tiny-exp", *texts])
        from_exp = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert [r["predicted"] for r in from_exp] == [r["predicted"] for r in records]
        np.testing.assert_allclose(
            [list(r["probabilities"].values()) for r in from_exp],
            [list(r["probabilities"].values()) for r in records],
            atol=1e-6,
        )
        assert "no-such-exp" in one_line_error(predict_stage.main, ["--rev", "no-such-exp", "x"], capsys)
    finally:
        shutil.move(moved, trained / "models/classifier")


def test_bad_input_is_one_line_and_exit_2(trained, sample, monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(trained)
    assert "nothing to predict" in one_line_error(predict_stage.main, [], capsys)
    assert "missing.csv: not found" in one_line_error(predict_stage.main, ["--file", "missing.csv"], capsys)
    err = one_line_error(predict_stage.main, ["--file", str(sample), "--text-column", "review"], capsys)
    assert "no column 'review'" in err and "'text'" in err
    assert "--out" in one_line_error(predict_stage.main, ["x", "--out", "p.xlsx"], capsys)
    assert "no trained model" in one_line_error(predict_stage.main, ["x", "--model", "models/nothing"], capsys)
    assert "unrecognized arguments" in one_line_error(predict_stage.main, ["x", "--frobnicate"], capsys)
    wrong = tmp_path / "labels.json"
    wrong.write_text(json.dumps(["neg", "pos", "neutral"]))
    assert "does not have 3 outputs" in one_line_error(predict_stage.main, ["x", "--labels", str(wrong)], capsys)
    export_args = ["--model", "models/nothing", "--out", str(tmp_path / "e")]
    assert "no trained model" in one_line_error(exporting.main, export_args, capsys)
    assert not (tmp_path / "e").exists()
    # the real entry point: exit status 2 and one line, no traceback
    result = run([sys.executable, "-m", "lora_dvc.predict", "--file", "missing.csv"], trained, check=False)
    assert result.returncode == 2 and result.stderr.strip() == "error: --file missing.csv: not found"


def test_tfidf_baseline_predicts_and_exports(trained, monkeypatch, capsys, tmp_path):
    tfidf = pytest.importorskip("lora_dvc.tfidf")
    monkeypatch.chdir(trained)
    train = pd.read_csv("data/prepared/train.csv", dtype={"text": str}, keep_default_na=False)
    model_dir = tmp_path / "tfidf"
    model_dir.mkdir()
    tfidf.TfidfClassifier().fit(train["text"].tolist(), train["label"].to_numpy()).save(model_dir)
    texts = ["Stocks fell on Wall Street as oil prices rose", "The striker scored twice in the cup final"]
    capsys.readouterr()
    call(predict_stage.main, ["--model", str(model_dir), *texts])
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(records) == 2 and all(set(r["probabilities"]) == set(LABELS) for r in records)
    call(exporting.main, ["--model", str(model_dir), "--out", str(tmp_path / "export")])
    assert json.loads((tmp_path / "export/labels.json").read_text()) == LABELS
    assert "library_name: scikit-learn" in (tmp_path / "export/README.md").read_text()
    call(predict_stage.main, ["--model", str(tmp_path / "export"), *texts])
    again = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["probabilities"] for r in again] == [r["probabilities"] for r in records]


def test_predict_composes_in_a_pipe(trained, sample, monkeypatch, capsys, tmp_path):
    """stdin in, JSONL out; CSV, TSV, JSONL and plain-text files in; the outputs agree."""
    texts = pd.read_csv(sample)["text"].head(4).tolist()
    lora_dvc = Path(sys.executable).parent / "lora-dvc"
    piped = run([str(lora_dvc), "predict", "-", "--device", "cpu"], trained, input="\n".join(texts) + "\n")
    from_stdin = [json.loads(line) for line in piped.stdout.splitlines()]
    assert [r["text"] for r in from_stdin] == texts  # stdout holds the JSONL and nothing else
    assert all(r["predicted"] == max(r["probabilities"], key=r["probabilities"].get) for r in from_stdin)
    assert "texts in" in piped.stderr  # the logs go to stderr

    monkeypatch.chdir(trained)
    frame = pd.DataFrame({"id": [str(i) for i in range(len(texts))], "text": texts})
    frame.to_csv(tmp_path / "in.tsv", sep="\t", index=False)
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in frame.to_dict("records")))
    (tmp_path / "in.txt").write_text("\n".join(texts) + "\n")
    for name in ("in.tsv", "in.jsonl", "in.txt"):
        capsys.readouterr()
        call(predict_stage.main, ["--file", str(tmp_path / name), "--device", "cpu"])
        got = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert [r["text"] for r in got] == texts, name
        assert [r["predicted"] for r in got] == [r["predicted"] for r in from_stdin], name
        if name != "in.txt":
            assert [r["id"] for r in got] == frame["id"].tolist()  # input fields ride along
        np.testing.assert_allclose(
            [list(r["probabilities"].values()) for r in got],
            [list(r["probabilities"].values()) for r in from_stdin],
            atol=1e-5,
        )
    call(predict_stage.main, ["--file", str(tmp_path / "in.jsonl"), "--out", str(tmp_path / "out.jsonl")])
    written = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["predicted"] for r in written] == [r["predicted"] for r in from_stdin]
    assert "not a torch device" in one_line_error(predict_stage.main, ["x", "--device", "gpu7"], capsys)
    (tmp_path / "bad.jsonl").write_text("[1, 2]\n")
    assert "not readable as jsonl" in one_line_error(
        predict_stage.main, ["--file", str(tmp_path / "bad.jsonl")], capsys
    )
