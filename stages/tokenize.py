"""tokenize: prepared splits -> token ids, truncated to model.max_length, in a compact format.

Resolves `model.max_length: auto` (train's p95 token length, rounded up to a multiple of 64, at
most the model's positions and 512) and `model.length_buckets: auto` (quarters of the length);
tokenizes each split (`model.truncation`, sentence pairs through the tokenizer's pair API:
lora_dvc/tokenization.py) into one unpadded .npz of ids, offsets and labels (multi-hot for
multi-label; lora_dvc.artifacts), batches being padded later by train and evaluate. The choice
goes to data/tokenized/meta.json (read by train, evaluate and predict) and, with token-length
statistics per split, to records/tokenize.json.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from lora_dvc import artifacts
from lora_dvc.modeling import check_max_length, load_tokenizer, model_positions
from lora_dvc.params import ModelParams, bucket_lengths, load_params
from lora_dvc.runner import run_stage
from lora_dvc.tokenization import (
    AUTO_BUDGET,
    AUTO_PERCENTILE,
    AUTO_STEP,
    auto_length_cap,
    choose_max_length,
    length_stats,
    token_types,
    tokenize_texts,
)

log = logging.getLogger("tokenize")


def main() -> None:
    params = load_params()
    model = params.model
    tokenizer = load_tokenizer(model.name)
    frames = {split: artifacts.read_prepared(split) for split in artifacts.SPLITS}
    pairs = {s: f["text_pair"].tolist() if "text_pair" in f.columns else None for s, f in frames.items()}
    multi_label = "labels" in frames["train"].columns  # multi-hot labels (rows, labels) in the .npz
    n_labels = len(artifacts.read_labels()) if multi_label else 0
    max_length, auto = resolve_max_length(model, tokenizer, frames["train"], pairs["train"])
    buckets = bucket_lengths(max_length, model.length_buckets)
    encoded, stats = {}, {}
    for split, frame in frames.items():
        ids, truncated = tokenize_texts(
            tokenizer, frame["text"].tolist(), max_length, split, pairs=pairs[split], truncation=model.truncation
        )
        types = token_types(tokenizer, ids) if pairs[split] is not None else None
        encoded[split] = (ids, artifacts.prepared_labels(frame, n_labels), types)
        stats[split] = length_stats(np.fromiter(map(len, ids), dtype=np.int64, count=len(ids)), truncated, buckets)
    meta = tokenized_meta(model, tokenizer, max_length, buckets, auto, multi_label, pairs["train"] is not None)
    artifacts.write_tokenized(encoded, meta)
    choice = {"max_length": max_length, "length_buckets": buckets, "truncation": model.truncation, "auto": auto}
    artifacts.write_metrics(artifacts.TOKENIZE_STATS, {**stats, "choice": choice})
    log_stats(stats)


def resolve_max_length(
    model: ModelParams, tokenizer, train: pd.DataFrame, train_pairs: list | None
) -> tuple[int, dict | None]:
    """model.max_length, checked against the model's positions; for `auto`, the length chosen from the
    train split's token lengths and how it was chosen (None when it was set)."""
    positions = model_positions(model.name)
    if model.max_length != "auto":
        check_max_length(model.name, model.max_length, positions)  # before any work, as train would refuse it
        return model.max_length, None
    ids, _ = tokenize_texts(
        tokenizer, train["text"].tolist(), auto_length_cap(positions), "lengths", pairs=train_pairs
    )
    lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
    max_length = choose_max_length(lengths, positions)
    auto = {
        "rule": f"p{AUTO_PERCENTILE} of train token lengths, rounded up to a multiple of {AUTO_STEP}, "
        f"at most the model's positions and {AUTO_BUDGET}",
        "train_tokens_p95": int(np.percentile(lengths, AUTO_PERCENTILE)),
        "positions": positions,
        "max_length": max_length,
    }
    log.info("model.max_length auto: %d (%s)", max_length, auto["rule"])
    return max_length, auto


def tokenized_meta(
    model: ModelParams,
    tokenizer,
    max_length: int,
    buckets: list[int],
    auto: dict | None,
    multi_label: bool,
    pairs: bool,
) -> dict:
    """data/tokenized/meta.json: keys beyond the first three only when they say something, so a
    default run's folder stays byte-identical."""
    meta = {"tokenizer": model.name, "pad_token_id": tokenizer.pad_token_id, "max_length": max_length}
    if "auto" in (model.max_length, model.length_buckets):
        meta["length_buckets"] = buckets
    if model.truncation != "head":
        meta["truncation"] = model.truncation
    if auto:
        meta["auto"] = auto
    if multi_label:  # lora_dvc.task.Task reads it: train sets problem_type, the classifier loader too
        meta["multi_label"] = True
    if pairs:  # sentence pairs: a record of the data (the token type ids carry them to the model)
        meta["pairs"] = True
    return meta


def log_stats(stats: dict) -> None:
    for split, s in stats.items():
        log.info(
            "%s: %d rows, mean %.1f tokens, p95 %d, %.1f%% truncated",
            split,
            s["rows"],
            s["tokens_mean"],
            s["tokens_p95"],
            100 * s["truncated_fraction"],
        )


if __name__ == "__main__":
    run_stage(main)
