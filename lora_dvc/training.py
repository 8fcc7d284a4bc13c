"""The train stage's engine: transformers' Trainer + peft on the tokenized splits -> models/classifier/.

`train.method: lora` wraps `model.name` with a peft LoraConfig from `lora.*` (LoRA, rsLoRA, DoRA,
LoRA+ through peft's create_loraplus_optimizer), `full` trains every weight (`tfidf` fits the
TF-IDF + logistic regression baseline instead: lora_dvc/tfidf_training.py). Training itself is
stock `transformers.Trainer`: linear warmup and decay, gradient clipping, bf16 autocast where the
hardware has native bf16 (lora_dvc.device), length-grouped batches padded to their longest row (to
their length bucket on XLA, lora_dvc.collators), a val pass per epoch, the best val epoch kept
whenever more than one epoch runs (load_best_model_at_end), early stopping (`train.patience`:
EarlyStoppingCallback), checkpoints every `train.checkpoint_every` steps and at each epoch end,
resumed after any interruption (Trainer's resume_from_checkpoint), data parallel over
`train.processes` processes under torchrun (DDP: gloo on CPU, NCCL on CUDA; lora_dvc/launch.py
starts the processes). What Trainer cannot do itself is in lora_dvc/callbacks.py (the pipeline's
DVCLive keys, the train-accuracy tally, signal handling, checkpoint bookkeeping), lora_dvc/
checkpoints.py (where checkpoints live) and lora_dvc/collators.py (resumable length grouping).

Multi-label rows (the tokenize stage's multi-hot labels, `"multi_label": true` in its meta.json): the
model's config gets problem_type multi_label_classification (transformers' BCEWithLogitsLoss on float
multi-hot labels), the train tally and the val metrics predict a label at sigmoid >= evaluate.threshold,
and the kept epoch is still the one with the best val macro-F1 (over labels, at that threshold).

Outputs: models/classifier/ (peft adapter incl. classifier head, or full model), metrics/train.json
(the compared numbers), records/train/ (DVCLive: curves and every detail). Only rank 0 writes them.
"""

from __future__ import annotations

import hashlib
import logging
import math
import sys
import time

import numpy as np
import torch
from dvclive import Live
from transformers import EarlyStoppingCallback, EvalPrediction, PrinterCallback, Trainer, TrainingArguments, set_seed
from transformers.trainer_utils import EvalLoopOutput

from lora_dvc.artifacts import MODEL as MODEL_DIR
from lora_dvc.artifacts import TRAIN_LIVE as LIVE_DIR
from lora_dvc.artifacts import (
    TRAIN_METRICS,
    read_labels,
    read_tokenized,
    read_tokenized_meta,
    tokenized_file,
    write_metrics,
)
from lora_dvc.atomic import atomic_dir
from lora_dvc.batching import collate, make_batches, model_inputs
from lora_dvc.callbacks import CheckpointCallback, LiveCallback, StopOnSignal, Tallies, restore_live
from lora_dvc.checkpoints import CheckpointStore, fingerprint, prune_stale, read_state
from lora_dvc.collators import EpochSeededBucketSampler, EpochSeededLengthSampler, SplitDataset, make_collator
from lora_dvc.compat import keep_padding_masks_on_device, xla_scalars_as_inputs
from lora_dvc.device import device_kind, resolve_precision
from lora_dvc.dropout import restore_dropout, use_fast_dropout
from lora_dvc.errors import UserError
from lora_dvc.fused_lora import use_fused_lora
from lora_dvc.launch import is_main_process
from lora_dvc.metrics import classification_metrics, compared_train, multilabel_metrics
from lora_dvc.modeling import (
    MULTI_LABEL,
    apply_method,
    check_max_length,
    count_params,
    load_base_model,
    load_tokenizer,
    lora_weight_mean,
    max_positions,
    ready_for_bf16_autocast,
)
from lora_dvc.params import Params
from lora_dvc.provenance import provenance

log = logging.getLogger("train")


class StopRequested(Exception):
    """SIGINT/SIGTERM arrived; a checkpoint has been saved."""

    def __init__(self, signum: int, where: str) -> None:
        super().__init__(f"stopped by signal {signum}; checkpoint saved in {where}, re-run to resume")
        self.signum = signum


