"""Methods beside plain LoRA, run as the train stage runs them (tiny model, AG News excerpt)."""

from __future__ import annotations

import json
import sys

from conftest import run, write_params


def stage(repo, name, check=True):
    return run([sys.executable, "-m", f"stages.{name}"], repo, check=check)


def prepared(repo, **overrides):
    if overrides:
        write_params(repo, overrides)
    stage(repo, "prepare")
    stage(repo, "tokenize")


def train_metrics(repo):
    return json.loads((repo / "records/train/metrics.json").read_text())


def test_dora_rslora_loraplus_train(repo):
    prepared(repo, lora={"dora": True, "rslora": True, "plus_ratio": 16.0}, train={"epochs": 1})
    stage(repo, "train")
    config = json.loads((repo / "models/classifier/adapter_config.json").read_text())
    assert config["use_dora"] is True and config["use_rslora"] is True
    from safetensors import safe_open

    with safe_open(str(repo / "models/classifier/adapter_model.safetensors"), "pt") as weights:
        magnitudes = [k for k in weights.keys() if "lora_magnitude_vector" in k]
        lora_b = [weights.get_tensor(k) for k in weights.keys() if "lora_B" in k]
    assert len(magnitudes) == len(lora_b) > 0  # DoRA: one magnitude vector per adapted layer
    assert all(b.abs().sum() > 0 for b in lora_b)  # B starts at zero: trained, every one of them


def test_trainable_budget_refused_before_training(repo):
    prepared(repo, lora={"max_trainable": 1000})
    result = stage(repo, "train", check=False)
    assert result.returncode == 2
    assert "lora.max_trainable: this config trains" in result.stderr and "over the budget of 1,000" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (repo / "models/classifier").exists() and not (repo / "records/train").exists()


def test_early_stopping_keeps_best_epoch(repo):
    """train.patience auto on the epochs train.min_steps adds: an lr this small leaves val predictions
    unchanged, so no epoch beats the first, and 2 passes without gain end the run."""
    from lora_dvc.model_card import epochs_ran

    prepared(repo, train={"epochs": 1, "min_steps": 1000, "patience": "auto", "lr": 1e-9, "warmup_ratio": 0.0})
    result = stage(repo, "train")
    assert "stopping after 2 val passes without a val macro-F1 gain (patience auto)" in result.stderr
    metrics = train_metrics(repo)
    assert metrics["best_epoch"] == 1 and metrics["patience"] == 2
    assert metrics["epochs_run"] == 3 < metrics["epochs_planned"]  # epochs 2 and 3 brought no gain
    assert metrics["steps"] == 3 * metrics["steps_per_epoch"]
    said = f"; {metrics['epochs_planned']} planned, stopped after 2 val passes without val macro-F1 gain)"
    assert epochs_ran(metrics, 1).endswith(said)  # the report's and the model card's what-ran row


def test_full_fine_tuning_saves_full_model(repo):
    prepared(repo, train={"method": "full", "epochs": 1, "lr": 1e-4})
    stage(repo, "train")
    assert (repo / "models/classifier/model.safetensors").exists()
    metrics = train_metrics(repo)
    assert metrics["trainable_params"] == metrics["total_params"]
    stage(repo, "evaluate")
