"""transformers' Trainer with the little it lacks here: a train-accuracy tally fed from the logits it already
computes, a length-grouped order that a run resumed mid-epoch replays exactly (one bucket a step on XLA),
the val pass through the one inference loop on XLA, multi-hot rows for multi-label tasks, and the val
metrics (lora_dvc.metrics) through the task's activation."""

from __future__ import annotations

import numpy as np
import torch
from transformers import EvalPrediction, Trainer, TrainingArguments
from transformers.trainer_utils import EvalLoopOutput

from lora_dvc.callbacks import Tallies
from lora_dvc.collators import EpochSeededBucketSampler, EpochSeededLengthSampler, SplitDataset
from lora_dvc.device import Runtime
from lora_dvc.inference import batched_logits
from lora_dvc.metrics import classification_metrics, multilabel_metrics
from lora_dvc.task import Task


class TallyingTrainer(Trainer):
    """Trainer plus two small things it lacks: a train-accuracy tally fed from the logits it already
    computes, and a length-grouped order that a run resumed mid-epoch replays exactly."""

    # sequence classifiers return each micro-batch's mean loss whatever Trainer passes them, so Trainer must
    # divide it by train.grad_accum itself (it skips that for models whose forward takes **kwargs)
    loss_is_scaled_for_ga = False
    # static shapes (XLA; build_trainer sets them): train steps of one length bucket each, and a val pass in
    # full batches padded to their bucket (static_evaluation_loop)
    runtime: Runtime | None = None
    buckets: list[int] | None = None
    pad_id: int = 0

    def __init__(self, *args, tallies: Tallies, logit_cut: float = 0.0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.tallies = tallies
        self.logit_cut = logit_cut  # multi-label: Task.logit_threshold (the tally predicts at >= 0)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs["labels"]
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        if model.training:
            logits = outputs.logits - self.logit_cut if self.logit_cut else outputs.logits
            self.tallies.add(loss, logits, labels, self.args.world_size)
        return (loss, outputs) if return_outputs else loss

    def evaluation_loop(
        self, dataloader, description, prediction_loss_only=None, ignore_keys=None, metric_key_prefix="eval"
    ):
        if self.buckets is None or self.args.world_size > 1 or eval_dataset_of(self) is None:
            return super().evaluation_loop(
                dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix
            )
        return self.static_evaluation_loop(metric_key_prefix)

    def static_evaluation_loop(self, metric_key_prefix: str) -> EvalLoopOutput:
        """The val pass on one XLA device through the inference loop, one graph per length bucket. Trainer's
        own loop adds graphs of its own on XLA (its cross-process gathers and size checks, a shape per last batch)."""
        split = eval_dataset_of(self)
        logits = batched_logits(self.model, split, self.runtime, self.buckets, self.args.eval_batch_size, self.pad_id)
        labels = np.asarray(split.labels)
        metrics = self.compute_metrics(EvalPrediction(predictions=logits, label_ids=labels))
        metrics = {f"{metric_key_prefix}_{key}": value for key, value in metrics.items()}
        metrics[f"{metric_key_prefix}_loss"] = metrics[f"{metric_key_prefix}_logloss"]
        return EvalLoopOutput(predictions=logits, label_ids=labels, metrics=metrics, num_samples=len(split))

    def get_eval_dataloader(self, eval_dataset=None):
        # dataloader_drop_last (static shapes on XLA) is for training: every val row must be scored
        drop_last, self.args.dataloader_drop_last = self.args.dataloader_drop_last, False
        try:
            return super().get_eval_dataloader(eval_dataset)
        finally:
            self.args.dataloader_drop_last = drop_last

    def get_train_dataloader(self):
        # Trainer's public hook (its sampler hook is private): the DataLoader Trainer would build, drawing
        # from a length-grouped order that replays per epoch; accelerate shards it over processes as before
        args = self.args
        if self.buckets is not None:
            sampler = bucket_sampler(args, self.train_dataset, self.buckets)
        else:
            sampler = EpochSeededLengthSampler(
                args.train_batch_size * args.gradient_accumulation_steps, self.train_dataset.lengths, args.seed
            )
        loader = torch.utils.data.DataLoader(
            self.train_dataset,
            batch_size=args.train_batch_size,
            sampler=sampler,
            collate_fn=self.data_collator,
            drop_last=args.dataloader_drop_last,
            num_workers=args.dataloader_num_workers,
            pin_memory=args.dataloader_pin_memory,
        )
        return self.accelerator.prepare(loader)


class MultiHotDataset(SplitDataset):
    """A multi-label split's rows: labels as the row's multi-hot list (BCEWithLogitsLoss wants floats:
    float_labels casts the batch)."""

    def __getitem__(self, i: int) -> dict:
        row = self.order[i]
        return {**self.split.row(row), "labels": self.split.labels[row].tolist()}


def float_labels(collate):
    """A collator whose batches carry float labels (multi-hot rows for BCEWithLogitsLoss)."""

    def call(rows: list[dict]) -> dict:
        batch = collate(rows)
        batch["labels"] = batch["labels"].float()
        return batch

    return call


def eval_dataset_of(trainer: Trainer):
    """The tokenized val split behind the trainer's eval dataset, or None."""
    return getattr(trainer.eval_dataset, "split", None)


def bucket_sampler(args: TrainingArguments, dataset: SplitDataset, buckets: list[int]) -> EpochSeededBucketSampler:
    """XLA's train order: every optimizer step (a micro-batch on each process, times grad_accum) in one bucket."""
    per_step = args.world_size * args.gradient_accumulation_steps
    return EpochSeededBucketSampler(args.train_batch_size, per_step, dataset.lengths, buckets, args.seed)


def val_metrics_fn(task: Task):
    """Val accuracy, macro-F1 and log loss from Trainer's val predictions, through the task's activation.
    Multi-label: at the task's threshold; accuracy is the subset accuracy, macro-F1 (which picks the kept
    epoch, as for single labels) the mean of the per-label F1s, logloss the mean binary cross-entropy."""

    def compute(prediction) -> dict:
        logits = torch.as_tensor(np.asarray(prediction.predictions, dtype=np.float32))
        probs, truth, labels = task.probabilities(logits).numpy(), np.asarray(prediction.label_ids), list(task.labels)
        if task.multi_label:
            m = multilabel_metrics(truth, probs, labels, task.threshold)
        else:
            m = classification_metrics(truth, probs, labels)
        kept = {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "logloss": m["loss"]}
        return kept | ({"micro_f1": m["micro_f1"]} if task.multi_label else {})

    return compute