class TallyingTrainer(Trainer):
    """Trainer plus two small things it lacks: a train-accuracy tally fed from the logits it already
    computes, and a length-grouped order that a run resumed mid-epoch replays exactly."""

    # sequence classifiers return each micro-batch's mean loss whatever Trainer passes them, so Trainer must
    # divide it by train.grad_accum itself (it skips that for models whose forward takes **kwargs)
    loss_is_scaled_for_ga = False
    # static shapes (XLA; build_trainer sets both): train steps of one length bucket each, and a val pass in
    # full batches padded to their bucket (static_evaluation_loop)
    buckets: list[int] | None = None
    pad_id: int = 0

    def __init__(self, *args, tallies: Tallies, logit_cut: float = 0.0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.tallies = tallies
        self.logit_cut = logit_cut  # multi-label: the logit of evaluate.threshold (the tally predicts at >= 0)

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

    @torch.no_grad()
    def static_evaluation_loop(self, metric_key_prefix: str) -> EvalLoopOutput:
        """The val pass on one XLA device in one graph per length bucket: full batches (the last of each
        bucket padded with empty rows), each moved whole to the host and cut there. Trainer's own loop adds
        graphs of its own on XLA (its cross-process gathers and size checks, a shape per last batch)."""
        split, args, model = eval_dataset_of(self), self.args, self.model
        size = args.eval_batch_size
        logits = np.zeros((len(split), model.config.num_labels), dtype=np.float32)
        model.eval()
        with torch.autocast(args.device.type, dtype=torch.bfloat16, enabled=args.bf16):
            for length, rows in make_batches(split, self.buckets, size, static_shapes=True):
                batch = collate(split, length, rows, self.pad_id, pad_rows_to=size)
                out = model(**model_inputs(batch, args.device)).logits
                logits[rows] = out.float().cpu()[: len(rows)].numpy()
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


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def eval_dataset_of(trainer: Trainer):
    """The tokenized val split behind the trainer's eval dataset, or None."""
    return getattr(trainer.eval_dataset, "split", None)


def bucket_sampler(args: TrainingArguments, dataset: SplitDataset, buckets: list[int]) -> EpochSeededBucketSampler:
    """XLA's train order: every optimizer step (a micro-batch on each process, times grad_accum) in one bucket."""
    per_step = args.world_size * args.gradient_accumulation_steps
    return EpochSeededBucketSampler(args.train_batch_size, per_step, dataset.lengths, buckets, args.seed)


def save_model(model, params: Params) -> None:
    """Adapter (or full model) in Hugging Face format, written atomically."""
    with atomic_dir(MODEL_DIR) as tmp:
        kwargs = {}
        if params.train.method == "lora":
            config = model.peft_config["default"]
            # record the portable name, not this machine's resolved folder
            config.base_model_name_or_path = params.model.name
            # peft keeps target modules as a set, whose order changes from process to process;
            # sorted, the same run writes the same bytes (and DVC sees the same md5)
            if isinstance(config.target_modules, (set, list, tuple)):
                config.target_modules = sorted(config.target_modules)
            # peft's "auto" looks the base model's config up (on the hub for a hub name) to see whether the
            # vocabulary was resized; this pipeline never resizes it, so it saves embeddings only when LoRA
            # targets them, and an offline run gets no "Could not find a config file" warning
            kwargs["save_embedding_layers"] = any("embed" in name for name in config.target_modules or ())
        model.save_pretrained(tmp, safe_serialization=True, **kwargs)
        # peft's README.md is an empty card template naming this machine's model folder; the
        # export stage writes the real model card
        (tmp / "README.md").unlink(missing_ok=True)


def build_model(params: Params, labels: list[str], multi_label: bool = False) -> torch.nn.Module:
    model = load_base_model(params.model.name, labels, MULTI_LABEL if multi_label else None)
    check_max_length(params.model.name, params.model.max_length, max_positions(model))
    model = apply_method(model, params.train.method, params.lora)
    trainable, total = count_params(model)
    budget = params.lora.max_trainable
    if budget is not None and trainable > budget:
        raise UserError(
            f"lora.max_trainable: this config trains {trainable:,} parameters, over the budget of {budget:,}; "
            "lower lora.r, use fewer lora.targets, or raise lora.max_trainable"
        )
    log.info(
        "%s: %s trainable of %s parameters (%.2f%%)",
        params.model.name,
        f"{trainable:,}",
        f"{total:,}",
        100 * trainable / total,
    )
    return model


def make_optimizer(model: torch.nn.Module, params: Params) -> torch.optim.Optimizer:
    """AdamW over the trainable weights (decay on all of them, as before Trainer), or LoRA+.

    torch's fused AdamW (one kernel for every tensor) where the weights live on the CPU or a CUDA GPU
    (0.99-1.02x a bf16 CPU step: noise level, bench/step_levers.py); torch_xla has no fused kernel.
    """
    tp = params.train
    fused = next(model.parameters()).device.type in ("cpu", "cuda")
    if params.train.method == "lora" and params.lora.plus_ratio:
        from peft.optimizers import create_loraplus_optimizer

        # LoRA+: the B matrices learn plus_ratio times faster than the A matrices
        return create_loraplus_optimizer(
            model,
            torch.optim.AdamW,
            lr=tp.lr,
            loraplus_lr_ratio=params.lora.plus_ratio,
            weight_decay=tp.weight_decay,
            fused=fused,
        )
    trainable = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(trainable, lr=tp.lr, weight_decay=tp.weight_decay, fused=fused)


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


def training_arguments(params: Params, output_dir: str, precision: str, device: str) -> TrainingArguments:
    tp = params.train
    xla = device == "xla"
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
        lr_scheduler_type="linear",
        warmup_steps=tp.warmup_ratio,  # a float below 1 is a ratio of all steps
        eval_strategy="epoch",
        save_strategy="epoch",
        save_total_limit=3,  # the newest two (one to fall back on if the newest is damaged) and the best
        load_best_model_at_end=tp.patience is not None,  # and whenever more than one epoch runs (build_trainer)
        metric_for_best_model="macro_f1",
        greater_is_better=True,
        # on XLA Trainer's per-log loss read-out (a cross-process mesh_reduce, a reset of its loss sum) compiles
        # graphs of its own and changes the next step's graph: LiveCallback logs the same window there instead
        logging_strategy="no" if xla else "steps",
        logging_steps=tp.log_every,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=device == "cpu",
        dataloader_drop_last=xla,  # static shapes: every training batch full
        dataloader_pin_memory=device == "cuda",
        dataloader_num_workers=0,
        ddp_backend=("nccl" if device == "cuda" else "gloo") if tp.processes > 1 else None,
        ddp_find_unused_parameters=False if tp.processes > 1 else None,
        # Trainer multiplies the loss by the process count, expecting a model that divides a summed
        # loss by the global item count; sequence classifiers return a mean, so that doubled the loss
        # and the gradients with 2 processes (tests/test_distributed.py caught it)
        average_tokens_across_devices=False,
        report_to="none",
        remove_unused_columns=False,
        disable_tqdm=not sys.stderr.isatty(),
    )


