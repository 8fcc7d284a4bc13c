"""Experiments as DVC reports them, through `dvc.api` only (no text or `--json` output parsed).

`dvc.api.exp_show()` gives one flat row per commit and experiment (`Experiment`, `rev`, `typ`,
`State`: None for a run outside the queue, then every metric and param by dotted name). Cells are
rendered for a table (missing `!`, null `None`, booleans and lists strings, integers floats);
`decode_cell` undoes that. Params columns come from `dvc.api.params_show()` plus the schema.
What the metrics files do not hold (train-split scores, steps, total parameters, the LoRA weight
mean, the majority floor) is read from each experiment's `records/` at its commit (`with_records`),
as `<file>:<key>` cells.
"""

from __future__ import annotations

import ast
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lora_dvc.artifacts import EVAL_SUMMARY, TEST_METRICS, TRAIN_METRICS, TRAIN_SUMMARY
from lora_dvc.errors import UserError
from lora_dvc.params import all_keys

SEED_KEY = "train.seed"  # changes the result, but a row of the comparison aggregates over it
LEGACY_PARAM_KEYS = frozenset({"lora.enabled"})  # params of older experiments, read to derive the method

SPLITS = ("train", "val", "test")
SCORES = ("accuracy", "macro_f1", "loss")
METRICS = tuple(f"{split}.{score}" for split in SPLITS for score in SCORES)
# report name -> (file, name in it): the metrics files, then the records read at each experiment's commit
METRIC_SOURCES = {
    **{f"val.{m}": (TRAIN_METRICS, f"val.{m}") for m in SCORES},
    **{f"test.{m}": (TEST_METRICS, f"test.{m}") for m in SCORES},
    "trainable_params": (TRAIN_METRICS, "fit.trainable_params"),
    **{f"train.{m}": (TRAIN_SUMMARY, f"train.{m}") for m in SCORES},
    "test.majority_accuracy": (EVAL_SUMMARY, "test.majority_accuracy"),
    "steps": (TRAIN_SUMMARY, "steps"),
    "total_params": (TRAIN_SUMMARY, "total_params"),
    "lora_weight_mean": (TRAIN_SUMMARY, "lora_weight_mean"),
}
RECORDS = (TRAIN_SUMMARY, EVAL_SUMMARY)
UNFINISHED = ("Queued", "Running", "Failed")
MISSING = "!"


@dataclass
class Run:
    """One finished experiment: its params (dotted keys) and the metrics the report uses."""

    name: str
    rev: str
    params: dict[str, Any]
    metrics: dict[str, float | None]

    @property
    def method(self) -> str:
        return derive_method(self.params)

    @property
    def seed(self) -> Any:
        return self.params.get(SEED_KEY)

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


def derive_method(params: dict[str, Any]) -> str:
    """tfidf | full | lora | rslora | dora | dora+rslora; old runs' `lora.enabled: false` is `full`."""
    method = params.get("train.method")
    if method == "tfidf":
        return "tfidf"
    if method == "full" or params.get("lora.enabled") is False:
        return "full"
    dora, rslora = bool(params.get("lora.dora")), bool(params.get("lora.rslora"))
    if dora and rslora:
        return "dora+rslora"
    return "dora" if dora else "rslora" if rslora else "lora"


def decode_cell(value: Any) -> Any:
    """A value of an exp_show row as params.yaml held it (`MISSING` stays as is)."""
    if not isinstance(value, str) or value == MISSING:
        return value
    if value in ("None", "True", "False") or value[:1] in "[{":
        try:
            return ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return value
    return value


def decode_param(value: Any) -> Any:
    value = decode_cell(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)  # exp_show renders every number as a float: r 8.0 is r 8
    return value


def metric_value(row: dict, name: str) -> float | None:
    """A value of the row, or None; DVC prefixes a name with its file when two files share it, and
    `with_records` adds records under `<file>:<key>`."""
    path, key = METRIC_SOURCES[name]
    value = decode_cell(row.get(f"{path}:{key}", row.get(key)))
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        return None
    return float(value)


