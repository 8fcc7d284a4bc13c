"""Learning is tested, not assumed: on a synthetic task that a tiny model learns in seconds (each text
carries three keywords of its class among filler words), training must lower the loss and beat the
majority class by a wide margin, move every LoRA matrix and nothing frozen, give LoRA+'s B matrices
plus_ratio x lr, restore the best epoch's weights under early stopping, and change the forward pass
exactly as peft defines rsLoRA and DoRA. Each test names the break it catches."""

from __future__ import annotations

import csv
import json
import math
import random
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from helpers import ROOT, dvc, make_repo, run, write_params
from safetensors.torch import load_file

KEYWORDS = {
    "sports": ["football", "tennis", "goal", "match"],
    "money": ["stock", "market", "bank", "profit"],
    "science": ["atom", "cell", "physics", "gene"],
}
FILLER = (
    "the a of and to in is was for on that with as by at from it this be are have has had not but or an which their"
).split()
WEIGHTS = [5, 3, 2]  # imbalanced: always answering "sports" scores about 0.5
LABELS = list(KEYWORDS)


def keyword_text(rng: random.Random, label: str) -> str:
    words = rng.choices(FILLER, k=rng.randint(6, 16))
    for _ in range(3):
        words.insert(rng.randrange(len(words) + 1), rng.choice(KEYWORDS[label]))
    return " ".join(words)


def keyword_rows(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    labels = rng.choices(LABELS, weights=WEIGHTS, k=n)
    return [{"text": keyword_text(rng, label), "label": label} for label in labels]


# the learning recipe for the tiny model (random weights, 2 layers): a high lr and enough epochs
LEARNING = {
    "data": {
        "dataset": "csv",
        "path": "data/raw/keywords/keywords.csv",
        "val_fraction": 0.2,
        "test_fraction": 0.2,
        "max_train_rows": None,
    },
    "train": {"epochs": 10, "lr": 0.02, "checkpoint_every": 0},
}


@pytest.fixture(scope="module")
def keyword_repo(tmp_path_factory, tiny_model) -> Path:
    """A repository on the keyword task, run through prepare -> evaluate once."""
    repo = make_repo(tmp_path_factory.mktemp("keywords") / "repo", tiny_model)
    folder = repo / "data/raw/keywords"
    folder.mkdir(parents=True)
    with open(folder / "keywords.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, ["text", "label"])
        writer.writeheader()
        writer.writerows(keyword_rows(400))
    write_params(repo, LEARNING)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "keyword task"], repo)
    dvc(["repro", "evaluate"], repo)
    return repo