def val_metrics_fn(labels: list[str], multi_label: bool = False, threshold: float = 0.5):
    """Val accuracy, macro-F1 and log loss from Trainer's val predictions. Multi-label: sigmoid
    probabilities at `threshold`; accuracy is the subset accuracy, macro-F1 (which picks the kept epoch,
    as for single labels) the mean of the per-label F1s, logloss the mean binary cross-entropy."""

    def compute_multi_label(prediction) -> dict:
        logits = torch.as_tensor(np.asarray(prediction.predictions, dtype=np.float32))
        m = multilabel_metrics(np.asarray(prediction.label_ids), torch.sigmoid(logits).numpy(), labels, threshold)
        return {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "micro_f1": m["micro_f1"], "logloss": m["loss"]}

    if multi_label:
        return compute_multi_label

    def compute(prediction) -> dict:
        logits = torch.as_tensor(np.asarray(prediction.predictions, dtype=np.float32))
        probs = torch.softmax(logits, dim=-1).numpy()
        m = classification_metrics(np.asarray(prediction.label_ids), probs, labels)
        return {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "logloss": m["loss"]}

    return compute


def data_md5() -> dict:
    return {f"{s}.npz": hashlib.md5(tokenized_file(s).read_bytes()).hexdigest() for s in ("train", "val")}


def provenance_summary(device: str, precision: str) -> dict:
    """Where the result came from: git, versions and host (lora_dvc.provenance), device, precision, threads, data."""
    found = provenance("stages.train")
    found.update(device=device, precision=precision, threads=torch.get_num_threads(), data_md5=data_md5())
    return found


def planned_epochs(params: Params, steps_per_epoch: int) -> int:
    """train.epochs, or more when they give fewer than train.min_steps optimizer steps (a small data file):
    the default recipe assumes a few hundred steps, so a 300-row file would otherwise barely move the weights."""
    epochs, min_steps = params.train.epochs, params.train.min_steps
    if min_steps is None or epochs * steps_per_epoch >= min_steps:
        return epochs
    more = max(epochs, math.ceil(min_steps / steps_per_epoch))
    log.info(
        "train.epochs=%d gives %d steps < train.min_steps=%d: training %d epochs",
        epochs,
        epochs * steps_per_epoch,
        min_steps,
        more,
    )
    return more


