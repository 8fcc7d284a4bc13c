"""The training engine behind the train stage: tokenized train/val splits -> a LoRA adapter (or a fully fine-tuned model) in models/.

Loads `model.name` with AutoModelForSequenceClassification, wraps it with a peft LoraConfig from
`lora.*` (LoRA, rsLoRA, DoRA; `train.method: full` trains every weight), and runs a plain loop:
AdamW (or LoRA+ with `lora.plus_ratio`), linear warmup then decay, gradient clipping, length-
bucketed batches. DVCLive logs loss, accuracy and lr every `train.log_every` steps and, per epoch,
train and val loss, accuracy and macro-F1. With `train.patience`, training stops after that many
epochs without a val macro-F1 gain and the best epoch's weights are saved.
`train.method: tfidf` fits the TF-IDF + logistic regression baseline instead.

Every `train.checkpoint_every` steps, at each epoch end and on SIGINT/SIGTERM, a checkpoint
(trainable weights, optimizer, scheduler, RNG state, step, DVCLive history) is written atomically
to checkpoints/train/. Re-running the stage with the same params and data resumes from it and
ends with the same numbers as an uninterrupted run.

Outputs: models/classifier/ (peft format, classifier head included), metrics/train/ (DVCLive).
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import signal
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from dvclive import Live
from safetensors.torch import load_file, save_file
from tqdm import tqdm
from transformers import get_linear_schedule_with_warmup

from lora_dvc.batching import TokenizedSplit, collate, make_batches
from lora_dvc.device import Runtime, xla_available, xla_compile_stats, xla_has_tpu
from lora_dvc.errors import UserError
from lora_dvc.runner import run_stage, setup_logging
from lora_dvc.inference import merge_shards, predict_proba
from lora_dvc.atomic import atomic_dir
from lora_dvc.metrics import classification_metrics
from lora_dvc.modeling import apply_method, count_params, load_base_model, lora_weight_mean, max_positions
from lora_dvc.params import Params, load_params
from lora_dvc.tfidf import TfidfClassifier

from lora_dvc.artifacts import LABELS, MODEL as MODEL_DIR, PREPARED, TOKENIZED as DATA_DIR, TRAIN_LIVE as LIVE_DIR

CKPT_DIR = Path("checkpoints/train")
log = logging.getLogger("train")


class StopRequested(Exception):
    """SIGINT/SIGTERM arrived; a checkpoint has been saved."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by signal {signum}; checkpoint saved in {CKPT_DIR}, re-run to resume")
        self.signum = signum


class StopFlag:
    """Turns SIGINT/SIGTERM into a flag the loop checks after each step."""

    def __init__(self) -> None:
        self.signal: int | None = None
        if threading.current_thread() is not threading.main_thread():
            # torch_xla.launch runs each core's loop in a thread, where handlers cannot be set:
            # with train.cores=all a signal stops the run and it resumes from the last periodic checkpoint
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        self.signal = signum


class Tally:
    """Loss sum and confusion matrix kept on the device: no host sync inside the step loop."""

    def __init__(self, n_classes: int, device: torch.device, state: dict | None = None) -> None:
        state = state or {}
        self.loss = torch.tensor(state.get("loss", 0.0), dtype=torch.float64, device=device)
        self.confusion = torch.tensor(state.get("confusion", [[0] * n_classes] * n_classes), dtype=torch.float64, device=device)
        self.steps = state.get("steps", 0)

    def add(self, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        n = logits.shape[-1]
        self.loss += loss.detach().double() * labels.shape[0]
        self.confusion += F.one_hot(labels, n).double().T @ F.one_hot(logits.argmax(-1), n).double()
        self.steps += 1

    def state(self) -> dict:
        return {"loss": float(self.loss), "confusion": self.confusion.cpu().tolist(), "steps": self.steps}

    @staticmethod
    def summary(state: dict) -> dict:
        confusion = np.asarray(state["confusion"])
        rows = confusion.sum()
        tp = np.diag(confusion)
        precision = np.divide(tp, confusion.sum(0), out=np.zeros_like(tp), where=confusion.sum(0) > 0)
        recall = np.divide(tp, confusion.sum(1), out=np.zeros_like(tp), where=confusion.sum(1) > 0)
        f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(tp), where=precision + recall > 0)
        return {"loss": state["loss"] / max(rows, 1), "accuracy": float(tp.sum() / max(rows, 1)), "macro_f1": float(f1.mean())}


