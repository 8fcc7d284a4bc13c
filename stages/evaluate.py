"""evaluate: the trained model on the test split -> metrics and a confusion matrix.

Accuracy, macro-F1, log loss, per-class precision/recall/F1, mean prediction confidence and the
share of predictions above 0.9, plus the majority-class accuracy every model must beat. LoRA
adapters are merged into the base weights first (one matmul per layer instead of two), and
batches are large, length-bucketed and run under torch.inference_mode.

Outputs: metrics/evaluate/metrics.json and metrics/evaluate/plots/sklearn/confusion_matrix.json
(DVCLive), metrics/evaluate/predictions.csv.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pandas as pd
from dvclive import Live

from lora_dvc.batching import TokenizedSplit
from lora_dvc.device import Runtime
from lora_dvc.errors import UserError
from lora_dvc.runner import run_stage
from lora_dvc.inference import predict_proba
from lora_dvc.atomic import atomic_path
from lora_dvc.metrics import classification_metrics, majority_accuracy
from lora_dvc.modeling import load_trained
from lora_dvc.params import load_params
from lora_dvc.tfidf import TfidfClassifier

from lora_dvc.artifacts import EVAL_LIVE as LIVE_DIR, LABELS, MODEL as MODEL_DIR, PREPARED, TOKENIZED as DATA_DIR
log = logging.getLogger("evaluate")


def main() -> None:
    params = load_params()
    labels = json.loads(LABELS.read_text(encoding="utf-8"))
    meta = json.loads((DATA_DIR / "meta.json").read_text())
    test = TokenizedSplit.load(DATA_DIR / "test.npz")
    train_labels = TokenizedSplit.load(DATA_DIR / "train.npz").labels
    if not MODEL_DIR.exists():
        raise UserError(f"{MODEL_DIR} not found; run the train stage first (dvc repro train)")
    started = time.perf_counter()
    if TfidfClassifier.is_saved_in(MODEL_DIR):
        texts = pd.read_csv(PREPARED / "test.csv", dtype={"text": str}, keep_default_na=False)["text"].tolist()
        probs = TfidfClassifier.load(MODEL_DIR).predict_proba(texts)
    else:
        runtime = Runtime.create(params.train.device, params.train.precision)
        model = load_trained(MODEL_DIR, params.model.name, labels)
        if hasattr(model, "merge_and_unload"):
            model = model.merge_and_unload()  # one matmul per layer instead of base + A @ B
        model.to(runtime.device)
        started = time.perf_counter()
        probs = predict_proba(model, test, params.buckets, params.evaluate.batch_size, meta["pad_token_id"],
                              runtime.device, desc="test", static_shapes=runtime.static_shapes, autocast=runtime.autocast())
    seconds = time.perf_counter() - started
    metrics = classification_metrics(test.labels, probs, labels)
    metrics["majority_accuracy"] = round(majority_accuracy(train_labels, test.labels), 6)
    metrics["samples_per_second"] = round(len(test) / seconds, 1)

    preds = probs.argmax(axis=1)
    with Live(dir=str(LIVE_DIR), save_dvc_exp=False, dvcyaml=None) as live:
        live.summary["test"] = metrics
        live.log_sklearn_plot(
            "confusion_matrix",
            [labels[i] for i in test.labels],
            [labels[i] for i in preds],
            name="confusion_matrix",
            title="Test confusion matrix",
        )
    table = pd.DataFrame({"label": [labels[i] for i in test.labels], "predicted": [labels[i] for i in preds],
                          "confidence": probs.max(axis=1).round(6)})
    with atomic_path(LIVE_DIR / "predictions.csv") as tmp:
        table.to_csv(tmp, index=False)
    log.info("test accuracy %.4f, macro-F1 %.4f (majority class %.4f), %.0f samples/s",
             metrics["accuracy"], metrics["macro_f1"], metrics["majority_accuracy"], metrics["samples_per_second"])


if __name__ == "__main__":
    run_stage(main)
