"""Runs -> rows of the comparison: seeds merged (mean ± sample std), best row, baseline, % change."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from lora_dvc.comparison.runs import SEED_KEY, Run
from lora_dvc.errors import UserError
from lora_dvc.params import RESULT_NEUTRAL_KEYS

LOWER_IS_BETTER = {"loss"}
METHOD_ORDER = ("tfidf", "full", "lora", "rslora", "dora", "dora+rslora")
TARGET_ORDER = ("qv", "qkv", "all", "all-linear")
BASELINE_METHODS = ("tfidf", "full")
MERGED_OVER = RESULT_NEUTRAL_KEYS | {SEED_KEY}  # rows that differ only in these are one row


def higher_is_better(metric: str) -> bool:
    return metric.rsplit(".", 1)[-1] not in LOWER_IS_BETTER


def pct_change(value: float | None, baseline: float | None, higher_better: bool = True) -> float | None:
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
    std: float | None
    n: int


def aggregate(values: Iterable[float | None]) -> Stat | None:
    present = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not present:
        return None
    std = statistics.stdev(present) if len(present) > 1 else None
    return Stat(statistics.fmean(present), std, len(present))


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

    @property
    def rank(self) -> float | None:
        r = self.first.params.get("lora.r")
        return r if isinstance(r, (int, float)) and not isinstance(r, bool) else None

    @property
    def targets(self) -> str:
        return target_label(self.first.params.get("lora.targets"))

    def stat(self, metric: str) -> Stat | None:
        return aggregate(r.metrics.get(metric) for r in self.runs)

    def mean(self, metric: str) -> float | None:
        s = self.stat(metric)
        return s.mean if s else None


def target_label(targets: Any) -> str:
    if isinstance(targets, list):
        return "[" + ", ".join(map(str, targets)) + "]"
    return str(targets)


def relevant_keys(params: dict[str, Any], method: str) -> list[str]:
    """The params that shape a run of this method (the TF-IDF baseline ignores model, lora and train)."""
    keys = []
    for key in params:
        section = key.split(".", 1)[0]
        if key in MERGED_OVER or key == "lora.enabled":  # lora.enabled is folded into the method
            continue
        if method == "tfidf" and section != "data" and key != "train.method":
            continue
        if method == "full" and section == "lora":
            continue
        keys.append(key)
    return sorted(keys)


def config_of(run: Run) -> dict[str, Any]:
    config = {k: run.params[k] for k in relevant_keys(run.params, run.method)}
    config["train.method"] = "tfidf" if run.method == "tfidf" else "full" if run.method == "full" else "lora"
    return config


def group_runs(runs: list[Run]) -> list[Group]:
    groups: dict[str, Group] = {}
    for run in runs:
        config = config_of(run)
        key = json.dumps({"method": run.method, **config}, sort_keys=True, default=str)
        groups.setdefault(key, Group([], config)).runs.append(run)
    for group in groups.values():
        group.runs.sort(key=lambda r: (str(r.seed), r.name))
    return sorted(groups.values(), key=sort_key)


def order(value: str, known: tuple[str, ...]) -> int:
    return known.index(value) if value in known else len(known)


def sort_key(group: Group):
    return (
        order(group.method, METHOD_ORDER),
        order(group.targets, TARGET_ORDER),
        group.targets,
        group.rank or 0,
        group.label,
    )


def pick_best(groups: list[Group], metric: str) -> Group | None:
    candidates = [g for g in groups if g.mean(metric) is not None]
    if not candidates:
        return None
    sign = 1 if higher_is_better(metric) else -1
    tie = "test.macro_f1" if metric != "test.macro_f1" else "test.accuracy"
    return max(candidates, key=lambda g: (sign * g.mean(metric), g.mean(tie) or 0.0))


def best_of_method(groups: list[Group], method: str, metric: str) -> Group | None:
    rows = [g for g in groups if g.method == method]
    return pick_best(rows, metric) or (rows[0] if rows else None)


def pick_baseline(groups: list[Group], choice: str, metric: str) -> Group | None:
    """auto: the TF-IDF row if any, else full fine-tuning, else none; tfidf|full: the best row of that
    method; none: no baseline; anything else: the row holding the experiment of that name."""
    if choice == "none":
        return None
    if choice == "auto":
        return next(filter(None, (best_of_method(groups, m, metric) for m in BASELINE_METHODS)), None)
    if choice in BASELINE_METHODS:
        found = best_of_method(groups, choice, metric)
        if found is None:
            present = ", ".join(sorted({g.method for g in groups}))
            raise UserError(f"--baseline {choice}: no finished {choice} experiment; methods present: {present}")
        return found
    for group in groups:
        if any(choice in (r.name, r.rev, r.rev[:7]) for r in group.runs):
            return group
    raise UserError(
        f"--baseline {choice}: no finished experiment of that name (use auto, tfidf, full, none or an experiment name)"
    )


def reference_lines(groups: list[Group], baseline: Group | None, metric: str) -> list[Group]:
    """The rows drawn as dashed lines in the figure: the baseline, then the best of each baseline method."""
    lines = [best_of_method(groups, m, metric) for m in BASELINE_METHODS]
    lines = [g for g in lines if g is not None]
    if baseline is not None and baseline not in lines:
        lines.insert(0, baseline)
    return lines


def varying_keys(groups: list[Group], shown: set[str]) -> list[str]:
    """Config keys not shown in a column of their own whose values differ between rows."""
    keys = sorted({k for g in groups for k in g.config} - shown)
    return [k for k in keys if len({json.dumps(g.config.get(k), default=str) for g in groups if k in g.config}) > 1]