class NoLive:
    """What processes other than rank 0 log to: nothing."""

    summary: dict = {}
    step = 0

    def log_metric(self, *args, **kwargs) -> None: ...
    def make_summary(self, *args, **kwargs) -> None: ...
    def __enter__(self): return self
    def __exit__(self, *exc) -> None: ...


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)


def fingerprint(params: Params) -> str:
    """What a checkpoint must match to be resumed: every param that changes the result, and the data."""
    keys = {k: asdict(getattr(params, k)) for k in ("model", "lora", "train")}
    for volatile in ("device", "log_every", "checkpoint_every"):
        keys["train"].pop(volatile)
    digest = hashlib.sha256(json.dumps(keys, sort_keys=True).encode())
    for split in ("train", "val"):
        digest.update((DATA_DIR / f"{split}.npz").read_bytes())
    return digest.hexdigest()


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().contiguous().clone() for n, p in model.named_parameters() if p.requires_grad}


def to_cpu(obj):
    """A state dict with every tensor on the CPU: a checkpoint written on a TPU or GPU loads anywhere
    (optimizer.load_state_dict moves the state back to each parameter's device)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


def save_checkpoint(model, optimizer, scheduler, progress: dict, best: dict | None, fp: str, runtime: Runtime) -> None:
    with atomic_dir(CKPT_DIR) as tmp:
        save_file(trainable_state(model), tmp / "trainable.safetensors")
        if best is not None:
            save_file(best, tmp / "best.safetensors")
        torch.save(
            {"optimizer": to_cpu(optimizer.state_dict()), "scheduler": scheduler.state_dict(),
             "torch_rng": torch.get_rng_state(), "device_rng": runtime.rng_state(), "progress": progress},
            tmp / "state.pt",
        )
        if LIVE_DIR.exists():
            shutil.copytree(LIVE_DIR, tmp / "live")
        (tmp / "fingerprint.txt").write_text(fp)


def load_checkpoint(model, optimizer, scheduler, fp: str, runtime: Runtime) -> tuple[dict, dict | None] | None:
    """Restore a matching checkpoint: (progress, best weights), or None to start afresh."""
    if not (CKPT_DIR / "fingerprint.txt").exists():
        return None
    if (CKPT_DIR / "fingerprint.txt").read_text() != fp:
        log.info("checkpoint in %s is for other params or data: starting afresh", CKPT_DIR)
        return None
    weights = load_file(CKPT_DIR / "trainable.safetensors")
    if set(trainable_state(model)) - set(weights):
        log.info("checkpoint in %s lacks trainable tensors: starting afresh", CKPT_DIR)
        return None
    model.load_state_dict(weights, strict=False)
    state = torch.load(CKPT_DIR / "state.pt", weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    runtime.set_rng_state(state.get("device_rng"))
    shutil.rmtree(LIVE_DIR, ignore_errors=True)
    if (CKPT_DIR / "live").exists():
        shutil.copytree(CKPT_DIR / "live", LIVE_DIR)
    best = load_file(CKPT_DIR / "best.safetensors") if (CKPT_DIR / "best.safetensors").exists() else None
    return state["progress"], best


def save_model(model, params: Params) -> None:
    """Adapter (or full model) in Hugging Face format, written atomically."""
    with atomic_dir(MODEL_DIR) as tmp:
        if params.train.method == "lora":
            config = model.peft_config["default"]
            # record the portable name, not this machine's resolved folder
            config.base_model_name_or_path = params.model.name
            # peft keeps target modules as a set, whose order changes from process to process;
            # sorted, the same run writes the same bytes (and DVC sees the same md5)
            if isinstance(config.target_modules, (set, list, tuple)):
                config.target_modules = sorted(config.target_modules)
        model.save_pretrained(tmp, safe_serialization=True)
        # peft's README.md is an empty card template naming this machine's model folder; the
        # export stage writes the real model card
        (tmp / "README.md").unlink(missing_ok=True)


def build_model(params: Params, labels: list[str]) -> torch.nn.Module:
    model = load_base_model(params.model.name, labels)
    positions = max_positions(model)
    if positions is not None and params.model.max_length > positions:
        raise UserError(
            f"model.max_length={params.model.max_length} exceeds the {positions} positions "
            f"of {params.model.name}; set model.max_length <= {positions}"
        )
    model = apply_method(model, params.train.method, params.lora)
    trainable, total = count_params(model)
    budget = params.lora.max_trainable
    if budget is not None and trainable > budget:
        raise UserError(
            f"lora.max_trainable: this config trains {trainable:,} parameters, over the budget of {budget:,}; "
            "lower lora.r, use fewer lora.targets, or raise lora.max_trainable"
        )
    log.info("%s: %s trainable of %s parameters (%.2f%%)", params.model.name, f"{trainable:,}", f"{total:,}", 100 * trainable / total)
    return model


def make_optimizer(model: torch.nn.Module, params: Params) -> torch.optim.Optimizer:
    tp = params.train
    if params.train.method == "lora" and params.lora.plus_ratio:
        from peft.optimizers import create_loraplus_optimizer

        # LoRA+: the B matrices learn plus_ratio times faster than the A matrices
        return create_loraplus_optimizer(model, torch.optim.AdamW, lr=tp.lr, loraplus_lr_ratio=params.lora.plus_ratio,
                                         weight_decay=tp.weight_decay)
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=tp.lr, weight_decay=tp.weight_decay)


def reduced_state(tally: Tally, runtime: Runtime) -> dict:
    """A tally's state summed over all cores (every process must call it at the same step)."""
    state = tally.state() if runtime.world_size == 1 else {"steps": tally.steps}
    if runtime.world_size > 1:
        state["loss"] = float(runtime.all_reduce_sum(tally.loss).cpu())
        state["confusion"] = runtime.all_reduce_sum(tally.confusion).cpu().tolist()
    return state