def tsv(repo: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(repo / "records/train/plots/metrics" / f"{name}.tsv", sep="\t")


def test_training_lowers_the_loss_and_beats_the_majority_class(keyword_repo):
    """Catches: a zero learning rate, an optimizer that never steps, gradients that never reach the weights."""
    loss = tsv(keyword_repo, "train/loss")["loss"].tolist()
    assert len(loss) == 10, loss
    assert loss[-1] < 0.6 * loss[0], f"train loss per epoch did not fall: {loss}"
    test = json.loads((keyword_repo / "records/evaluate/metrics.json").read_text())["test"]
    assert test["majority_accuracy"] > 0.4  # the task is imbalanced: the floor is not 1/3
    assert test["accuracy"] >= test["majority_accuracy"] + 0.2, test
    assert test["macro_f1"] >= test["majority_macro_f1"] + 0.3, test
    assert test["learned"] is True
    val = json.loads((keyword_repo / "records/train/metrics.json").read_text())["val"]
    assert val["accuracy"] >= test["majority_accuracy"] + 0.2, val


def fresh_model(model_dir: Path, lora: dict | None = None, method: str = "lora", seed: int = 42):
    """The train stage's model before any step: same seed, same base, same peft wrap."""
    from transformers import set_seed

    from lora_dvc.modeling import apply_method, load_base_model
    from lora_dvc.params import LoraParams

    set_seed(seed)
    model = load_base_model(str(model_dir), LABELS)
    config = {"r": 4, "alpha": 8, "targets": "qv", **(lora or {})}
    return apply_method(model, method, LoraParams(**config))


def test_every_lora_matrix_and_the_head_moved_from_initialisation(keyword_repo, tiny_model):
    """Catches: an optimizer over a subset of the trainable weights (the head only, the A matrices only)."""
    saved = load_file(keyword_repo / "models/classifier/adapter_model.safetensors")
    # peft's in-memory names carry the adapter name; the saved file drops it
    initial = {
        name.replace(".modules_to_save.default", "").replace(".default", ""): p.detach().clone()
        for name, p in fresh_model(tiny_model).named_parameters()
        if p.requires_grad
    }
    assert set(saved) == set(initial)
    lora = [name for name in saved if "lora_" in name]
    assert len(lora) == 2 * 2 * 2  # 2 layers x (query, value) x (A, B)
    for name, tensor in saved.items():
        assert not torch.equal(tensor.float(), initial[name].float()), f"{name} did not move from its initial value"
    assert all(saved[name].abs().sum() > 0 for name in lora if "lora_B" in name)  # peft starts every B at zero


def params_for(overrides: dict, model_dir: Path):
    from lora_dvc.params import parse_params

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["model"]["name"] = str(model_dir)
    for section, values in overrides.items():
        raw[section].update(values)
    return parse_params(raw)


def keyword_batch(model_dir: Path, n: int = 16):
    from transformers import AutoTokenizer

    rows = keyword_rows(n, seed=1)
    batch = AutoTokenizer.from_pretrained(model_dir)([r["text"] for r in rows], padding=True, return_tensors="pt")
    batch["labels"] = torch.tensor([LABELS.index(r["label"]) for r in rows])
    return batch


def test_a_training_step_moves_lora_and_head_and_no_frozen_weight(tiny_model):
    """Catches: base weights left trainable (peft wrap skipped), or trainable weights the optimizer misses."""
    from lora_dvc.training_args import make_optimizer

    params = params_for({"lora": {"r": 4, "alpha": 8, "targets": "qv", "dropout": 0.0}}, tiny_model)
    model = fresh_model(tiny_model, {"dropout": 0.0})
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name or "classifier" in name for name in trainable), trainable
    optimizer = make_optimizer(model, params)
    batch = keyword_batch(tiny_model)
    model.train()
    for _ in range(3):  # A matrices get no gradient on the first step (B starts at zero)
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    for name, p in model.named_parameters():
        if name in trainable:
            assert not torch.equal(p, before[name]), f"trainable {name} did not move"
        else:
            assert torch.equal(p, before[name]), f"frozen {name} changed"


def test_loraplus_gives_b_matrices_plus_ratio_times_the_learning_rate(tiny_model):
    """Catches: plus_ratio ignored (plain AdamW), or the ratio applied to the A matrices or the head."""
    from lora_dvc.training_args import make_optimizer

    lr, ratio = 2e-3, 16.0
    params = params_for(
        {"lora": {"r": 4, "alpha": 8, "targets": "qv", "plus_ratio": ratio}, "train": {"lr": lr}}, tiny_model
    )
    model = fresh_model(tiny_model)
    names = {id(p): name for name, p in model.named_parameters()}
    optimizer = make_optimizer(model, params)
    seen = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            assert names[id(p)] not in seen, f"{names[id(p)]} is in two param groups"
            seen[names[id(p)]] = group["lr"]
    assert set(seen) == {name for name, p in model.named_parameters() if p.requires_grad}
    shapes = {name: p.ndim for name, p in model.named_parameters()}
    for name, group_lr in seen.items():
        # peft's create_loraplus_optimizer (after the LoRA+ authors' code) puts 1-D weights (the head's
        # bias) in the B group too; the A matrices and the head's weight matrix keep the base lr
        expected = lr * ratio if "lora_B" in name or shapes[name] == 1 else lr
        assert group_lr == pytest.approx(expected), f"{name}: lr {group_lr}, expected {expected}"
    assert sum("lora_B" in name for name in seen) == 4


@pytest.fixture(scope="module")
def stopped_repo(keyword_repo, tmp_path_factory) -> Path:
    """The keyword task trained with a high lr and patience 1, in fp32 (val losses compared exactly)."""
    repo = tmp_path_factory.mktemp("stopped") / "repo"
    shutil.copytree(keyword_repo, repo, symlinks=True)
    write_params(repo, {"train": {"epochs": 30, "lr": 0.05, "patience": 1, "precision": "fp32", "warmup_ratio": 0.0}})
    run([sys.executable, "-m", "stages.train"], repo)
    return repo


