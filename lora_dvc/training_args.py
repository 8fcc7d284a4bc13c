"""What Trainer is told: the TrainingArguments built from params (train.*, and any further field in
`train.trainer_args`, checked by lora_dvc.params), the device's own fields from the Runtime, the optimizer
(AdamW or LoRA+), the epochs `train.min_steps` adds, and whether the best val pass is kept at the end."""

from __future__ import annotations

import logging
import math
import sys

import torch
from transformers import TrainingArguments

from lora_dvc.device import Runtime
from lora_dvc.errors import UserError
from lora_dvc.params import TRAINER_ARGS_LISTED, Params

log = logging.getLogger("train")


# the TrainingArguments fields train.trainer_args may change, as this project sets them otherwise
TRAINER_DEFAULTS = {
    **TRAINER_ARGS_LISTED,
    "save_strategy": "epoch",
    "metric_for_best_model": "macro_f1",  # greater_is_better follows it (False for logloss)
    "dataloader_num_workers": 0,
    "report_to": "none",
}


def make_optimizer(model: torch.nn.Module, params: Params) -> torch.optim.Optimizer:
    """AdamW over the trainable weights (decay on all of them, as before Trainer), or LoRA+."""
    tp = params.train
    if params.train.method == "lora" and params.lora.plus_ratio:
        from peft.optimizers import create_loraplus_optimizer

        # LoRA+: the B matrices learn plus_ratio times faster than the A matrices
        return create_loraplus_optimizer(
            model,
            torch.optim.AdamW,
            lr=tp.lr,
            loraplus_lr_ratio=params.lora.plus_ratio,
            weight_decay=tp.weight_decay,
        )
    trainable = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(trainable, lr=tp.lr, weight_decay=tp.weight_decay)


def optimizer_name(params: Params) -> str:
    """What make_optimizer builds, as the report and the model card name it."""
    if params.train.method == "lora" and params.lora.plus_ratio:
        return f"LoRA+ (AdamW, B matrices at {params.lora.plus_ratio:g} x lr)"
    return "AdamW"


def micro_batch(params: Params) -> int:
    """train.batch_size is the global batch: each of train.processes processes takes an equal share, in
    train.grad_accum micro-batches of this many rows."""
    size, processes, accum = params.train.batch_size, params.train.processes, params.train.grad_accum
    if size % (processes * accum):
        raise UserError(
            f"train.batch_size={size} does not split over train.processes={processes} x train.grad_accum={accum}; "
            f"use a multiple of {processes * accum}"
        )
    return size // (processes * accum)


def training_arguments(params: Params, output_dir: str, runtime: Runtime) -> TrainingArguments:
    """The project's TrainingArguments, with train.trainer_args (checked by lora_dvc.params) on top."""
    tp = params.train
    extra = dict(tp.trainer_args)
    if extra.get("eval_strategy") == "steps":  # a checkpoint at every val pass, so the best step's can be kept
        extra.update(save_strategy="steps", save_steps=extra.get("eval_steps") or tp.log_every)
    return TrainingArguments(
        output_dir=output_dir,
        seed=tp.seed,
        data_seed=tp.seed,
        per_device_train_batch_size=micro_batch(params),
        gradient_accumulation_steps=tp.grad_accum,
        activation_checkpointing=tp.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False},  # the reentrant variant needs inputs with grads
        per_device_eval_batch_size=params.evaluate.batch_size,
        num_train_epochs=tp.epochs,
        learning_rate=tp.lr,
        weight_decay=tp.weight_decay,
        max_grad_norm=tp.max_grad_norm,
        warmup_steps=tp.warmup_ratio,  # a float below 1 is a ratio of all steps
        save_total_limit=3,  # the newest two (one to fall back on if the newest is damaged) and the best
        logging_steps=tp.log_every,
        ddp_find_unused_parameters=False if tp.processes > 1 else None,
        # Trainer multiplies the loss by the process count, expecting a model that divides a summed
        # loss by the global item count; sequence classifiers return a mean, so that doubled the loss
        # and the gradients with 2 processes (tests/test_distributed.py caught it)
        average_tokens_across_devices=False,
        remove_unused_columns=False,
        **runtime.trainer_arguments(tp.processes),
        **(TRAINER_DEFAULTS | {"disable_tqdm": not sys.stderr.isatty()} | extra),
    )


AUTO_PATIENCE = 2  # train.patience auto, once min_steps adds epochs: val passes without gain before stopping


def planned_epochs(params: Params, steps_per_epoch: int) -> int:
    """train.epochs, or more when they give fewer than train.min_steps optimizer steps (a small data file):
    the default recipe assumes a few hundred steps, so a 300-row file would otherwise barely move the weights.
    A max_steps in train.trainer_args bounds the run instead: the epochs that it takes, min_steps aside."""
    epochs, min_steps = params.train.epochs, params.train.min_steps
    max_steps = params.train.trainer_args.get("max_steps", -1)
    if max_steps > 0:
        return math.ceil(max_steps / steps_per_epoch)
    if min_steps is None or epochs * steps_per_epoch >= min_steps:
        return epochs
    more = max(epochs, math.ceil(min_steps / steps_per_epoch))
    stops = params.train.patience == "auto" and more > epochs
    log.warning(
        "train.epochs=%d gives %d optimizer steps < train.min_steps=%d: training up to %d epochs (%d steps) "
        "instead%s; set train.min_steps: null to train train.epochs only",
        epochs,
        epochs * steps_per_epoch,
        min_steps,
        more,
        more * steps_per_epoch,
        f", stopping after {AUTO_PATIENCE} val passes without a val macro-F1 gain (patience auto)" if stops else "",
    )
    return more


def early_stopping_patience(params: Params, epochs: int) -> int | None:
    """train.patience, where auto means AUTO_PATIENCE once train.min_steps has lengthened the run to `epochs` (a
    small file) and off otherwise, so a run of train.epochs is never cut short (bench/README.md: small files)."""
    patience, max_steps = params.train.patience, params.train.trainer_args.get("max_steps", -1)
    if patience != "auto":
        return patience
    return AUTO_PATIENCE if epochs > params.train.epochs and max_steps <= 0 else None


def keep_best(args: TrainingArguments, steps_per_epoch: int, patience: int | None) -> bool:
    """Load the best val pass's weights at the end whenever more than one val pass runs (on a small file
    min_steps runs many epochs, and later ones overfit), or early stopping may end the run."""
    total = args.max_steps if args.max_steps > 0 else int(args.num_train_epochs) * steps_per_epoch
    if args.eval_strategy == "steps":
        every = args.eval_steps if args.eval_steps >= 1 else math.ceil(args.eval_steps * total)
        return total > every or patience is not None
    return total > steps_per_epoch or patience is not None


def planned_run(args: TrainingArguments, params: Params) -> dict:
    """What the run is set to do, for the train summary (the report and the model card read it)."""
    return {
        "epochs_planned": int(args.num_train_epochs),
        "patience": early_stopping_patience(params, int(args.num_train_epochs)),
        "max_steps": args.max_steps if args.max_steps > 0 else None,
        "optimizer": optimizer_name(params),
        "lr_scheduler": str(args.lr_scheduler_type.value),
        "trainer_args": dict(params.train.trainer_args),
    }
