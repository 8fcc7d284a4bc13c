"""The report's figures (matplotlib) and markdown, from the metrics files of one run.

Three figures: training curves, the test confusion matrix (count and row %), per-class
precision/recall/F1. A multi-label run (evaluate's per-label counts) gets a per-label table of
true/false positives and negatives instead of the confusion matrix, and micro-F1 beside macro-F1.
The markdown opens with a warning when the model did not learn (evaluate's
`test.learned`), then results, figures, per-class metrics, parameters and data statistics.
"""

from __future__ import annotations

from dataclasses import replace

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from lora_dvc import artifacts
from lora_dvc.artifacts import CONFUSION, read_metrics
from lora_dvc.artifacts import REPORT_PLOTS as PLOTS
from lora_dvc.artifacts import TRAIN_PLOTS as TRAIN_TSV
from lora_dvc.atomic import atomic_path
from lora_dvc.metrics import not_learned_advice
from lora_dvc.model_card import epochs_ran
from lora_dvc.params import Params, lora_variant

METHOD_NAMES = {"lora": "LoRA", "full": "full fine-tuning", "tfidf": "TF-IDF + logistic regression"}


def save_figure(fig, name: str) -> str:
    with atomic_path(PLOTS / name) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return f"../{PLOTS.as_posix()}/{name}"


def training_curves_figure() -> plt.Figure:
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    for ax, metric in ((ax_loss, "loss"), (ax_acc, "accuracy")):
        path = TRAIN_TSV / f"train_step/{metric}.tsv"
        if path.exists():
            frame = pd.read_csv(path, sep="\t")
            ax.plot(frame["step"], frame[metric], color="0.6", lw=1, label="train (running, per log interval)")
    for split, style in (("train", "o-"), ("val", "s-")):
        for ax, metric in ((ax_loss, "loss"), (ax_acc, "accuracy")):
            path = TRAIN_TSV / f"{split}/{metric}.tsv"
            if path.exists():
                frame = pd.read_csv(path, sep="\t")
                ax.plot(frame["step"], frame[metric], style, label=f"{split} (per epoch)")
    ax_loss.set(title="Loss", xlabel="step", ylabel="cross-entropy")
    ax_acc.set(title="Accuracy", xlabel="step", ylabel="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    return fig


def confusion_figure(labels: list[str]) -> plt.Figure:
    pairs = pd.DataFrame(read_metrics(CONFUSION))
    matrix = pd.crosstab(pairs["actual"], pairs["predicted"]).reindex(index=labels, columns=labels, fill_value=0)
    rates = matrix.div(matrix.sum(axis=1).replace(0, 1), axis=0)
    fig, ax = plt.subplots(figsize=(1.2 * len(labels) + 2.5, 1.1 * len(labels) + 1.5))
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(
                j,
                i,
                f"{matrix.iat[i, j]}\n{rates.iat[i, j]:.0%}",
                ha="center",
                va="center",
                color="white" if rates.iat[i, j] > 0.5 else "black",
                fontsize=9,
            )
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set(xlabel="predicted", ylabel="actual", title="Test confusion matrix (count, row %)")
    fig.colorbar(image, ax=ax, fraction=0.046)
    return fig


def per_class_figure(per_class: dict) -> plt.Figure:
    frame = pd.DataFrame(per_class).T[["precision", "recall", "f1"]]
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(frame)), 4))
    x = np.arange(len(frame))
    for k, column in enumerate(frame.columns):
        bars = ax.bar(x + (k - 1) * 0.27, frame[column], width=0.27, label=column)
        if column == "f1":
            ax.bar_label(bars, fmt="%.3f", fontsize=8)
    ax.set_xticks(x, frame.index)
    ax.set(ylim=(0, 1.05), ylabel="score", title="Per-class precision, recall and F1 (test)")
    ax.legend(loc="lower right")
    ax.grid(axis="y", alpha=0.3)
    return fig


