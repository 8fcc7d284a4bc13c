"""lora-dvc compare: rows of dvc.api.exp_show() -> seeds merged, baseline, % change, flags, report.

Unit tests feed rows shaped as `dvc.api.exp_show()` renders them (numbers as floats, null as
'None', a missing value as '!'); tests/test_experiments.py's queued sweep compares real experiments
through dvc.api.
"""

from __future__ import annotations

import json
import math
import sys

import pytest
from conftest import ROOT, run

from lora_dvc import compare
from lora_dvc.comparison import aggregate, render, runs
from lora_dvc.params import RESULT_NEUTRAL_KEYS

PARAMS = {
    "data.dataset": "ag_news",
    "data.path": "data/raw/ag_news",
    "data.max_train_rows": "None",
    "data.seed": 42.0,
    "model.name": "sentence-transformers/all-MiniLM-L6-v2",
    "model.length_buckets": "[32, 64, 96, 128]",
    "lora.r": 8.0,
    "lora.alpha": 16.0,
    "lora.dropout": 0.1,
    "lora.targets": "qv",
    "lora.rslora": "False",
    "lora.dora": "False",
    "train.method": "lora",
    "train.epochs": 1.0,
    "train.batch_size": 32.0,
    "train.lr": 0.001,
    "train.seed": 42.0,
    "train.device": "auto",
    "train.log_every": 20.0,
    "train.checkpoint_every": 100.0,
    "evaluate.batch_size": 128.0,
}
KEYS = runs.param_keys()


def row(
    name: str,
    acc: float | None,
    state: str | None = None,
    f1: float = 0.5,
    loss: float = 1.0,
    majority: float = 0.25,
    trainable: float = 1000.0,
    **params,
) -> dict:
    """One exp_show row: both metrics files, the records compare reads beside them, params with dotted overrides."""
    metrics = {
        "steps": 10.0,
        "fit.trainable_params": trainable,
        "total_params": 100_000.0,
        "lora_weight_mean": 1e-3,
        "train.accuracy": "!",
        "train.macro_f1": "!",
        "train.loss": "!",
        "val.accuracy": "!",
        "val.macro_f1": "!",
        "val.loss": "!",
        "test.accuracy": "!",
        "test.macro_f1": "!",
        "test.loss": "!",
        "test.majority_accuracy": "!",
    }
    if acc is not None:
        metrics.update(
            {
                "train.accuracy": acc - 0.01,
                "train.macro_f1": f1 - 0.01,
                "train.loss": loss + 0.1,
                "val.accuracy": acc + 0.01,
                "val.macro_f1": f1 + 0.01,
                "val.loss": loss - 0.1,
                "test.accuracy": acc,
                "test.macro_f1": f1,
                "test.loss": loss,
                "test.majority_accuracy": majority,
            }
        )
    rev = (name.encode().hex() * 10)[:7]
    return {
        "Experiment": name,
        "rev": rev,
        "typ": "branch_commit",
        "Created": None,
        "parent": None,
        "State": state,
        "Executor": None,
        **metrics,
        **{**PARAMS, **params},
    }


def head(acc: float = 0.99) -> list[dict]:
    return [
        {**row("x", acc), "Experiment": None, "rev": "workspace", "typ": "baseline"},
        {**row("x", None), "Experiment": None, "rev": "main", "typ": "baseline"},
    ]


def parse(*rows: dict, workspace: bool = False):
    return runs.parse_rows([*head(), *rows], KEYS, include_workspace=workspace)


def by_label(groups) -> dict:
    return {g.label: g for g in groups}


# ------------------------------------------------------------------ cells, % change, aggregation


def test_cells_decode_to_what_params_yaml_held():
    run_ = parse(row("a", 0.8, **{"lora.targets": "['query', 'value']"}))[0][0]
    p = run_.params
    assert p["lora.r"] == 8 and isinstance(p["lora.r"], int) and p["train.lr"] == 0.001
    assert p["data.max_train_rows"] is None and p["lora.rslora"] is False
    assert p["model.length_buckets"] == [32, 64, 96, 128] and p["lora.targets"] == ["query", "value"]
    assert "train.accuracy" not in p and run_.metrics["train.accuracy"] == pytest.approx(0.79)


