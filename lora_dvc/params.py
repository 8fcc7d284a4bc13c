"""The params schema: one typed definition of every key in params.yaml.

`load_params()` reads params.yaml (as `dvc exp run -S` left it), rejects unknown keys (naming
the nearest valid one), wrong types and out-of-range values with one line each, and returns
typed dataclasses. Every stage calls it first, so nothing runs on a bad config.
"""

from __future__ import annotations

import dataclasses
import difflib
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
    truncation: str = field(default="head_tail", metadata=check(lambda v: v in TRUNCATIONS, " | ".join(TRUNCATIONS)))


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
    patience: int | None = field(default=None, metadata=check(positive, "a positive integer or null"))
    device: str = field(default="auto", metadata=check(lambda v: v in DEVICES, " | ".join(DEVICES)))
    precision: str = field(default="auto", metadata=check(lambda v: v in PRECISIONS, " | ".join(PRECISIONS)))
    cores: int | str = field(default=1, metadata=check(lambda v: v in (1, "all"), "1 or all (TPU cores of this host)"))
    log_every: int = field(default=20, metadata=check(positive, "a positive integer"))
    checkpoint_every: int = field(default=100, metadata=check(lambda v: v >= 0, "an integer >= 0"))
    # at least this many optimizer steps: more epochs than train.epochs on a small data file (None = off)
    min_steps: int | None = field(
        default=250, metadata=check(lambda v: v is None or v >= 1, "null or a positive integer")
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
    }
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
    return {int: "an integer", float: "a number", str: "a string", bool: "true/false"}.get(hint, str(hint))


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
    return params


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
