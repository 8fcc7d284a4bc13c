"""Every figure block in README.md, bench/README.md and docs/*.md is what its newest raw record gives.

`bench/figures.py` renders each `<!-- figures:NAME -->` block from the newest bench/results/<kind>-<stamp>.json
of its kind; `--check` reports a block whose quoted text differs. The default study's record must also hold the
committed metrics, and README's first screen must quote it.
"""

from __future__ import annotations

import json
import re
import sys

import pytest
from helpers import ROOT

sys.path.insert(0, str(ROOT / "bench"))
import figures  # noqa: E402


def minutes(seconds: float) -> str:
    whole = round(seconds)
    return f"{whole // 60} min {whole % 60} s"


def test_every_figures_block_is_its_records_rendering():
    assert figures.run(check=True) == []


def test_every_quoted_record_carries_its_evidence_and_no_other_record_is_kept():
    quoted = figures.quoted_records()
    for path, r in quoted:
        where = path.name
        assert r["command"].startswith("python bench/") and re.match(r"\d{4}-?\d{2}-?\d{2}T", r["date"]), where
        assert r["host"]["tree"] and r["host"]["cpu"] and r["host"]["cores"] and "avx512_bf16" in r["host"], where
        for run in r["runs"]:  # the load of each timed run: other processes' cores and the load average
            load = run.get("load", run)
            assert load["other_cores"] is not None and load["load1_before"] is not None, (where, run)
        if "seeds" in r:  # accuracy: 3 seeds of every config
            per_config = {c: {x["seed"] for x in r["runs"] if x["config"] == c} for c in r["configs"]}
            assert all(len(seeds) >= 3 for seeds in per_config.values()), (where, per_config)
        else:  # speed: 3 repeats
            repeats = r.get("repeats") or (r.get("args") or {}).get("repeats") or len(r["runs"])
            assert repeats >= 3, where
    kept = set((ROOT / "bench/results").glob("*.json"))
    assert kept == {path for path, _ in quoted}, "records nothing quotes are deleted, not kept as history"


def test_the_truncation_default_is_the_one_its_record_measured_better():
    import yaml

    _, record = figures.newest("long-texts")
    winner, gaps = figures.truncation_winner(record)
    assert len(gaps) >= 3, "3 seeds of head and head_tail at equal max_length"
    assert yaml.safe_load((ROOT / "params.yaml").read_text())["model"]["truncation"] == winner


@pytest.mark.parametrize("kind", sorted(figures.FASTER))
def test_a_faster_recipe_is_the_default_only_where_its_record_backs_it(kind):
    """train.patience (small-files) and train.min_steps (min-steps): params.yaml ships the value the newest
    record backs, the faster recipe's only where it was as accurate over 3 seeds and faster."""
    import yaml

    _, record = figures.newest(kind)
    verdict = figures.faster_verdict(kind, record)
    assert len(verdict["seeds"]) >= 3, "3 seeds of the faster recipe and today's"
    section, key = figures.FASTER[kind][2].split(".")
    assert yaml.safe_load((ROOT / "params.yaml").read_text())[section][key] == verdict["value"], verdict


def test_the_check_names_the_block_whose_figure_differs():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(
        r"(<!-- figures:default-study -->.*?)(\d+(?:\.\d+)?) s(.*?<!-- /figures:default-study -->)", text, re.S
    )
    assert match, "README must carry the default-study block"
    wrong = text[: match.start(2)] + str(float(match.group(2)) + 1) + text[match.end(2) :]
    problems = figures.check_text(wrong, "README.md")
    assert len(problems) == 1 and "'default-study' differs from its record" in problems[0]
    assert figures.check_text(text.replace("figures:default-study -->", "figures:no-such -->"), "x") != []


def test_the_newest_record_of_a_kind_is_the_source(tmp_path, monkeypatch):
    monkeypatch.setattr(figures, "RESULTS", tmp_path)
    for stamp, repeats in (("20260101T000000", 3), ("20260301T000000", 1), ("20260201T000000", 3)):
        (tmp_path / f"step-levers-{stamp}.json").write_text(json.dumps({"repeats": repeats, "at": stamp}))
    (tmp_path / "step-levers-frozen-bf16-20261128.json").write_text(json.dumps({"repeats": 9, "at": "other"}))
    assert figures.newest("step-levers")[1]["at"] == "20260301T000000"
    assert figures.newest("step-levers", lambda r: r["repeats"] >= 3)[1]["at"] == "20260201T000000"
    with pytest.raises(figures.FigureError):
        figures.newest("stock-recipe")


def test_the_default_study_record_holds_the_committed_scores():
    path, rec = figures.default_study()
    test = json.loads((ROOT / "metrics/test.json").read_text())["test"]
    train = json.loads((ROOT / "metrics/train.json").read_text())
    assert rec["test"] == test and rec["val"] == train["val"], f"{path.name} is not the committed run"
    assert len(rec["runs"]) >= 3 and rec["runs"][-1]["test_accuracy"] == test["accuracy"]  # the last run is committed
    stages = ["prepare", "tokenize", "train", "evaluate", "report", "export"]
    for run in rec["runs"]:  # each run's total is its stages' sum, with the load it ran under
        assert list(run["stage_seconds"]) == stages and run["other_cores"] is not None
        assert abs(run["total_seconds"] - sum(run["stage_seconds"].values())) < 0.5
    totals = sorted(run["total_seconds"] for run in rec["runs"])
    assert rec["total_seconds"] == {"min": totals[0], "median": totals[len(totals) // 2], "max": totals[-1]}
    assert rec["command"].startswith("python bench/default_study.py") and rec["date"] and rec["host"]["tree"]


def test_readme_first_screen_quotes_the_record():
    _, rec = figures.default_study()
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())  # wrapping aside
    first = readme.split("```bash")[0]  # the first screen
    quoted = re.search(
        r"measured on this host \(([^)]*)\): (\d+ min \d+ s) \((\d+ min \d+ s) to (\d+ min \d+ s) over (\d+) runs\) "
        r"from scratch, test accuracy (0\.\d{4}), macro-F1 (0\.\d{4})",
        first,
    )
    assert quoted, "README's first screen must quote the default study's record"
    host, median, low, high, runs, accuracy, macro_f1 = quoted.groups()
    t = rec["total_seconds"]
    assert (median, low, high) == (minutes(t["median"]), minutes(t["min"]), minutes(t["max"]))
    assert int(runs) == len(rec["runs"]) >= 3
    assert accuracy == f"{rec['test']['accuracy']:.4f}" and macro_f1 == f"{rec['test']['macro_f1']:.4f}"
    native = rec["host"]["avx512_bf16"] or rec["host"]["amx"]
    assert ("no native bf16" in host) == (not native) and ("AVX2" in host) == (not native)
