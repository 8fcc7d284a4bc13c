"""What the train stage adds to transformers' Trainer, as TrainerCallbacks.

- `Tallies`: loss and confusion counts of the training batches, kept on the device (train accuracy and
  macro-F1 need the logits Trainer throws away; `TallyingTrainer.compute_loss` feeds them).
- `LiveCallback`: the pipeline's DVCLive keys (train_step/*, train|val/* per val pass) that dvc.yaml's
  plots and the report read; dvclive's own callback logs Trainer's names and no train accuracy.
- `CheckpointCallback`: a checkpoint every `train.checkpoint_every` steps besides Trainer's per-epoch ones,
  with the DVCLive history, the tallies and a verified marker, uploaded to a remote store when complete.
- `StopOnSignal`: SIGINT/SIGTERM finish the current step, save a checkpoint and stop.
"""

from __future__ import annotations

import logging
import math
import shutil
import signal
import threading
import time
from pathlib import Path

import numpy as np
import torch
from transformers import TrainerCallback

from lora_dvc.checkpoints import CheckpointStore, write_marker
from lora_dvc.metrics import tallied_scores

log = logging.getLogger("train")


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over data-parallel processes (a no-op in one process)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        tensor = tensor.clone()
        torch.distributed.all_reduce(tensor)
    return tensor