def epoch_batches(split: TokenizedSplit, params: Params, runtime: Runtime, epoch: int) -> list:
    """This process's batches for one epoch: the same count on every process, fixed size on XLA."""
    batches = make_batches(split, params.buckets, params.train.batch_size, shuffle=True,
                           seed=params.train.seed, epoch=epoch, drop_last=runtime.static_shapes)
    per_process = len(batches) // runtime.world_size
    if per_process == 0:
        raise UserError(f"train split has {len(split)} rows: too few for one batch of {params.train.batch_size} "
                        f"per process; lower train.batch_size or add data")
    return batches[runtime.rank : per_process * runtime.world_size : runtime.world_size]


def evaluate_val(model, val_split, params: Params, runtime: Runtime, pad_id: int, labels: list[str]) -> dict:
    shard = predict_proba(model, val_split, params.buckets, params.evaluate.batch_size, pad_id, runtime.device,
                          desc="val", progress=runtime.is_main, static_shapes=runtime.static_shapes,
                          rank=runtime.rank, world_size=runtime.world_size, autocast=runtime.autocast())
    probs = merge_shards(runtime.gather("val_probs", shard))
    return classification_metrics(val_split.labels, probs, labels)


def train_transformer(params: Params, runtime: Runtime) -> None:
    tp = params.train
    labels = json.loads(LABELS.read_text(encoding="utf-8"))
    pad_id = json.loads((DATA_DIR / "meta.json").read_text())["pad_token_id"]
    train_split = TokenizedSplit.load(DATA_DIR / "train.npz")
    val_split = TokenizedSplit.load(DATA_DIR / "val.npz")
    seed_everything(tp.seed)
    runtime.seed(tp.seed)
    if runtime.kind == "cpu":
        torch.use_deterministic_algorithms(True)

    model = build_model(params, labels).to(runtime.device)
    trainable, total = count_params(model)
    trainable_params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(model, params)
    steps_per_epoch = len(epoch_batches(train_split, params, runtime, 0))
    total_steps = steps_per_epoch * tp.epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, math.ceil(tp.warmup_ratio * total_steps), total_steps)

    fp = fingerprint(params)
    restored = load_checkpoint(model, optimizer, scheduler, fp, runtime)
    if restored is not None:
        progress, best = restored
        log.info("resuming from %s at step %d (epoch %d, batch %d)", CKPT_DIR, progress["step"], progress["epoch"] + 1, progress["batch"])
    else:
        progress = {"step": 0, "epoch": 0, "batch": 0, "seconds": 0.0, "samples": 0, "epoch_tally": None,
                    "window_tally": None, "best_f1": -1.0, "best_epoch": 0, "stale_epochs": 0, "compilations": None}
        best = None
    # a checkpoint holds the epoch tally summed over all cores: rank 0 takes it, the others restart at zero
    epoch_tally = Tally(len(labels), runtime.device, progress["epoch_tally"] if runtime.is_main else None)
    window_tally = Tally(len(labels), runtime.device, progress["window_tally"] if runtime.is_main else None)

    def checkpoint() -> None:
        progress.update(seconds=time.perf_counter() - started, epoch_tally=reduced_state(epoch_tally, runtime),
                        window_tally=window_tally.state())
        if runtime.is_main:
            live.make_summary()
            save_checkpoint(model, optimizer, scheduler, progress, best, fp, runtime)
        runtime.barrier("checkpoint")

    stop = StopFlag()
    live = Live(dir=str(LIVE_DIR), resume=restored is not None, save_dvc_exp=False, dvcyaml=None) if runtime.is_main else NoLive()
    with live:
        live.summary.update({"trainable_params": trainable, "total_params": total,
                             "trainable_percent": round(100 * trainable / total, 4), "steps_per_epoch": steps_per_epoch})
        bar = tqdm(total=total_steps, initial=progress["step"], desc="train", unit="step", mininterval=1.0, disable=not runtime.is_main)
        started = time.perf_counter() - progress["seconds"]
        for epoch in range(progress["epoch"], tp.epochs):
            model.train()
            host_batches = (collate(train_split, length, rows, pad_id)
                            for length, rows in epoch_batches(train_split, params, runtime, epoch)[progress["batch"]:])
            for batch in runtime.to_device(host_batches):
                with runtime.autocast():
                    out = model(**batch)
                runtime.backward(out.loss)
                runtime.step(optimizer, trainable_params, tp.max_grad_norm)
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                epoch_tally.add(out.loss, out.logits, batch["labels"])
                window_tally.add(out.loss, out.logits, batch["labels"])
                runtime.sync()

                progress["step"] += 1
                progress["batch"] += 1
                progress["samples"] += batch["labels"].shape[0] * runtime.world_size
                bar.update(1)
                if progress["step"] % tp.log_every == 0:  # the only host syncs of the loop
                    window = Tally.summary(window_tally.state())
                    bar.set_postfix(loss=f"{window['loss']:.4f}")
                    live.step = progress["step"]
                    live.log_metric("train_step/loss", window["loss"])
                    live.log_metric("train_step/accuracy", window["accuracy"])
                    live.log_metric("train_step/lr", scheduler.get_last_lr()[0])
                    window_tally = Tally(len(labels), runtime.device)
                if stop.signal is not None or (tp.checkpoint_every and progress["step"] % tp.checkpoint_every == 0):
                    checkpoint()
                    if stop.signal is not None:
                        raise StopRequested(stop.signal)

            # end of epoch: train metrics as seen during the epoch (all cores), val on the held-out split
            train_metrics = Tally.summary(reduced_state(epoch_tally, runtime))
            val = evaluate_val(model, val_split, params, runtime, pad_id, labels)
            live.step = progress["step"]
            for key in ("loss", "accuracy", "macro_f1"):
                live.log_metric(f"train/{key}", train_metrics[key])
                live.log_metric(f"val/{key}", val[key])
            live.log_metric("epoch", epoch + 1, plot=False)
            compile_stats = xla_compile_stats() if runtime.kind == "xla" else None
            if compile_stats is not None:
                live.log_metric("xla/compilations", compile_stats["compilations"])
                live.log_metric("xla/compile_seconds", compile_stats["compile_seconds"])
                if epoch > 0 and progress["compilations"] is not None and compile_stats["compilations"] > progress["compilations"]:
                    log.warning("XLA compiled %d more graphs in epoch %d: shapes are not static",
                                compile_stats["compilations"] - progress["compilations"], epoch + 1)
                progress["compilations"] = compile_stats["compilations"]
            log.info("epoch %d/%d: val accuracy %.4f, macro-F1 %.4f, loss %.4f",
                     epoch + 1, tp.epochs, val["accuracy"], val["macro_f1"], val["loss"])

            if val["macro_f1"] > progress["best_f1"]:
                progress.update(best_f1=val["macro_f1"], best_epoch=epoch + 1, stale_epochs=0)
                best = trainable_state(model) if tp.patience else None
            else:
                progress["stale_epochs"] += 1
            epoch_tally = Tally(len(labels), runtime.device)
            progress.update(epoch=epoch + 1, batch=0)
            if tp.patience and progress["stale_epochs"] >= tp.patience:
                log.info("early stop: no val macro-F1 gain for %d epoch(s); keeping epoch %d", tp.patience, progress["best_epoch"])
                break
            if epoch + 1 < tp.epochs:
                checkpoint()
        bar.close()

        if best is not None:  # early stopping keeps the best epoch's weights
            model.load_state_dict({k: v.to(runtime.device) for k, v in best.items()}, strict=False)
        seconds = time.perf_counter() - started
        live.summary.update({"steps": progress["step"], "epochs_run": progress["epoch"], "best_epoch": progress["best_epoch"],
                             "train_seconds": round(seconds, 1),
                             "train_samples_per_second": round(progress["samples"] / seconds, 2),
                             "lora_weight_mean": lora_weight_mean(model)})
        live.make_summary()
    if runtime.is_main:
        save_model(model.to("cpu"), params)
        shutil.rmtree(CKPT_DIR, ignore_errors=True)
        log.info("saved %s (%.0f s, %.1f samples/s)", MODEL_DIR, seconds, progress["samples"] / seconds)


