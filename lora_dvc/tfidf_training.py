"""The train stage for `train.method: tfidf`: fit the TF-IDF + logistic regression baseline
(lora_dvc/tfidf.py) on the prepared train split, score val, and write the same outputs as the
transformer engine (lora_dvc/training.py): models/classifier/, metrics/train.json, records/train/."""

from __future__ import annotations

import logging
import time

from dvclive import Live

from lora_dvc.artifacts import MODEL, TRAIN_LIVE, TRAIN_METRICS, read_labels, read_prepared, write_metrics
from lora_dvc.atomic import atomic_dir
from lora_dvc.errors import UserError
from lora_dvc.metrics import classification_metrics, compared_train
from lora_dvc.params import Params
from lora_dvc.tfidf import TfidfClassifier

log = logging.getLogger("train")


def train_tfidf(params: Params) -> None:
    """The classical baseline: fit on train, report val, save to models/classifier/."""
    labels = read_labels()
    frames = {s: read_prepared(s) for s in ("train", "val")}
    if "labels" in frames["train"].columns:
        raise UserError(
            "train.method: tfidf fits single-label rows only, and data.multi_label is true; "
            "use train.method: lora or full for multi-label rows"
        )
    started = time.perf_counter()
    model = TfidfClassifier().fit(frames["train"]["text"].tolist(), frames["train"]["label"].to_numpy())
    seconds = time.perf_counter() - started
    metrics = {
        s: classification_metrics(f["label"].to_numpy(), model.predict_proba(f["text"].tolist()), labels)
        for s, f in frames.items()
    }
    with Live(dir=str(TRAIN_LIVE), save_dvc_exp=False, dvcyaml=None) as live:
        for split, values in metrics.items():
            for key in ("loss", "accuracy", "macro_f1"):
                live.log_metric(f"{split}/{key}", values[key])
        live.summary.update(
            {
                "trainable_params": model.n_params,
                "total_params": model.n_params,
                "trainable_percent": 100.0,
                "steps": 0,
                "train_seconds": round(seconds, 1),
                "train_samples_per_second": round(len(frames["train"]) / seconds, 2),
                "lora_weight_mean": 0.0,
            }
        )
    with atomic_dir(MODEL) as tmp:
        model.save(tmp)
    write_metrics(
        TRAIN_METRICS,
        compared_train(metrics["val"], 1, seconds, len(frames["train"]) / seconds, model.n_params, epochs=1, steps=0),
    )
    log.info(
        "tfidf: val accuracy %.4f, macro-F1 %.4f (%.0f s)",
        metrics["val"]["accuracy"],
        metrics["val"]["macro_f1"],
        seconds,
    )
