"""evaluate: the trained model on the test split -> metrics, a confusion matrix, the predictions.

Loads models/classifier through the one classifier loader (LoRA merged), scores the tokenized test
split on the train stage's device and precision, and writes accuracy, macro-F1, log loss, per-class
scores, mean confidence, the majority-class floor and `learned` (false, with a warning, when test
macro-F1 is within metrics.LEARNED_MARGIN of the floor). Multi-label: sigmoid probabilities at or
above evaluate.threshold, subset accuracy, macro/micro-F1, per-label scores and counts.
Outputs: metrics/test.json (the compared numbers); records/evaluate/metrics.json,
records/evaluate/plots/sklearn/confusion_matrix.json (DVCLive), records/evaluate/predictions.csv.
"""

from __future__ import annotations

import logging
import time

import pandas as pd
from dvclive import Live

from lora_dvc.artifacts import (
    EVAL_LIVE,
    EVAL_PREDICTIONS,
    MODEL,
    TEST_METRICS,
    read_prepared,
    read_tokenized,
    write_metrics,
    write_table,
)
from lora_dvc.classifier import load_classifier
from lora_dvc.metrics import compared_test, not_learned_advice, test_summary
from lora_dvc.runner import run_stage

log = logging.getLogger("evaluate")


def main() -> None:
    clf = load_classifier(MODEL, precision=None)  # straight onto train.device, at train.precision
    task = clf.task
    test = read_tokenized("test")
    texts = read_prepared("test")["text"].tolist()

    if clf.runtime is not None:
        log.info("scoring %d test rows on %s in %s", len(test), clf.runtime.device, clf.runtime.precision)
    started = time.perf_counter()
    probs = clf.probabilities(texts, tokenized=test, progress=True)
    seconds = time.perf_counter() - started

    metrics = test_summary(test.labels, read_tokenized("train").labels, probs, clf.labels, task.threshold)
    metrics["samples_per_second"] = round(len(test) / seconds, 1)
    if task.multi_label:
        write_multi_label_outputs(metrics, test.labels, probs, clf)
    else:
        write_outputs(metrics, test.labels, probs, clf.labels)
    log.info(
        "test accuracy %.4f, macro-F1 %.4f (majority class: accuracy %.4f, macro-F1 %.4f), %.0f samples/s",
        metrics["accuracy"],
        metrics["macro_f1"],
        metrics["majority_accuracy"],
        metrics["majority_macro_f1"],
        metrics["samples_per_second"],
    )
    if task.multi_label:
        log.info(
            "test micro-F1 %.4f (most frequent label set %s: micro-F1 %.4f) at threshold %g",
            metrics["micro_f1"],
            metrics["majority_label_set"],
            metrics["majority_micro_f1"],
            task.threshold,
        )
    if not metrics["learned"]:
        log.warning("WARNING: %s", not_learned_advice("test", metrics["macro_f1"], metrics["majority_macro_f1"]))


def write_outputs(metrics: dict, truth, probs, labels: list[str]) -> None:
    """The details and the confusion matrix through DVCLive, predictions.csv beside them; metrics/test.json."""
    actual = [labels[i] for i in truth]
    predicted = [labels[i] for i in probs.argmax(axis=1)]
    with Live(dir=str(EVAL_LIVE), save_dvc_exp=False, dvcyaml=None) as live:
        live.summary["test"] = metrics
        live.log_sklearn_plot(
            "confusion_matrix", actual, predicted, name="confusion_matrix", title="Test confusion matrix"
        )
    write_table(
        pd.DataFrame({"label": actual, "predicted": predicted, "confidence": probs.max(axis=1).round(6)}),
        EVAL_PREDICTIONS,
    )
    write_metrics(TEST_METRICS, compared_test(metrics))


def write_multi_label_outputs(metrics: dict, truth, probs, clf) -> None:
    """Multi-label: the details through DVCLive (no confusion matrix: per-label counts are in the summary),
    predictions.csv with the true and predicted label sets joined by data.label_delimiter, metrics/test.json."""
    task = clf.task
    with Live(dir=str(EVAL_LIVE), save_dvc_exp=False, dvcyaml=None) as live:
        live.summary["test"] = metrics
    actual = [task.join(task.names(row)) for row in truth]
    write_table(
        pd.DataFrame(
            {
                "label": actual,
                "predicted": [task.join(s) for s in task.predicted(probs)],
                "confidence": clf.confidence(probs).round(6),
            }
        ),
        EVAL_PREDICTIONS,
    )
    write_metrics(TEST_METRICS, compared_test(metrics))


if __name__ == "__main__":
    run_stage(main)
