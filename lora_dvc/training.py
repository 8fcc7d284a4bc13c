"""The train stage's engine: transformers' Trainer + peft on the tokenized splits -> models/classifier/.

`train.method: lora` wraps `model.name` with a peft LoraConfig from `lora.*`, `full` trains every weight
(`tfidf`: lora_dvc/tfidf_training.py). The Runtime (lora_dvc.device) decides device and precision, the Task
(lora_dvc.task) labels and multi-label; lora_dvc.training_args builds what Trainer is told, lora_dvc.trainer
is the Trainer subclass, lora_dvc.callbacks and lora_dvc.checkpoints what it lacks (DVCLive keys, signals,
resumable checkpoints outside the workspace). Outputs, on rank 0: models/classifier/ (adapter incl. head, or
the full model), metrics/train.json (the compared numbers), records/train/ (DVCLive curves and summary).
"""

from __future__ import annotations

import hashlib
import logging
import time

import torch
from dvclive import Live
from transformers import EarlyStoppingCallback, PrinterCallback, set_seed

from lora_dvc.artifacts import MODEL as MODEL_DIR
from lora_dvc.artifacts import TRAIN_LIVE as LIVE_DIR
from lora_dvc.artifacts import TRAIN_METRICS, read_tokenized, read_tokenized_meta, tokenized_file, write_metrics
from lora_dvc.atomic import atomic_dir
from lora_dvc.callbacks import CheckpointCallback, LiveCallback, StopOnSignal, Tallies, restore_live
from lora_dvc.checkpoints import CheckpointStore, fingerprint, prune_stale, read_state
from lora_dvc.collators import SplitDataset, make_collator
from lora_dvc.compat import xla_scalars_as_inputs
from lora_dvc.device import Runtime
from lora_dvc.dropout import restore_dropout
from lora_dvc.errors import UserError
from lora_dvc.launch import is_main_process
from lora_dvc.metrics import compared_train
from lora_dvc.modeling import (
    apply_method,
    check_max_length,
    count_params,
    load_base_model,
    load_tokenizer,
    lora_weight_mean,
    max_positions,
)
from lora_dvc.params import Params
from lora_dvc.provenance import provenance
from lora_dvc.task import Task
from lora_dvc.trainer import MultiHotDataset, TallyingTrainer, bucket_sampler, float_labels, val_metrics_fn
from lora_dvc.training_args import (
    early_stopping_patience,
    keep_best,
    make_optimizer,
    planned_epochs,
    planned_run,
    training_arguments,
)

log = logging.getLogger("train")


class StopRequested(Exception):
    """SIGINT/SIGTERM arrived; a checkpoint has been saved."""

    def __init__(self, signum: int, where: str) -> None:
        super().__init__(f"stopped by signal {signum}; checkpoint saved in {where}, re-run to resume")
        self.signum = signum


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


def build_model(params: Params, task: Task) -> torch.nn.Module:
    model = load_base_model(params.model.name, list(task.labels), task.problem_type)
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


def data_md5() -> dict:
    return {f"{s}.npz": hashlib.md5(tokenized_file(s).read_bytes()).hexdigest() for s in ("train", "val")}


def provenance_summary(runtime: Runtime) -> dict:
    """Where the result came from: git, versions and host (lora_dvc.provenance), device, precision, threads, data."""
    found = provenance("stages.train")
    found.update(
        device=runtime.kind, precision=runtime.precision, threads=torch.get_num_threads(), data_md5=data_md5()
    )
    return found


