"""Batched, bucketed inference: class probabilities for every row of a tokenized split (softmax; per-label
sigmoids for a multi-label model)."""

from __future__ import annotations

from contextlib import nullcontext
from functools import partial

import numpy as np
import torch
from tqdm import tqdm

from lora_dvc.batching import TokenizedSplit, collate, make_batches, model_inputs
from lora_dvc.modeling import MULTI_LABEL


@torch.inference_mode()
def batched_probabilities(
    model: torch.nn.Module,
    split: TokenizedSplit,
    buckets: list[int],
    batch_size: int,
    pad_id: int,
    device: torch.device,
    desc: str = "predict",
    progress: bool = True,
    *,
    static_shapes: bool = False,
    rank: int = 0,
    world_size: int = 1,
    autocast=None,
) -> np.ndarray:
    """(rows, classes) probabilities in row order; batches of rows of similar length (batching.make_batches).

    With `static_shapes` every batch is padded to `batch_size` rows (padding rows are dropped from
    the result), so an XLA device sees one shape per bucket. With `world_size` > 1 this process
    handles every world_size-th batch and leaves the other rows NaN, for the caller to gather.
    """
    model.eval()
    # multi-label heads (config.problem_type): a sigmoid per label; single-label: a softmax over the classes
    multi_label = getattr(model.config, "problem_type", None) == MULTI_LABEL
    activate = torch.sigmoid if multi_label else partial(torch.softmax, dim=-1)
    probs = np.full((len(split), model.config.num_labels), np.nan, dtype=np.float32)
    batches = make_batches(split, buckets, batch_size, static_shapes)[rank::world_size]
    for length, rows in tqdm(batches, desc=desc, unit="batch", disable=not progress, mininterval=1.0):
        batch = collate(split, length, rows, pad_id, pad_rows_to=batch_size if static_shapes else None)
        with autocast or nullcontext():
            logits = model(**model_inputs(batch, device)).logits
        probs[rows] = activate(logits.float()).cpu()[: len(rows)].numpy()  # cut on the host: one XLA graph per bucket
    return probs


def merge_shards(shards: list[np.ndarray]) -> np.ndarray:
    """Combine the per-process outputs of a sharded batched_probabilities."""
    merged = shards[0].copy()
    for shard in shards[1:]:
        filled = ~np.isnan(shard[:, 0])
        merged[filled] = shard[filled]
    return merged
