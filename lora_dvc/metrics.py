"""Classification metrics from predicted probabilities, computed with scikit-learn.

Single-label rows: softmax probabilities, argmax predictions. Multi-label rows (multi-hot labels):
sigmoid probabilities, a label predicted at or above `evaluate.threshold`; `accuracy` is then the
subset (exact-match) accuracy, beside macro- and micro-F1, and the floor is always predicting train's
most frequent label set.

scikit-learn is imported where a metric is computed: the report stage reads this module for its
constants and advice and need not pay sklearn's second of start-up.
"""

from __future__ import annotations

import numpy as np

from lora_dvc.task import Task

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
        "per_class": per_class(names, precision, recall, f1, support),
    }


def per_class(names: list[str], precision, recall, f1, support) -> dict:
    """sklearn's precision_recall_fscore_support arrays as {name: {precision, recall, f1, support}}."""
    return {
        name: {
            "precision": round(float(precision[i]), 6),
            "recall": round(float(recall[i]), 6),
            "f1": round(float(f1[i]), 6),
            "support": int(support[i]),
        }
        for i, name in enumerate(names)
    }


def tallied_scores(confusion: np.ndarray, multi_label: bool = False) -> tuple[float, float]:
    """Accuracy and macro-F1 of tallied counts, by scikit-learn (each count a weighted example). Single-label:
    a confusion matrix (rows actual, columns predicted). Multi-label: rows of per-label true positives,
    predictions and actuals, their last column the exact-match rows and all rows; accuracy is subset accuracy."""
    from sklearn.metrics import f1_score

    if multi_label:
        (tp, predicted, actual), exact, rows = confusion[:, :-1], confusion[0, -1], confusion[1, -1]
        eye = np.eye(len(tp), dtype=np.int64)
        none = np.zeros_like(eye)
        truth, preds = np.vstack([eye, none, eye]), np.vstack([eye, eye, none])
        weights = np.concatenate([tp, predicted - tp, actual - tp])
        accuracy = exact / rows if rows else 0.0
    else:
        truth, preds = np.indices(confusion.shape).reshape(2, -1)
        weights = confusion.ravel()
        accuracy = np.trace(confusion) / weights.sum() if weights.sum() else 0.0
    if not weights.sum():
        return 0.0, 0.0
    labels = list(range(confusion.shape[0])) if not multi_label else None
    f1 = f1_score(truth, preds, labels=labels, average="macro", sample_weight=weights, zero_division=0)
    return float(accuracy), float(f1)


def set_confidence(probs: np.ndarray) -> np.ndarray:
    """Multi-label: how sure each row's whole predicted set is, its least sure yes/no decision
    (min over labels of max(p, 1 - p)) at the 0.5 boundary."""
    return np.minimum.reduce(np.maximum(probs, 1 - probs), axis=1) if probs.shape[1] else np.ones(len(probs))


def multilabel_metrics(labels: np.ndarray, probs: np.ndarray, names: list[str], threshold: float) -> dict:
    """Multi-label rows (multi-hot `labels`, sigmoid `probs`): subset accuracy (`accuracy`, every label
    of the row right), macro- and micro-F1, mean binary cross-entropy (`loss`), per-label precision,
    recall, F1, support and tp/fp/fn/tn counts, and the confidence of the predicted sets."""
    from sklearn.metrics import accuracy_score, f1_score, log_loss, precision_recall_fscore_support

    truth = (np.asarray(labels) > 0.5).astype(np.int64)
    preds = Task(tuple(names), multi_label=True, threshold=threshold).decisions(probs)
    precision, recall, f1, support = precision_recall_fscore_support(truth, preds, average=None, zero_division=0)
    confidence = set_confidence(probs)
    tp, pred, actual = (truth & preds).sum(0), preds.sum(0), truth.sum(0)
    return {
        "accuracy": round(float(accuracy_score(truth, preds)), 6),
        "macro_f1": round(float(f1_score(truth, preds, average="macro", zero_division=0)), 6),
        "micro_f1": round(float(f1_score(truth, preds, average="micro", zero_division=0)), 6),
        "loss": round(float(log_loss(truth.ravel(), probs.ravel(), labels=[0, 1])), 6),
        "mean_confidence": round(float(confidence.mean()), 6),
        "confident_fraction": round(float((confidence > CONFIDENT).mean()), 6),
        "threshold": threshold,
        "per_class": per_class(names, precision, recall, f1, support),
        "per_label_counts": {
            name: {
                "tp": int(tp[i]),
                "fp": int(pred[i] - tp[i]),
                "fn": int(actual[i] - tp[i]),
                "tn": int(len(truth) - pred[i] - actual[i] + tp[i]),
            }
            for i, name in enumerate(names)
        },
    }