def test_early_stopping_restores_exactly_the_best_epochs_weights(stopped_repo):
    """Catches: the last epoch's weights saved instead of the best (load_best_model_at_end off)."""
    from lora_dvc.artifacts import TokenizedSplit
    from lora_dvc.classifier import load_classifier
    from lora_dvc.metrics import classification_metrics

    summary = json.loads((stopped_repo / "records/train/metrics.json").read_text())
    best, ran = summary["best_epoch"], summary["epochs_run"]
    assert ran < 30, "patience 1 never stopped the run"
    assert best < ran  # the run stopped because the last epoch was worse: the two weight sets differ
    val_loss = tsv(stopped_repo, "val/loss")["loss"].tolist()
    val_f1 = tsv(stopped_repo, "val/macro_f1")["macro_f1"].tolist()
    assert len(val_loss) == ran
    assert max(val_f1) == val_f1[best - 1]

    clf = load_classifier("models/classifier", root=stopped_repo, device="cpu")
    val = TokenizedSplit.load(stopped_repo / "data/tokenized/val.npz")
    texts = pd.read_csv(stopped_repo / "data/prepared/val.csv")["text"].tolist()
    saved = classification_metrics(np.asarray(val.labels), clf.probabilities(texts, tokenized=val), LABELS)
    assert saved["macro_f1"] == pytest.approx(val_f1[best - 1], abs=1e-4)
    assert saved["loss"] == pytest.approx(val_loss[best - 1], abs=1e-3), (saved["loss"], val_loss)
    assert abs(val_loss[-1] - val_loss[best - 1]) > 1e-2, "last and best epoch too close to tell apart"


def lora_layer(model):
    """The first LoRA-wrapped query projection, with its input width."""
    name, layer = next((n, m) for n, m in model.named_modules() if n.endswith("attention.self.query"))
    return layer, layer.base_layer.in_features


def with_random_adapter(layer):
    torch.manual_seed(1)
    with torch.no_grad():
        layer.lora_B["default"].weight.normal_(0, 0.5)  # B starts at zero: make the adapter count
    return layer.lora_A["default"].weight.detach(), layer.lora_B["default"].weight.detach()


@pytest.mark.parametrize("rslora", [False, True])
def test_lora_and_rslora_forward_is_base_plus_scaled_ba(tiny_model, rslora):
    """Catches: lora.rslora not passed to peft (scale alpha/r instead of alpha/sqrt(r)), or r/alpha swapped."""
    r, alpha = 4, 8
    layer, width = lora_layer(fresh_model(tiny_model, {"r": r, "alpha": alpha, "rslora": rslora, "dropout": 0.0}))
    a, b = with_random_adapter(layer)
    x = torch.randn(5, width)
    scale = alpha / math.sqrt(r) if rslora else alpha / r
    with torch.no_grad():
        expected = layer.base_layer(x) + scale * (x @ a.T @ b.T)
        torch.testing.assert_close(layer.eval()(x), expected, rtol=1e-5, atol=1e-5)


def test_dora_forward_rescales_each_output_row_by_its_magnitude(tiny_model):
    """Catches: lora.dora not passed to peft (plain LoRA forward), or the magnitude vector ignored."""
    r, alpha = 4, 8
    layer, width = lora_layer(fresh_model(tiny_model, {"r": r, "alpha": alpha, "dora": True, "dropout": 0.0}))
    a, b = with_random_adapter(layer)
    magnitude = layer.lora_magnitude_vector["default"].weight
    with torch.no_grad():
        magnitude.mul_(torch.linspace(0.5, 1.5, magnitude.numel()))
    x = torch.randn(5, width)
    base = layer.base_layer
    with torch.no_grad():
        merged = base.weight + (alpha / r) * (b @ a)
        # DoRA (Liu et al. 2024, as peft implements it): m * (W + sBA) / ||W + sBA|| per output row
        expected = (magnitude / merged.norm(dim=1)) * (x @ merged.T) + base.bias
        plain = base(x) + (alpha / r) * (x @ a.T @ b.T)
        out = layer.eval()(x)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(out, plain, atol=1e-3)


