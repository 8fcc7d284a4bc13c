"""What transformers' Trainer reads the tokenized splits through: a Dataset, a sampler, a collator.

On CPU and CUDA, batches are length-grouped (rows of similar length together) and padded to their
own longest row, rounded up to a multiple of 8 (transformers' DataCollatorWithPadding). On XLA,
every batch is padded to its length bucket (`model.length_buckets`) instead, so the device sees
one shape per bucket and compiles a bounded number of graphs.
"""

from __future__ import annotations

import numpy as np
import torch
from transformers import DataCollatorWithPadding
from transformers.trainer_pt_utils import LengthGroupedSampler

from lora_dvc.artifacts import TokenizedSplit

PAD_MULTIPLE = 8  # tensor-core and AVX-512 friendly widths; costs < 4 padded tokens a row


class SplitDataset(torch.utils.data.Dataset):
    """Rows of a TokenizedSplit as {input_ids, labels}, optionally in a given order."""

    def __init__(self, split: TokenizedSplit, order: np.ndarray | None = None) -> None:
        self.split = split
        self.order = np.arange(len(split)) if order is None else order

    @classmethod
    def by_length(cls, split: TokenizedSplit) -> SplitDataset:
        """Rows sorted by length (stable): evaluation batches then carry little padding."""
        return cls(split, np.argsort(split.lengths, kind="stable"))

    @property
    def labels(self) -> np.ndarray:
        return self.split.labels[self.order]

    @property
    def lengths(self) -> list[int]:
        return self.split.lengths[self.order].tolist()

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, i: int) -> dict:
        row = self.order[i]
        start, end = self.split.offsets[row], self.split.offsets[row + 1]
        return {"input_ids": self.split.ids[start:end].tolist(), "labels": int(self.split.labels[row])}


class EpochSeededLengthSampler(LengthGroupedSampler):
    """transformers' LengthGroupedSampler with an order that depends only on (seed, epoch).

    Stock, it draws from the global torch RNG, whose state at an epoch's start is not what a
    checkpoint holds: a run resumed mid-epoch would see another order and end elsewhere. Trainer
    calls `set_epoch` before each epoch (also when it resumes), so the order replays exactly.
    """

    def __init__(self, batch_size: int, lengths: list[int], seed: int) -> None:
        super().__init__(batch_size, lengths=lengths)
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self):
        self.generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return super().__iter__()


class BucketCollator:
    """Pads a batch to the smallest length bucket that holds its longest row (static shapes on XLA)."""

    def __init__(self, buckets: list[int], pad_id: int) -> None:
        self.buckets, self.pad_id = sorted(buckets), pad_id

    def __call__(self, rows: list[dict]) -> dict:
        longest = max(len(r["input_ids"]) for r in rows)
        length = next((b for b in self.buckets if b >= longest), self.buckets[-1])
        input_ids = torch.full((len(rows), length), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(rows), length), dtype=torch.long)
        for i, row in enumerate(rows):
            ids = row["input_ids"][:length]
            input_ids[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention[i, : len(ids)] = 1
        return {
            "input_ids": input_ids,
            "attention_mask": attention,
            "labels": torch.tensor([r["labels"] for r in rows], dtype=torch.long),
        }


def make_collator(tokenizer, static_shapes: bool, buckets: list[int], pad_id: int):
    if static_shapes:
        return BucketCollator(buckets, pad_id)
    return DataCollatorWithPadding(tokenizer, pad_to_multiple_of=PAD_MULTIPLE, return_tensors="pt")