def test_metric_prefixed_with_its_file_is_found():
    r = row("a", 0.8)
    r["metrics/test.json:test.accuracy"] = r.pop("test.accuracy")
    assert parse(r)[0][0].metrics["test.accuracy"] == 0.8


def test_pct_change_signed_so_positive_is_better():
    assert aggregate.pct_change(0.88, 0.80) == pytest.approx(10.0)
    assert aggregate.pct_change(0.72, 0.80) == pytest.approx(-10.0)
    # loss 0.50 -> 0.40 is a 20% improvement, reported as +20
    assert aggregate.pct_change(0.40, 0.50, higher_better=False) == pytest.approx(20.0)
    assert aggregate.pct_change(0.60, 0.50, higher_better=False) == pytest.approx(-20.0)
    assert not aggregate.higher_is_better("test.loss") and aggregate.higher_is_better("val.macro_f1")
    assert aggregate.pct_change(0.5, 0.0) is None and aggregate.pct_change(None, 0.5) is None


def test_aggregate_mean_and_sample_std():
    stat = aggregate.aggregate([0.80, 0.82, 0.84])
    assert stat.mean == pytest.approx(0.82) and stat.std == pytest.approx(0.02) and stat.n == 3
    assert render.fmt_stat(stat) == "0.8200 ± 0.0200"
    assert render.fmt_stat(aggregate.aggregate([0.5])) == "0.5000"
    assert aggregate.aggregate([None, None]) is None
    two = aggregate.aggregate([1.0, None, math.nan, 3.0])
    assert two.mean == 2.0 and two.n == 2 and two.std == pytest.approx(math.sqrt(2))


# ------------------------------------------------------------------ method, grouping, baseline


@pytest.mark.parametrize(
    "params, method",
    [
        ({"train.method": "tfidf"}, "tfidf"),
        ({"train.method": "full"}, "full"),
        ({"train.method": "transformer", "lora.enabled": "False"}, "full"),  # an experiment from before train.method
        ({"train.method": "transformer", "lora.enabled": "True"}, "lora"),
        ({"lora.dora": "True"}, "dora"),
        ({"lora.rslora": "True"}, "rslora"),
        ({"lora.rslora": "True", "lora.dora": "True"}, "dora+rslora"),
        ({}, "lora"),
    ],
)
def test_method_from_params(params, method):
    assert parse(row("a", 0.8, **params))[0][0].method == method


def test_seeds_and_result_neutral_knobs_merge_other_configs_stay_apart():
    rows = [
        row("s1", 0.80, **{"train.seed": 1.0}),
        row("s2", 0.82, **{"train.seed": 2.0, "train.device": "cpu"}),
        row("s3", 0.84, **{"train.seed": 3.0, "evaluate.batch_size": 8.0}),
        row("r16", 0.9, **{"lora.r": 16.0}),
        row("tf1", 0.7, **{"train.method": "tfidf", "lora.r": 4.0}),
        row("tf2", 0.7, **{"train.method": "tfidf"}),
    ]
    groups = aggregate.group_runs(parse(*rows)[0])
    assert [g.label for g in groups] == ["tf1, tf2", "s1, s2, s3", "r16"]  # tfidf ignores lora.r
    seeds = by_label(groups)["s1, s2, s3"]
    assert seeds.stat("test.accuracy").mean == pytest.approx(0.82)
    assert seeds.stat("test.accuracy").std == pytest.approx(0.02)
    assert render.seeds_cell(seeds) == "1, 2, 3"
    assert {"train.device", "evaluate.batch_size"} <= RESULT_NEUTRAL_KEYS and "train.seed" not in RESULT_NEUTRAL_KEYS


def test_old_full_fine_tune_groups_with_a_new_one():
    old = row("old", 0.8, **{"train.method": "transformer", "lora.enabled": "False", "lora.r": 4.0})
    new = row("new", 0.9, **{"train.method": "full", "train.seed": 7.0})
    groups = aggregate.group_runs(parse(old, new)[0])
    assert [(g.label, g.method) for g in groups] == [("old, new", "full")]  # by seed: "42" < "7"


