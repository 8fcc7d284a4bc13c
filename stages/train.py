"""train: tokenized train/val splits -> the trained classifier in models/classifier/.

`train.method` picks what is trained: `lora` (a peft adapter over `model.name`, classifier head
included), `full` (every weight) or `tfidf` (the TF-IDF + logistic regression baseline). DVCLive
logs the curves to metrics/train/; an interrupted run resumes from its last checkpoint.
The engine lives in lora_dvc/training.py.
"""
from lora_dvc.runner import run_stage
from lora_dvc.training import run

if __name__ == "__main__":
    run_stage(run)