def build_trainer(
    params: Params,
    model,
    labels: list[str],
    device: str,
    precision: str,
    store: CheckpointStore,
    live,
    tallies: Tallies,
    started: float,
) -> tuple[TallyingTrainer, StopOnSignal, int]:
    tp = params.train
    pad_id = read_tokenized_meta()["pad_token_id"]
    train_split = read_tokenized("train")
    dataset = MultiHotDataset if train_split.multi_label else SplitDataset
    train_set = dataset(train_split)
    val_set = dataset.by_length(read_tokenized("val"))
    args = training_arguments(params, str(store.local), precision, device)
    micro_batches = args.train_batch_size * args.world_size  # rows per forward pass, over all processes
    # drop_last on XLA: full batches only; an optimizer step every grad_accum micro-batches, as Trainer counts
    batches = len(train_set) // micro_batches if device == "xla" else -(-len(train_set) // micro_batches)
    steps_per_epoch = -(-batches // args.gradient_accumulation_steps)
    if device == "xla":  # whole steps of one length bucket each, as many every epoch (bucket_sampler)
        steps_per_epoch = bucket_sampler(args, train_set, params.buckets).steps
    if steps_per_epoch == 0:
        raise UserError(
            f"train split has {len(train_set)} rows: too few for one batch of {tp.batch_size}; "
            "lower train.batch_size or add data"
        )
    args.num_train_epochs = planned_epochs(params, steps_per_epoch)
    # keep the best val epoch, not the last: on a small file min_steps runs many epochs, and later ones overfit
    args.load_best_model_at_end = args.num_train_epochs > 1 or tp.patience is not None
    # the optimizer must hold the parameters where they will live (a GPU, an XLA device), so the
    # model goes there before make_optimizer, not later inside Trainer
    model = model.to(args.device)
    stop = StopOnSignal(steps_per_epoch)
    callbacks = [
        LiveCallback(
            live,
            tallies,
            args.num_train_epochs,
            xla=device == "xla",
            log_every=tp.log_every,
            every=tp.checkpoint_every,
        ),
        CheckpointCallback(
            tp.checkpoint_every, steps_per_epoch, store, tallies, LIVE_DIR, live, started, xla=device == "xla"
        ),
        stop,
    ]
    if tp.patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=tp.patience))
    collator = make_collator(load_tokenizer(params.model.name), device == "xla", params.buckets, pad_id)
    if train_split.multi_label:
        collator = float_labels(collator)
    trainer = TallyingTrainer(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=val_set,
        data_collator=collator,
        optimizers=(make_optimizer(model, params), None),
        compute_metrics=val_metrics_fn(labels, train_split.multi_label, params.evaluate.threshold),
        callbacks=callbacks,
        tallies=tallies,
        logit_cut=logit(params.evaluate.threshold) if train_split.multi_label else 0.0,
    )
    if device == "xla":
        trainer.buckets, trainer.pad_id = params.buckets, pad_id
    trainer.remove_callback(PrinterCallback)  # raw log dicts on stdout; the callbacks log what matters
    return trainer, stop, steps_per_epoch


def ready_for_device(model: torch.nn.Module, device: str, precision: str, fast_dropout: bool) -> None:
    """The speed levers a model gets before training on `device` at `precision` (bench/README.md measures each)."""
    if device == "cpu" and fast_dropout:
        # torch's CPU dropout masks were 44% of a bf16 step; GPUs and TPUs keep theirs
        log.info("fast dropout masks in %d dropout modules and the attention", use_fast_dropout(model))
    if precision == "bf16" and device in ("cpu", "cuda"):
        log.info("bf16: %d frozen weight tensors stored in bf16", ready_for_bf16_autocast(model))
    if device in ("cpu", "cuda"):
        use_fused_lora(model)  # each LoRA layer's scale and sum in its matmul (lora_dvc/fused_lora.py)


