"""docs/params.md, generated from the params schema so that it cannot drift from it.

    python -m lora_dvc.params_reference            # (re)write docs/params.md
    python -m lora_dvc.params_reference --check    # exit 1 with one line when docs/params.md is stale
    python -m lora_dvc.params_reference --count    # measure the lora.targets trainable counts below

Every key of `lora_dvc.params.Params` gets its type, default and allowed range (the dataclass
fields and their metadata), its comment from params.yaml and the peft / transformers / scikit-learn
name it maps to (MAPS_TO, kept here, one entry per key; a test checks none is missing).
"""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path
from typing import Any, get_type_hints

from lora_dvc.atomic import write_text
from lora_dvc.errors import UserError
from lora_dvc.params import PARAMS_FILE, Params, _type_name  # _type_name: the wording of the schema's errors
from lora_dvc.runner import ArgumentParser, run_stage

REFERENCE = Path("docs/params.md")
COMMAND = "python -m lora_dvc.params_reference"

# param key -> what it is called in the library that consumes it (or how this project uses it)
MAPS_TO = {
    "data.dataset": "lora_dvc.datasets loader (`csv` = your own data in any `data.format`, with the columns below)",
    "data.path": "the loader's input folder or file (a DVC dependency of `prepare`), or a hub dataset name",
    "data.format": 'csv / tsv: pandas `read_csv`; json / parquet: `datasets.load_dataset("json" | "parquet", '
    "data_files=)`; arrow: `datasets.load_from_disk`; hub: `datasets.load_dataset(path, name=subset)`",
    "data.subset": "`datasets.load_dataset(name=)` (a hub dataset's configuration)",
    "data.text_column": "the column (pandas or `datasets`) read as the text",
    "data.text_pair_column": 'the tokenizer\'s pair input: `tokenizer(text, text_pair, truncation="longest_first")`',
    "data.label_column": "the column (pandas or `datasets`) read as the label; a `ClassLabel` gives its names",
    "data.labels": "label id order -> `config.id2label` / `label2id` of the model",
    "data.multi_label": 'transformers `config.problem_type="multi_label_classification"` (`BCEWithLogitsLoss` on '
    "multi-hot float labels); scikit-learn micro/macro-F1 and subset accuracy",
    "data.label_delimiter": "`str.split` of each label cell (a list column needs none)",
    "data.val_fraction": "scikit-learn `train_test_split(test_size=, stratify=)`",
    "data.test_fraction": "scikit-learn `train_test_split(test_size=, stratify=)`",
    "data.max_train_rows": "stratified `train_test_split(train_size=)` of the training split",
    "data.seed": "`train_test_split(random_state=)`",
    "model.name": "`AutoModelForSequenceClassification.from_pretrained(pretrained_model_name_or_path=)`",
    "model.max_length": "tokenizer `max_length=` (with `truncation=True`); auto: chosen by the tokenize stage "
    "(data/tokenized/meta.json)",
    "model.length_buckets": "padded lengths of XLA's batches (this project's bucketing; "
    "elsewhere `DataCollatorWithPadding`'s longest row)",
    "model.truncation": "head: tokenizer `truncation=True` (`truncation_side='right'`); head_tail: this project's "
    "head + tail cut (Sun et al. 2019), no transformers key",
    "lora.r": "peft `LoraConfig.r`",
    "lora.alpha": "peft `LoraConfig.lora_alpha`",
    "lora.dropout": "peft `LoraConfig.lora_dropout`",
    "lora.targets": "peft `LoraConfig.target_modules` (aliases expanded to module names, see below)",
    "lora.bias": "peft `LoraConfig.bias`",
    "lora.rslora": "peft `LoraConfig.use_rslora`",
    "lora.dora": "peft `LoraConfig.use_dora`",
    "lora.plus_ratio": "peft `create_loraplus_optimizer(loraplus_lr_ratio=)`",
    "lora.modules_to_save": "peft `LoraConfig.modules_to_save` (the classifier head is always saved)",
    "lora.max_trainable": "this project's guard: refuse a config with more trainable parameters",
    "train.method": "`lora`: peft `get_peft_model`; `full`: every weight; `tfidf`: scikit-learn "
    "`TfidfVectorizer` + `LogisticRegression`",
    "train.epochs": "transformers `TrainingArguments.num_train_epochs`",
    "train.min_steps": "raises `TrainingArguments.num_train_epochs` to ceil(min_steps / steps per epoch); "
    "no transformers key (`max_steps` caps, it never raises; a `train.trainer_args.max_steps` replaces both)",
    "train.batch_size": "the global batch: transformers `per_device_train_batch_size` x `train.processes`",
    "train.lr": "transformers `TrainingArguments.learning_rate` (AdamW `lr`)",
    "train.weight_decay": "transformers `TrainingArguments.weight_decay` (AdamW `weight_decay`)",
    "train.warmup_ratio": "transformers `TrainingArguments.warmup_steps` (a float below 1 is a ratio of all steps)",
    "train.max_grad_norm": "transformers `TrainingArguments.max_grad_norm` (`clip_grad_norm_`)",
    "train.seed": "transformers `TrainingArguments.seed` (`torch.manual_seed`)",
    "train.patience": "transformers `EarlyStoppingCallback(early_stopping_patience=)` with "
    "`load_best_model_at_end=True`, `metric_for_best_model` val macro-F1 (or train.trainer_args'); counts val passes",
    "train.device": "torch device: `cpu`, `cuda`, `xla` (torch_xla); `auto` picks the best present",
    "train.precision": "transformers `TrainingArguments.bf16` / `.fp16` (`torch.autocast`; fp16 with Trainer's "
    "gradient scaler), resolved for the device once per stage by `lora_dvc.device.Runtime.create` for train, "
    "evaluate and predict; under bf16 on CPU and CUDA the frozen weights are stored in bf16 "
    "(`lora_dvc.modeling.ready_for_bf16_autocast`)",
    "train.cores": "`torch_xla.launch` over the host's TPU cores (data parallel) when `all`",
    "train.processes": "`torchrun --nproc_per_node=` (torch DDP; `TrainingArguments` runs one process per device)",
    "train.grad_accum": "transformers `TrainingArguments.gradient_accumulation_steps` (micro-batches of "
    "batch_size / processes / grad_accum rows)",
    "train.gradient_checkpointing": "transformers `TrainingArguments.activation_checkpointing` "
    "(`gradient_checkpointing_enable(use_reentrant=False)`)",
    "train.fast_dropout": "this project's `lora_dvc.dropout.FastDropout` for every `nn.Dropout` and the "
    "attention dropout (CPU training only; false = torch's `bernoulli_` masks)",
    "train.log_every": "transformers `TrainingArguments.logging_steps` (DVCLive step logs)",
    "train.checkpoint_every": "this project's `CheckpointCallback` (`control.should_save` every N steps), on top of "
    "Trainer's own checkpoints (`save_strategy` epoch, or steps at `eval_steps` with `eval_strategy: steps`)",
    "train.trainer_args": "further `TrainingArguments` fields of transformers, passed through; checked against the "
    "installed dataclass (`lora_dvc.params.check_trainer_args`); fields set by the keys above are refused",
    "evaluate.batch_size": "transformers `TrainingArguments.per_device_eval_batch_size`",
    "evaluate.threshold": "multi-label: `sigmoid(logits) >= threshold` per label (val metrics, test metrics, "
    "predict, the model card)",
    "export.merge": "peft `merge_and_unload()` saved to `models/export/merged/` (loads with "
    '`pipeline("text-classification", model=...)`, no peft needed)',
}

