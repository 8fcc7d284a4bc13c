"""evaluate and report on real `dvc repro` runs of the tiny model: a run that cannot learn (a
learning rate of 1e-9) is flagged `test.learned: false` with a warning in the log and at the top of
the report; a run that learns (the TF-IDF baseline on the same rows) is not."""

from __future__ import annotations

import json

from conftest import dvc, write_params

REPORT_STAGES = ["repro", "report"]


def evaluate_and_report(repo, train: dict) -> tuple[dict, str, str]:
    write_params(repo, {"train": train})
    out = dvc(REPORT_STAGES, repo)
    test = json.loads((repo / "records/evaluate/metrics.json").read_text())["test"]
    return test, (repo / "reports/report.md").read_text(), out.stdout + out.stderr


def test_a_model_that_did_not_learn_is_flagged_and_one_that_did_is_not(repo):
    test, report, log = evaluate_and_report(repo, {"lr": 1e-9})
    assert test["learned"] is False, test
    assert "WARNING: the model did not learn" in log and "train.lr" in log
    first_lines = "\n".join(report.splitlines()[:4])
    assert "WARNING: the model did not learn" in first_lines and "train.epochs" in first_lines
    assert "learned" in dvc(["metrics", "show"], repo).stdout  # a metric dvc shows, as `dvc exp show` does

    # the randomly initialised tiny transformer does not learn this excerpt in seconds; TF-IDF does,
    # through the same evaluate and report stages
    test, report, log = evaluate_and_report(repo, {"method": "tfidf"})
    assert test["learned"] is True, test
    assert test["macro_f1"] > test["majority_macro_f1"] + 0.05
    assert "did not learn" not in log and "did not learn" not in report