def majority_label_set(train_labels: np.ndarray) -> np.ndarray:
    """Multi-label: train's most frequent label set (multi-hot; the first in sorted order on a tie)."""
    sets, counts = np.unique((np.asarray(train_labels) > 0.5).astype(np.int64), axis=0, return_counts=True)
    return sets[counts.argmax()]


def multilabel_summary(
    test_labels: np.ndarray, train_labels: np.ndarray, probs: np.ndarray, names: list[str], threshold: float
) -> dict:
    """multilabel_metrics plus the floor of always predicting train's most frequent label set (subset
    accuracy, macro- and micro-F1) and `learned` (macro-F1 and subset accuracy above that floor's)."""
    from sklearn.metrics import accuracy_score, f1_score

    metrics = multilabel_metrics(test_labels, probs, names, threshold)
    truth = (np.asarray(test_labels) > 0.5).astype(np.int64)
    majority = majority_label_set(train_labels)
    floor = np.tile(majority, (len(truth), 1))
    metrics["majority_label_set"] = [name for name, on in zip(names, majority) if on]
    metrics["majority_accuracy"] = round(float(accuracy_score(truth, floor)), 6)
    metrics["majority_macro_f1"] = round(float(f1_score(truth, floor, average="macro", zero_division=0)), 6)
    metrics["majority_micro_f1"] = round(float(f1_score(truth, floor, average="micro", zero_division=0)), 6)
    metrics["learned"] = learned(
        metrics["macro_f1"], metrics["majority_macro_f1"], metrics["accuracy"], metrics["majority_accuracy"]
    )
    return metrics


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


def test_summary(
    test_labels: np.ndarray, train_labels: np.ndarray, probs: np.ndarray, names: list[str], threshold: float = 0.5
) -> dict:
    """classification_metrics plus the majority-class floor (accuracy, macro-F1) and `learned`;
    multilabel_summary for multi-hot labels (rows, labels), at `threshold`."""
    if np.ndim(test_labels) == 2:
        return multilabel_summary(test_labels, train_labels, probs, names, threshold)
    metrics = classification_metrics(test_labels, probs, names)
    baseline_f1 = majority_macro_f1(train_labels, test_labels, len(names))
    metrics["majority_accuracy"] = round(majority_accuracy(train_labels, test_labels), 6)
    metrics["majority_macro_f1"] = round(baseline_f1, 6)
    metrics["learned"] = learned(metrics["macro_f1"], baseline_f1, metrics["accuracy"], metrics["majority_accuracy"])
    return metrics


def compared_train(
    val: dict,
    best_epoch: int,
    seconds: float,
    samples_per_second: float,
    trainable: int,
    epochs: float,
    steps: int,
) -> dict:
    """metrics/train.json: the numbers of a training run that people compare across experiments.

    `val` holds the kept model's val scores (the best val pass's when more than one ran, else the last's);
    `epochs` and `steps` are what ran (train.min_steps may add epochs, a max_steps may end one early).
    Top-level names are not params sections, so `dvc exp show` columns never collide.
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
            "epochs": round(float(epochs), 2),
            "steps": int(steps),
        },
    }


def compared_test(summary: dict) -> dict:
    """metrics/test.json: test accuracy, macro-F1, loss (micro-F1 for multi-label) and `learned` (1 or 0)
    from test_summary's dict."""
    keys = ("accuracy", "macro_f1", "loss") + (("micro_f1",) if "micro_f1" in summary else ())
    return {"test": {**{k: summary[k] for k in keys}, "learned": int(bool(summary["learned"]))}}
