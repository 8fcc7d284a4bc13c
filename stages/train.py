"""train: tokenized train/val splits -> the trained classifier in models/classifier/.

`train.method` picks what is trained: `lora` (a peft adapter over `model.name`, classifier head
included), `full` (every weight) or `tfidf` (the TF-IDF + logistic regression baseline). Training
runs on transformers' Trainer; DVCLive logs the curves to records/train/; an interrupted run
resumes from its last checkpoint (kept outside the workspace, see lora_dvc/checkpoints.py). With
`train.processes` > 1 the stage restarts itself under torchrun, one process per rank.
The engine lives in lora_dvc/training.py.
"""

from lora_dvc.runner import run_stage
from lora_dvc.training import run

if __name__ == "__main__":
    run_stage(run)
