"""compare: every experiment side by side -> reports/comparison.md and reports/comparison.png.

Run after experiments (not a pipeline stage):

    python -m lora_dvc.compare                      # reads `dvc exp show --json` of HEAD's experiments
    python -m lora_dvc.compare --all-commits        # experiments of every commit
    python -m lora_dvc.compare --input exps.json    # a saved `dvc exp show --json`
    python -m lora_dvc.compare --baseline full      # baseline: auto (TF-IDF, else full fine-tuning) | tfidf | full | none | NAME

Each finished experiment is one run. Runs whose config is the same except for `train.seed` (and
knobs that do not change the result: device, logging, checkpointing, eval batch size) form one
row, with every metric as mean ± sample standard deviation over the seeds. The method is derived
from the params: `tfidf` (train.method), `full` (lora.enabled false), `dora` / `rslora` (those
flags), else `lora`. The best row (highest mean of --best-by, test accuracy by default) is bold.
A second table gives each row's % change against the baseline row for every metric, signed so
that positive is always better (accuracy and macro-F1: higher is better; loss: lower is better).
Runs whose test accuracy is no better than the majority-class accuracy are flagged, and failed,
queued and running experiments are listed. The PNG plots test accuracy and macro-F1 against the
LoRA rank (one line per method and target set) and against the target set, with the baselines
as dashed lines.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

from lora_dvc.errors import UserError
from lora_dvc.runner import run_stage

TRAIN_METRICS = "metrics/train/metrics.json"
EVAL_METRICS = "metrics/evaluate/metrics.json"
from lora_dvc.artifacts import COMPARISON as DEFAULT_OUT

SPLITS = ("train", "val", "test")
SCORES = ("accuracy", "macro_f1", "loss")
METRICS = tuple(f"{split}.{score}" for split in SPLITS for score in SCORES)
LOWER_IS_BETTER = {"loss"}
# knobs that do not change what is learned; train.seed is what a row aggregates over
VOLATILE = {"train.seed", "train.device", "train.log_every", "train.checkpoint_every", "evaluate.batch_size"}
METHOD_ORDER = ("tfidf", "full", "lora", "rslora", "dora", "dora+rslora")
TARGET_ORDER = ("qv", "qkv", "all", "all-linear")
BASELINE_METHODS = ("tfidf", "full")
DASH = "–"


def higher_is_better(metric: str) -> bool:
    return metric.rsplit(".", 1)[-1] not in LOWER_IS_BETTER


def pct_change(value: Optional[float], baseline: Optional[float], higher_better: bool = True) -> Optional[float]:
    """% change of `value` against `baseline`, signed so that positive means better.

    Higher-is-better: (value - baseline) / |baseline|; lower-is-better: (baseline - value) / |baseline|.
    None when either is missing or the baseline is 0 (no meaningful ratio).
    """
    if value is None or baseline is None or baseline == 0:
        return None
    diff = value - baseline if higher_better else baseline - value
    return 100.0 * diff / abs(baseline)


@dataclass(frozen=True)
class Stat:
    """Mean and sample standard deviation (None for a single value) of one metric over seeds."""

    mean: float
    std: Optional[float]
    n: int


def aggregate(values: Iterable[Optional[float]]) -> Optional[Stat]:
    present = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not present:
        return None
    std = statistics.stdev(present) if len(present) > 1 else None
    return Stat(statistics.fmean(present), std, len(present))


@dataclass
class Run:
    """One finished experiment: its flat params and the metrics the report uses."""

    name: str
    rev: str
    params: dict[str, Any]
    metrics: dict[str, Optional[float]]

    @property
    def method(self) -> str:
        return derive_method(self.params)

    @property
    def seed(self) -> Any:
        return self.params.get("train.seed")

    @property
    def below_majority(self) -> bool:
        acc, majority = self.metrics.get("test.accuracy"), self.metrics.get("test.majority_accuracy")
        return acc is not None and majority is not None and acc <= majority


@dataclass
class Other:
    """An experiment with no results to compare: failed, queued or running."""

    name: str
    rev: str
    state: str


@dataclass
class Group:
    """Runs of one config (different seeds): one row of the report."""

    runs: list[Run]
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def first(self) -> Run:
        return self.runs[0]

    @property
    def method(self) -> str:
        return self.first.method

    @property
    def label(self) -> str:
        return ", ".join(r.name for r in self.runs)

    def stat(self, metric: str) -> Optional[Stat]:
        return aggregate(r.metrics.get(metric) for r in self.runs)

    def mean(self, metric: str) -> Optional[float]:
        s = self.stat(metric)
        return s.mean if s else None


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix.rstrip("."): tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def derive_method(params: dict[str, Any]) -> str:
    if params.get("train.method") == "tfidf":
        return "tfidf"
    if params.get("train.method") == "full" or params.get("lora.enabled") is False:  # lora.enabled: older runs
        return "full"
    dora, rslora = bool(params.get("lora.dora")), bool(params.get("lora.rslora"))
    if dora and rslora:
        return "dora+rslora"
    return "dora" if dora else "rslora" if rslora else "lora"


def relevant_keys(params: dict[str, Any], method: str) -> list[str]:
    """The params that shape a run of this method (the TF-IDF baseline ignores model, lora and train)."""
    keys = []
    for key in params:
        if key in VOLATILE:
            continue
        section = key.split(".", 1)[0]
        if method == "tfidf" and section not in ("data",) and key != "train.method":
            continue
        if method == "full" and section == "lora":
            continue
        keys.append(key)
    return sorted(keys)


def config_key(run: Run) -> str:
    method = run.method
    config = {k: run.params[k] for k in relevant_keys(run.params, method)}
    return json.dumps({"method": method, **config}, sort_keys=True, default=str)


def _metric(data: dict, *path: str) -> Optional[float]:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    if isinstance(data, bool) or not isinstance(data, (int, float)):
        return None
    return float(data)


def run_from_rev(name: str, rev: str, data: dict) -> Run:
    params: dict[str, Any] = {}
    for file_params in (data.get("params") or {}).values():
        params.update(flatten((file_params or {}).get("data") or {}))
    metrics_files = data.get("metrics") or {}
    train = (metrics_files.get(TRAIN_METRICS) or {}).get("data") or {}
    evaluate = (metrics_files.get(EVAL_METRICS) or {}).get("data") or {}
    metrics: dict[str, Optional[float]] = {
        "steps": _metric(train, "steps"),
        "trainable_params": _metric(train, "trainable_params"),
        "total_params": _metric(train, "total_params"),
        "lora_weight_mean": _metric(train, "lora_weight_mean"),
        "test.majority_accuracy": _metric(evaluate, "test", "majority_accuracy"),
    }
    for split in ("train", "val"):
        for score in SCORES:
            metrics[f"{split}.{score}"] = _metric(train, split, score)
    for score in SCORES:
        metrics[f"test.{score}"] = _metric(evaluate, "test", score)
    return Run(name=name, rev=rev, params=params, metrics=metrics)


def has_results(run: Run) -> bool:
    return any(run.metrics.get(m) is not None for m in METRICS)


def parse_exp_show(data: Any, include_workspace: bool = False) -> tuple[list[Run], list[Other]]:
    """Finished runs and unfinished experiments from `dvc exp show --json` output."""
    if not isinstance(data, list):
        raise UserError("not `dvc exp show --json` output: expected a JSON list of commits")
    runs: list[Run] = []
    others: list[Other] = []
    seen: set[str] = set()

    def add(name: str, rev: str, payload: Optional[dict]) -> None:
        if not payload or rev in seen:
            return
        run = run_from_rev(name, rev, payload)
        if has_results(run):
            seen.add(rev)
            runs.append(run)

    for commit in data:
        if not isinstance(commit, dict) or "rev" not in commit:
            raise UserError("not `dvc exp show --json` output: each entry needs a 'rev'")
        rev = commit["rev"]
        if rev == "workspace":
            if include_workspace:
                add("workspace", "workspace", commit.get("data"))
            continue
        add(commit.get("name") or rev[:7], rev, commit.get("data"))
        for exp in commit.get("experiments") or []:
            revs = exp.get("revs") or []
            if not revs:
                continue
            latest = revs[0]
            name = exp.get("name") or latest.get("name") or latest["rev"][:7]
            state = ((exp.get("executor") or {}).get("state") or "").lower()
            if state in ("queued", "running", "failed") or latest.get("error"):
                others.append(Other(name, latest["rev"], state or "failed"))
                continue
            add(name, latest["rev"], latest.get("data"))
    return runs, others


def group_runs(runs: list[Run]) -> list[Group]:
    groups: dict[str, Group] = {}
    for run in runs:
        key = config_key(run)
        if key not in groups:
            groups[key] = Group([], {k: run.params[k] for k in relevant_keys(run.params, run.method)})
        groups[key].runs.append(run)
    for group in groups.values():
        group.runs.sort(key=lambda r: (str(r.seed), r.name))
    return sorted(groups.values(), key=sort_key)


def sort_key(group: Group):
    p = group.first.params
    method = METHOD_ORDER.index(group.method) if group.method in METHOD_ORDER else len(METHOD_ORDER)
    targets = target_label(p.get("lora.targets"))
    t_rank = TARGET_ORDER.index(targets) if targets in TARGET_ORDER else len(TARGET_ORDER)
    r = p.get("lora.r") if isinstance(p.get("lora.r"), (int, float)) else 0
    return (method, t_rank, targets, r, group.label)


def target_label(targets: Any) -> str:
    if isinstance(targets, list):
        return "[" + ", ".join(map(str, targets)) + "]"
    return str(targets)


def pick_best(groups: list[Group], metric: str) -> Optional[Group]:
    candidates = [g for g in groups if g.mean(metric) is not None]
    if not candidates:
        return None
    sign = 1 if higher_is_better(metric) else -1
    tie = "test.macro_f1" if metric != "test.macro_f1" else "test.accuracy"
    return max(candidates, key=lambda g: (sign * g.mean(metric), g.mean(tie) or 0.0))


def pick_baseline(groups: list[Group], choice: str, metric: str) -> Optional[Group]:
    """auto: the TF-IDF row if any, else full fine-tuning, else none; tfidf|full: the best row of that
    method; none: no baseline; anything else: the row holding the experiment of that name."""
    if choice == "none":
        return None
    if choice == "auto":
        for method in BASELINE_METHODS:
            found = pick_best([g for g in groups if g.method == method], metric) or next(
                (g for g in groups if g.method == method), None)
            if found:
                return found
        return None
    if choice in BASELINE_METHODS:
        rows = [g for g in groups if g.method == choice]
        if not rows:
            present = sorted({g.method for g in groups})
            raise UserError(f"--baseline {choice}: no finished {choice} experiment; methods present: {', '.join(present)}")
        return pick_best(rows, metric) or rows[0]
    for group in groups:
        if any(choice in (r.name, r.rev, r.rev[:7]) for r in group.runs):
            return group
    raise UserError(f"--baseline {choice}: no finished experiment of that name (use auto, tfidf, full, none or an experiment name)")


# ---------------------------------------------------------------- formatting


def fmt_value(value: Optional[float], kind: str) -> str:
    if value is None:
        return DASH
    if kind == "int":
        return f"{value:,.0f}"
    if kind == "sci":
        return f"{value:.2e}"
    return f"{value:.4f}"


def fmt_stat(stat: Optional[Stat], kind: str = "score") -> str:
    if stat is None:
        return DASH
    text = fmt_value(stat.mean, kind)
    if stat.std is not None and not (kind == "int" and stat.std == 0):
        text += f" ± {fmt_value(stat.std, kind)}"
    return text


def fmt_pct(value: Optional[float]) -> str:
    return DASH if value is None else f"{value:+.2f}%"


def fmt_param(value: Any) -> str:
    if value is None:
        return DASH
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return target_label(value)
    return str(value)


def param_cells(group: Group) -> list[str]:
    p, method = group.first.params, group.method
    lora = method not in ("tfidf", "full")
    neural = method != "tfidf"
    cell = lambda key, show: fmt_param(p.get(key)) if show else DASH  # noqa: E731
    return [method, cell("lora.r", lora), cell("lora.alpha", lora),
            target_label(p.get("lora.targets")) if lora else DASH, cell("lora.dropout", lora),
            cell("train.batch_size", neural), cell("train.lr", neural), cell("train.epochs", neural)]


def seeds_cell(group: Group) -> str:
    seeds = [fmt_param(r.seed) for r in group.runs]
    return ", ".join(seeds) if len(seeds) > 1 else seeds[0]


def other_differences(groups: list[Group]) -> dict[int, str]:
    """Per row, the config values not shown in their own column that differ between rows."""
    shown = {"train.method", "lora.enabled", "lora.rslora", "lora.dora", "lora.r", "lora.alpha", "lora.targets",
             "lora.dropout", "train.batch_size", "train.lr", "train.epochs"}
    keys = sorted({k for g in groups for k in g.config} - shown)
    varying = []
    for key in keys:
        values = {json.dumps(g.config.get(key), default=str) for g in groups if key in g.config}
        if len(values) > 1:
            varying.append(key)
    result = {}
    for i, group in enumerate(groups):
        parts = [f"{k}={fmt_param(group.config[k])}" for k in varying if k in group.config]
        result[i] = ", ".join(parts)
    return result


def md_row(cells: list[str], bold: bool = False) -> str:
    if bold:
        cells = [f"**{c}**" if c else c for c in cells]
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def md_table(header: list[str], rows: list[str]) -> list[str]:
    return [md_row(header), "|" + "|".join("---" for _ in header) + "|", *rows]


METRIC_HEADERS = {f"{s}.{m}": f"{s} {dict(accuracy='acc', macro_f1='F1', loss='loss')[m]}" for s in SPLITS for m in SCORES}


def render_markdown(groups: list[Group], others: list[Other], best: Optional[Group], baseline: Optional[Group],
                    best_by: str, baseline_choice: str, png_name: Optional[str], source: str) -> str:
    n_runs = sum(len(g.runs) for g in groups)
    lines = ["# Experiment comparison", ""]
    lines.append(f"{len(groups)} configurations from {n_runs} finished runs ({source}). "
                 "Rows that differ only in `train.seed` are merged: values are mean ± sample standard "
                 "deviation over the seeds.")
    lines.append("")
    if best is not None:
        lines.append(f"**Best** (highest mean {best_by}, in bold): {best.label} "
                     f"({best.method}, {best_by} {fmt_stat(best.stat(best_by))}).")
    if baseline is not None:
        lines.append(f"**Baseline** ({baseline_choice}): {baseline.label} ({baseline.method}).")
    else:
        lines.append("No baseline row (no TF-IDF or full fine-tuning run, or `--baseline none`): "
                     "% changes are left out.")
    lines.append("")

    others_col = other_differences(groups)
    show_other = any(others_col.values())
    header = ["experiment", "method", "r", "alpha", "targets", "dropout", "batch", "lr", "epochs", "seeds",
              "steps", "trainable params", "LoRA weight mean", *[METRIC_HEADERS[m] for m in METRICS]]
    if show_other:
        header.append("other params")
    rows = []
    for i, group in enumerate(groups):
        label = group.label + (" (baseline)" if group is baseline else "")
        metric_cells = []
        for metric in METRICS:
            text = fmt_stat(group.stat(metric))
            if metric == "test.accuracy" and any(r.below_majority for r in group.runs):
                text += " ⚠"
            metric_cells.append(text)
        cells = [label, *param_cells(group), seeds_cell(group),
                 fmt_stat(group.stat("steps"), "int") if group.method != "tfidf" else DASH,
                 fmt_stat(group.stat("trainable_params"), "int"),
                 fmt_stat(group.stat("lora_weight_mean"), "sci") if group.method not in ("tfidf", "full") else DASH,
                 *metric_cells]
        if show_other:
            cells.append(others_col[i] or DASH)
        rows.append(md_row(cells, bold=group is best))
    lines += ["## All experiments", "", *md_table(header, rows), ""]

    if baseline is not None:
        lines += ["## Change against the baseline", "",
                  f"% change of each metric against {baseline.label} ({baseline.method}), signed so that "
                  "**positive is better**: for accuracy and macro-F1 (higher is better) it is "
                  "(value − baseline) / baseline, for loss (lower is better) (baseline − value) / baseline.", ""]
        header = ["experiment", "method", "r", "targets", *[METRIC_HEADERS[m] for m in METRICS]]
        rows = []
        for group in groups:
            params = param_cells(group)
            cells = [group.label, group.method, params[1], params[3]]
            if group is baseline:
                cells += ["baseline"] * len(METRICS)
            else:
                cells += [fmt_pct(pct_change(group.mean(m), baseline.mean(m), higher_is_better(m))) for m in METRICS]
            rows.append(md_row(cells, bold=group is best))
        lines += md_table(header, rows) + [""]

    flagged = [(g, r) for g in groups for r in g.runs if r.below_majority]
    lines += ["## Runs no better than the majority class", ""]
    if flagged:
        lines.append("Test accuracy at or below the accuracy of always predicting the most frequent "
                     "training class (marked ⚠ above): these runs learned nothing usable.")
        lines.append("")
        for group, run in flagged:
            lines.append(f"- ⚠ {run.name} ({group.method}, seed {fmt_param(run.seed)}): test accuracy "
                         f"{run.metrics['test.accuracy']:.4f} <= majority-class accuracy "
                         f"{run.metrics['test.majority_accuracy']:.4f}")
    else:
        lines.append("None: every run with test metrics beats the majority-class accuracy.")
    lines.append("")

    if others:
        lines += ["## Experiments without results", ""]
        for other in others:
            hint = f" (see `dvc queue logs {other.name}`)" if other.state == "failed" else ""
            lines.append(f"- {other.name} ({other.rev[:7]}): {other.state}{hint}")
        lines.append("")
    if png_name:
        lines += ["## Metric against rank and target set", "", f"![comparison]({png_name})", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------- figure


def plot(groups: list[Group], baselines: list[Group], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lora_groups = [g for g in groups if g.method not in ("tfidf", "full") and isinstance(g.first.params.get("lora.r"), (int, float))]
    metrics = (("test.accuracy", "test accuracy"), ("test.macro_f1", "test macro-F1"))
    fig, axes = plt.subplots(len(metrics), 2, figsize=(13, 5.2 * len(metrics)), squeeze=False)
    baseline_styles = ("--", ":", "-.")

    targets = []
    for g in lora_groups:
        t = target_label(g.first.params.get("lora.targets"))
        if t not in targets:
            targets.append(t)
    targets.sort(key=lambda t: (TARGET_ORDER.index(t) if t in TARGET_ORDER else len(TARGET_ORDER), t))
    ranks = sorted({g.first.params["lora.r"] for g in lora_groups})

    for row, (metric, title) in enumerate(metrics):
        ax_rank, ax_target = axes[row]
        series: dict[tuple[str, str], list[Group]] = {}
        for g in lora_groups:
            series.setdefault((g.method, target_label(g.first.params.get("lora.targets"))), []).append(g)
        for (method, target), members in sorted(series.items()):
            points = sorted((g.first.params["lora.r"], g.stat(metric)) for g in members if g.stat(metric))
            if not points:
                continue
            xs = [p[0] for p in points]
            ys = [p[1].mean for p in points]
            errs = [p[1].std or 0.0 for p in points]
            ax_rank.errorbar(xs, ys, yerr=errs, marker="o", capsize=3, label=f"{method} {target}")
        # one bar per (method, rank) that has this metric, grouped by target set: no empty slots
        bars = sorted({(g.method, g.first.params["lora.r"]) for g in lora_groups if g.stat(metric)},
                      key=lambda mr: (METHOD_ORDER.index(mr[0]) if mr[0] in METHOD_ORDER else 99, mr[1]))
        width = 0.8 / max(len(bars), 1)
        for i, (method, r) in enumerate(bars):
            xs, ys, errs = [], [], []
            for j, target in enumerate(targets):
                members = [g for g in lora_groups if g.method == method and g.first.params["lora.r"] == r
                           and target_label(g.first.params.get("lora.targets")) == target and g.stat(metric)]
                if members:
                    best = max(members, key=lambda g: g.mean(metric))
                    xs.append(j + (i - (len(bars) - 1) / 2) * width)
                    ys.append(best.mean(metric))
                    errs.append(best.stat(metric).std or 0.0)
            if xs:
                ax_target.bar(xs, ys, width=width, yerr=errs, capsize=3, label=f"{method} r={fmt_param(r)}")
        for k, base in enumerate(baselines):
            value = base.mean(metric)
            if value is None:
                continue
            for ax in (ax_rank, ax_target):
                ax.axhline(value, color="grey", linestyle=baseline_styles[k % len(baseline_styles)],
                           label=f"{base.method} ({value:.3f})")
        ax_rank.set(title=f"{title} vs LoRA rank", xlabel="LoRA rank r", ylabel=title)
        if ranks:
            ax_rank.set_xscale("log", base=2)
            ax_rank.set_xticks(ranks)
            ax_rank.set_xticklabels([fmt_param(r) for r in ranks])
        ax_target.set(title=f"{title} vs target set", xlabel="lora.targets", ylabel=title)
        ax_target.set_xticks(range(len(targets)))
        ax_target.set_xticklabels(targets)
        for ax in (ax_rank, ax_target):
            if not lora_groups:
                ax.text(0.5, 0.5, "no LoRA runs", ha="center", va="center", transform=ax.transAxes, color="grey")
            ax.grid(alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=4, frameon=False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------- entry point


def load_exp_show(input_path: Optional[str], all_commits: bool) -> tuple[Any, str]:
    if input_path:
        path = Path(input_path)
        if not path.is_file():
            raise UserError(f"--input {input_path}: file not found")
        try:
            return json.loads(path.read_text(encoding="utf-8")), f"`{input_path}`"
        except json.JSONDecodeError as err:
            raise UserError(f"--input {input_path}: not JSON ({err.msg} at line {err.lineno})") from None
    cmd = [sys.executable, "-m", "dvc", "exp", "show", "--json", *(["--all-commits"] if all_commits else [])]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        lines = [ln for ln in result.stderr.strip().splitlines() if ln.strip()] or ["no output"]
        first_error = next((ln for ln in lines if ln.startswith("ERROR")), lines[-1])
        raise UserError(f"`dvc exp show --json` failed (run from the repository root): {first_error}")
    try:
        return json.loads(result.stdout), "`dvc exp show" + (" --all-commits" if all_commits else "") + "`"
    except json.JSONDecodeError:
        raise UserError("`dvc exp show --json` printed something that is not JSON") from None


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m lora_dvc.compare", description=__doc__.splitlines()[0])
    parser.add_argument("--input", help="a saved `dvc exp show --json` output (default: run it)")
    parser.add_argument("--all-commits", action="store_true", help="experiments of every commit, not only HEAD's")
    parser.add_argument("--workspace", action="store_true", help="also count the workspace's results as a run")
    parser.add_argument("--exclude", nargs="+", default=[], metavar="NAME",
                        help="leave out these runs (experiment names, or the commit's name, e.g. main, "
                             "when its own results come from other data than the sweep's)")
    parser.add_argument("--baseline", default="auto",
                        help="auto (TF-IDF if present, else full fine-tuning) | tfidf | full | none | an experiment name")
    parser.add_argument("--best-by", default="test.accuracy", choices=METRICS, help="metric that picks the bold row")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help=f"markdown file to write (default {DEFAULT_OUT}); the PNG goes beside it")
    return parser.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> None:
    args = parse_args(argv)
    data, source = load_exp_show(args.input, args.all_commits)
    runs, others = parse_exp_show(data, include_workspace=args.workspace)
    unknown = sorted(set(args.exclude) - {r.name for r in runs} - {o.name for o in others})
    if unknown:
        raise UserError(f"--exclude: no run named {', '.join(unknown)}; the runs are "
                        f"{', '.join(sorted({r.name for r in runs}))}")
    runs = [r for r in runs if r.name not in args.exclude]
    if not runs:
        pending = f" ({len(others)} failed, queued or running)" if others else ""
        raise UserError(f"no finished experiment with metrics to compare{pending}; run `dvc exp run` "
                        "(or pass --workspace to use the workspace's results)")
    groups = group_runs(runs)
    best = pick_best(groups, args.best_by)
    baseline = pick_baseline(groups, args.baseline, args.best_by)
    out = Path(args.out)
    if out.suffix.lower() != ".md":
        raise UserError(f"--out {args.out}: expected a .md file")
    png = out.with_suffix(".png")
    baselines = [g for g in (pick_baseline(groups, m, args.best_by) if any(x.method == m for x in groups) else None
                             for m in BASELINE_METHODS) if g is not None]
    if baseline is not None and baseline not in baselines:
        baselines.insert(0, baseline)
    plot(groups, baselines, png)
    text = render_markdown(groups, others, best, baseline, args.best_by, args.baseline, png.name, source)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(f"wrote {out} and {png}: {len(groups)} configurations, {len(runs)} runs"
          + (f", {len(others)} without results" if others else ""))
    if best is not None:
        print(f"best by {args.best_by}: {best.label} ({best.method}, {fmt_stat(best.stat(args.best_by))})")
    flagged = [r.name for g in groups for r in g.runs if r.below_majority]
    if flagged:
        print(f"warning: no better than the majority class on test: {', '.join(flagged)}", file=sys.stderr)


if __name__ == "__main__":
    run_stage(main)