def test_baseline_and_best():
    groups = aggregate.group_runs(
        parse(
            row("tfidf", 0.80, **{"train.method": "tfidf"}),
            row("full", 0.95, **{"train.method": "full"}),
            row("lora8", 0.90, loss=0.1),
        )[0]
    )
    pick = lambda choice: aggregate.pick_baseline(groups, choice, "test.accuracy")
    assert pick("auto").label == "tfidf" and pick("full").label == "full" and pick("lora8").label == "lora8"
    assert pick("none") is None
    assert aggregate.pick_best(groups, "test.accuracy").label == "full"
    assert aggregate.pick_best(groups, "test.loss").label == "lora8"  # lowest loss
    assert aggregate.pick_baseline(groups[1:], "auto", "test.accuracy").label == "full"
    assert aggregate.pick_baseline(groups[2:], "auto", "test.accuracy") is None


def test_unfinished_experiments_and_majority_flag():
    finished, others = parse(
        row("flat", 0.25),
        row("good", 0.8),
        row("broken", None, state="Failed"),
        row("waiting", None, state="Queued"),
        row("busy", None, state="Running"),
        row("done", 0.7, state="Success"),
    )
    assert {r.name: r.below_majority for r in finished} == {"flat": True, "good": False, "done": False}
    assert [(o.name, o.state) for o in others] == [("broken", "failed"), ("waiting", "queued"), ("busy", "running")]


def test_workspace_only_on_request():
    assert [r.name for r in parse(row("a", 0.8))[0]] == ["a"]
    assert [r.name for r in parse(row("a", 0.8), workspace=True)[0]] == ["workspace", "a"]


def test_experiment_states_for_sweep_monitoring():
    rows = [*head(), row("a", 0.8), row("q", None, state="Queued"), row("f", None, state="Failed")]
    assert runs.experiment_states(rows) == {"a": "Success", "q": "Queued", "f": "Failed"}


# ------------------------------------------------------------------ the report


def table_row(text: str, label: str) -> list[str]:
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells and cells[0].strip("*").removesuffix(" (baseline)") == label:
            return cells
    raise AssertionError(f"no row {label!r}")


def header_of(text: str, section: str) -> list[str]:
    line = text.split(section)[1].split("\n| ")[1]
    return [c.strip() for c in line.strip("|").split("|")]


def write_rows(tmp_path, *rows: dict):
    path = tmp_path / "rows.json"
    path.write_text(json.dumps([*head(), *rows]))
    return path