def train_transformer(params: Params) -> None:
    tp = params.train
    device = device_kind(tp.device)
    precision = resolve_precision(device, tp.precision)
    if device == "xla":
        keep_padding_masks_on_device()
        xla_scalars_as_inputs()  # the first step is then the only extra train graph (docs/tpu.md)
    labels = read_labels()
    multi_label = bool(read_tokenized_meta().get("multi_label"))  # the tokenize stage's multi-hot labels
    set_seed(tp.seed)  # before the model: LoRA's initial weights and the head come from this seed
    model = build_model(params, labels, multi_label)  # before any output: a refused config leaves nothing behind
    ready_for_device(model, device, precision, tp.fast_dropout)
    store = CheckpointStore(fingerprint(params))
    is_main = is_main_process(device)
    if is_main:
        prune_stale()
    resume = store.latest(quiet=not is_main)  # the newest intact one: damaged ones are set aside with a warning
    if is_main:
        store.describe(params)
    log.info(
        "checkpoints every %s steps and at each epoch end, in %s",
        tp.checkpoint_every or "no",
        store.where,
    )
    if resume is not None:
        if is_main:
            restore_live(resume, LIVE_DIR)
        log.info("resuming from %s at step %s", store.where, resume.name.split("-")[-1])
    # multi-label: train accuracy is the subset accuracy at evaluate.threshold, macro-F1 over labels
    tallies = Tallies(len(labels), multi_label)
    if resume is not None:
        tallies.restore(read_state(resume), is_main)
    started = time.perf_counter() - tallies.progress["seconds"]
    # DVCLive's system monitor (CPU, RAM, GPU use per step) where people look first when a run is slow: on
    # accelerators; on the CPU its sampling thread would compete with training for the same cores
    live = None
    if is_main:
        live = Live(
            dir=str(LIVE_DIR),
            resume=resume is not None,
            save_dvc_exp=False,
            dvcyaml=None,
            monitor_system=device != "cpu",
        )
    trainer, stop, steps_per_epoch = build_trainer(
        params, model, labels, device, precision, store, live, tallies, started
    )
    trainable, total = count_params(trainer.model)
    world, micro, accum = (
        trainer.args.world_size,
        trainer.args.train_batch_size,
        trainer.args.gradient_accumulation_steps,
    )
    per_process = micro * accum
    log.info(
        "device %s, precision %s, %d process(es) x %d rows (%d micro-batch(es) of %d) = global batch %d",
        device,
        precision,
        world,
        per_process,
        accum,
        micro,
        per_process * world,
    )
    if live is not None:
        live.summary.update(
            {
                "trainable_params": trainable,
                "total_params": total,
                "trainable_percent": round(100 * trainable / total, 4),
                "steps_per_epoch": steps_per_epoch,
                "epochs_planned": int(trainer.args.num_train_epochs),
                "precision": precision,
                "device": device,
                "processes": world,
                "per_process_batch_size": per_process,
                "grad_accum": accum,
                "global_batch_size": per_process * world,
            }
        )
    trainer.train(resume_from_checkpoint=str(resume) if resume is not None else None)
    if stop.signal is not None:
        raise StopRequested(stop.signal, store.where)
    finish(trainer, params, live, tallies, started, store, precision, device)


def finish(
    trainer,
    params: Params,
    live,
    tallies: Tallies,
    started: float,
    store: CheckpointStore,
    precision: str,
    device: str,
) -> None:
    """Summary, adapter and clean-up, on rank 0; the model now holds the best epoch's weights if patience is set."""
    if live is None:
        return
    seconds = time.perf_counter() - started
    model = trainer.accelerator.unwrap_model(trainer.model)
    progress = tallies.progress
    live.summary.update(
        {
            "steps": trainer.state.global_step,
            "epochs_run": progress["epochs_run"],
            "best_epoch": progress["best_epoch"],
            "train_seconds": round(seconds, 1),
            "train_samples_per_second": round(progress["samples"] / seconds, 2),
            # on the host: on XLA a reduction over the weights would compile one more graph
            "lora_weight_mean": lora_weight_mean(model.to("cpu") if device == "xla" else model),
            "provenance": provenance_summary(device, precision),
        }
    )
    if device == "xla":  # the whole run's compilations, the val passes' apart (lora_dvc.callbacks.LiveCallback)
        live.summary["xla"] = LiveCallback.of(trainer).compile_summary()
    live.make_summary()
    live.end()
    # the kept model's val scores; a checkpoint written before they were tracked falls back to the last logged
    kept_val = progress.get("best_val" if trainer.args.load_best_model_at_end else "last_val") or live.summary["val"]
    write_metrics(
        TRAIN_METRICS,
        compared_train(
            kept_val, progress["best_epoch"], seconds, progress["samples"] / seconds, count_params(model)[0]
        ),
    )
    restore_dropout(model)  # the saved model names no function only this process registered
    save_model(model.to("cpu"), params)
    store.clean()
    log.info("saved %s (%.0f s, %.1f samples/s)", MODEL_DIR, seconds, progress["samples"] / seconds)
