"""train.trainer_args and the docs' TrainingArguments mapping, without a pipeline: the refusals (one line
each), label smoothing in the loss Trainer computes, and every `transformers` name docs/params.md gives a
param checked against the TrainingArguments that the train stage builds. The run itself (a cosine
schedule, val passes every eval_steps, max_steps) is in test_learning.py, on its keyword task."""

from __future__ import annotations

import re

import pytest
import torch
from helpers import ROOT, tiny_classifier

from lora_dvc.device import Runtime
from lora_dvc.errors import UserError
from lora_dvc.params import parse_params


@pytest.mark.parametrize(
    "fields, expected",
    [
        ({"learning_rate": 0.1}, "'train.trainer_args.learning_rate' is set by train.lr; remove it"),
        ({"num_train_epochs": 3}, "'train.trainer_args.num_train_epochs' is set by train.epochs"),
        ({"bf16": True}, "'train.trainer_args.bf16' is set by train.precision"),
        ({"lr_schedular_type": "cosine"}, "not a TrainingArguments field of transformers 5.23.0; the closest is "),
        (
            {"label_smoothing_factor": "high"},
            "'train.trainer_args.label_smoothing_factor' is 'high', expected a number",
        ),
        ({"lr_scheduler_type": "cosin"}, "transformers refuses it: cosin is not a valid SchedulerType"),
        ({"eval_strategy": "no"}, "'train.trainer_args.eval_strategy' is 'no': the kept weights are the best val"),
        ({"eval_steps": 10}, "'train.trainer_args.eval_steps' needs train.trainer_args.eval_strategy: steps"),
        ({"metric_for_best_model": "f1"}, "'train.trainer_args.metric_for_best_model' is 'f1'; the val pass reports"),
    ],
)
def test_trainer_args_refusals_are_one_line_naming_the_fix(fields, expected):
    with pytest.raises(UserError) as err:
        parse_params({"train": {"trainer_args": fields}}, "params.yaml")
    message = str(err.value)
    assert "\n" not in message and message.startswith("params.yaml: "), message
    assert expected.replace("5.23.0", __import__("transformers").__version__) in message, message
    if "closest" in expected:
        assert message.endswith("'lr_scheduler_type'"), message


def test_label_smoothing_is_refused_for_multi_label_rows():
    with pytest.raises(UserError, match="data.multi_label is true .*; set it to 0.0"):
        parse_params({"data": {"multi_label": True}, "train": {"trainer_args": {"label_smoothing_factor": 0.1}}})


def test_params_yaml_lists_the_project_values_and_they_pass(tmp_path):
    from lora_dvc.params import TRAINER_ARGS_LISTED, load_params

    params = load_params(ROOT / "params.yaml")
    assert params.train.trainer_args == TRAINER_ARGS_LISTED  # each -S train.trainer_args.<field>= needs no `+`
    fine = parse_params({"train": {"trainer_args": {"lr_scheduler_type": "cosine", "report_to": ["none"]}}})
    assert fine.train.trainer_args == {"lr_scheduler_type": "cosine", "report_to": ["none"]}


def trainer_for(params, tmp_path, model=None):
    from lora_dvc.callbacks import Tallies
    from lora_dvc.trainer import TallyingTrainer
    from lora_dvc.training_args import training_arguments

    args = training_arguments(params, str(tmp_path), Runtime(torch.device("cpu")))
    return TallyingTrainer(model=model or tiny_classifier(), args=args, eval_dataset=[], tallies=Tallies(3))


def test_label_smoothing_changes_the_loss_trainer_computes(tmp_path):
    """Catches: train.trainer_args dropped on the way to Trainer (the loss would stay plain cross-entropy)."""
    torch.manual_seed(0)
    model = tiny_classifier(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0).train()
    with torch.no_grad():
        model.classifier.bias.copy_(torch.tensor([2.0, 0.0, -2.0]))  # confident logits: smoothing shows
    batch = {"input_ids": torch.randint(5, 100, (8, 12)), "labels": torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])}
    smoothing = 0.1
    losses = {}
    for factor in (0.0, smoothing):
        params = parse_params({"train": {"trainer_args": {"label_smoothing_factor": factor}}})
        losses[factor] = trainer_for(params, tmp_path, model).compute_loss(model, dict(batch)).item()
    log_probs = model(input_ids=batch["input_ids"]).logits.log_softmax(-1)
    plain = -log_probs.gather(1, batch["labels"][:, None]).mean().item()
    smoothed = (1 - smoothing) * plain - smoothing * log_probs.mean(-1).mean().item()
    assert losses[0.0] == pytest.approx(plain, rel=1e-5)
    assert losses[smoothing] == pytest.approx(smoothed, rel=1e-5) and abs(losses[smoothing] - plain) > 1e-3


# a value other than the default for every param whose docs row names a TrainingArguments field
CHANGED = {
    "train.epochs": 3,
    "train.batch_size": 64,
    "train.lr": 0.002,
    "train.weight_decay": 0.05,
    "train.warmup_ratio": 0.1,
    "train.max_grad_norm": 0.5,
    "train.seed": 7,
    "train.precision": "bf16",
    "train.grad_accum": 2,
    "train.gradient_checkpointing": True,
    "train.log_every": 7,
    "evaluate.batch_size": 16,
}


def mapped_fields() -> dict[str, list[str]]:
    """docs/params.md: param -> the transformers TrainingArguments fields its *maps to* cell names."""
    from transformers import TrainingArguments

    fields = TrainingArguments.__dataclass_fields__
    found = {}
    for line in (ROOT / "docs/params.md").read_text(encoding="utf-8").splitlines():
        row = re.match(r"^\| `(\w+\.\w+)` \|", line)
        if row:
            maps_to = line.split(" | ")[4]
            names = re.findall(r"transformers `(?:TrainingArguments\.)?(\w+)`", maps_to)
            if names:
                assert all(n in fields for n in names), f"{row.group(1)}: {names} not all TrainingArguments fields"
                found[row.group(1)] = names
    return found


def test_docs_params_mapping_is_what_the_train_stage_passes(tmp_path):
    """Catches: docs/params.md naming a TrainingArguments field the code does not set from that param
    (train.warmup_ratio once named warmup_ratio while the code passed warmup_steps)."""
    from lora_dvc.training_args import training_arguments

    mapped = mapped_fields()
    assert {"train.epochs", "train.lr", "train.warmup_ratio", "train.log_every"} <= set(mapped)
    assert set(mapped) <= set(CHANGED), f"give {set(mapped) - set(CHANGED)} a value in CHANGED"
    cpu = torch.device("cpu")
    default = training_arguments(parse_params({}), str(tmp_path), Runtime(cpu))
    for key, fields in mapped.items():
        section, name = key.split(".")
        params = parse_params({section: {name: CHANGED[key]}})
        precision = params.train.precision if params.train.precision != "auto" else "fp32"
        args = training_arguments(params, str(tmp_path), Runtime(cpu, precision))
        changed = [f for f in fields if getattr(args, f) != getattr(default, f)]
        assert changed == fields, f"{key}={CHANGED[key]!r} changes {changed} of the mapped {fields}"
        if len(fields) == 1 and isinstance(CHANGED[key], float):
            assert getattr(args, fields[0]) == CHANGED[key], key
