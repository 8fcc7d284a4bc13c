"""train: tokenized train/val splits -> the trained classifier in models/classifier/.

`train.method` picks what is trained: `lora` (a peft adapter over `model.name`, classifier head
included), `full` (every weight) or `tfidf` (the TF-IDF + logistic regression baseline). Training
runs on transformers' Trainer; DVCLive logs the curves to records/train/; an interrupted run
resumes from its last checkpoint (kept outside the workspace, see lora_dvc/checkpoints.py). With
`train.processes` > 1 the stage restarts itself under torchrun, one process per rank; with
`train.cores: all`, one process per TPU core. The engine lives in lora_dvc/training.py, the
baseline in lora_dvc/tfidf_training.py, the process launchers in lora_dvc/launch.py.
"""

from __future__ import annotations

import os
import sys

from lora_dvc.launch import launch_processes, launch_tpu_cores
from lora_dvc.params import load_params
from lora_dvc.runner import run_stage
from lora_dvc.tokenization import tokenized_params
from lora_dvc.training import StopRequested, train_transformer
from lora_dvc.training_args import micro_batch


def main() -> None:
    params = tokenized_params(load_params())  # model.max_length / length_buckets / truncation as tokenized
    if params.train.method == "tfidf":
        from lora_dvc.tfidf_training import train_tfidf  # scipy and sklearn's models: only for this method

        return train_tfidf(params)
    if params.train.cores == "all":
        return launch_tpu_cores(train_transformer, params)
    if params.train.processes > 1 and "LOCAL_RANK" not in os.environ:
        micro_batch(params)  # a user error is said once, before any process starts
        return launch_processes(params.train.processes)
    train_transformer(params)


def run() -> None:
    try:
        main()
    except StopRequested as stopped:
        print(stopped, file=sys.stderr)
        sys.exit(128 + stopped.signum)  # the shell's convention for "killed by signal"


if __name__ == "__main__":
    run_stage(run)