def test_report_end_to_end(tmp_path, capsys):
    rows = write_rows(
        tmp_path,
        row("tfidf", 0.80, loss=0.60, **{"train.method": "tfidf"}),
        row("full", 0.88, f1=0.89, **{"train.method": "full", "train.lr": 0.0001}, trainable=22e6),
        row("qv32", 0.92, loss=0.25, **{"lora.r": 32.0}),
        row("s1", 0.84, **{"train.seed": 1.0}),
        row("s2", 0.86, **{"train.seed": 2.0}),
        row("flat", 0.25, **{"lora.dora": "True"}),
        row("broken", None, state="Failed"),
    )
    out = tmp_path / "c.md"
    compare.main(["--input", str(rows), "--out", str(out)])
    text, png = out.read_text(), out.with_suffix(".png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    header = header_of(text, "## All experiments")
    best = table_row(text, "qv32")
    assert all(c.startswith("**") and c.endswith("**") for c in best)
    assert best[header.index("test acc")] == "**0.9200**"
    seeds = table_row(text, "s1, s2")
    assert seeds[header.index("test acc")] == "0.8500 ± 0.0141" and seeds[header.index("seeds")] == "1, 2"
    tfidf = table_row(text, "tfidf")
    assert tfidf[header.index("r")] == tfidf[header.index("lr")] == "–"
    assert table_row(text, "full")[header.index("trainable params")] == "22,000,000"
    change = text.split("## Change against the baseline")[1]
    ch = header_of(text, "## Change against the baseline")
    assert table_row(change, "qv32")[ch.index("test acc")] == "**+15.00%**"  # (0.92 - 0.80) / 0.80
    assert table_row(change, "qv32")[ch.index("test loss")] == "**+58.33%**"  # (0.60 - 0.25) / 0.60
    assert table_row(change, "tfidf")[ch.index("test acc")] == "baseline"
    assert "flat (dora, seed 42): test accuracy 0.2500 <= majority-class accuracy 0.2500" in text
    assert table_row(text, "flat")[header.index("test acc")] == "0.2500 ⚠"
    assert "- broken (" in text and "failed (see `dvc queue logs broken`)" in text
    assert "best by test.accuracy: qv32" in capsys.readouterr().out


def run_compare(args: list[str], cwd):
    return run([sys.executable, "-m", "lora_dvc.compare", *args], cwd, check=False)


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not JSON"),
        ('{"rev": 1}', "not `dvc.api.exp_show()` rows"),
        (json.dumps(head()), "no finished experiment with metrics to compare"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, content, message):
    (tmp_path / "rows.json").write_text(content)
    result = run_compare(["--input", "rows.json", "--out", "c.md"], tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "c.md").exists()


def test_unknown_baseline_and_exclude_exit_2(tmp_path):
    write_rows(tmp_path, row("a", 0.8))
    result = run_compare(["--input", "rows.json", "--baseline", "tfidf"], tmp_path)
    assert result.returncode == 2 and "no finished tfidf experiment; methods present: lora" in result.stderr
    result = run_compare(["--input", "rows.json", "--exclude", "nope"], tmp_path)
    assert result.returncode == 2 and "--exclude: no run named nope; the runs are a" in result.stderr


def test_outside_a_dvc_repo_exits_2(tmp_path):
    result = run_compare([], tmp_path)
    assert result.returncode == 2 and result.stderr.startswith("error: dvc.api.")


# ------------------------------------------------------------------ sweep monitoring (scripts/sweep_wait.py)


def load_sweep_wait():
    import importlib.util

    spec = importlib.util.spec_from_file_location("sweep_wait", ROOT / "scripts" / "sweep_wait.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sweep_wait_follows_new_experiments_restarts_stalled_workers_and_retries(monkeypatch):
    sweep_wait = load_sweep_wait()
    old = {"old": "Failed"}
    listings = iter(
        [
            {**old, "a": "Queued", "b": "Queued"},
            {**old, "a": "Queued", "b": "Queued"},
            {**old, "a": "Queued", "b": "Queued"},  # third poll with nothing running: workers restarted
            RuntimeError("a run's temporary workspace vanished"),  # one failed listing is retried
            {**old, "a": "Running", "b": "Queued"},
            {**old, "a": "Success", "b": "Failed"},
        ]
    )

    def states(rev=None):
        item = next(listings)
        if isinstance(item, Exception):
            raise sweep_wait.UserError(str(item))
        return item

    restarts = []
    monkeypatch.setattr(sweep_wait, "states_in_child", states)
    monkeypatch.setattr(sweep_wait, "restart_workers", restarts.append)
    assert sweep_wait.wait({"old"}, jobs=2, poll=0) == {"a": "Success", "b": "Failed"}
    assert restarts == [2]


def test_sweep_wait_lists_in_a_child_and_a_hung_listing_is_a_failed_one(monkeypatch, tmp_path):
    sweep_wait = load_sweep_wait()
    # a real child: outside a DVC repository the listing fails with one line, not a hang
    monkeypatch.chdir(tmp_path)
    with pytest.raises(sweep_wait.UserError):
        sweep_wait.states_in_child(None)
    # a child that never answers (dvc.api.exp_show stuck in a futex wait) is killed and counts as failed
    monkeypatch.setattr(sweep_wait, "LISTING_TIMEOUT", 1)
    hang = tmp_path / "hang.py"
    hang.write_text("import time\ntime.sleep(30)\n")
    monkeypatch.setattr(sweep_wait, "__file__", str(hang))
    with pytest.raises(sweep_wait.UserError, match="did not answer within 1 s"):
        sweep_wait.states_in_child(None)