def train_tfidf(params: Params) -> None:
    """The classical baseline: fit on train, report val, save to models/classifier/."""
    labels = json.loads(LABELS.read_text(encoding="utf-8"))
    frames = {s: pd.read_csv(PREPARED / f"{s}.csv", dtype={"text": str}, keep_default_na=False) for s in ("train", "val")}
    started = time.perf_counter()
    model = TfidfClassifier().fit(frames["train"]["text"].tolist(), frames["train"]["label"].to_numpy())
    seconds = time.perf_counter() - started
    metrics = {s: classification_metrics(f["label"].to_numpy(), model.predict_proba(f["text"].tolist()), labels)
               for s, f in frames.items()}
    with Live(dir=str(LIVE_DIR), save_dvc_exp=False, dvcyaml=None) as live:
        for split, values in metrics.items():
            for key in ("loss", "accuracy", "macro_f1"):
                live.log_metric(f"{split}/{key}", values[key])
        live.summary.update({"trainable_params": model.n_params, "total_params": model.n_params, "trainable_percent": 100.0,
                             "steps": 0, "train_seconds": round(seconds, 1),
                             "train_samples_per_second": round(len(frames["train"]) / seconds, 2), "lora_weight_mean": 0.0})
    with atomic_dir(MODEL_DIR) as tmp:
        model.save(tmp)
    log.info("tfidf: val accuracy %.4f, macro-F1 %.4f (%.0f s)", metrics["val"]["accuracy"], metrics["val"]["macro_f1"], seconds)


def worker(params: Params) -> None:
    train_transformer(params, Runtime.create(params.train.device, params.train.precision))


def _xla_worker(index: int, params: Params) -> None:  # torch_xla.launch passes the process index
    setup_logging()  # a spawned process starts with logging unconfigured
    worker(params)


def main() -> None:
    params = load_params()
    if params.train.method == "tfidf":
        return train_tfidf(params)
    if params.train.cores == "all":
        # decided before launch: touching the XLA device first would stop torch_xla.launch from starting
        if not (params.train.device == "xla" and xla_available() or params.train.device == "auto" and xla_has_tpu()):
            raise UserError("train.cores=all runs one process per TPU core: it needs torch_xla and "
                            f"train.device=xla, or auto on a TPU host (now {params.train.device}); see docs/tpu.md")
        import torch_xla

        torch_xla.launch(_xla_worker, args=(params,))
        return
    worker(params)


def run() -> None:
    try:
        main()
    except StopRequested as stopped:
        print(stopped, file=sys.stderr)
        sys.exit(128 + stopped.signum)  # the shell's convention for "killed by signal"

