"""The params schema: one typed definition of every key in params.yaml.

`load_params()` reads params.yaml (as `dvc exp run -S` left it), rejects unknown keys (naming
the nearest valid one), wrong types and out-of-range values with one line each, and returns
typed dataclasses. Every stage calls it first, so nothing runs on a bad config.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import math
import re
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

import yaml

from lora_dvc.errors import UserError

PARAMS_FILE = "params.yaml"
DATASETS = ("ag_news", "banglasenti", "csv")
# how `csv` (your own data) reads data.path; auto: by suffix, folder content, else a hub name
DATA_FORMATS = ("auto", "csv", "tsv", "json", "parquet", "arrow", "hub")
DEVICES = ("auto", "cpu", "cuda", "xla")
LORA_BIAS = ("none", "all", "lora_only")
METHODS = ("lora", "full", "tfidf")  # a peft adapter | every weight | TF-IDF + logistic regression
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
TRUNCATIONS = ("head", "head_tail")  # lora_dvc.tokenization: the first tokens | a quarter head, the rest tail


def check(rule: Callable[[Any], bool], allowed: str):
    """Field metadata: a predicate and the human-readable allowed range."""
    return {"rule": rule, "allowed": allowed}


def positive(v) -> bool:
    return v > 0


def fraction_open(v) -> bool:
    return 0 < v < 1


@dataclass
class DataParams:
    dataset: str = field(default="ag_news", metadata=check(lambda v: v in DATASETS, " | ".join(DATASETS)))
    path: str = "data/raw/ag_news"
    format: str = field(default="auto", metadata=check(lambda v: v in DATA_FORMATS, " | ".join(DATA_FORMATS)))
    subset: str | None = None  # a hub dataset's configuration (mrpc of nyu-mll/glue)
    text_column: str = "text"
    text_pair_column: str | None = None  # sentence pairs: the second text of each row
    label_column: str = "label"
    labels: list[str] | None = None
    # multi-label rows: each row carries a set of labels (a list column, or label cells split by
    # label_delimiter); trained with BCE (problem_type multi_label_classification)
    multi_label: bool = False
    label_delimiter: str | None = field(
        default=None, metadata=check(lambda v: v is None or v != "", "a non-empty string or null")
    )
    val_fraction: float = field(default=0.1, metadata=check(fraction_open, "a number in (0, 1)"))
    test_fraction: float = field(default=0.1, metadata=check(fraction_open, "a number in (0, 1)"))
    max_train_rows: int | None = field(default=None, metadata=check(positive, "a positive integer or null"))
    seed: int = 42


@dataclass
class ModelParams:
    name: str = "sentence-transformers/all-MiniLM-L6-v2"
    # auto: the tokenize stage picks it from the train split's token lengths (lora_dvc.tokenization.choose_max_length)
    # and records it in data/tokenized/meta.json, which train, evaluate and predict read
    max_length: int | str = field(
        default="auto",
        metadata=check(
            lambda v: v == "auto" or isinstance(v, int) and 8 <= v <= 8192, "an integer in [8, 8192] or auto"
        ),
    )
    # auto: quarters of max_length (128 -> 32, 64, 96, 128)
    length_buckets: list[int] | str = field(
        default="auto",
        metadata=check(
            lambda v: v == "auto" or isinstance(v, list) and len(v) > 0 and all(b > 0 for b in v),
            "a non-empty list of positive integers or auto",
        ),
    )
    truncation: str = field(default="head", metadata=check(lambda v: v in TRUNCATIONS, " | ".join(TRUNCATIONS)))


@dataclass
class LoraParams:
    r: int = field(default=16, metadata=check(lambda v: 1 <= v <= 1024, "an integer in [1, 1024]"))
    alpha: float = field(default=32, metadata=check(positive, "a number > 0"))
    dropout: float = field(default=0.1, metadata=check(lambda v: 0 <= v < 1, "a number in [0, 1)"))
    targets: str | list[str] = "all"
    bias: str = field(default="none", metadata=check(lambda v: v in LORA_BIAS, " | ".join(LORA_BIAS)))
    rslora: bool = False  # scale by alpha/sqrt(r) instead of alpha/r (rank-stabilised LoRA)
    dora: bool = False  # weight-decomposed LoRA
    plus_ratio: float | None = field(default=None, metadata=check(lambda v: v >= 1, "a number >= 1 or null"))
    modules_to_save: list[str] | None = None  # trained in full besides the head, e.g. [pooler]
    max_trainable: int | None = field(default=None, metadata=check(positive, "a positive integer or null"))


# The train.trainer_args fields params.yaml lists, at this project's values (what runs when they are left alone)
TRAINER_ARGS_LISTED = {
    "lr_scheduler_type": "linear",
    "label_smoothing_factor": 0.0,
    "eval_strategy": "epoch",
    "eval_steps": None,
    "max_steps": -1,
}


@dataclass
class TrainParams:
    method: str = field(default="lora", metadata=check(lambda v: v in METHODS, " | ".join(METHODS)))
    epochs: int = field(default=1, metadata=check(lambda v: 1 <= v <= 1000, "an integer in [1, 1000]"))
    batch_size: int = field(default=32, metadata=check(lambda v: 1 <= v <= 65536, "an integer in [1, 65536]"))
    lr: float = field(default=1e-3, metadata=check(lambda v: 0 < v < 1, "a number in (0, 1)"))
    weight_decay: float = field(default=0.01, metadata=check(lambda v: v >= 0, "a number >= 0"))
    warmup_ratio: float = field(default=0.06, metadata=check(lambda v: 0 <= v < 1, "a number in [0, 1)"))
    max_grad_norm: float = field(default=1.0, metadata=check(lambda v: v >= 0, "a number >= 0 (0 = no clipping)"))
    seed: int = 42
    # val passes without val macro-F1 gain before the run stops (the best pass's weights kept); auto: early
    # stopping only where train.min_steps added epochs (lora_dvc.training_args.early_stopping_patience)
    patience: int | str | None = field(
        default=None,
        metadata=check(lambda v: v == "auto" or (isinstance(v, int) and v > 0), "auto, a positive integer or null"),
    )
    device: str = field(default="auto", metadata=check(lambda v: v in DEVICES, " | ".join(DEVICES)))
    precision: str = field(default="auto", metadata=check(lambda v: v in PRECISIONS, " | ".join(PRECISIONS)))
    cores: int | str = field(default=1, metadata=check(lambda v: v in (1, "all"), "1 or all (TPU cores of this host)"))
    log_every: int = field(default=20, metadata=check(positive, "a positive integer"))
    checkpoint_every: int = field(default=100, metadata=check(lambda v: v >= 0, "an integer >= 0"))
    # at least this many optimizer steps: more epochs than train.epochs on a small data file (None = off)
    min_steps: int | None = field(
        default=64, metadata=check(lambda v: v is None or v >= 1, "null or a positive integer")
    )
    # data-parallel processes on this host (DDP under torchrun); batch_size is the global batch,
    # each process takes batch_size / processes rows a step
    processes: int = field(default=1, metadata=check(lambda v: 1 <= v <= 1024, "an integer in [1, 1024]"))
    # micro-batches per optimizer step: each process runs batch_size / processes / grad_accum rows at a
    # time, and the update is still that of one batch of batch_size (less memory, same result)
    grad_accum: int = field(default=1, metadata=check(lambda v: 1 <= v <= 1024, "an integer in [1, 1024]"))
    # recompute activations in backward instead of keeping them (less memory, one more forward pass a step)
    gradient_checkpointing: bool = False
    # CPU training: dropout masks drawn four per 64-bit random word (lora_dvc/dropout.py) instead of
    # torch's bernoulli_; the same Bernoulli masks, a different random stream
    fast_dropout: bool = True
    # further transformers TrainingArguments fields, passed through to Trainer (check_trainer_args); params.yaml
    # lists TRAINER_ARGS_LISTED, so that `dvc exp run -S train.trainer_args.<field>=` needs no `+` for them
    trainer_args: dict = field(default_factory=lambda: dict(TRAINER_ARGS_LISTED))


# TrainingArguments fields that train.trainer_args may not set: the param (or part of the train stage) that sets them
OWNED_TRAINER_ARGS = {
    "output_dir": "the train stage (checkpoints go to $LORA_DVC_CHECKPOINTS)",
    "num_train_epochs": "train.epochs",
    "per_device_train_batch_size": "train.batch_size",
    "auto_find_batch_size": "train.batch_size",
    "per_device_eval_batch_size": "evaluate.batch_size",
    "learning_rate": "train.lr",
    "weight_decay": "train.weight_decay",
    "warmup_steps": "train.warmup_ratio",
    "max_grad_norm": "train.max_grad_norm",
    "seed": "train.seed",
    "data_seed": "train.seed",
    "full_determinism": "train.seed",
    "gradient_accumulation_steps": "train.grad_accum",
    "activation_checkpointing": "train.gradient_checkpointing",
    "activation_checkpointing_kwargs": "train.gradient_checkpointing",
    "gradient_checkpointing": "train.gradient_checkpointing",
    "gradient_checkpointing_kwargs": "train.gradient_checkpointing",
    "bf16": "train.precision",
    "fp16": "train.precision",
    "bf16_full_eval": "train.precision",
    "fp16_full_eval": "train.precision",
    "use_cpu": "train.device",
    "dataloader_drop_last": "train.device",
    "dataloader_pin_memory": "train.device",
    "ddp_backend": "train.processes",
    "ddp_find_unused_parameters": "train.processes",
    "average_tokens_across_devices": "train.processes",
    "logging_strategy": "train.log_every",
    "logging_steps": "train.log_every",
    "save_strategy": "train.checkpoint_every (with eval_strategy: steps, a checkpoint at every eval_steps too)",
    "save_steps": "train.checkpoint_every",
    "save_total_limit": "train.checkpoint_every",
    "load_best_model_at_end": "train.patience (the best val evaluation is always kept)",
    "resume_from_checkpoint": "the train stage (it resumes by itself)",
    "optim": "lora.plus_ratio (the train stage builds AdamW or LoRA+)",
    "optim_args": "lora.plus_ratio (the train stage builds AdamW or LoRA+)",
    "optim_target_modules": "lora.targets",
    "remove_unused_columns": "the train stage (its own collator)",
    "label_names": "data.label_column",
    "prediction_loss_only": "the train stage (val accuracy and macro-F1 pick the kept weights)",
    "include_for_metrics": "the train stage (val accuracy and macro-F1 pick the kept weights)",
    "batch_eval_metrics": "the train stage (val accuracy and macro-F1 pick the kept weights)",
    "push_to_hub": "the export stage (models/export)",
}
# TrainingArguments fields that change how a run is watched or fed, not what it learns (RESULT_NEUTRAL_KEYS)
TRAINER_ARGS_NEUTRAL = (
    "logging_first_step",
    "logging_nan_inf_filter",
    "log_level",
    "disable_tqdm",
    "report_to",
    "dataloader_num_workers",
    "dataloader_persistent_workers",
    "dataloader_prefetch_factor",
    "skip_memory_metrics",
)
# what the val pass reports, so what metric_for_best_model may name (micro_f1: multi-label only)
VAL_METRICS = ("macro_f1", "accuracy", "logloss", "micro_f1")


@dataclass
class ExportParams:
    # also write models/export/merged/: the adapter merged into the base weights, loadable by pipeline()
    merge: bool = False


# Knobs that change where or how fast a run goes, not what it learns: rows of the comparison that differ
# only here are one configuration, and a checkpoint resumes across them (lora_dvc.checkpoints.fingerprint).
RESULT_NEUTRAL_KEYS = frozenset(
    {
        "train.device",
        "train.log_every",
        "train.checkpoint_every",
        "train.processes",
        "train.gradient_checkpointing",
        "evaluate.batch_size",
        "export.merge",
    }
    | {f"train.trainer_args.{name}" for name in TRAINER_ARGS_NEUTRAL}
)


@dataclass
class EvaluateParams:
    batch_size: int = field(default=128, metadata=check(lambda v: 1 <= v <= 65536, "an integer in [1, 65536]"))
    # multi-label: a label is predicted where its sigmoid probability is at or above this (evaluate, predict,
    # export, and train's val metrics, which pick the kept epoch: not result-neutral)
    threshold: float = field(default=0.5, metadata=check(fraction_open, "a number in (0, 1)"))


@dataclass
class Params:
    data: DataParams = field(default_factory=DataParams)
    model: ModelParams = field(default_factory=ModelParams)
    lora: LoraParams = field(default_factory=LoraParams)
    train: TrainParams = field(default_factory=TrainParams)
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)
    export: ExportParams = field(default_factory=ExportParams)

    @property
    def buckets(self) -> list[int]:
        """Length buckets clipped to max_length, always ending at max_length (bucket_lengths).
        With max_length auto the tokenize stage decides: resolve params with tokenization.tokenized_params."""
        if self.model.max_length == "auto":
            raise ValueError("model.max_length is auto: the tokenize stage's choice (tokenized_params) has the length")
        return bucket_lengths(self.model.max_length, self.model.length_buckets)


PAD_MULTIPLE = 8  # padded lengths are multiples of this: tensor-core and AVX-512 friendly, < 4 padded tokens a row


def padded_length(length: int) -> int:
    """`length` rounded up to a multiple of PAD_MULTIPLE."""
    return -(-length // PAD_MULTIPLE) * PAD_MULTIPLE


def lora_variant(rslora: bool, dora: bool) -> str:
    """LoRA, rsLoRA, DoRA or rsLoRA + DoRA: what the report and the model card call an adapter."""
    return " + ".join(name for name, on in (("rsLoRA", rslora), ("DoRA", dora)) if on) or "LoRA"


def auto_buckets(max_length: int) -> list[int]:
    """`model.length_buckets: auto`: quarters of max_length, each rounded up to a multiple of PAD_MULTIPLE
    (128 -> 32, 64, 96, 128)."""
    return sorted({min(max_length, padded_length(-(-max_length * k // 4))) for k in (1, 2, 3, 4)})


def bucket_lengths(max_length: int, length_buckets: list[int] | str) -> list[int]:
    """The padded batch lengths for max_length: `auto` -> auto_buckets, else the given buckets
    below max_length plus max_length itself (as Params.buckets)."""
    if length_buckets == "auto":
        return auto_buckets(max_length)
    return sorted({b for b in length_buckets if b < max_length}) + [max_length]


def all_keys(cls=Params, prefix: str = "") -> list[str]:
    keys = []
    for f in dataclasses.fields(cls):
        hint = get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(hint):
            keys += all_keys(hint, f"{prefix}{f.name}.")
        else:
            keys.append(f"{prefix}{f.name}")
    return keys


def _type_ok(value: Any, hint: Any) -> bool:
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):  # Optional[X] and X | None
        return any(_type_ok(value, h) for h in get_args(hint))
    if hint is type(None):
        return value is None
    if origin is list:
        (item,) = get_args(hint)
        return isinstance(value, list) and all(_type_ok(v, item) for v in value)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _type_name(hint: Any) -> str:
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(h) for h in get_args(hint))
    if hint is type(None):
        return "null"
    if origin is list:
        return f"a list of {_type_name(get_args(hint)[0])}"
    names = {int: "an integer", float: "a number", str: "a string", bool: "true/false", dict: "a mapping"}
    return names.get(hint, getattr(hint, "__name__", str(hint)))


def _build(cls, raw: Any, prefix: str, source: str):
    if not isinstance(raw, dict):
        raise UserError(f"{source}: '{prefix.rstrip('.') or 'top level'}' must be a mapping of keys")
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in names:
            full = f"{prefix}{key}"
            near = difflib.get_close_matches(full, all_keys(), n=1, cutoff=0.5)
            hint = (
                f" Did you mean '{near[0]}'?"
                if near
                else f" Valid keys under '{prefix.rstrip('.') or 'top level'}': {', '.join(sorted(names))}."
            )
            raise UserError(f"{source}: unknown key '{full}'.{hint}")
    values = {}
    for f in dataclasses.fields(cls):
        if f.name not in raw:
            continue
        value, hint, full = raw[f.name], hints[f.name], f"{prefix}{f.name}"
        if dataclasses.is_dataclass(hint):
            values[f.name] = _build(hint, value, f"{full}.", source)
            continue
        if not _type_ok(value, hint):
            raise UserError(f"{source}: '{full}' is {value!r}, expected {_type_name(hint)}")
        rule = f.metadata.get("rule")
        if rule is not None and value is not None and not rule(value):
            raise UserError(f"{source}: '{full}' is {value!r}, allowed: {f.metadata['allowed']}")
        if hint is float and value is not None:
            value = float(value)
        values[f.name] = value
    return cls(**values)


def _check_renamed(raw: Any, source: str) -> None:
    """Keys of older params files that moved: one line saying what to write instead."""
    lora = raw.get("lora") if isinstance(raw, dict) else None
    if isinstance(lora, dict) and "enabled" in lora:
        instead = "train.method: lora" if lora["enabled"] else "train.method: full"
        raise UserError(
            f"{source}: 'lora.enabled' was replaced by train.method (lora | full | tfidf); "
            f"delete lora.enabled and write {instead}"
        )
    train = raw.get("train") if isinstance(raw, dict) else None
    if isinstance(train, dict) and train.get("method") == "transformer":
        raise UserError(
            f"{source}: 'train.method: transformer' is now 'lora' (or 'full' for every weight); "
            "write train.method: lora"
        )


def parse_params(raw: Any, source: str = PARAMS_FILE) -> Params:
    _check_renamed(raw, source)
    params = _build(Params, raw if raw is not None else {}, "", source)
    if not params.lora.targets:
        raise UserError(f"{source}: 'lora.targets' is empty; use qv, qkv, all, all-linear or a list of module names")
    if params.data.val_fraction + params.data.test_fraction >= 1:
        raise UserError(f"{source}: data.val_fraction + data.test_fraction must be below 1")
    if params.data.label_delimiter is not None and not params.data.multi_label:
        raise UserError(
            f"{source}: data.label_delimiter={params.data.label_delimiter!r} splits label cells into label sets, "
            "but data.multi_label is false; set data.multi_label: true, or data.label_delimiter: null"
        )
    check_trainer_args(params.train.trainer_args, source)
    metric = str(params.train.trainer_args.get("metric_for_best_model", "")).removeprefix("eval_")
    if metric == "micro_f1" and not params.data.multi_label:
        raise UserError(
            f"{source}: train.trainer_args.metric_for_best_model micro_f1 is multi-label only; use macro_f1"
        )
    if params.data.multi_label and params.train.trainer_args.get("label_smoothing_factor"):
        raise UserError(
            f"{source}: train.trainer_args.label_smoothing_factor smooths a softmax over one label, but "
            "data.multi_label is true (a sigmoid per label); set it to 0.0"
        )
    return params


def trainer_arg_type_ok(value: Any, hint: Any) -> bool:
    """`value` fits a TrainingArguments annotation: the schema's own check, plus enums (their values) and
    generics (their container)."""
    if get_origin(hint) in (Union, types.UnionType):
        return any(trainer_arg_type_ok(value, h) for h in get_args(hint))
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return value in {member.value for member in hint}
    if get_origin(hint) in (dict, list):
        return isinstance(value, get_origin(hint))
    return _type_ok(value, hint) if hint is not Any else True


def check_trainer_args(fields: dict, source: str = PARAMS_FILE) -> None:
    """train.trainer_args against the installed transformers.TrainingArguments: known fields of the right
    type that the project does not set itself, and values TrainingArguments accepts; else one line."""
    if all(key in TRAINER_ARGS_LISTED and TRAINER_ARGS_LISTED[key] == value for key, value in fields.items()):
        return  # as params.yaml lists them: nothing to check, and no transformers import in every stage
    from transformers import TrainingArguments

    hints = get_type_hints(TrainingArguments)
    known = [f.name for f in dataclasses.fields(TrainingArguments) if f.init]
    for key, value in fields.items():
        where = f"{source}: 'train.trainer_args.{key}'"
        if key in OWNED_TRAINER_ARGS:
            raise UserError(f"{where} is set by {OWNED_TRAINER_ARGS[key]}; remove it from train.trainer_args")
        if key not in known:
            near = difflib.get_close_matches(key, known, n=1, cutoff=0.5)
            hint = f"the closest is '{near[0]}'" if near else "see transformers' TrainingArguments"
            raise UserError(f"{where} is not a TrainingArguments field of transformers {_version()}; {hint}")
        if not trainer_arg_type_ok(value, hints[key]):
            raise UserError(f"{where} is {value!r}, expected {_type_name(hints[key])}")
    _check_trainer_arg_values(fields, source)
    try:
        TrainingArguments(**{"output_dir": "unused", "use_cpu": True, "report_to": "none", **fields})
    except (ValueError, TypeError) as err:
        message = " ".join(str(err).split())
        raise UserError(f"{source}: train.trainer_args: transformers refuses it: {message}") from None


def _check_trainer_arg_values(fields: dict, source: str) -> None:
    """What the train stage needs on top of TrainingArguments' own checks: a val pass to keep the best weights by."""
    strategy = fields.get("eval_strategy", "epoch")
    if strategy not in ("epoch", "steps"):
        raise UserError(
            f"{source}: 'train.trainer_args.eval_strategy' is {strategy!r}: the kept weights are the best val "
            "pass's, so it must be epoch or steps"
        )
    if fields.get("eval_steps") is not None and strategy != "steps":
        raise UserError(f"{source}: 'train.trainer_args.eval_steps' needs train.trainer_args.eval_strategy: steps")
    metric = fields.get("metric_for_best_model", "macro_f1")
    if metric.removeprefix("eval_") not in VAL_METRICS:
        raise UserError(
            f"{source}: 'train.trainer_args.metric_for_best_model' is {metric!r}; the val pass reports "
            f"{', '.join(VAL_METRICS)} (micro_f1: multi-label only)"
        )
    if fields.get("max_steps", -1) == 0 or fields.get("max_steps", -1) < -1:
        raise UserError(f"{source}: 'train.trainer_args.max_steps' must be a positive integer (or -1: off)")


def _version() -> str:
    import transformers

    return transformers.__version__


class ParamsLoader(yaml.SafeLoader):
    """YAML 1.1 (PyYAML) plus YAML 1.2's floats without a dot: `dvc exp run -S train.lr=5e-5` writes `5e-05`,
    which YAML 1.1 reads as a string."""


ParamsLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+$"), list("-+0123456789")
)


def load_params(path: str | Path = PARAMS_FILE) -> Params:
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path} not found: run from the repository root")
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=ParamsLoader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise UserError(f"{path}: not valid YAML{where}: {getattr(err, 'problem', err)}") from None
    return parse_params(raw, str(path))
