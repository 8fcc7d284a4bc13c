"""The one inference loop: outputs for every row of a tokenized split, in row order, on a Runtime's device
(evaluate, predict, export's check, and training's val pass on XLA)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from tqdm import tqdm

from lora_dvc.batching import TokenizedSplit, collate, make_batches, model_inputs
from lora_dvc.device import Runtime
from lora_dvc.task import Task


@torch.inference_mode()  # on XLA, Runtime.autocast swaps it for no_grad (torch_xla has no inference tensors)
def batched_logits(
    model: torch.nn.Module,
    split: TokenizedSplit,
    runtime: Runtime,
    buckets: list[int],
    batch_size: int,
    pad_id: int,
    activate: Callable[[torch.Tensor], torch.Tensor] | None = None,
    progress: bool = False,
) -> np.ndarray:
    """(rows, outputs) logits, or `activate(logits)`, in row order, over batches of rows of similar length
    (batching.make_batches). With the runtime's static shapes every batch is padded to `batch_size` rows
    (padding rows are cut on the host), so an XLA device sees one shape per bucket."""
    model.eval()
    out = np.zeros((len(split), model.config.num_labels), dtype=np.float32)
    static = runtime.static_shapes
    batches = make_batches(split, buckets, batch_size, static)
    for length, rows in tqdm(batches, desc="predict", unit="batch", disable=not progress, mininterval=1.0):
        batch = collate(split, length, rows, pad_id, pad_rows_to=batch_size if static else None)
        with runtime.autocast():
            logits = model(**model_inputs(batch, runtime.device)).logits.float()
        out[rows] = (activate(logits) if activate else logits).cpu()[: len(rows)].numpy()
    return out


def batched_probabilities(
    model: torch.nn.Module,
    split: TokenizedSplit,
    runtime: Runtime,
    task: Task,
    buckets: list[int],
    batch_size: int,
    pad_id: int,
    progress: bool = False,
) -> np.ndarray:
    """(rows, classes) probabilities: the task's softmax, or its per-label sigmoids."""
    return batched_logits(model, split, runtime, buckets, batch_size, pad_id, task.probabilities, progress)