# Measured with `python -m lora_dvc.params_reference --count` (lora_dvc.modeling on the bundled
# sentence-transformers/all-MiniLM-L6-v2, 4 labels, lora.r 8): trainable parameters, head included.
TARGET_COUNTS = {"qv": 75_268, "qkv": 112_132, "all": 339_460, "all-linear": 339_460}
TOTAL_PARAMS = 22_716_296  # the same model with its 4-label head, before LoRA
COUNT_MODEL, COUNT_LABELS, COUNT_R = "sentence-transformers/all-MiniLM-L6-v2", ["a", "b", "c", "d"], 8

TARGETS_SECTION = f"""## What `lora.targets` adapts

The aliases are resolved by inspecting the model (`lora_dvc/modeling.py`, `resolve_targets`): each
attention block's query, key and value projections are found whatever the family names them (BERT,
RoBERTa and XLM-R `query`/`key`/`value`, DeBERTa-v2/v3 `query_proj`/..., DistilBERT `q_lin`/...,
ELECTRA, ModernBERT's fused `Wqkv`), and the task head (every top-level module outside the pretrained
encoder, such as DistilBERT's `pre_classifier`) is never adapted and always trained in full.

| alias | adapts | modules adapted in a BERT-style encoder | trainable (all-MiniLM-L6-v2, r 8) |
|---|---|---|---|
| `qv` | query and value projections | `attention.self.query`, `attention.self.value` of every layer | \
{TARGET_COUNTS["qv"]:,} |
| `qkv` | query, key and value projections | the three attention projections of every layer | \
{TARGET_COUNTS["qkv"]:,} |
| `all` | every linear layer of the encoder | the three projections, the attention output \
(`attention.output.dense`), both feed-forward layers (`intermediate.dense`, `output.dense`) and the pooler \
(`pooler.dense`) | {TARGET_COUNTS["all"]:,} |
| `all-linear` | peft's shorthand | every linear layer but the classifier head | {TARGET_COUNTS["all-linear"]:,} |

So `all` is not "attention only": on all-MiniLM-L6-v2 it adapts 37 modules (6 per layer plus the
pooler) and trains {TARGET_COUNTS["all"] / TARGET_COUNTS["qv"]:.1f}x the parameters of `qv` \
({TARGET_COUNTS["all"] / TOTAL_PARAMS:.2%} of the {TOTAL_PARAMS:,} weights, against \
{TARGET_COUNTS["qv"] / TOTAL_PARAMS:.2%}); for this model it is the same set as `all-linear`. On ModernBERT,
whose query, key and value are one fused layer, `qv` adapts that layer (as `qkv`) and says so in the log. The
counts include the 4-label classifier head (1,540 parameters), which is trained in full. A list
(`lora.targets: [query, value, attention.output.dense, word_embeddings]`) picks linear or embedding modules
whose names end with `.<item>`.
Measured with `{COMMAND} --count`.
"""


