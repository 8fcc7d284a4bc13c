"""Metric computation on numbers worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lora_dvc.metrics import classification_metrics, majority_accuracy


def test_metrics_on_known_predictions():
    labels = np.array([0, 0, 1, 1, 2, 2])
    probs = np.array(
        [
            [0.95, 0.03, 0.02],  # right, confident
            [0.40, 0.50, 0.10],  # wrong (1)
            [0.10, 0.80, 0.10],  # right
            [0.05, 0.91, 0.04],  # right, confident
            [0.20, 0.20, 0.60],  # right
            [0.60, 0.10, 0.30],  # wrong (0)
        ]
    )
    m = classification_metrics(labels, probs, ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(4 / 6, abs=1e-6)
    # class a: tp 1, fp 1, fn 1 -> p .5 r .5; b: tp 2 fp 1 fn 0 -> p 2/3 r 1; c: tp 1 fp 0 fn 1 -> p 1 r .5
    f1 = [0.5, 0.8, 2 / 3]
    assert m["macro_f1"] == pytest.approx(sum(f1) / 3, abs=1e-6)
    assert m["per_class"]["b"]["precision"] == pytest.approx(2 / 3, abs=1e-6)
    assert m["per_class"]["c"]["recall"] == pytest.approx(0.5)
    assert m["per_class"]["a"]["support"] == 2
    expected_loss = -np.mean(np.log([0.95, 0.40, 0.80, 0.91, 0.60, 0.30]))
    assert m["loss"] == pytest.approx(expected_loss, abs=1e-5)
    assert m["mean_confidence"] == pytest.approx(np.mean([0.95, 0.5, 0.8, 0.91, 0.6, 0.6]), abs=1e-6)
    assert m["confident_fraction"] == pytest.approx(2 / 6, abs=1e-6)


def test_majority_accuracy():
    assert majority_accuracy(np.array([2, 2, 1, 0]), np.array([2, 1, 2, 2])) == 0.75
    assert not math.isnan(majority_accuracy(np.array([0]), np.array([1])))


def test_majority_macro_f1_and_the_learned_flag():
    from lora_dvc.metrics import LEARNED_MARGIN, learned, majority_macro_f1, test_summary

    # train's majority is class 1; on a balanced 4-class test set always-1 has F1 2/5 for class 1, 0 elsewhere
    test = np.array([0, 1, 2, 3] * 5)
    assert majority_macro_f1(np.array([1, 1, 0]), test, 4) == pytest.approx((2 / 5) / 4)
    assert learned(0.5, 0.1) and not learned(0.1 + LEARNED_MARGIN, 0.1) and not learned(0.12, 0.1)
    assert not learned(0.16, 0.1, accuracy=0.29, baseline_accuracy=0.25)  # chance level: guesses spread

    names = ["a", "b", "c", "d"]
    constant = np.tile([0.1, 0.7, 0.1, 0.1], (len(test), 1))  # a model stuck at the majority class
    summary = test_summary(test, np.array([1, 1, 0]), constant, names)
    assert summary["learned"] is False and summary["majority_macro_f1"] == pytest.approx(0.1)
    perfect = np.eye(4)[test] * 0.9 + 0.025
    assert test_summary(test, np.array([1, 1, 0]), perfect, names)["learned"] is True
