"""Batched, bucketed inference: class probabilities for every row of a tokenized split."""
from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from stages.batching import TokenizedSplit, collate, make_batches


@torch.inference_mode()
def predict_proba(
    model: torch.nn.Module,
    split: TokenizedSplit,
    buckets: list[int],
    batch_size: int,
    pad_id: int,
    device: torch.device,
    desc: str = "predict",
    progress: bool = True,
) -> np.ndarray:
    """(rows, classes) probabilities in row order; batches sorted by length, padded per bucket."""
    model.eval()
    probs = None
    batches = make_batches(split, buckets, batch_size, shuffle=False)
    for length, rows in tqdm(batches, desc=desc, unit="batch", disable=not progress, mininterval=1.0):
        batch = collate(split, length, rows, pad_id)
        logits = model(
            input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)
        ).logits
        out = torch.softmax(logits.float(), dim=-1).cpu().numpy()
        if probs is None:
            probs = np.zeros((len(split), out.shape[1]), dtype=np.float32)
        probs[rows] = out
    return probs
