"""Memory knobs through Trainer, tested for effect: `train.grad_accum` and `train.gradient_checkpointing`.

Both go through the train stage's own Trainer set-up (lora_dvc.training.build_trainer) on token files
written into a temporary working folder, as the stage reads them:
- 4 micro-batches of 8 accumulate the same gradient (so the same update) as one batch of 32;
- gradient checkpointing, switched on by Trainer from the param, keeps far fewer activation bytes for backward
  (the bulk of a training step's peak memory) on a deeper tiny model.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import build_tiny_model

ROWS = 32


def write_tokens(folder: Path, rows: int, max_len: int, seed: int = 0) -> None:
    """data/tokenized/{train,val}.npz and meta.json under `folder`: random ids, mixed lengths, 4 classes."""
    rng = np.random.default_rng(seed)
    tokenized = folder / "data/tokenized"
    tokenized.mkdir(parents=True, exist_ok=True)
    for split in ("train", "val"):
        lengths = rng.integers(max_len // 2, max_len + 1, rows)
        ids = [np.concatenate([[101], rng.integers(1000, 5000, n - 2), [102]]) for n in lengths]
        np.savez(
            tokenized / f"{split}.npz",
            ids=np.concatenate(ids).astype(np.int32),
            offsets=np.concatenate([[0], np.cumsum(lengths)]),
            labels=rng.integers(0, 4, rows),
        )
    (tokenized / "meta.json").write_text(json.dumps({"pad_token_id": 0, "max_length": max_len}))


def tiny_model_without_dropout(folder: Path, **config) -> Path:
    """The tests' tiny BERT with dropout off (the same rows must give the same gradient), any size."""
    build_tiny_model(folder)
    path = folder / "config.json"
    fields = json.loads(path.read_text())
    fields.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **config)
    path.write_text(json.dumps(fields))
    if config:  # a bigger shape: fresh weights of that shape
        from transformers import AutoConfig, AutoModel

        AutoModel.from_config(AutoConfig.from_pretrained(folder)).save_pretrained(folder)
    return folder


def train_one_epoch(model_dir: Path, overrides: dict) -> dict:
    """Run the train stage's Trainer for one epoch in the current folder; the gradients each optimizer step
    saw (after clipping, as the optimizer sees them) and the epoch's tallied train loss."""
    from transformers import TrainerCallback, set_seed

    from lora_dvc.callbacks import Tallies
    from lora_dvc.checkpoints import CheckpointStore, fingerprint
    from lora_dvc.device import Runtime
    from lora_dvc.params import parse_params
    from lora_dvc.task import Task
    from lora_dvc.training import build_model, build_trainer

    train = {"epochs": 1, "batch_size": ROWS, "lr": 0.01, "warmup_ratio": 0.0, "min_steps": None}
    train.update(checkpoint_every=0, precision="fp32", fast_dropout=False, **overrides)
    params = parse_params(
        {
            "model": {"name": str(model_dir), "max_length": 128, "length_buckets": [32, 64, 96, 128]},
            "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "targets": "qv"},
            "train": train,
        }
    )
    task = Task(("a", "b", "c", "d"))
    set_seed(0)
    model = build_model(params, task)
    tallies = Tallies(len(task.labels))
    steps: list[dict] = []

    class Gradients(TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
            steps.append({n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad})

    store = CheckpointStore(fingerprint(params))
    runtime = Runtime(torch.device("cpu"))
    trainer, _, steps_per_epoch = build_trainer(
        params, model, task, runtime, store, None, tallies, time.perf_counter()
    )
    trainer.add_callback(Gradients())
    trainer.train()
    return {
        "grads": steps,
        "steps_per_epoch": steps_per_epoch,
        "train_loss": tallies.epoch_train["loss"],
        "model": trainer.model,
    }


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LORA_DVC_CHECKPOINTS", str(tmp_path / "checkpoints"))
    return tmp_path


def test_four_micro_batches_give_the_update_of_one_batch_of_four_times_the_rows(workdir):
    model_dir = tiny_model_without_dropout(workdir / "model")
    write_tokens(workdir, ROWS, max_len=24)
    whole = train_one_epoch(model_dir, {"grad_accum": 1})
    accumulated = train_one_epoch(model_dir, {"grad_accum": 4})
    assert whole["steps_per_epoch"] == accumulated["steps_per_epoch"] == 1
    assert len(whole["grads"]) == len(accumulated["grads"]) == 1  # one optimizer step each
    (one,), (four,) = whole["grads"], accumulated["grads"]
    assert one.keys() == four.keys() and any("lora_B" in n for n in one)
    for name in one:
        assert torch.allclose(one[name], four[name], rtol=1e-4, atol=1e-7), name
    assert accumulated["train_loss"] == pytest.approx(whole["train_loss"], rel=1e-5)


def test_a_batch_that_does_not_split_into_micro_batches_is_one_line(workdir):
    from lora_dvc.errors import UserError
    from lora_dvc.params import parse_params
    from lora_dvc.training_args import micro_batch

    with pytest.raises(
        UserError, match=r"^train.batch_size=30 does not split over .* train.grad_accum=4; use a multiple of 4$"
    ):
        micro_batch(parse_params({"train": {"batch_size": 30, "grad_accum": 4}}))


def saved_activation_bytes(model: torch.nn.Module, ids: torch.Tensor) -> int:
    """Bytes autograd keeps for backward during one training forward (the step's activation memory)."""
    kept = []

    def pack(tensor):
        kept.append(tensor.numel() * tensor.element_size())
        return tensor

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = model(
            input_ids=ids, attention_mask=torch.ones_like(ids), labels=torch.zeros(len(ids), dtype=torch.long)
        ).loss
    loss.backward()
    return sum(kept)


def test_gradient_checkpointing_keeps_far_less_activation_memory(workdir):
    # 6 layers: activations dominate; Trainer switches checkpointing on from train.gradient_checkpointing
    model_dir = tiny_model_without_dropout(workdir / "deep", num_hidden_layers=6)
    write_tokens(workdir, ROWS, max_len=24)
    run = train_one_epoch(model_dir, {"gradient_checkpointing": True})
    model = run["model"]
    assert any(getattr(m, "gradient_checkpointing", False) is True for m in model.modules())
    ids = torch.randint(1000, 5000, (16, 64))
    recomputed = saved_activation_bytes(model, ids)
    model.activation_checkpointing_disable()
    kept = saved_activation_bytes(model, ids)
    assert recomputed < 0.5 * kept, (kept, recomputed)