class Tally:
    """Loss sum, row count and confusion matrix kept on the device: no host sync per step.

    Multi-label (`multi_label`, multi-hot labels): a label counts as predicted where its logit is >= 0
    (the caller shifts the logits by evaluate.threshold's logit), and `confusion` holds per-label true
    positives, predictions and actuals in its rows 0-2, exact-match rows and rows in its last column."""

    def __init__(self, n_classes: int, state: dict | None = None, multi_label: bool = False) -> None:
        self.n_classes, self.multi_label = n_classes, multi_label
        self.reset(state)

    def reset(self, state: dict | None = None) -> None:
        rows, columns = (3, self.n_classes + 1) if self.multi_label else (self.n_classes, self.n_classes)
        state = state or {"loss": 0.0, "confusion": [[0] * columns] * rows}
        # one element, not 0-dim: XLA takes a 0-dim 0 (or 1) moved to the device as a constant of the graph,
        # so the step after each reset would compile a graph of its own
        self.loss = torch.tensor([state["loss"]], dtype=torch.float64)
        self.confusion = torch.tensor(state["confusion"], dtype=torch.float64)

    def add(self, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        if self.loss.device != logits.device:
            self.loss, self.confusion = self.loss.to(logits.device), self.confusion.to(logits.device)
        if self.multi_label:
            predicted, actual = logits >= 0, labels > 0.5
            self.loss += loss.detach().double() * labels.shape[0]
            counts = torch.stack([(predicted & actual).sum(0), predicted.sum(0), actual.sum(0)]).double()
            self.confusion[:, :-1] += counts
            self.confusion[0, -1] += (predicted == actual).all(-1).sum().double()
            self.confusion[1, -1] += labels.shape[0]
            return
        # one-hot rows by comparison, not by indexing the kept rows: a boolean index has a shape that depends on
        # the data, which XLA reads on the host (a sync and two extra graphs every step). Rows padded in for
        # static shapes carry label -100 and match no class, so they add nothing.
        classes = torch.arange(self.n_classes, device=labels.device)
        actual = (labels.unsqueeze(-1) == classes).double()
        predicted = (logits.argmax(-1).unsqueeze(-1) == classes).double()
        self.loss += loss.detach().double() * (labels >= 0).sum()
        self.confusion += actual.T @ predicted

    def reduced_state(self) -> dict:
        """This tally summed over all processes (every process must call it at the same point)."""
        state = {"loss": float(all_reduce_sum(self.loss)), "confusion": all_reduce_sum(self.confusion).cpu().tolist()}
        return state | ({"multi_label": True} if self.multi_label else {})

    @staticmethod
    def summary(state: dict) -> dict:
        confusion = np.asarray(state["confusion"])
        multi_label = bool(state.get("multi_label"))
        rows = confusion[1, -1] if multi_label else confusion.sum()
        accuracy, macro_f1 = tallied_scores(confusion, multi_label)
        return {"loss": state["loss"] / max(rows, 1), "accuracy": accuracy, "macro_f1": macro_f1, "rows": int(rows)}


class Tallies:
    """The log-window and the epoch tallies, plus what a resumed run must carry on."""

    def __init__(self, n_classes: int, multi_label: bool = False) -> None:
        self.window = Tally(n_classes, multi_label=multi_label)
        self.epoch = Tally(n_classes, multi_label=multi_label)
        self.epoch_train: dict | None = None  # train metrics of the epoch just ended
        self.progress = {"best_f1": -1.0, "best_epoch": 0, "epochs_run": 0, "seconds": 0.0, "samples": 0}

    def add(self, loss, logits, labels, world_size: int) -> None:
        self.window.add(loss, logits, labels)
        self.epoch.add(loss, logits, labels)
        self.progress["samples"] += int(labels.shape[0]) * world_size

    def state(self) -> dict:
        return {"epoch": self.epoch.reduced_state(), "progress": dict(self.progress)}

    def restore(self, state: dict, is_main: bool) -> None:
        # the saved epoch tally is the sum over all processes: rank 0 takes it, the others restart at 0
        if is_main:
            self.epoch.reset(state["epoch"])
        self.progress.update(state["progress"])


def is_new_best(args, state, metrics: dict) -> bool:
    """Whether this val pass beats the best so far on args.metric_for_best_model, as Trainer decides it
    (strictly better; called before Trainer updates state.best_metric)."""
    score = metrics[f"eval_{args.metric_for_best_model.removeprefix('eval_')}"]
    if state.best_metric is None:
        return True
    return score > state.best_metric if args.greater_is_better else score < state.best_metric


class LiveCallback(TrainerCallback):
    """The pipeline's DVCLive curves from Trainer's events; `live` is None on ranks other than 0."""

    def __init__(
        self, live, tallies: Tallies, epochs: int, xla: bool = False, log_every: int = 0, every: int = 0
    ) -> None:
        self.live, self.tallies, self.epochs, self.xla = live, tallies, epochs, xla
        self.compilations: int | None = None
        # XLA only: Trainer logs nothing per step there (lora_dvc.device.Runtime.trainer_arguments), so this callback
        # logs the window itself at the steps Trainer logs elsewhere (every log_every steps, at each checkpoint
        # step `every` and at the epoch end); and it counts the graphs compiled by the val passes apart
        self.log_every, self.every = log_every, every
        self.logged_step, self.lr = 0, None
        self.eval_compilations, self.before_eval, self.evaluated_epoch = 0, 0, None

    @classmethod
    def of(cls, trainer) -> LiveCallback:
        return next(cb for cb in trainer.callback_handler.callbacks if isinstance(cb, cls))

    def on_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        if self.xla:  # the rate this step used, before the scheduler steps (Trainer's learning_rate)
            self.lr = optimizer.param_groups[0]["lr"]

    def on_step_end(self, args, state, control, **kwargs):
        step = state.global_step
        if self.xla and ((self.log_every and step % self.log_every == 0) or (self.every and step % self.every == 0)):
            self.log_window(state)

    def log_window(self, state) -> None:
        """XLA: the step's graph runs first (the cut falls where the data loader's would), then the window is read."""
        from lora_dvc.device import xla_sync

        xla_sync()
        window = Tally.summary(self.tallies.window.reduced_state())
        self.tallies.window.reset()
        self.logged_step = state.global_step
        if self.live is not None and window["rows"]:
            self.live.step = state.global_step
            self.live.log_metric("train_step/loss", window["loss"])
            self.live.log_metric("train_step/accuracy", window["accuracy"])
            self.live.log_metric("train_step/lr", self.lr)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "loss" not in logs or "learning_rate" not in logs:
            return  # evaluation and end-of-training logs
        window = Tally.summary(self.tallies.window.reduced_state())
        self.tallies.window.reset()
        if self.live is not None:
            self.live.step = state.global_step
            self.live.log_metric("train_step/loss", logs["loss"])
            self.live.log_metric("train_step/accuracy", window["accuracy"])
            self.live.log_metric("train_step/lr", logs["learning_rate"])

    def on_epoch_end(self, args, state, control, **kwargs):
        if self.xla and state.global_step > self.logged_step:
            self.log_window(state)
        self.tallies.epoch_train = Tally.summary(self.tallies.epoch.reduced_state())
        self.tallies.epoch.reset()
        if self.xla:
            from lora_dvc.device import xla_compile_stats

            self.before_eval = xla_compile_stats()["compilations"]

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        # the epoch the val pass falls in (eval_strategy steps: mid-epoch passes belong to the epoch under way)
        epoch = math.ceil(round(state.epoch, 6))
        if self.xla:
            from lora_dvc.device import xla_compile_stats

            self.eval_compilations += xla_compile_stats()["compilations"] - self.before_eval
            self.evaluated_epoch = epoch  # logged after the epoch's checkpoint, which belongs to the epoch
        progress = self.tallies.progress
        val = {
            "loss": metrics["eval_logloss"],
            "accuracy": metrics["eval_accuracy"],
            "macro_f1": metrics["eval_macro_f1"],
        }
        if is_new_best(args, state, metrics):  # the val pass whose weights Trainer keeps
            progress.update(best_f1=val["macro_f1"], best_epoch=epoch, best_step=state.global_step, best_val=val)
        progress.update(epochs_run=epoch, last_val=val)
        log.info(
            "epoch %d/%d, step %d: val accuracy %.4f, macro-F1 %.4f, loss %.4f",
            epoch,
            self.epochs,
            state.global_step,
            val["accuracy"],
            val["macro_f1"],
            val["loss"],
        )
        if self.live is None:
            return
        self.live.step = state.global_step
        train = self.tallies.epoch_train or {}
        for key in ("loss", "accuracy", "macro_f1"):
            if key in train:
                self.live.log_metric(f"train/{key}", train[key])
            self.live.log_metric(f"val/{key}", val[key])
        self.live.log_metric("epoch", epoch, plot=False)

    def on_save(self, args, state, control, **kwargs):
        if self.xla and self.evaluated_epoch is not None and self.live is not None:
            self.live.step = state.global_step
            self.log_compilations(self.evaluated_epoch)
        self.evaluated_epoch = None

    def compile_summary(self) -> dict:
        """The run's XLA compilations so far: all, those of the val passes, the rest (training)."""
        from lora_dvc.device import xla_compile_stats

        stats = xla_compile_stats()
        return stats | {
            "eval_compilations": self.eval_compilations,
            "train_compilations": stats["compilations"] - self.eval_compilations,
        }

    def log_compilations(self, epoch: int) -> None:
        """XLA compiles one graph per shape: the count must stop growing after the first epoch."""
        stats = self.compile_summary()
        for key in ("compilations", "eval_compilations", "compile_seconds"):
            self.live.log_metric(f"xla/{key}", stats[key])
        # every graph (each bucket's train step and val batch, the first step, the first checkpoint's
        # rendezvous) compiles in the first epoch: growth after it means a shape that changes with the data
        if self.compilations is not None and epoch > 1 and stats["compilations"] > self.compilations:
            log.warning(
                "XLA compiled %d more graphs in epoch %d: shapes are not static",
                stats["compilations"] - self.compilations,
                epoch,
            )
        self.compilations = stats["compilations"]


class CheckpointCallback(TrainerCallback):
    """Step checkpoints, and what each checkpoint holds besides Trainer's own state."""

    def __init__(
        self,
        every: int,
        steps_per_epoch: int,
        store: CheckpointStore,
        tallies: Tallies,
        live_dir: Path,
        live,
        started: float,
        xla: bool = False,
    ) -> None:
        self.every, self.steps_per_epoch, self.store, self.tallies = every, steps_per_epoch, store, tallies
        self.live_dir, self.live, self.started = live_dir, live, started
        self.log = not xla  # XLA: no Trainer log at a checkpoint; LiveCallback logs the window there itself

    def on_step_end(self, args, state, control, **kwargs):
        # an epoch's last step is saved after its evaluation (Trainer's epoch checkpoint), once
        epoch_end = state.global_step % self.steps_per_epoch == 0
        if self.every and state.global_step % self.every == 0 and not epoch_end:
            control.should_save = True
        if control.should_save and self.log:
            control.should_log = True  # the loss window restarts at a checkpoint, as after a resume
        return control

    def on_epoch_end(self, args, state, control, **kwargs):
        if control.should_save and self.log:
            control.should_log = True
        return control

    def on_save(self, args, state, control, **kwargs):
        self.tallies.progress["seconds"] = time.perf_counter() - self.started
        saved = self.tallies.state()  # every process takes part in the reduction
        if not state.is_world_process_zero:
            return
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if self.live is not None:
            self.live.make_summary()
        shutil.rmtree(folder / "live", ignore_errors=True)
        if self.live_dir.exists():
            shutil.copytree(self.live_dir, folder / "live")
        write_marker(folder, saved)  # last: each file's size and sha256, and the checkpoint is complete
        self.store.upload(folder)


def restore_live(checkpoint: Path, live_dir: Path) -> None:
    """Put back the DVCLive history as it was when the checkpoint was written."""
    shutil.rmtree(live_dir, ignore_errors=True)
    if (checkpoint / "live").exists():
        shutil.copytree(checkpoint / "live", live_dir)


class StopOnSignal(TrainerCallback):
    """SIGINT/SIGTERM: finish the step, save a checkpoint, stop (no evaluation, no second save).

    A signal on an epoch's last step stops after that epoch's val pass and checkpoint instead, as an
    uninterrupted run has them: the val pass draws from torch's generator (its DataLoader's seed), so a
    checkpoint taken before it, resumed straight into the next epoch, would shift every later dropout
    mask and lose the epoch's val metrics.
    """

    def __init__(self, steps_per_epoch: int) -> None:
        self.signal: int | None = None
        self.steps_per_epoch = steps_per_epoch
        self.stopped_mid_epoch = False
        if threading.current_thread() is threading.main_thread():  # not in torch_xla.launch threads
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        self.signal = signum

    def on_step_end(self, args, state, control, **kwargs):
        if self.signal is not None and state.global_step % self.steps_per_epoch:
            control.should_save = control.should_log = control.should_training_stop = True
            self.stopped_mid_epoch = True
        return control

    def on_epoch_end(self, args, state, control, **kwargs):
        if self.signal is None:
            return control
        if self.stopped_mid_epoch:  # saved at the step already
            control.should_evaluate = control.should_save = control.should_log = False
        else:  # the epoch's own val pass and checkpoint (save_strategy "epoch"), then stop
            control.should_log = control.should_training_stop = True
        return control