def build_trainer(
    params: Params,
    model,
    task: Task,
    runtime: Runtime,
    store: CheckpointStore,
    live,
    tallies: Tallies,
    started: float,
) -> tuple[TallyingTrainer, StopOnSignal, int]:
    """The run's Trainer over the tokenized splits, its stop-on-signal callback and its optimizer steps per epoch."""
    tp, xla = params.train, runtime.static_shapes
    pad_id = read_tokenized_meta()["pad_token_id"]
    dataset = MultiHotDataset if task.multi_label else SplitDataset
    train_set, val_set = dataset(read_tokenized("train")), dataset.by_length(read_tokenized("val"))
    args = training_arguments(params, str(store.local), runtime)
    steps_per_epoch = optimizer_steps_per_epoch(args, train_set, params, xla)
    args.num_train_epochs = planned_epochs(params, steps_per_epoch)
    patience = early_stopping_patience(params, args.num_train_epochs)
    args.load_best_model_at_end = keep_best(args, steps_per_epoch, patience)
    # the optimizer must hold the parameters where they will live (a GPU, an XLA device), so the
    # model goes there before make_optimizer, not later inside Trainer
    model = model.to(args.device)
    stop = StopOnSignal(steps_per_epoch)
    callbacks = [
        LiveCallback(live, tallies, args.num_train_epochs, xla=xla, log_every=tp.log_every, every=tp.checkpoint_every),
        CheckpointCallback(tp.checkpoint_every, steps_per_epoch, store, tallies, LIVE_DIR, live, started, xla=xla),
        stop,
    ] + ([EarlyStoppingCallback(early_stopping_patience=patience)] if patience else [])
    collator = make_collator(load_tokenizer(params.model.name), xla, params.buckets, pad_id)
    trainer = TallyingTrainer(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=val_set,
        data_collator=float_labels(collator) if task.multi_label else collator,
        optimizers=(make_optimizer(model, params), None),
        compute_metrics=val_metrics_fn(task),
        callbacks=callbacks,
        tallies=tallies,
        logit_cut=task.logit_threshold,
    )
    if xla:
        trainer.runtime, trainer.buckets, trainer.pad_id = runtime, params.buckets, pad_id
    trainer.remove_callback(PrinterCallback)  # raw log dicts on stdout; the callbacks log what matters
    return trainer, stop, steps_per_epoch


