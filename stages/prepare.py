"""prepare: raw dataset -> clean, leak-free, stratified train/val/test splits.

Reads the dataset named by `data.dataset` at `data.path` (lora_dvc/datasets.py), normalises it to
`text,label` (`text,text_pair,label` for sentence pairs) with a fixed label order, then, counting
every row it drops by reason: strips texts and drops empty ones; drops every copy of a text with
conflicting labels; removes duplicate texts and test texts also in the training pool; carves val
(and test, without an official test split) from the pool, stratified and seeded; optionally
subsamples train to `data.max_train_rows`.
Outputs: data/prepared/{train,val,test}.csv + labels.json, records/prepare.json.
"""

from __future__ import annotations

import logging

from lora_dvc import artifacts
from lora_dvc.params import load_params
from lora_dvc.runner import run_stage
from lora_dvc.splits import make_splits

log = logging.getLogger("prepare")


def main() -> None:
    params = load_params()
    splits, labels, stats = make_splits(params.data)
    artifacts.write_prepared(splits, labels)
    artifacts.write_metrics(artifacts.PREPARE_STATS, stats)
    log.info("rows: %s; dropped: %s", stats["rows"], stats["dropped"])


if __name__ == "__main__":
    run_stage(main)
