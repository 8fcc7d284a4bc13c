"""Rows of the comparison -> markdown tables and a matplotlib figure."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lora_dvc.atomic import atomic_path
from lora_dvc.comparison.aggregate import (
    METHOD_ORDER,
    TARGET_ORDER,
    Group,
    Stat,
    higher_is_better,
    order,
    pct_change,
    target_label,
    varying_keys,
)
from lora_dvc.comparison.runs import METRICS, SCORES, SPLITS, Other

DASH = "–"
SHORT = {"accuracy": "acc", "macro_f1": "F1", "loss": "loss"}
METRIC_HEADERS = {f"{s}.{m}": f"{s} {SHORT[m]}" for s in SPLITS for m in SCORES}
SHOWN_IN_COLUMNS = {
    "train.method",
    "lora.rslora",
    "lora.dora",
    "lora.r",
    "lora.alpha",
    "lora.targets",
    "lora.dropout",
    "train.batch_size",
    "train.lr",
    "train.epochs",
}
NO_LORA = ("tfidf", "full")


@dataclass
class Comparison:
    """What the report shows: the rows and the choices that shaped it."""

    groups: list[Group]
    others: list[Other]
    best: Group | None
    baseline: Group | None
    best_by: str
    baseline_choice: str
    source: str


# ---------------------------------------------------------------- cells


def fmt_value(value: float | None, kind: str) -> str:
    if value is None:
        return DASH
    return {"int": f"{value:,.0f}", "sci": f"{value:.2e}"}.get(kind, f"{value:.4f}")


def fmt_stat(stat: Stat | None, kind: str = "score") -> str:
    if stat is None:
        return DASH
    text = fmt_value(stat.mean, kind)
    if stat.std is not None and not (kind == "int" and stat.std == 0):
        text += f" ± {fmt_value(stat.std, kind)}"
    return text


def fmt_pct(value: float | None) -> str:
    return DASH if value is None else f"{value:+.2f}%"


def fmt_param(value: Any) -> str:
    if value is None:
        return DASH
    if isinstance(value, float):
        return f"{value:g}"
    return target_label(value) if isinstance(value, list) else str(value)


def param_cells(group: Group) -> list[str]:
    """method, r, alpha, targets, dropout, batch, lr, epochs: a dash where the method has no such knob."""
    p, lora, neural = group.first.params, group.method not in NO_LORA, group.method != "tfidf"
    cell = lambda key, show: fmt_param(p.get(key)) if show else DASH
    return [
        group.method,
        cell("lora.r", lora),
        cell("lora.alpha", lora),
        group.targets if lora else DASH,
        cell("lora.dropout", lora),
        cell("train.batch_size", neural),
        cell("train.lr", neural),
        cell("train.epochs", neural),
    ]


def seeds_cell(group: Group) -> str:
    return ", ".join(fmt_param(r.seed) for r in group.runs)


def metric_cells(group: Group) -> list[str]:
    cells = []
    for metric in METRICS:
        text = fmt_stat(group.stat(metric))
        if metric == "test.accuracy" and any(r.below_majority for r in group.runs):
            text += " ⚠"
        cells.append(text)
    return cells


def md_row(cells: list[str], bold: bool = False) -> str:
    if bold:
        cells = [f"**{c}**" if c else c for c in cells]
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def md_table(header: list[str], rows: list[str]) -> list[str]:
    return [md_row(header), "|" + "|".join("---" for _ in header) + "|", *rows]


# ---------------------------------------------------------------- sections


def summary_section(c: Comparison) -> list[str]:
    n_runs = sum(len(g.runs) for g in c.groups)
    lines = [
        "# Experiment comparison",
        "",
        f"{len(c.groups)} configurations from {n_runs} finished runs ({c.source}). Rows that differ only "
        "in `train.seed` are merged: values are mean ± sample standard deviation over the seeds.",
        "",
    ]
    if c.best is not None:
        lines.append(
            f"**Best** (highest mean {c.best_by}, in bold): {c.best.label} "
            f"({c.best.method}, {c.best_by} {fmt_stat(c.best.stat(c.best_by))})."
        )
    if c.baseline is not None:
        lines.append(f"**Baseline** ({c.baseline_choice}): {c.baseline.label} ({c.baseline.method}).")
    else:
        lines.append(
            "No baseline row (no TF-IDF or full fine-tuning run, or `--baseline none`): % changes are left out."
        )
    return lines + [""]


def all_experiments_section(c: Comparison) -> list[str]:
    varying = varying_keys(c.groups, SHOWN_IN_COLUMNS)
    header = [
        "experiment",
        "method",
        "r",
        "alpha",
        "targets",
        "dropout",
        "batch",
        "lr",
        "epochs",
        "seeds",
        "steps",
        "trainable params",
        "LoRA weight mean",
        *[METRIC_HEADERS[m] for m in METRICS],
    ]
    header += ["other params"] if varying else []
    rows = []
    for group in c.groups:
        cells = [
            group.label + (" (baseline)" if group is c.baseline else ""),
            *param_cells(group),
            seeds_cell(group),
            fmt_stat(group.stat("steps"), "int") if group.method != "tfidf" else DASH,
            fmt_stat(group.stat("trainable_params"), "int"),
            fmt_stat(group.stat("lora_weight_mean"), "sci") if group.method not in NO_LORA else DASH,
            *metric_cells(group),
        ]
        if varying:
            cells.append(", ".join(f"{k}={fmt_param(group.config[k])}" for k in varying if k in group.config) or DASH)
        rows.append(md_row(cells, bold=group is c.best))
    return ["## All experiments", "", *md_table(header, rows), ""]


def change_section(c: Comparison) -> list[str]:
    base = c.baseline
    if base is None:
        return []
    lines = [
        "## Change against the baseline",
        "",
        f"% change of each metric against {base.label} ({base.method}), signed so that **positive is "
        "better**: for accuracy and macro-F1 (higher is better) it is (value − baseline) / baseline, "
        "for loss (lower is better) (baseline − value) / baseline.",
        "",
    ]
    rows = []
    for group in c.groups:
        params = param_cells(group)
        cells = [group.label, group.method, params[1], params[3]]
        if group is base:
            cells += ["baseline"] * len(METRICS)
        else:
            cells += [fmt_pct(pct_change(group.mean(m), base.mean(m), higher_is_better(m))) for m in METRICS]
        rows.append(md_row(cells, bold=group is c.best))
    header = ["experiment", "method", "r", "targets", *[METRIC_HEADERS[m] for m in METRICS]]
    return lines + md_table(header, rows) + [""]


def majority_section(c: Comparison) -> list[str]:
    flagged = [(g, r) for g in c.groups for r in g.runs if r.below_majority]
    lines = ["## Runs no better than the majority class", ""]
    if not flagged:
        return lines + ["None: every run with test metrics beats the majority-class accuracy.", ""]
    lines += [
        "Test accuracy at or below the accuracy of always predicting the most frequent "
        "training class (marked ⚠ above): these runs learned nothing usable.",
        "",
    ]
    for group, run in flagged:
        lines.append(
            f"- ⚠ {run.name} ({group.method}, seed {fmt_param(run.seed)}): test accuracy "
            f"{run.metrics['test.accuracy']:.4f} <= majority-class accuracy "
            f"{run.metrics['test.majority_accuracy']:.4f}"
        )
    return lines + [""]


def others_section(c: Comparison) -> list[str]:
    if not c.others:
        return []
    lines = ["## Experiments without results", ""]
    for other in c.others:
        hint = f" (see `dvc queue logs {other.name}`)" if other.state == "failed" else ""
        lines.append(f"- {other.name} ({other.rev[:7]}): {other.state}{hint}")
    return lines + [""]


def render_markdown(c: Comparison, png_name: str | None) -> str:
    lines = summary_section(c) + all_experiments_section(c) + change_section(c)
    lines += majority_section(c) + others_section(c)
    if png_name:
        lines += ["## Metric against rank and target set", "", f"![comparison]({png_name})", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------- figure

FIGURE_METRICS = (("test.accuracy", "test accuracy"), ("test.macro_f1", "test macro-F1"))
BASELINE_STYLES = ("--", ":", "-.")


def lora_rows(groups: list[Group]) -> list[Group]:
    return [g for g in groups if g.method not in NO_LORA and g.rank is not None]


def plot_against_rank(ax, rows: list[Group], metric: str) -> None:
    """One line per (method, target set): mean over seeds with the std as error bars."""
    series: dict[tuple[str, str], list[Group]] = {}
    for g in rows:
        if g.stat(metric):
            series.setdefault((g.method, g.targets), []).append(g)
    for (method, target), members in sorted(series.items()):
        members.sort(key=lambda g: g.rank)
        ax.errorbar(
            [g.rank for g in members],
            [g.mean(metric) for g in members],
            yerr=[g.stat(metric).std or 0.0 for g in members],
            marker="o",
            capsize=3,
            label=f"{method} {target}",
        )
    ranks = sorted({g.rank for g in rows})
    if ranks:
        ax.set_xscale("log", base=2)
        ax.set_xticks(ranks)
        ax.set_xticklabels([fmt_param(r) for r in ranks])


def plot_against_targets(ax, rows: list[Group], metric: str) -> None:
    """One marker per (method, rank), mean with the std as error bar, side by side within each target set.
    Markers, not bars: the runs differ by a point or two, which bars drawn from zero would flatten."""
    targets = sorted({g.targets for g in rows}, key=lambda t: (order(t, TARGET_ORDER), t))
    bars = sorted(
        {(g.method, g.rank) for g in rows if g.stat(metric)}, key=lambda mr: (order(mr[0], METHOD_ORDER), mr[1])
    )
    width = 0.8 / max(len(bars), 1)
    for i, (method, rank) in enumerate(bars):
        xs, ys, errs = [], [], []
        for j, target in enumerate(targets):
            members = [g for g in rows if (g.method, g.rank, g.targets) == (method, rank, target) and g.stat(metric)]
            if members:
                best = max(members, key=lambda g: g.mean(metric))
                xs.append(j + (i - (len(bars) - 1) / 2) * width)
                ys.append(best.mean(metric))
                errs.append(best.stat(metric).std or 0.0)
        ax.errorbar(xs, ys, yerr=errs, fmt="o", markersize=7, capsize=3, label=f"{method} r={fmt_param(rank)}")
    ax.set_xticks(range(len(targets)))
    ax.set_xticklabels(targets)


def finish_axes(axes, references: list[Group], metric: str, empty: bool) -> None:
    for k, ref in enumerate(references):
        value = ref.mean(metric)
        for ax in axes if value is not None else ():
            ax.axhline(
                value,
                color="grey",
                linestyle=BASELINE_STYLES[k % len(BASELINE_STYLES)],
                label=f"{ref.method} ({value:.3f})",
            )
    for ax in axes:
        if empty:
            ax.text(0.5, 0.5, "no LoRA runs", ha="center", va="center", transform=ax.transAxes, color="grey")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=4, frameon=False)


def plot(groups: list[Group], references: list[Group], path: Path) -> None:
    """Test accuracy and macro-F1 against the LoRA rank and the target set; baselines as dashed lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = lora_rows(groups)
    fig, axes = plt.subplots(len(FIGURE_METRICS), 2, figsize=(13, 5.2 * len(FIGURE_METRICS)), squeeze=False)
    for (ax_rank, ax_target), (metric, title) in zip(axes, FIGURE_METRICS):
        plot_against_rank(ax_rank, rows, metric)
        plot_against_targets(ax_target, rows, metric)
        ax_rank.set(title=f"{title} vs LoRA rank", xlabel="LoRA rank r", ylabel=title)
        ax_target.set(title=f"{title} vs target set", xlabel="lora.targets", ylabel=title)
        finish_axes((ax_rank, ax_target), references, metric, empty=not rows)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