def test_bias_and_modules_to_save_add_exactly_their_parameters(tiny_model):
    """Catches: lora.bias or lora.modules_to_save not passed to peft, or applied to the wrong modules."""
    from lora_dvc.modeling import count_params

    base = {name: p.numel() for name, p in fresh_model(tiny_model, method="full").named_parameters()}
    targeted = [n for n in base if n.endswith(("attention.self.query.weight", "attention.self.value.weight"))]
    r, width = 4, 32
    lora = len(targeted) * r * (width + width)
    head = sum(v for n, v in base.items() if n.startswith("classifier."))

    def trainable(**lora_params) -> int:
        return count_params(fresh_model(tiny_model, lora_params))[0]

    assert trainable() == lora + head
    every_bias = sum(v for n, v in base.items() if n.endswith(".bias") and not n.startswith("classifier."))
    assert trainable(bias="all") == lora + head + every_bias
    targeted_bias = sum(base[n.replace(".weight", ".bias")] for n in targeted)
    assert trainable(bias="lora_only") == lora + head + targeted_bias
    pooler = sum(v for n, v in base.items() if n.startswith("bert.pooler."))
    assert pooler > 0 and trainable(modules_to_save=["pooler"]) == lora + head + pooler


STEPPED = {"lr_scheduler_type": "cosine", "eval_strategy": "steps", "eval_steps": 6, "max_steps": 48}


@pytest.fixture(scope="module")
def stepped_repo(keyword_repo, tmp_path_factory) -> Path:
    """The keyword task (train.epochs 10 of 16 optimizer steps) with train.trainer_args: a cosine schedule, a val
    pass every 6 steps and max_steps 48, at lr 0.05, logged every step, in fp32 (val scores compared exactly)."""
    repo = tmp_path_factory.mktemp("stepped") / "repo"
    shutil.copytree(keyword_repo, repo, symlinks=True)
    train = {"lr": 0.05, "log_every": 1, "precision": "fp32", "warmup_ratio": 0.0, "trainer_args": STEPPED}
    write_params(repo, {"train": train})
    run([sys.executable, "-m", "stages.train"], repo)
    return repo


def test_trainer_args_cosine_schedule_val_steps_and_max_steps(stepped_repo):
    """Catches: train.trainer_args not reaching Trainer (a linear lr curve, one val pass per epoch, 10
    epochs), the last step's weights saved instead of the best val pass's, or epochs and steps misreported."""
    from lora_dvc.artifacts import TokenizedSplit
    from lora_dvc.classifier import load_classifier
    from lora_dvc.metrics import classification_metrics

    summary = json.loads((stepped_repo / "records/train/metrics.json").read_text())
    fit = json.loads((stepped_repo / "metrics/train.json").read_text())["fit"]
    assert summary["steps"] == fit["steps"] == 48  # max_steps, not train.epochs (10) x 16 steps
    assert fit["epochs"] == summary["epochs"] == 48 / summary["steps_per_epoch"] == 3
    lr = tsv(stepped_repo, "train_step/lr")  # each step's rate, before the scheduler steps
    assert lr["step"].tolist() == list(range(1, 49))
    cosine = [0.05 * 0.5 * (1 + math.cos(math.pi * (step - 1) / 48)) for step in lr["step"]]
    np.testing.assert_allclose(lr["lr"], cosine, rtol=1e-5, atol=1e-9)

    val_f1, val_loss = tsv(stepped_repo, "val/macro_f1"), tsv(stepped_repo, "val/loss")
    assert val_f1["step"].tolist() == list(range(6, 49, 6))
    best = int(val_f1["macro_f1"].idxmax())  # the first of equals, as Trainer keeps it
    assert summary["best_step"] == val_f1["step"][best] < 48, (summary["best_step"], val_f1.to_dict("list"))
    clf = load_classifier("models/classifier", root=stepped_repo, device="cpu")
    val = TokenizedSplit.load(stepped_repo / "data/tokenized/val.npz")
    texts = pd.read_csv(stepped_repo / "data/prepared/val.csv")["text"].tolist()
    saved = classification_metrics(np.asarray(val.labels), clf.probabilities(texts, tokenized=val), LABELS)
    assert saved["loss"] == pytest.approx(val_loss["loss"][best], abs=1e-4), (saved["loss"], val_loss.to_dict("list"))
    assert abs(val_loss["loss"].iloc[-1] - val_loss["loss"][best]) > 1e-3, "best and last pass too close to tell apart"