@dataclasses.dataclass
class Row:
    key: str
    type: str
    default: str
    allowed: str
    comment: str
    maps_to: str


def schema_fields(cls=Params, prefix: str = "") -> list[tuple[str, Any, dataclasses.Field]]:
    """(dotted key, type hint, field) of every leaf of the schema, in params.yaml order."""
    found = []
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            found += schema_fields(hints[f.name], f"{prefix}{f.name}.")
        else:
            found.append((f"{prefix}{f.name}", hints[f.name], f))
    return found


def yaml_literal(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ", ".join(map(yaml_literal, value)) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {yaml_literal(v)}" for k, v in value.items()) + "}"
    return str(value)


def default_of(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def yaml_comments(text: str) -> dict[str, str]:
    """Dotted key -> the comment at the end of its line in params.yaml, with the comment-only lines that
    continue it (sections are top-level keys)."""
    comments, section, key = {}, "", None
    for line in text.splitlines():
        top = re.match(r"^(\w+):\s*(#.*)?$", line)
        if top:
            section, key = top.group(1), None
            continue
        item = re.match(r"^\s+(\w+):[^#]*#\s*(.*)$", line)
        more = re.match(r"^\s+#\s*(.*)$", line)
        if item and section:
            key = f"{section}.{item.group(1)}"
            comments[key] = item.group(2).strip()
        elif more and key:
            comments[key] += " " + more.group(1).strip()
        else:
            key = None
    return comments


def rows(params_yaml: str) -> list[Row]:
    comments = yaml_comments(params_yaml)
    missing = [key for key, _, _ in schema_fields() if key not in MAPS_TO]
    if missing:
        raise UserError(f"lora_dvc/params_reference.py: MAPS_TO has no entry for {', '.join(missing)}; add one")
    return [
        Row(
            key,
            _type_name(hint),
            yaml_literal(default_of(f)),
            f.metadata.get("allowed", "any"),
            comments.get(key, ""),
            MAPS_TO[key],
        )
        for key, hint, f in schema_fields()
    ]


def cell(text: str) -> str:
    return text.replace("|", "\\|") or "–"


def render(params_yaml: str) -> str:
    lines = [
        "# Params reference",
        "",
        f"<!-- generated by `{COMMAND}` from lora_dvc/params.py and params.yaml: do not edit by hand -->",
        "",
        "Every key of `params.yaml`, as the schema (`lora_dvc/params.py`) checks it before any stage runs.",
        "Set one for an experiment with `dvc exp run -S key=value`. *Maps to* is the name the same knob",
        "has in peft, transformers or scikit-learn.",
        "",
    ]
    section = ""
    for row in rows(params_yaml):
        if row.key.split(".")[0] != section:
            section = row.key.split(".")[0]
            lines += [
                f"## `{section}`",
                "",
                "| key | type | default | allowed | maps to | comment in params.yaml |",
                "|---|---|---|---|---|---|",
            ]
        cells = [f"`{row.key}`", row.type, f"`{row.default}`", row.allowed, row.maps_to, row.comment]
        lines.append("| " + " | ".join(cell(c) for c in cells) + " |")
    text = "\n".join(_blank_after_tables(lines))
    return text + "\n" + TARGETS_SECTION


def _blank_after_tables(lines: list[str]) -> list[str]:
    """A blank line before each section heading that follows a table row."""
    out: list[str] = []
    for line in lines:
        if line.startswith("## ") and out and out[-1].startswith("|"):
            out.append("")
        out.append(line)
    return out + [""]


def count_trainable() -> dict[str, tuple[int, int]]:
    """targets alias -> (trainable, total) on the bundled MiniLM with LoRA r 8 (lora_dvc.modeling)."""
    from lora_dvc.modeling import apply_method, count_params, load_base_model
    from lora_dvc.params import LoraParams

    counts = {}
    for targets in TARGET_COUNTS:
        model = load_base_model(COUNT_MODEL, COUNT_LABELS)
        counts[targets] = count_params(apply_method(model, "lora", LoraParams(r=COUNT_R, targets=targets)))
    return counts


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(prog=COMMAND, description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the file differs from what the schema gives")
    parser.add_argument("--count", action="store_true", help="print the lora.targets trainable counts and exit")
    parser.add_argument("--out", default=str(REFERENCE), help=f"the markdown file (default {REFERENCE})")
    args = parser.parse_args(argv)
    if args.count:
        for targets, (trainable, total) in count_trainable().items():
            print(f"{targets}\t{trainable}\t{total}")
        return
    text, out = render(Path(PARAMS_FILE).read_text(encoding="utf-8")), Path(args.out)
    if not args.check:
        write_text(out, text)
        print(f"wrote {out}")
    elif not out.is_file() or out.read_text(encoding="utf-8") != text:
        print(f"{out} is stale: it differs from lora_dvc/params.py and params.yaml; run `{COMMAND}`", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    run_stage(main)
