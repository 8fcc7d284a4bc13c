"""Length-sorted batches over the tokenized splits, for inference (evaluate, predict, export), and the one
padding rule (`padded`), which training's XLA collator (lora_dvc.collators) uses too.

On CPU and CUDA, rows are sorted by length and each batch is padded to its own longest row, rounded
up to a multiple of 8 (params.padded_length), as training's batches are: short texts stay short and
few padded tokens are computed. With static shapes (XLA) each row goes to the smallest length
bucket that holds it and batches are drawn within a bucket and padded to its length, so the set of
shapes is bounded (one graph per bucket).
"""

from __future__ import annotations

import numpy as np
import torch

from lora_dvc.artifacts import TokenizedSplit  # noqa: F401 (the format's reader lives with its writer)
from lora_dvc.params import padded_length
from lora_dvc.tokenization import bucket_of


def bucket_rows(lengths: np.ndarray, buckets: list[int]) -> dict[int, np.ndarray]:
    """Row indices per bucket length (rows longer than the last bucket are already truncated)."""
    which = bucket_of(lengths, buckets)
    return {buckets[b]: np.flatnonzero(which == b) for b in range(len(buckets)) if (which == b).any()}


def make_batches(
    split: TokenizedSplit, buckets: list[int], batch_size: int, static_shapes: bool = False
) -> list[tuple[int, np.ndarray]]:
    """A list of (padded length, row indices) batches. Static shapes: bucket by bucket in row order, each
    padded to its bucket. Otherwise: rows shortest first, each batch padded to its longest row rounded up
    to a multiple of 8, never past the last bucket (max_length: rows never exceed it, the model's positions may)."""
    if static_shapes:
        return [
            (length, rows[start : start + batch_size])
            for length, rows in bucket_rows(split.lengths, buckets).items()
            for start in range(0, len(rows), batch_size)
        ]
    order = np.argsort(split.lengths, kind="stable")
    batches = []
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        longest = int(split.lengths[rows[-1]])
        batches.append((min(padded_length(longest), max(buckets)), rows))
    return batches


def padded(ids: list, length: int, pad_id: int, types: list | None = None, rows: int | None = None) -> dict:
    """The one padding rule: each row's ids (and token types) left-aligned in a `length`-wide tensor, pad_id
    after them, attention 1 on the real tokens; `rows` rows in all (the ones past len(ids) empty)."""
    n = len(ids) if rows is None else rows
    input_ids = np.full((n, length), pad_id, dtype=np.int64)
    attention = np.zeros((n, length), dtype=np.int64)
    type_ids = None if types is None else np.zeros((n, length), dtype=np.int64)
    for i, row in enumerate(ids):
        used = min(len(row), length)
        input_ids[i, :used] = row[:used]
        attention[i, :used] = 1
        if type_ids is not None:
            type_ids[i, :used] = types[i][:used]
    batch = {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(attention)}
    if type_ids is not None:
        batch["token_type_ids"] = torch.from_numpy(type_ids)
    return batch


def collate(split: TokenizedSplit, length: int, rows: np.ndarray, pad_id: int, pad_rows_to: int | None = None) -> dict:
    """Tensors for one batch, padded to `length`; optionally padded with empty rows (label -100,
    ignored by the loss and the metrics) to a fixed batch size for static shapes."""
    spans = [(split.offsets[row], split.offsets[row + 1]) for row in rows]
    types = None if split.types is None else [split.types[start:end] for start, end in spans]
    batch = padded([split.ids[start:end] for start, end in spans], length, pad_id, types, pad_rows_to)
    labels = np.full((len(batch["input_ids"]), *split.labels.shape[1:]), -100, dtype=np.int64)  # multi-hot rows too
    labels[: len(rows)] = split.labels[rows]
    batch["labels"] = torch.from_numpy(labels)
    if pad_rows_to is not None:
        batch["attention_mask"][len(rows) :, 0] = 1  # padded rows attend to one token so softmax stays finite
    return batch


def model_inputs(batch: dict, device) -> dict:
    """The batch's model inputs (ids, mask, token types where the split has them) on `device`."""
    return {k: batch[k].to(device) for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