def params_table(params: Params) -> str:
    rows = [
        ("dataset", f"{params.data.dataset} ({params.data.path})"),
        ("model", params.model.name),
        (
            "max_length / buckets / truncation",
            f"{params.model.max_length} / {params.buckets} / {params.model.truncation}",
        ),
        ("method", METHOD_NAMES[params.train.method]),
    ]
    if params.train.method == "lora":
        lora = params.lora
        rows += [
            ("LoRA r / alpha / dropout", f"{lora.r} / {lora.alpha:g} / {lora.dropout:g}"),
            ("LoRA targets / bias", f"{lora.targets} / {lora.bias}"),
        ]
    tp = params.train
    rows += [
        ("epochs / batch size", f"{tp.epochs} / {tp.batch_size}"),
        ("lr / warmup / weight decay", f"{tp.lr:g} / {tp.warmup_ratio:g} / {tp.weight_decay:g}"),
        ("seed", str(tp.seed)),
    ]
    return pd.DataFrame(rows, columns=["parameter", "value"]).to_markdown(index=False)


def learned_warning(test: dict) -> str:
    """A block quote for the top of the report when evaluate found the model did not learn."""
    if test.get("learned", True):
        return ""
    return f"> **WARNING: {not_learned_advice('test', test['macro_f1'], test['majority_macro_f1'])}**\n\n"


def results_table(train: dict, test: dict) -> str:
    if "micro_f1" in test:
        return multi_label_results_table(train, test)

    def row(name: str, split: dict) -> tuple:
        return name, split.get("accuracy"), split.get("macro_f1"), split.get("loss")

    results = pd.DataFrame(
        [
            row("train (during last epoch)", train.get("train", {})),
            row("val", train.get("val", {})),
            row("test", test),
            ("test, majority class", test["majority_accuracy"], test.get("majority_macro_f1"), None),
        ],
        columns=["split", "accuracy", "macro-F1", "loss"],
    ).astype(object)
    results = results.where(results.notna(), None)  # blank cells, not "nan"
    return results.to_markdown(index=False, floatfmt=".4f", missingval="")


def multi_label_results_table(train: dict, test: dict) -> str:
    """Multi-label: subset accuracy, macro- and micro-F1 (test only: train and val record the first two)."""

    def row(name: str, split: dict) -> tuple:
        return name, split.get("accuracy"), split.get("macro_f1"), split.get("micro_f1"), split.get("loss")

    floor = "test, most frequent label set " + ("{" + ", ".join(test.get("majority_label_set", [])) + "}")
    results = pd.DataFrame(
        [
            row("train (during last epoch)", train.get("train", {})),
            row("val", train.get("val", {})),
            row(f"test (threshold {test.get('threshold', 0.5):g})", test),
            (floor, test["majority_accuracy"], test["majority_macro_f1"], test.get("majority_micro_f1"), None),
        ],
        columns=["split", "subset accuracy", "macro-F1", "micro-F1", "loss (BCE)"],
    ).astype(object)
    results = results.where(results.notna(), None)
    return results.to_markdown(index=False, floatfmt=".4f", missingval="")


def per_label_counts_table(test: dict) -> str:
    """Multi-label: each label's yes/no confusion counts on test, in place of a confusion matrix."""
    counts = pd.DataFrame(test["per_label_counts"]).T[["tp", "fp", "fn", "tn"]]
    counts.columns = ["true positive", "false positive", "false negative", "true negative"]
    return counts.to_markdown()


def ran_rows(train: dict, params: Params) -> list[tuple[str, str]]:
    """What ran, from the train summary: train.min_steps may add epochs, a max_steps may end the run early."""
    if params.train.method == "tfidf":
        return [("training run", "one scikit-learn fit (no epochs, no optimizer steps)")]
    ran = epochs_ran(train, params.train.epochs)
    method = METHOD_NAMES[params.train.method]
    if params.train.method == "lora":
        method = lora_variant(params.lora.rslora, params.lora.dora)
    optimizer = f"{train.get('optimizer', 'AdamW')}, {train.get('lr_scheduler', 'linear')} schedule"
    return [("training run", ran), ("method / optimizer", f"{method} / {optimizer}")]


def model_table(train: dict, test: dict, params: Params) -> str:
    rows = ran_rows(train, params) + [
        ("trainable parameters", f"{train['trainable_params']:,} ({train['trainable_percent']:.2f}%)"),
        ("total parameters", f"{train['total_params']:,}"),
        ("LoRA weight mean", f"{train.get('lora_weight_mean', 0):.3e}"),
        (
            "batch",
            f"{train.get('processes', 1)} process(es) x {train.get('per_process_batch_size', '?')} rows"
            f" = global batch {train.get('global_batch_size', '?')}"
            + (f", in {train['grad_accum']} micro-batches each" if train.get("grad_accum", 1) > 1 else ""),
        ),
        ("training time", f"{train['train_seconds']:.0f} s ({train['train_samples_per_second']:.1f} samples/s)"),
        ("test inference", f"{test['samples_per_second']:.0f} samples/s"),
        ("mean confidence / share > 0.9", f"{test['mean_confidence']:.3f} / {test['confident_fraction']:.3f}"),
    ]
    return pd.DataFrame(rows, columns=["", "value"]).to_markdown(index=False)


