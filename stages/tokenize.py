"""tokenize: prepared splits -> token ids, truncated to model.max_length, in a compact format.

Sentence pairs (prepared splits with a `text_pair` column, from `data.text_pair_column`) go through
the tokenizer's pair API: one sequence `[CLS] text [SEP] text_pair [SEP]` (BERT's special tokens;
each tokenizer its own), truncated 'longest_first'.

Each split becomes one .npz: `ids` (all token ids, int32, concatenated), `offsets` (row i is
ids[offsets[i]:offsets[i+1]]) and `labels`. No padding is stored: train and evaluate pad each
batch to the smallest of `model.length_buckets` that fits, so an XLA device compiles one graph
per bucket. Token-length statistics per split go to records/tokenize.json.
"""

from __future__ import annotations

import logging

import numpy as np

from lora_dvc import artifacts
from lora_dvc.modeling import load_tokenizer
from lora_dvc.params import load_params
from lora_dvc.runner import run_stage
from lora_dvc.tokenization import length_stats, tokenize_texts

log = logging.getLogger("tokenize")


def main() -> None:
    params = load_params()
    tokenizer = load_tokenizer(params.model.name)
    encoded, stats = {}, {}
    for split in artifacts.SPLITS:
        frame = artifacts.read_prepared(split)
        pairs = frame["text_pair"].tolist() if "text_pair" in frame.columns else None
        ids, truncated = tokenize_texts(tokenizer, frame["text"].tolist(), params.model.max_length, split, pairs=pairs)
        encoded[split] = (ids, frame["label"].to_numpy(np.int64))
        stats[split] = length_stats(
            np.fromiter(map(len, ids), dtype=np.int64, count=len(ids)), truncated, params.buckets
        )
    meta = {
        "tokenizer": params.model.name,
        "pad_token_id": tokenizer.pad_token_id,
        "max_length": params.model.max_length,
    }
    artifacts.write_tokenized(encoded, meta)
    artifacts.write_metrics(artifacts.TOKENIZE_STATS, stats)
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
