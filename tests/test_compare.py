"""lora_dvc.compare on known numbers: % change, seed aggregation, method, grouping, baseline, flags."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from conftest import ROOT
from lora_dvc import compare
from lora_dvc.errors import UserError

BASE_PARAMS = {
    "data": {"dataset": "ag_news", "path": "data/raw/ag_news", "max_train_rows": None, "seed": 42},
    "model": {"name": "sentence-transformers/all-MiniLM-L6-v2", "max_length": 128},
    "lora": {"enabled": True, "r": 8, "alpha": 16, "dropout": 0.1, "targets": "qv", "bias": "none",
             "rslora": False, "dora": False},
    "train": {"method": "transformer", "epochs": 1, "batch_size": 32, "lr": 0.001, "seed": 42,
              "device": "auto", "log_every": 20, "checkpoint_every": 100},
    "evaluate": {"batch_size": 128},
}


def params(**overrides) -> dict:
    """BASE_PARAMS with dotted overrides, e.g. params(**{"lora.r": 16})."""
    out = json.loads(json.dumps(BASE_PARAMS))
    for key, value in overrides.items():
        section, name = key.split(".", 1)
        out[section][name] = value
    return out


def rev_data(p: dict, acc: float, f1: float = 0.5, loss: float = 1.0, majority: float = 0.25,
             trainable: int = 1000, evaluated: bool = True) -> dict:
    train = {"trainable_params": trainable, "total_params": 100_000, "steps": 10, "lora_weight_mean": 1e-3,
             "train": {"accuracy": acc - 0.01, "macro_f1": f1 - 0.01, "loss": loss + 0.1},
             "val": {"accuracy": acc + 0.01, "macro_f1": f1 + 0.01, "loss": loss - 0.1}}
    evaluate = {"test": {"accuracy": acc, "macro_f1": f1, "loss": loss, "majority_accuracy": majority,
                         "per_class": {"a": {"f1": f1}}}}
    metrics = {"metrics/train/metrics.json": {"data": train}}
    metrics["metrics/evaluate/metrics.json"] = (
        {"data": evaluate} if evaluated else {"error": {"type": "FileNotFoundError", "msg": "missing"}})
    return {"rev": "x", "timestamp": None, "params": {"params.yaml": {"data": p}}, "metrics": metrics,
            "deps": {}, "outs": {}, "meta": {}}


def exp(name: str, data: dict | None, state: str | None = "success", error: dict | None = None) -> dict:
    rev = (name.encode().hex() * 10)[:40]
    return {"revs": [{"rev": rev, "name": name, "data": data, "error": error, "experiments": None}],
            "executor": None if state is None else {"state": state, "name": "dvc-task", "local": {}},
            "name": name}


def exp_show(*experiments: dict, head_data: dict | None = None) -> list:
    return [
        {"rev": "workspace", "name": None, "error": None, "experiments": None,
         "data": rev_data(params(), 0.99) if head_data is None else head_data},
        {"rev": "a" * 40, "name": "main", "error": None, "data": head_data or {"params": {}, "metrics": {}},
         "experiments": list(experiments)},
    ]


# ------------------------------------------------------------------ % change and aggregation


def test_pct_change_higher_is_better():
    assert compare.pct_change(0.88, 0.80, higher_better=True) == pytest.approx(10.0)
    assert compare.pct_change(0.72, 0.80, higher_better=True) == pytest.approx(-10.0)
    assert compare.pct_change(0.80, 0.80, higher_better=True) == 0.0


def test_pct_change_lower_is_better_for_loss():
    # loss 0.50 -> 0.40 is a 20% improvement, reported as +20; 0.50 -> 0.60 is -20
    assert compare.pct_change(0.40, 0.50, higher_better=False) == pytest.approx(20.0)
    assert compare.pct_change(0.60, 0.50, higher_better=False) == pytest.approx(-20.0)
    assert compare.higher_is_better("test.accuracy") and compare.higher_is_better("val.macro_f1")
    assert not compare.higher_is_better("test.loss") and not compare.higher_is_better("train.loss")


def test_pct_change_undefined_cases():
    assert compare.pct_change(0.5, 0.0) is None
    assert compare.pct_change(None, 0.5) is None
    assert compare.pct_change(0.5, None) is None


def test_aggregate_mean_and_sample_std():
    stat = compare.aggregate([0.80, 0.82, 0.84])
    assert stat.mean == pytest.approx(0.82)
    assert stat.std == pytest.approx(0.02)  # sample (n-1) standard deviation
    assert stat.n == 3
    assert compare.fmt_stat(stat) == "0.8200 ± 0.0200"


def test_aggregate_single_missing_and_nan():
    one = compare.aggregate([0.5])
    assert one.mean == 0.5 and one.std is None and compare.fmt_stat(one) == "0.5000"
    assert compare.aggregate([None, None]) is None
    two = compare.aggregate([1.0, None, math.nan, 3.0])
    assert two.mean == 2.0 and two.n == 2 and two.std == pytest.approx(math.sqrt(2))


# ------------------------------------------------------------------ method, grouping, baseline


@pytest.mark.parametrize("overrides, method", [
    ({"train.method": "tfidf"}, "tfidf"),
    ({"train.method": "tfidf", "lora.enabled": False}, "tfidf"),
    ({"lora.enabled": False}, "full"),
    ({"lora.dora": True}, "dora"),
    ({"lora.rslora": True}, "rslora"),
    ({"lora.rslora": True, "lora.dora": True}, "dora+rslora"),
    ({}, "lora"),
])
def test_derive_method(overrides, method):
    assert compare.derive_method(compare.flatten(params(**overrides))) == method


def test_seeds_merge_and_other_configs_stay_apart():
    data = exp_show(
        exp("s1", rev_data(params(**{"train.seed": 1}), 0.80)),
        exp("s2", rev_data(params(**{"train.seed": 2}), 0.82)),
        exp("s3", rev_data(params(**{"train.seed": 3, "train.device": "cpu"}), 0.84)),
        exp("r16", rev_data(params(**{"lora.r": 16}), 0.90)),
        # TF-IDF ignores lora/train knobs: these two are one config
        exp("tf1", rev_data(params(**{"train.method": "tfidf", "lora.r": 4}), 0.70)),
        exp("tf2", rev_data(params(**{"train.method": "tfidf", "lora.r": 32}), 0.70)),
    )
    runs, others = compare.parse_exp_show(data)
    assert others == [] and len(runs) == 6
    groups = {g.label: g for g in compare.group_runs(runs)}
    assert set(groups) == {"s1, s2, s3", "r16", "tf1, tf2"}
    seeds = groups["s1, s2, s3"]
    assert seeds.stat("test.accuracy").mean == pytest.approx(0.82)
    assert seeds.stat("test.accuracy").std == pytest.approx(0.02)
    assert compare.seeds_cell(seeds) == "1, 2, 3"
    # sorted: tfidf first, then lora by rank
    assert [g.label for g in compare.group_runs(runs)] == ["tf1, tf2", "s1, s2, s3", "r16"]


def test_baseline_choice():
    lora = exp("lora8", rev_data(params(), 0.85))
    full = exp("full", rev_data(params(**{"lora.enabled": False}), 0.88))
    tfidf = exp("tfidf", rev_data(params(**{"train.method": "tfidf"}), 0.80))
    groups = compare.group_runs(compare.parse_exp_show(exp_show(lora, full, tfidf))[0])
    assert compare.pick_baseline(groups, "auto", "test.accuracy").label == "tfidf"
    assert compare.pick_baseline(groups, "full", "test.accuracy").label == "full"
    assert compare.pick_baseline(groups, "lora8", "test.accuracy").label == "lora8"
    assert compare.pick_baseline(groups, "none", "test.accuracy") is None
    assert compare.pick_best(groups, "test.accuracy").label == "full"
    assert compare.pick_best(groups, "test.loss").label in {"lora8", "full", "tfidf"}

    no_tfidf = compare.group_runs(compare.parse_exp_show(exp_show(lora, full))[0])
    assert compare.pick_baseline(no_tfidf, "auto", "test.accuracy").label == "full"
    with pytest.raises(UserError, match="no finished tfidf experiment"):
        compare.pick_baseline(no_tfidf, "tfidf", "test.accuracy")
    with pytest.raises(UserError, match="no finished experiment of that name"):
        compare.pick_baseline(no_tfidf, "nope", "test.accuracy")
    only_lora = compare.group_runs(compare.parse_exp_show(exp_show(lora))[0])
    assert compare.pick_baseline(only_lora, "auto", "test.accuracy") is None


def test_best_by_loss_is_lowest():
    a = exp("a", rev_data(params(**{"lora.r": 4}), 0.80, loss=0.9))
    b = exp("b", rev_data(params(**{"lora.r": 8}), 0.79, loss=0.5))
    groups = compare.group_runs(compare.parse_exp_show(exp_show(a, b))[0])
    assert compare.pick_best(groups, "test.accuracy").label == "a"
    assert compare.pick_best(groups, "test.loss").label == "b"


def test_majority_flag_and_unfinished_experiments():
    flat = exp("flat", rev_data(params(**{"lora.r": 4}), 0.25, majority=0.25))
    good = exp("good", rev_data(params(**{"lora.r": 8}), 0.26, majority=0.25))
    failed = exp("broken", rev_data(params(**{"lora.targets": ["nonexistent"]}), 0.0), state="failed",
                 error={"msg": "Experiment run failed", "type": ""})
    queued = exp("waiting", None, state="queued")
    runs, others = compare.parse_exp_show(exp_show(flat, good, failed, queued))
    assert {r.name: r.below_majority for r in runs} == {"flat": True, "good": False}
    assert [(o.name, o.state) for o in others] == [("broken", "failed"), ("waiting", "queued")]


def test_workspace_only_on_request():
    data = exp_show(exp("lora8", rev_data(params(), 0.85)))
    assert [r.name for r in compare.parse_exp_show(data)[0]] == ["lora8"]
    assert [r.name for r in compare.parse_exp_show(data, include_workspace=True)[0]] == ["workspace", "lora8"]


def test_parse_rejects_non_exp_show_json():
    with pytest.raises(UserError, match="expected a JSON list"):
        compare.parse_exp_show({"rev": "x"})
    with pytest.raises(UserError, match="needs a 'rev'"):
        compare.parse_exp_show([{"name": "x"}])


# ------------------------------------------------------------------ the whole report


def study(tmp_path):
    experiments = [
        exp("tfidf", rev_data(params(**{"train.method": "tfidf"}), 0.80, f1=0.79, loss=0.60)),
        exp("full", rev_data(params(**{"lora.enabled": False, "train.lr": 1e-4}), 0.90, f1=0.89, loss=0.30,
                             trainable=22_000_000)),
        exp("qv4-s1", rev_data(params(**{"lora.r": 4, "lora.alpha": 8, "train.seed": 1}), 0.84, f1=0.83, loss=0.50)),
        exp("qv4-s2", rev_data(params(**{"lora.r": 4, "lora.alpha": 8, "train.seed": 2}), 0.86, f1=0.85, loss=0.48)),
        exp("qv32", rev_data(params(**{"lora.r": 32, "lora.alpha": 64}), 0.92, f1=0.91, loss=0.25)),
        exp("all32", rev_data(params(**{"lora.r": 32, "lora.alpha": 64, "lora.targets": "all"}), 0.88, f1=0.87, loss=0.35)),
        exp("flat", rev_data(params(**{"lora.r": 16, "lora.dora": True}), 0.25, f1=0.10, loss=1.38, majority=0.25)),
        exp("broken", rev_data(params(**{"lora.targets": ["nonexistent"]}), 0.0), state="failed",
            error={"msg": "Experiment run failed", "type": ""}),
    ]
    path = tmp_path / "exps.json"
    path.write_text(json.dumps(exp_show(*experiments)))
    return path


def table_row(text: str, name: str) -> list[str]:
    line = next(ln for ln in text.splitlines() if ln.startswith("|") and name in ln.split("|")[1])
    return [c.strip() for c in line.strip().strip("|").split("|")]


def test_report_end_to_end(tmp_path):
    out = tmp_path / "out" / "comparison.md"
    compare.main(["--input", str(study(tmp_path)), "--out", str(out)])
    text = out.read_text()
    png = out.with_suffix(".png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000

    header = table_row(text, "experiment")
    assert header[:4] == ["experiment", "method", "r", "alpha"]
    # best (qv32, test accuracy 0.92) is bold in every cell
    best = table_row(text, "**qv32**")
    assert all(c.startswith("**") and c.endswith("**") for c in best)
    assert best[header.index("test acc")] == "**0.9200**"
    # the two seeds of qv r=4 are one row, mean ± std
    seeds = table_row(text, "qv4-s1, qv4-s2")
    assert seeds[header.index("test acc")] == "0.8500 ± 0.0141"
    assert seeds[header.index("seeds")] == "1, 2"
    # TF-IDF is the baseline (auto) and shows no LoRA/transformer knobs
    tfidf = table_row(text, "tfidf (baseline)")
    assert tfidf[header.index("method")] == "tfidf"
    assert tfidf[header.index("r")] == tfidf[header.index("lr")] == "–"
    full = table_row(text, "full")
    assert full[header.index("r")] == "–" and full[header.index("lr")] == "0.0001"
    assert full[header.index("trainable params")] == "22,000,000"
    assert table_row(text, "flat")[header.index("method")] == "dora"

    change = text.split("## Change against the baseline")[1]
    change_header = table_row(change, "experiment")
    qv32 = table_row(change, "**qv32**")
    assert qv32[change_header.index("test acc")] == "**+15.00%**"      # (0.92 - 0.80) / 0.80
    assert qv32[change_header.index("test loss")] == "**+58.33%**"     # (0.60 - 0.25) / 0.60: lower is better
    full_change = table_row(change, "full")
    assert full_change[change_header.index("test F1")] == "+12.66%"   # (0.89 - 0.79) / 0.79
    assert table_row(change, "tfidf")[change_header.index("test acc")] == "baseline"

    flags = text.split("## Runs no better than the majority class")[1]
    assert "flat (dora, seed 42): test accuracy 0.2500 <= majority-class accuracy 0.2500" in flags
    assert "qv32" not in flags.split("##")[0]
    assert table_row(text, "flat")[header.index("test acc")] == "0.2500 ⚠"
    assert "broken" in text.split("## Experiments without results")[1] and "failed" in text


def test_report_with_full_baseline_flag(tmp_path):
    out = tmp_path / "c.md"
    compare.main(["--input", str(study(tmp_path)), "--out", str(out), "--baseline", "full"])
    change = out.read_text().split("## Change against the baseline")[1]
    header = table_row(change, "experiment")
    assert table_row(change, "tfidf")[header.index("test acc")] == "-11.11%"  # (0.80 - 0.90) / 0.90
    assert table_row(change, "full")[header.index("test acc")] == "baseline"


def cli(*args, cwd=ROOT):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "lora_dvc.compare", *args], cwd=cwd, env=env, capture_output=True, text=True)


@pytest.mark.parametrize("make_input, message", [
    (lambda p: None, "file not found"),
    (lambda p: p.write_text("{not json"), "not JSON"),
    (lambda p: p.write_text(json.dumps({"rev": 1})), "expected a JSON list"),
    (lambda p: p.write_text(json.dumps(exp_show(exp("q", None, state="queued")))), "no finished experiment"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, make_input, message):
    path = tmp_path / "in.json"
    make_input(path)
    result = cli("--input", str(path), "--out", str(tmp_path / "c.md"))
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "c.md").exists()


def test_unknown_baseline_method_exits_2(tmp_path):
    path = tmp_path / "in.json"
    path.write_text(json.dumps(exp_show(exp("lora8", rev_data(params(), 0.85)))))
    result = cli("--input", str(path), "--out", str(tmp_path / "c.md"), "--baseline", "tfidf")
    assert result.returncode == 2 and "no finished tfidf experiment; methods present: lora" in result.stderr


def test_outside_a_dvc_repo_exits_2(tmp_path):
    result = cli("--out", str(tmp_path / "c.md"), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("error: `dvc exp show --json` failed")


def test_exclude_leaves_runs_out_and_names_unknown_ones(tmp_path):
    out = tmp_path / "c.md"
    compare.main(["--input", str(study(tmp_path)), "--out", str(out), "--exclude", "qv32", "all32"])
    text = out.read_text()
    assert "qv32" not in text and "all32" not in text
    assert table_row(text, "**full**")  # the best of what is left
    result = cli("--input", str(study(tmp_path)), "--out", str(tmp_path / "d.md"), "--exclude", "qv64")
    assert result.returncode == 2 and "--exclude: no run named qv64; the runs are" in result.stderr
    assert not (tmp_path / "d.md").exists()