def optimizer_steps_per_epoch(args, train_set: SplitDataset, params: Params, xla: bool) -> int:
    """Optimizer steps in one epoch, as Trainer counts them (an error when the split holds too few rows)."""
    micro_batches = args.train_batch_size * args.world_size  # rows per forward pass, over all processes
    # drop_last on XLA: full batches only; an optimizer step every grad_accum micro-batches, as Trainer counts
    batches = len(train_set) // micro_batches if xla else -(-len(train_set) // micro_batches)
    steps = -(-batches // args.gradient_accumulation_steps)
    if xla:  # whole steps of one length bucket each, as many every epoch (bucket_sampler)
        steps = bucket_sampler(args, train_set, params.buckets).steps
    if steps == 0:
        raise UserError(
            f"train split has {len(train_set)} rows: too few for one batch of {params.train.batch_size}; "
            "lower train.batch_size or add data"
        )
    return steps


def train_transformer(params: Params) -> None:
    tp = params.train
    runtime = Runtime.create(tp.device, tp.precision)
    if runtime.static_shapes:
        xla_scalars_as_inputs()  # the first step is then the only extra train graph (docs/tpu.md)
    task = Task.read(params)
    set_seed(tp.seed)  # before the model: LoRA's initial weights and the head come from this seed
    model = build_model(params, task)  # before any output: a refused config leaves nothing behind
    runtime.ready_for_training(model, tp.fast_dropout)
    store = CheckpointStore(fingerprint(params))
    is_main = is_main_process(runtime.kind)
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
    tallies = Tallies(len(task.labels), task.multi_label)
    if resume is not None:
        tallies.restore(read_state(resume), is_main)
    started = time.perf_counter() - tallies.progress["seconds"]
    live = open_live(resume is not None, runtime) if is_main else None
    trainer, stop, steps_per_epoch = build_trainer(params, model, task, runtime, store, live, tallies, started)
    record_setup(trainer, live, steps_per_epoch, runtime, params)
    trainer.train(resume_from_checkpoint=str(resume) if resume is not None else None)
    if stop.signal is not None:
        raise StopRequested(stop.signal, store.where)
    finish(trainer, params, live, tallies, started, store, runtime)


def open_live(resume: bool, runtime: Runtime) -> Live:
    """The train stage's DVCLive run (rank 0 only), continued where a resumed run left it."""
    # DVCLive's system monitor (CPU, RAM, GPU use per step) where people look first when a run is slow: on
    # accelerators; on the CPU its sampling thread would compete with training for the same cores
    monitor = runtime.kind != "cpu"
    return Live(dir=str(LIVE_DIR), resume=resume, save_dvc_exp=False, dvcyaml=None, monitor_system=monitor)


def record_setup(trainer: TallyingTrainer, live, steps_per_epoch: int, runtime: Runtime, params: Params) -> None:
    """Log and record how the run is laid out: parameters, steps, device, precision and batches."""
    trainable, total = count_params(trainer.model)
    args = trainer.args
    world, micro, accum = args.world_size, args.train_batch_size, args.gradient_accumulation_steps
    per_process = micro * accum
    log.info(
        "device %s, precision %s, %d process(es) x %d rows (%d micro-batch(es) of %d) = global batch %d",
        runtime.kind,
        runtime.precision,
        world,
        per_process,
        accum,
        micro,
        per_process * world,
    )
    if live is None:
        return
    live.summary.update(
        {
            "trainable_params": trainable,
            "total_params": total,
            "trainable_percent": round(100 * trainable / total, 4),
            "steps_per_epoch": steps_per_epoch,
            **planned_run(args, params),
            "precision": runtime.precision,
            "device": runtime.kind,
            "processes": world,
            "per_process_batch_size": per_process,
            "grad_accum": accum,
            "global_batch_size": per_process * world,
        }
    )


def finish(
    trainer,
    params: Params,
    live,
    tallies: Tallies,
    started: float,
    store: CheckpointStore,
    runtime: Runtime,
) -> None:
    """Summary, adapter and clean-up, on rank 0; the model holds the best val pass's weights when more than one ran."""
    if live is None:
        return
    seconds = time.perf_counter() - started
    model = trainer.accelerator.unwrap_model(trainer.model)
    progress = tallies.progress
    live.summary.update(
        {
            "steps": trainer.state.global_step,
            "epochs_run": progress["epochs_run"],
            "epochs": round(trainer.state.epoch, 4),  # fractional when max_steps ends the run mid-epoch
            "best_epoch": progress["best_epoch"],
            "best_step": progress.get("best_step"),
            "train_seconds": round(seconds, 1),
            "train_samples_per_second": round(progress["samples"] / seconds, 2),
            # on the host: on XLA a reduction over the weights would compile one more graph
            "lora_weight_mean": lora_weight_mean(model.to("cpu") if runtime.static_shapes else model),
            "provenance": provenance_summary(runtime),
        }
    )
    if runtime.static_shapes:  # the whole run's compilations, the val passes' apart (lora_dvc.callbacks.LiveCallback)
        live.summary["xla"] = LiveCallback.of(trainer).compile_summary()
    live.make_summary()
    live.end()
    # the kept model's val scores; a checkpoint written before they were tracked falls back to the last logged
    kept_val = progress.get("best_val" if trainer.args.load_best_model_at_end else "last_val") or live.summary["val"]
    fit = (seconds, progress["samples"] / seconds, count_params(model)[0])
    ran = {"epochs": trainer.state.epoch, "steps": trainer.state.global_step}  # as trained, not as planned
    write_metrics(TRAIN_METRICS, compared_train(kept_val, progress["best_epoch"], *fit, **ran))
    restore_dropout(model)  # the saved model names no function only this process registered
    save_model(model.to("cpu"), params)
    store.clean()
    log.info("saved %s (%.0f s, %.1f samples/s)", MODEL_DIR, seconds, progress["samples"] / seconds)
