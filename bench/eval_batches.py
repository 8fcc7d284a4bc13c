"""Inference batches: bucket padding (evaluate before) against length-sorted batches padded to their longest row.

    python bench/eval_batches.py                  # the workspace's trained model, 2,000 test rows, 3 repeats
    python bench/eval_batches.py --rows 0         # every test row

Scores a seeded sample of the tokenize stage's test split with the workspace's models/classifier, loaded as
the evaluate stage loads it (adapter merged, train.precision resolved for the CPU), through evaluate's own
loop (`inference.batched_probabilities`), with three batchings:

- `buckets-64`: every batch drawn within a length bucket and padded to it (evaluate before this change;
  XLA's batches, less the empty rows that fill its last batch of a bucket);
- `sorted-64`: rows shortest first, each batch padded to its longest row rounded up to 8 (evaluate now);
- `sorted-256`: the same at four times the batch (`evaluate.batch_size=256`).

The configs alternate in each repeat (A B C, B C A, ...). Writes bench/results/eval-batches-<time>.json:
seconds and rows/s per config (min / median / max), the tokens computed (padding included), accuracy and
macro-F1 on the rows, and the largest probability difference from `buckets-64`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from unittest import mock

import numpy as np
from benchlib import ROOT, alternate, log, save_probe, spread

CONFIGS = {"buckets-64": (True, 64), "sorted-64": (False, 64), "sorted-256": (False, 256)}  # (bucketed, batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=2000, help="test rows sampled (0: all)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    os.chdir(ROOT)
    sys.path.insert(0, str(ROOT))
    import torch
    from sklearn.metrics import accuracy_score, f1_score

    from lora_dvc import inference
    from lora_dvc.artifacts import MODEL, TokenizedSplit, read_tokenized
    from lora_dvc.batching import make_batches
    from lora_dvc.classifier import load_classifier

    clf = load_classifier(MODEL, precision=None, device="cpu")  # as evaluate: train.precision for this device
    test = read_tokenized("test")
    if test.multi_label:
        raise SystemExit("bench: the workspace's study is multi-label; run it on the default (single-label) study")
    rows = np.arange(len(test))
    if args.rows and args.rows < len(test):
        rows = np.sort(np.random.default_rng(0).choice(len(test), args.rows, replace=False))
    split = TokenizedSplit.from_ids([test.row(i)["input_ids"] for i in rows], test.labels[rows].tolist())
    buckets = list(clf.buckets)

    def bucketed_batches(split, buckets, batch_size, static_shapes):
        return make_batches(split, buckets, batch_size, static_shapes=True)  # without XLA's padding rows

    def score(name: str, rows: TokenizedSplit = split) -> np.ndarray:
        """Evaluate's own loop (inference.batched_probabilities) with the config's batching and batch size."""
        bucketed, size = CONFIGS[name]
        with mock.patch.object(inference, "make_batches", bucketed_batches if bucketed else make_batches):
            return inference.batched_probabilities(
                clf.model,
                rows,
                buckets,
                size,
                clf.pad_id,
                clf.device,
                progress=False,
                autocast=clf.autocast() if clf.autocast else None,
            )

    batchings = {name: make_batches(split, buckets, size, bucketed) for name, (bucketed, size) in CONFIGS.items()}
    score("sorted-64", TokenizedSplit.from_ids([split.row(i)["input_ids"] for i in range(128)]))  # warm-up
    runs, probs = [], {}
    for i, name in enumerate(alternate(list(CONFIGS), args.repeats)):
        started = time.perf_counter()
        probs[name] = score(name)
        seconds = time.perf_counter() - started
        runs.append({"config": name, "repeat": i // len(CONFIGS), "seconds": round(seconds, 3)})
        log(f"{name}: {seconds:.1f} s ({len(split) / seconds:.0f} rows/s)")

    truth = split.labels
    configs = {}
    for name, (bucketed, size) in CONFIGS.items():
        seconds = [r["seconds"] for r in runs if r["config"] == name]
        predicted = probs[name].argmax(axis=1)
        configs[name] = {
            "bucketed": bucketed,
            "batch_size": size,
            "seconds": spread(seconds),
            "rows_per_second": spread([len(split) / s for s in seconds]),
            "tokens_computed": int(sum(length * len(r) for length, r in batchings[name])),
            "accuracy": round(float(accuracy_score(truth, predicted)), 4),
            "macro_f1": round(float(f1_score(truth, predicted, average="macro")), 4),
            "max_abs_prob_diff_vs_buckets_64": float(np.abs(probs[name] - probs["buckets-64"]).max()),
        }
    before = configs["buckets-64"]["seconds"]["median"]
    save_probe(
        "eval-batches",
        {
            "set_up": f"models/classifier of this workspace ({clf.base}), {len(split)} test rows (seed 0), "
            f"buckets {buckets}, {torch.get_num_threads()} threads, {clf.device}, "
            f"{'autocast' if clf.autocast else 'fp32'}",
            "args": vars(args),
            "rows": len(split),
            "real_tokens": int(split.lengths.sum()),
            "configs": configs,
            "speedup_vs_buckets_64": {
                name: round(before / c["seconds"]["median"], 3) for name, c in configs.items() if name != "buckets-64"
            },
            "runs": runs,
        },
    )


if __name__ == "__main__":
    main()
