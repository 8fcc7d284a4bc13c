"""tokenize: prepared splits -> token ids, truncated to model.max_length, in a compact format.

`model.truncation`: head keeps a long text's first tokens; head_tail a quarter of them from the
head and the rest from the tail (lora_dvc/tokenization.py). `model.max_length: auto` picks the
length from the train split: its p95 token length rounded up to a multiple of 64, at most the
model's positions and 512; `model.length_buckets: auto` takes quarters of the length. The choice
goes to data/tokenized/meta.json (max_length, and length_buckets / truncation / auto when they are
not the plain defaults), which train, evaluate and predict read, and to records/tokenize.json.

Sentence pairs (prepared splits with a `text_pair` column, from `data.text_pair_column`) go through
the tokenizer's pair API: one sequence `[CLS] text [SEP] text_pair [SEP]` (BERT's special tokens;
each tokenizer its own), truncated 'longest_first'.

Each split becomes one .npz: `ids` (all token ids, int32, concatenated), `offsets` (row i is
ids[offsets[i]:offsets[i+1]]) and `labels`. No padding is stored: train and evaluate pad each
batch to the smallest of `model.length_buckets` that fits, so an XLA device compiles one graph
per bucket. Token-length statistics per split go to records/tokenize.json.

Multi-label splits (a `labels` column of ids joined by '|') store multi-hot `labels` (rows, labels),
and meta.json says `"multi_label": true`.
"""

from __future__ import annotations

import logging

import numpy as np

from lora_dvc import artifacts
from lora_dvc.modeling import check_max_length, load_tokenizer, model_positions
from lora_dvc.params import bucket_lengths, load_params
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
    auto = None
    max_length = model.max_length
    positions = model_positions(model.name)
    if max_length != "auto":
        check_max_length(model.name, max_length, positions)  # before any work, as train would refuse it
    else:
        ids, _ = tokenize_texts(
            tokenizer, frames["train"]["text"].tolist(), auto_length_cap(positions), "lengths", pairs=pairs["train"]
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
    buckets = bucket_lengths(max_length, model.length_buckets)
    encoded, stats = {}, {}
    for split, frame in frames.items():
        ids, truncated = tokenize_texts(
            tokenizer, frame["text"].tolist(), max_length, split, pairs=pairs[split], truncation=model.truncation
        )
        types = token_types(tokenizer, ids) if pairs[split] is not None else None
        encoded[split] = (ids, artifacts.prepared_labels(frame, n_labels), types)
        stats[split] = length_stats(np.fromiter(map(len, ids), dtype=np.int64, count=len(ids)), truncated, buckets)
    # keys beyond the first three only when they say something: a default run's folder stays byte-identical
    meta = {"tokenizer": model.name, "pad_token_id": tokenizer.pad_token_id, "max_length": max_length}
    if "auto" in (model.max_length, model.length_buckets):
        meta["length_buckets"] = buckets
    if model.truncation != "head":
        meta["truncation"] = model.truncation
    if auto:
        meta["auto"] = auto
    if multi_label:  # lora_dvc.task.Task reads it: train sets problem_type, the classifier loader too
        meta["multi_label"] = True
    if pairs["train"] is not None:  # sentence pairs (Task.pairs)
        meta["pairs"] = True
    artifacts.write_tokenized(encoded, meta)
    choice = {"max_length": max_length, "length_buckets": buckets, "truncation": model.truncation, "auto": auto}
    artifacts.write_metrics(artifacts.TOKENIZE_STATS, {**stats, "choice": choice})
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
