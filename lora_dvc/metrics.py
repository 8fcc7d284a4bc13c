"""Classification metrics from predicted probabilities, computed with scikit-learn."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, log_loss, precision_recall_fscore_support

CONFIDENT = 0.9


def classification_metrics(labels: np.ndarray, probs: np.ndarray, names: list[str]) -> dict:
    """accuracy, macro_f1, loss, per-class precision/recall/F1, and prediction confidence."""
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
