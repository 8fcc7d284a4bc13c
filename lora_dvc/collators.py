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

from lora_dvc.artifacts import TokenizedSplit
from lora_dvc.batching import padded
from lora_dvc.params import PAD_MULTIPLE
from lora_dvc.tokenization import bucket_of


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
        return {**self.split.row(row), "labels": int(self.split.labels[row])}


def length_grouped_order(lengths: list[int], batch_size: int, generator: torch.Generator) -> list[int]:
    """Row indices in a random order with rows of similar length together (transformers' length grouping):
    shuffled, cut into mega-batches of up to 50 batches (at most a quarter of the rows each), each sorted
    longest first, and the longest row of all moved to the very front (an out-of-memory shows at once)."""
    multiple = max(min(len(lengths) // (batch_size * 4), 50), 1)
    size = multiple * batch_size
    shuffled = torch.randperm(len(lengths), generator=generator).tolist()
    megabatches = [
        sorted(shuffled[i : i + size], key=lambda row: lengths[row], reverse=True)
        for i in range(0, len(lengths), size)
    ]
    longest = max(range(len(megabatches)), key=lambda i: lengths[megabatches[i][0]])  # the first, on a tie
    megabatches[0][0], megabatches[longest][0] = megabatches[longest][0], megabatches[0][0]
    return [row for megabatch in megabatches for row in megabatch]


class EpochSeededLengthSampler(torch.utils.data.Sampler):
    """A length-grouped order (`length_grouped_order`) that depends only on (seed, epoch).

    Drawn from its own generator, not the global torch RNG, whose state at an epoch's start is not what a
    checkpoint holds: a run resumed mid-epoch would see another order and end elsewhere. Trainer calls
    `set_epoch` before each epoch (also when it resumes), so the order replays exactly.
    """

    def __init__(self, batch_size: int, lengths: list[int], seed: int) -> None:
        self.batch_size, self.lengths = batch_size, lengths
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(length_grouped_order(self.lengths, self.batch_size, generator))


class EpochSeededBucketSampler(torch.utils.data.Sampler):
    """Static shapes (XLA): a row order in which every `unit` consecutive rows (one optimizer step over all
    processes: micro-batch x processes x grad_accum) pad to one length bucket, and every epoch has the same
    number of steps in each bucket. So the first epoch meets every train graph there is, and no later epoch
    compiles anything, however many epochs run (length grouping meets a rare bucket in some epochs only).

    Per bucket, shortest first: its rows in a random order, cut into units; the rows left over (fewer than a
    unit) move up into the next bucket's first unit, where they pad to that bucket, placed so that each
    micro-batch of that unit holds at least one row of the bucket itself (a micro-batch of left-over rows
    only would pad to a smaller bucket). What is left after the last bucket is dropped, like drop_last.
    The units are shuffled, one of the longest bucket first (an out-of-memory shows at once); the order
    depends only on (seed, epoch), as EpochSeededLengthSampler's, so a resumed run replays it.
    """

    def __init__(self, micro_batch: int, batches_per_step: int, lengths: list[int], buckets: list[int], seed: int):
        self.micro, self.per_step = micro_batch, batches_per_step
        self.unit = micro_batch * batches_per_step
        of_bucket = bucket_of(np.asarray(lengths, dtype=np.int64), sorted(buckets))
        self.rows = [np.flatnonzero(of_bucket == b) for b in range(len(buckets))]
        self.seed, self.epoch = seed, 0
        self.unit_buckets = [b for b, _ in self.units(None)]  # each unit's bucket index, every epoch alike

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    @property
    def steps(self) -> int:
        """Optimizer steps an epoch (units), the same every epoch."""
        return len(self.unit_buckets)

    def __len__(self) -> int:
        return self.steps * self.unit

    def units(self, generator: torch.Generator | None) -> list[tuple[int, list[int]]]:
        """(bucket index, rows) of each unit; rows in bucket order without a generator (for the counts)."""
        units, carry = [], []
        most_carried = self.unit - self.per_step  # room for one row of the bucket in each micro-batch
        for b, rows in enumerate(self.rows):
            rows = rows if generator is None else rows[torch.randperm(len(rows), generator=generator).numpy()]
            rows = rows.tolist()
            if len(carry) + len(rows) < self.unit:
                carry = (carry + rows)[:most_carried]
                continue
            take = self.unit - len(carry)
            units.append((b, self.spread(rows[:take], carry)))
            rows = rows[take:]
            full = len(rows) // self.unit * self.unit
            units += [(b, rows[i : i + self.unit]) for i in range(0, full, self.unit)]
            carry = rows[full:][:most_carried]
        return units

    def spread(self, own: list[int], carried: list[int]) -> list[int]:
        """One unit: each micro-batch starts with one of the bucket's own rows, the rest fill up in order."""
        rest = carried + own[self.per_step :]
        fill = self.micro - 1
        return [row for i in range(self.per_step) for row in [own[i], *rest[i * fill : (i + 1) * fill]]]

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        units = self.units(generator)
        if not units:
            return iter([])
        order = torch.randperm(len(units), generator=generator).tolist()
        first = max(order, key=lambda i: units[i][0])  # the first unit of the longest bucket, in shuffled order
        order.remove(first)
        return iter([row for i in [first, *order] for row in units[i][1]])


class BucketCollator:
    """Pads a batch to the smallest length bucket that holds its longest row (static shapes on XLA)."""

    def __init__(self, buckets: list[int], pad_id: int) -> None:
        self.buckets, self.pad_id = sorted(buckets), pad_id

    def __call__(self, rows: list[dict]) -> dict:
        longest = max(len(r["input_ids"]) for r in rows)
        length = self.buckets[bucket_of(longest, self.buckets)]
        types = [r["token_type_ids"] for r in rows] if "token_type_ids" in rows[0] else None
        batch = padded([r["input_ids"] for r in rows], length, self.pad_id, types)
        batch["labels"] = torch.tensor([r["labels"] for r in rows], dtype=torch.long)
        return batch


def make_collator(tokenizer, static_shapes: bool, buckets: list[int], pad_id: int):
    if static_shapes:
        return BucketCollator(buckets, pad_id)
    return DataCollatorWithPadding(tokenizer, pad_to_multiple_of=PAD_MULTIPLE, return_tensors="pt")