def run_from_row(row: dict, param_keys: set[str]) -> Run:
    params = {k: decode_param(v) for k, v in row.items() if k in param_keys and v != MISSING and v is not None}
    metrics = {name: metric_value(row, name) for name in METRIC_SOURCES}
    name = row.get("Experiment") or str(row.get("rev"))
    return Run(name=name, rev=str(row.get("rev")), params=params, metrics=metrics)


def has_results(run: Run) -> bool:
    return any(run.metrics.get(m) is not None for m in METRICS)


def parse_rows(rows: Any, param_keys: set[str], include_workspace: bool = False) -> tuple[list[Run], list[Other]]:
    """Finished runs (with metrics) and experiments without results, from `dvc.api.exp_show()` rows."""
    if not isinstance(rows, list) or not all(isinstance(r, dict) and "rev" in r for r in rows):
        raise UserError("not `dvc.api.exp_show()` rows: expected a JSON list of objects with a 'rev'")
    runs: list[Run] = []
    others: list[Other] = []
    for row in rows:
        if row["rev"] == "workspace" and not include_workspace:
            continue
        if row.get("State") in UNFINISHED:
            others.append(Other(row.get("Experiment") or row["rev"], row["rev"], row["State"].lower()))
            continue
        run = run_from_row(row, param_keys)
        if has_results(run):
            runs.append(run)
    return runs, others


def param_keys(repo: str | None = None) -> set[str]:
    """Dotted names of the params: the schema's, older runs' (lora.enabled) and, when reading a
    repository, whatever its params.yaml holds at HEAD (dvc.api.params_show)."""
    keys = set(all_keys()) | LEGACY_PARAM_KEYS
    if repo is None:
        return keys
    import dvc.api

    try:
        return keys | set(flatten(dvc.api.params_show(repo=repo)))
    except Exception as err:  # noqa: BLE001 - DVC raises many types; the user needs its message
        raise UserError(f"dvc.api.params_show() failed (run from the repository root): {err}") from None


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix.rstrip("."): tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(flatten(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return out


def exp_rows(repo: str | None = None, all_commits: bool = False, rev: str | None = None) -> list[dict]:
    """`dvc.api.exp_show()`: HEAD's experiments, those of commit `rev` (a sweep's baseline, which
    stays right when commits land while it runs), or those of every commit."""
    import dvc.api

    try:
        return dvc.api.exp_show(repo=repo, revs=rev, num=-1 if all_commits else 1)
    except Exception as err:  # noqa: BLE001 - DVC raises many types; the user needs its message
        raise UserError(f"dvc.api.exp_show() failed (run from the repository root): {err}") from None


def read_record(repo: Path, rev: str, path: Path) -> dict:
    """A records JSON file as committed at `rev` (the file itself for the workspace), or {} if absent."""
    import subprocess

    if rev == "workspace":
        file = repo / path
        text = file.read_text(encoding="utf-8") if file.is_file() else ""
    else:
        shown = subprocess.run(
            ["git", "show", f"{rev}:{path.as_posix()}"], cwd=repo, capture_output=True, text=True, check=False
        )
        text = shown.stdout if shown.returncode == 0 else ""
    try:
        return json.loads(text) if text else {}
    except json.JSONDecodeError:
        return {}


def with_records(rows: list[dict], repo: str | Path = ".") -> list[dict]:
    """Each finished row plus its experiment's records (RECORDS, flattened) as `<file>:<key>` cells."""
    out = []
    for row in rows:
        if row.get("State") in UNFINISHED or not row.get("rev"):
            out.append(row)
            continue
        extra = {
            f"{path}:{key}": value
            for path in RECORDS
            for key, value in flatten(read_record(Path(repo), str(row["rev"]), path)).items()
        }
        out.append({**extra, **row})
    return out


def load_rows(path: str) -> list[dict]:
    """Rows saved with `json.dump(dvc.api.exp_show(), ...)`, for a report away from the repository."""
    file = Path(path)
    if not file.is_file():
        raise UserError(f"--input {path}: file not found")
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise UserError(f"--input {path}: not JSON ({err.msg} at line {err.lineno})") from None


def experiment_states(rows: list[dict]) -> dict[str, str]:
    """Experiment name -> State (Queued | Running | Success | Failed; Success for a plain `dvc exp run`)."""
    return {row["Experiment"]: row.get("State") or "Success" for row in rows if row.get("Experiment")}
