"""Classification metrics from predicted probabilities, computed with scikit-learn.

scikit-learn is imported where a metric is computed: the report stage reads this module for its
constants and advice and need not pay sklearn's second of start-up.
"""

from __future__ import annotations

import numpy as np

CONFIDENT = 0.9


def classification_metrics(labels: np.ndarray, probs: np.ndarray, names: list[str]) -> dict:
    """accuracy, macro_f1, loss, per-class precision/recall/F1, and prediction confidence."""
    from sklearn.metrics import accuracy_score, f1_score, log_loss, precision_recall_fscore_support

    ids = list(range(len(names)))
    preds = probs.argmax(axis=1)
    confidence = probs.max(axis=1)
    precision, recall, f1, support = precision_recall_fscore_support(labels, preds, labels=ids, zero_division=0)
    return {
        "accuracy": round(float(accuracy_score(labels, preds)), 6),
        "macro_f1": round(float(f1_score(labels, preds, labels=ids, average="macro", zero_division=0)), 6),
        "loss": round(float(log_loss(labels, probs, labels=ids)), 6),
        "mean_confidence": round(float(confidence.mean()), 6),
        "confident_fraction": round(float((confidence > CONFIDENT).mean()), 6),
        "per_class": {
            name: {
                "precision": round(float(precision[i]), 6),
                "recall": round(float(recall[i]), 6),
                "f1": round(float(f1[i]), 6),
                "support": int(support[i]),
            }
            for i, name in enumerate(names)
        },
    }


def majority_accuracy(train_labels: np.ndarray, test_labels: np.ndarray) -> float:
    """Accuracy of always predicting train's most frequent class: the floor any model must beat."""
    majority = np.bincount(train_labels).argmax()
    return float((test_labels == majority).mean())


# A model whose macro-F1 or accuracy is within this much (absolute) of always predicting the majority
# class has not learned the task: on 4 balanced classes the majority's macro-F1 is 0.10, and a
# chance-level model spreading its guesses scores macro-F1 0.15-0.25 but accuracy near 0.25 (the floor's).
LEARNED_MARGIN = 0.05


def majority_macro_f1(train_labels: np.ndarray, test_labels: np.ndarray, n_classes: int) -> float:
    """Macro-F1 of always predicting train's most frequent class (the floor for `learned`)."""
    from sklearn.metrics import f1_score

    majority = np.bincount(train_labels, minlength=n_classes).argmax()
    preds = np.full_like(test_labels, majority)
    return float(f1_score(test_labels, preds, labels=list(range(n_classes)), average="macro", zero_division=0))


def learned(
    macro_f1: float,
    baseline_macro_f1: float,
    accuracy: float = 1.0,
    baseline_accuracy: float = 0.0,
    margin: float = LEARNED_MARGIN,
) -> bool:
    """True when both macro-F1 and accuracy clear the majority-class baseline's by more than `margin`."""
    return macro_f1 > baseline_macro_f1 + margin and accuracy > baseline_accuracy + margin


def not_learned_advice(split: str, macro_f1: float, baseline_macro_f1: float) -> str:
    """The warning evaluate logs and the report shows when a model did not learn."""
    return (
        f"the model did not learn: {split} macro-F1 {macro_f1:.4f} or accuracy is within {LEARNED_MARGIN:g} of "
        f"always predicting the majority class (macro-F1 {baseline_macro_f1:.4f}). Try more optimizer steps "
        "(train.epochs, "
        "train.min_steps), a higher train.lr, or a larger model.max_length if many texts are truncated "
        "(records/tokenize.json truncated_fraction)."
    )


def test_summary(test_labels: np.ndarray, train_labels: np.ndarray, probs: np.ndarray, names: list[str]) -> dict:
    """classification_metrics plus the majority-class floor (accuracy, macro-F1) and `learned`."""
    metrics = classification_metrics(test_labels, probs, names)
    baseline_f1 = majority_macro_f1(train_labels, test_labels, len(names))
    metrics["majority_accuracy"] = round(majority_accuracy(train_labels, test_labels), 6)
    metrics["majority_macro_f1"] = round(baseline_f1, 6)
    metrics["learned"] = learned(metrics["macro_f1"], baseline_f1, metrics["accuracy"], metrics["majority_accuracy"])
    return metrics


def compared_train(val: dict, best_epoch: int, seconds: float, samples_per_second: float, trainable: int) -> dict:
    """metrics/train.json: the numbers of a training run that people compare across experiments.

    `val` holds the kept model's val scores (the best epoch's when train.patience restores it, else the
    last epoch's). Top-level names are not params sections, so `dvc exp show` columns never collide.
    """
    return {
        "val": {
            "accuracy": round(float(val["accuracy"]), 6),
            "macro_f1": round(float(val["macro_f1"]), 6),
            "loss": round(float(val["loss"]), 6),
            "best_epoch": int(best_epoch),
        },
        "fit": {
            "seconds": round(float(seconds), 1),
            "samples_per_second": round(float(samples_per_second), 2),
            "trainable_params": int(trainable),
        },
    }


def compared_test(summary: dict) -> dict:
    """metrics/test.json: test accuracy, macro-F1, loss and `learned` (1 or 0) from test_summary's dict."""
    keys = ("accuracy", "macro_f1", "loss")
    return {"test": {**{k: summary[k] for k in keys}, "learned": int(bool(summary["learned"]))}}
