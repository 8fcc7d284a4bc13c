"""train: tokenized train/val splits -> a LoRA adapter (or a fully fine-tuned model) in models/.

Loads `model.name` with AutoModelForSequenceClassification, wraps it with a peft LoraConfig from
`lora.*` (or trains every weight with `lora.enabled: false`), and runs a plain loop: AdamW, linear
warmup then decay, gradient clipping, length-bucketed batches. DVCLive logs loss and lr every
`train.log_every` steps and, per epoch, train and val loss, accuracy and macro-F1.

Every `train.checkpoint_every` steps, at each epoch end and on SIGINT/SIGTERM, a checkpoint
(trainable weights, optimizer, scheduler, RNG state, step, DVCLive history) is written atomically
to checkpoints/train/. Re-running the stage with the same params and data resumes from it and
ends with the same numbers as an uninterrupted run.

Outputs: models/adapter/ (peft format, classifier head included), metrics/train/ (DVCLive).
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import signal
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from dvclive import Live
from safetensors.torch import load_file, save_file
from sklearn.metrics import f1_score
from tqdm import tqdm
from transformers import get_linear_schedule_with_warmup

from stages.batching import TokenizedSplit, collate, make_batches
from stages.device import pick_device
from stages.errors import UserError, run_stage
from stages.inference import predict_proba
from stages.io import atomic_dir
from stages.metrics import classification_metrics
from stages.modeling import apply_lora, count_params, load_base_model, lora_weight_mean, max_positions
from stages.params import Params, load_params

DATA_DIR = Path("data/tokenized")
LABELS = Path("data/prepared/labels.json")
MODEL_DIR = Path("models/adapter")
LIVE_DIR = Path("metrics/train")
CKPT_DIR = Path("checkpoints/train")
log = logging.getLogger("train")


class StopRequested(Exception):
    """SIGINT/SIGTERM arrived; a checkpoint has been saved."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by signal {signum}; checkpoint saved in {CKPT_DIR}, re-run to resume")
        self.signum = signum


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
    return {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def save_checkpoint(model, optimizer, scheduler, progress: dict, fp: str) -> None:
    with atomic_dir(CKPT_DIR) as tmp:
        save_file(trainable_state(model), tmp / "trainable.safetensors")
        torch.save(
            {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "torch_rng": torch.get_rng_state(), "progress": progress},
            tmp / "state.pt",
        )
        if LIVE_DIR.exists():
            shutil.copytree(LIVE_DIR, tmp / "live")
        (tmp / "fingerprint.txt").write_text(fp)


def load_checkpoint(model, optimizer, scheduler, fp: str) -> dict | None:
    """Restore a matching checkpoint; returns its progress, or None to start afresh."""
    if not (CKPT_DIR / "fingerprint.txt").exists():
        return None
    if (CKPT_DIR / "fingerprint.txt").read_text() != fp:
        log.info("checkpoint in %s is for other params or data: starting afresh", CKPT_DIR)
        return None
    weights = load_file(CKPT_DIR / "trainable.safetensors")
    missing = set(trainable_state(model)) - set(weights)
    if missing:
        log.info("checkpoint lacks %d trainable tensors: starting afresh", len(missing))
        return None
    model.load_state_dict(weights, strict=False)
    state = torch.load(CKPT_DIR / "state.pt", weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    shutil.rmtree(LIVE_DIR, ignore_errors=True)
    if (CKPT_DIR / "live").exists():
        shutil.copytree(CKPT_DIR / "live", LIVE_DIR)
    return state["progress"]


def save_model(model, params: Params) -> None:
    """Adapter (or full model) in Hugging Face format, written atomically."""
    with atomic_dir(MODEL_DIR) as tmp:
        if params.lora.enabled:
            # record the portable name, not this machine's resolved folder
            model.peft_config["default"].base_model_name_or_path = params.model.name
        model.save_pretrained(tmp, safe_serialization=True)


class StopFlag:
    """Turns SIGINT/SIGTERM into a flag the loop checks after each step."""

    def __init__(self) -> None:
        self.signal: int | None = None
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        self.signal = signum


def main() -> None:
    params = load_params()
    tp = params.train
    labels = json.loads(LABELS.read_text(encoding="utf-8"))
    meta = json.loads((DATA_DIR / "meta.json").read_text())
    train_split = TokenizedSplit.load(DATA_DIR / "train.npz")
    val_split = TokenizedSplit.load(DATA_DIR / "val.npz")
    device = pick_device(tp.device)
    seed_everything(tp.seed)
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True)

    model = load_base_model(params.model.name, labels)
    positions = max_positions(model)
    if positions is not None and params.model.max_length > positions:
        raise UserError(
            f"model.max_length={params.model.max_length} exceeds the {positions} positions "
            f"of {params.model.name}; set model.max_length <= {positions}"
        )
    model = apply_lora(model, params.lora).to(device)
    trainable, total = count_params(model)
    log.info("%s: %s trainable of %s parameters (%.2f%%)", params.model.name, f"{trainable:,}", f"{total:,}", 100 * trainable / total)

    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=tp.lr, weight_decay=tp.weight_decay
    )
    steps_per_epoch = len(make_batches(train_split, params.buckets, tp.batch_size, shuffle=True, seed=tp.seed))
    total_steps = steps_per_epoch * tp.epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, math.ceil(tp.warmup_ratio * total_steps), total_steps)

    fp = fingerprint(params)
    progress = load_checkpoint(model, optimizer, scheduler, fp)
    resumed = progress is not None
    if not resumed:
        progress = {"step": 0, "epoch": 0, "batch": 0, "seconds": 0.0, "samples": 0,
                    "epoch_loss": 0.0, "epoch_preds": [], "epoch_labels": [],
                    "window_loss": 0.0, "window_steps": 0, "window_correct": 0, "window_rows": 0}
    else:
        log.info("resuming from %s at step %d (epoch %d, batch %d)", CKPT_DIR, progress["step"], progress["epoch"] + 1, progress["batch"])

    stop = StopFlag()
    pad_id = meta["pad_token_id"]
    with Live(dir=str(LIVE_DIR), resume=resumed, save_dvc_exp=False, dvcyaml=None) as live:
        live.summary.update({"trainable_params": trainable, "total_params": total,
                             "trainable_percent": round(100 * trainable / total, 4),
                             "steps": total_steps, "steps_per_epoch": steps_per_epoch})
        bar = tqdm(total=total_steps, initial=progress["step"], desc="train", unit="step", mininterval=1.0)
        started = time.perf_counter() - progress["seconds"]
        for epoch in range(progress["epoch"], tp.epochs):
            batches = make_batches(train_split, params.buckets, tp.batch_size, shuffle=True, seed=tp.seed, epoch=epoch)
            model.train()
            for length, rows in batches[progress["batch"]:]:
                batch = {k: v.to(device) for k, v in collate(train_split, length, rows, pad_id).items()}
                out = model(**batch)
                out.loss.backward()
                if tp.max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), tp.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)

                loss = float(out.loss.detach())
                progress["step"] += 1
                progress["batch"] += 1
                progress["samples"] += len(rows)
                progress["epoch_loss"] += loss * len(rows)
                progress["epoch_preds"] += out.logits.argmax(-1).tolist()
                progress["epoch_labels"] += batch["labels"].tolist()
                progress["window_loss"] += loss
                progress["window_steps"] += 1
                progress["window_correct"] += int((out.logits.argmax(-1) == batch["labels"]).sum())
                progress["window_rows"] += len(rows)
                bar.update(1)
                if progress["step"] % tp.log_every == 0:
                    bar.set_postfix(loss=f"{progress['window_loss'] / progress['window_steps']:.4f}")
                    live.step = progress["step"]
                    live.log_metric("train_step/loss", progress["window_loss"] / progress["window_steps"])
                    live.log_metric("train_step/accuracy", progress["window_correct"] / progress["window_rows"])
                    live.log_metric("train_step/lr", scheduler.get_last_lr()[0])
                    progress.update(window_loss=0.0, window_steps=0, window_correct=0, window_rows=0)
                if stop.signal is not None or (tp.checkpoint_every and progress["step"] % tp.checkpoint_every == 0):
                    progress["seconds"] = time.perf_counter() - started
                    live.make_summary()
                    save_checkpoint(model, optimizer, scheduler, progress, fp)
                    if stop.signal is not None:
                        raise StopRequested(stop.signal)

            # end of epoch: train metrics as seen during the epoch, val metrics on the held-out split
            epoch_labels = np.asarray(progress["epoch_labels"])
            epoch_preds = np.asarray(progress["epoch_preds"])
            val = classification_metrics(
                val_split.labels,
                predict_proba(model, val_split, params.buckets, params.evaluate.batch_size, pad_id, device, desc="val"),
                labels,
            )
            live.step = progress["step"]
            live.log_metric("train/loss", progress["epoch_loss"] / len(epoch_labels))
            live.log_metric("train/accuracy", float((epoch_preds == epoch_labels).mean()))
            live.log_metric("train/macro_f1", float(f1_score(epoch_labels, epoch_preds, average="macro")))
            for key in ("loss", "accuracy", "macro_f1"):
                live.log_metric(f"val/{key}", val[key])
            live.log_metric("epoch", epoch + 1, plot=False)
            log.info("epoch %d/%d: val accuracy %.4f, macro-F1 %.4f, loss %.4f",
                     epoch + 1, tp.epochs, val["accuracy"], val["macro_f1"], val["loss"])
            progress.update(epoch=epoch + 1, batch=0, epoch_loss=0.0, epoch_preds=[], epoch_labels=[])
            progress["seconds"] = time.perf_counter() - started
            live.make_summary()
            if epoch + 1 < tp.epochs:
                save_checkpoint(model, optimizer, scheduler, progress, fp)
        bar.close()

        seconds = time.perf_counter() - started
        live.summary.update({"train_seconds": round(seconds, 1),
                             "train_samples_per_second": round(progress["samples"] / seconds, 2),
                             "lora_weight_mean": lora_weight_mean(model)})
        live.make_summary()
    save_model(model, params)
    shutil.rmtree(CKPT_DIR, ignore_errors=True)
    log.info("saved %s (%.0f s, %.1f samples/s)", MODEL_DIR, seconds, progress["samples"] / seconds)


def run() -> None:
    try:
        main()
    except StopRequested as stopped:
        print(stopped, file=sys.stderr)
        sys.exit(128 + stopped.signum)  # the shell's convention for "killed by signal"


if __name__ == "__main__":
    run_stage(run)
