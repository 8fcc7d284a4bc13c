"""End to end: the real `dvc repro` in a temp git repo, on a tiny model and an AG News excerpt."""

from __future__ import annotations

import json

from conftest import dvc, head_params_after_peft_load

STAGES = ("prepare", "tokenize", "train", "evaluate", "report", "export")


def flatten(tree: dict, prefix: str = "") -> dict:
    return {
        k: v
        for key, sub in tree.items()
        for k, v in (flatten(sub, f"{prefix}{key}.") if isinstance(sub, dict) else {f"{prefix}{key}": sub}).items()
    }


def test_dvc_repro_end_to_end(repo, tiny_model):
    out = dvc(["repro"], repo)
    for stage in STAGES:
        assert f"Running stage '{stage}'" in out.stdout

    for split in ("train", "val", "test"):
        assert (repo / f"data/prepared/{split}.csv").stat().st_size > 0
        assert (repo / f"data/tokenized/{split}.npz").stat().st_size > 0
    adapter = repo / "models/classifier"
    assert (adapter / "adapter_model.safetensors").exists()
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["r"] == 4 and sorted(config["target_modules"]) == sorted(
        f"bert.encoder.layer.{i}.attention.self.{m}" for i in range(2) for m in ("query", "value")
    )
    assert config["base_model_name_or_path"] == str(tiny_model)

    # the adapter loads with plain peft, head included, in a fresh process
    assert head_params_after_peft_load(repo, tiny_model, adapter) > 0

    # `dvc metrics show` lists the compared numbers only; the details are records the report reads
    shown = json.loads(dvc(["metrics", "show", "--json"], repo).stdout)[""]["data"]
    assert {path: sorted(flatten(m["data"])) for path, m in shown.items()} == {
        "metrics/train.json": sorted(
            f"{section}.{key}"
            for section, keys in (
                ("val", ("accuracy", "macro_f1", "loss", "best_epoch")),
                ("fit", ("seconds", "samples_per_second", "trainable_params", "epochs", "steps")),
            )
            for key in keys
        ),
        "metrics/test.json": ["test.accuracy", "test.learned", "test.loss", "test.macro_f1"],
    }
    assert json.loads((repo / "records/prepare.json").read_text())["dropped"]["conflicting_label"] >= 0
    assert json.loads((repo / "records/tokenize.json").read_text())["train"]["tokens_p95"] > 0
    test = json.loads((repo / "records/evaluate/metrics.json").read_text())["test"]
    assert set(test["per_class"]) == {"World", "Sports", "Business", "Sci/Tech"}
    # the accuracy is the share of predictions.csv's rows whose prediction is the label
    rows = (repo / "records/evaluate/predictions.csv").read_text().splitlines()[1:]
    right = sum(row.split(",")[0] == row.split(",")[1] for row in rows)
    assert len(rows) > 0 and abs(test["accuracy"] - right / len(rows)) < 1e-6, (test["accuracy"], right, len(rows))
    # export ran: the shareable folder, its card and the adapter as trained
    export = repo / "models/export"
    assert (export / "README.md").read_text().startswith("---")
    assert (export / "adapter_model.safetensors").read_bytes() == (adapter / "adapter_model.safetensors").read_bytes()
    train = json.loads((repo / "records/train/metrics.json").read_text())
    assert train["trainable_params"] < train["total_params"]
    assert train["step"] == train["steps"]
    val_acc = (repo / "records/train/plots/metrics/val/accuracy.tsv").read_text().splitlines()
    assert len(val_acc) == 1 + 2  # header + one row per epoch

    report = (repo / "reports/report.md").read_text()
    assert "## Results" in report and f"{test['accuracy']:.4f}" in report
    # provenance: the summary's git revision, versions and data md5 reach the report
    found = train["provenance"]
    assert found["git"]["commit"] and found["git"]["commit"] in report and found["git"]["code_md5"] in report
    assert f"torch {found['versions']['torch']}" in report and found["precision"] in report
    assert found["data_md5"]["train.npz"] in report
    assert (
        f"1 process(es) x {train['per_process_batch_size']} rows = global batch {train['global_batch_size']}" in report
    )
    for png in ("training_curves.png", "confusion_matrix.png", "per_class_f1.png"):
        assert (repo / "plots" / png).read_bytes()[:4] == b"\x89PNG"

    html = dvc(["plots", "show", "-o", "plots_html"], repo)
    assert (repo / "plots_html/index.html").exists(), html.stdout

    again = dvc(["repro"], repo)
    assert "Running stage" not in again.stdout
    assert "up to date" in again.stdout.lower()
    status = dvc(["status", "--json"], repo)
    assert json.loads(status.stdout) == {}