def provenance_table(train: dict) -> str:
    """Where the numbers came from: the train stage's provenance summary, one row per fact."""
    found = train.get("provenance")
    if not found:
        return "No provenance recorded (metrics from an older version of the train stage)."
    git = found.get("git") or {}
    commit = git.get("commit") or "not a git repository"
    rows = [
        ("git revision", commit),
        ("train stage code md5", git.get("code_md5") or "not recorded"),
        ("device, precision, threads", f"{found.get('device')}, {found.get('precision')}, {found.get('threads')}"),
        ("versions", ", ".join(f"{k} {v}" for k, v in (found.get("versions") or {}).items())),
        ("python", str(found.get("python"))),
        ("host", ", ".join(str(v) for v in (found.get("host") or {}).values())),
    ]
    rows += [(f"data md5: {name}", md5) for name, md5 in sorted((found.get("data_md5") or {}).items())]
    return pd.DataFrame(rows, columns=["", "value"]).to_markdown(index=False)


def data_tables(prepare: dict, tokens: dict) -> tuple[str, str, str]:
    """Rows per split and class, what prepare dropped, token-length statistics."""
    split_rows = pd.DataFrame(prepare["class_counts"]).T
    split_rows["total"] = split_rows.sum(axis=1)
    dropped = pd.DataFrame(sorted(prepare["dropped"].items()), columns=["reason", "rows dropped"])
    token_table = pd.DataFrame(tokens).T[
        ["rows", "tokens_mean", "tokens_p50", "tokens_p95", "tokens_max", "truncated_fraction"]
    ]
    return split_rows.to_markdown(), dropped.to_markdown(index=False), token_table.to_markdown()


def per_class_markdown(per_class: dict) -> str:
    """The per-class precision, recall, F1 and support as a markdown table."""
    table = pd.DataFrame(per_class).T
    table["support"] = table["support"].astype(int)
    return table.to_markdown(floatfmt=("", ".4f", ".4f", ".4f", ".0f"))


def as_tokenized(params: Params, choice: dict | None) -> Params:
    """params with the tokenize stage's length (model.max_length auto), buckets and truncation, as applied."""
    if not choice:
        return params
    keys = ("max_length", "length_buckets", "truncation")
    return replace(params, model=replace(params.model, **{key: choice[key] for key in keys}))


def confusion_section(test: dict) -> str:
    """The confusion matrix figure, or for multi-label rows the per-label yes/no counts."""
    if "per_label_counts" in test:
        return f"Per-label confusion counts (test):\n\n{per_label_counts_table(test)}"
    return f"![confusion matrix]({save_figure(confusion_figure(list(test['per_class'])), 'confusion_matrix.png')})"


def build_report(params: Params) -> str:
    """reports/report.md's text; the figures are saved to plots/ on the way."""
    train = read_metrics(artifacts.TRAIN_SUMMARY)
    test = read_metrics(artifacts.EVAL_SUMMARY)["test"]
    curves = save_figure(training_curves_figure(), "training_curves.png")
    confusion_block = confusion_section(test)
    per_class = save_figure(per_class_figure(test["per_class"]), "per_class_f1.png")
    tokens = read_metrics(artifacts.TOKENIZE_STATS)
    params = as_tokenized(params, tokens.pop("choice", None))
    split_rows, dropped, token_table = data_tables(read_metrics(artifacts.PREPARE_STATS), tokens)
    return f"""# Report: {params.model.name} on {params.data.dataset}

{learned_warning(test)}Generated by `dvc repro`; every number below is read from `metrics/` and `records/`.

## Results
{results_table(train, test)}

{model_table(train, test, params)}

![training curves]({curves})

{confusion_block}

![per-class F1]({per_class})

## Where these numbers came from
{provenance_table(train)}

## Per-class test metrics
{per_class_markdown(test["per_class"])}

## Parameters
{params_table(params)}

## Data
Rows per split and class after cleaning:

{split_rows}

What `prepare` dropped, and why:

{dropped}

Token lengths (after {params.model.truncation} truncation to {params.model.max_length}):

{token_table}
"""
