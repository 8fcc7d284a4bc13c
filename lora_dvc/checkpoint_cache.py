"""`lora-dvc checkpoints`: what the checkpoint cache holds (lora_dvc.checkpoints), and clearing it.

    lora-dvc checkpoints                     one line per cached run: fingerprint, newest step, size, age, params
    lora-dvc checkpoints --clear FINGERPRINT  delete one run's checkpoints (`--clear all`: every run's)

Both act on the store a train run uses: LORA_DVC_CHECKPOINTS (a folder or an fsspec URL), else the local
cache. A run's params come from the run.json it wrote when it started: the list shows those that differ
from ./params.yaml, and library versions other than the installed ones (such a run is never resumed).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import fsspec

from lora_dvc.checkpoints import (
    COMPLETE,
    RUN_INFO,
    STEP,
    cache_dir,
    is_remote,
    library_versions,
    result_params,
    step_number,
    store_url,
)
from lora_dvc.errors import UserError
from lora_dvc.params import load_params
from lora_dvc.runner import ArgumentParser, run_stage


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = ArgumentParser(prog="lora-dvc checkpoints", description=__doc__.splitlines()[0])
    parser.add_argument("--clear", metavar="FINGERPRINT", help="delete that run's checkpoints; 'all': every run's")
    return parser.parse_args(argv)


def cached_runs(url: str) -> tuple[fsspec.AbstractFileSystem, dict[str, str]]:
    """The store's filesystem, and fingerprint -> folder for every run it holds."""
    fs, root = fsspec.core.url_to_fs(url)
    if not fs.exists(root):
        return fs, {}
    return fs, {Path(p).name: p for p in sorted(fs.ls(root, detail=False)) if fs.isdir(p)}


def _read_json(fs, path: str) -> dict | None:
    try:
        return json.loads(fs.cat_file(path))
    except (OSError, ValueError):
        return None


def run_summary(fs, folder: str) -> dict:
    """A run folder's newest complete step, size in bytes, last save time and run.json (None if absent)."""
    files = fs.find(folder, detail=True)
    steps = [Path(p).parent.name for p in files if Path(p).name == COMPLETE and STEP.match(Path(p).parent.name)]
    newest = max(steps, key=step_number, default=None)
    info = _read_json(fs, f"{folder}/{RUN_INFO}")
    marker = _read_json(fs, f"{folder}/{newest}/{COMPLETE}") if newest else None
    saved = (marker or {}).get("saved") or (info or {}).get("started")
    return {"step": newest, "size": sum(f["size"] for f in files.values()), "saved": saved, "info": info}


def params_note(info: dict | None, workspace: dict | None) -> str:
    """What tells the run apart: params other than params.yaml's, library versions other than the installed."""
    if info is None:
        return "params unknown (no run.json)"
    ran, notes = info.get("params", {}), []
    if workspace is not None:
        notes += [f"{k}={ran.get(k)!r} (params.yaml: {v!r})" for k, v in workspace.items() if ran.get(k) != v]
    installed = library_versions()
    notes += [
        f"{n} {v} (installed: {installed.get(n, 'none')})"
        for n, v in info.get("versions", {}).items()
        if installed.get(n) != v
    ]
    if notes:
        return "; ".join(notes)
    if workspace is not None:
        return "params.yaml's params"
    return ", ".join(f"{k}={ran.get(k)!r}" for k in ("model.name", "train.method", "train.seed"))


def workspace_params() -> dict | None:
    """./params.yaml's result-changing params as run.json holds them, or None where there is none to read."""
    try:
        return json.loads(json.dumps(result_params(load_params())))
    except UserError:
        return None


def show(url: str, runs: dict[str, str], fs) -> None:
    if not runs:
        print(f"no cached checkpoints in {url}")
        return
    workspace = workspace_params()
    print(f"checkpoints in {url}:")
    for fp, folder in runs.items():
        run = run_summary(fs, folder)
        age = f"{(time.time() - run['saved']) / 3600:.1f} h ago" if run["saved"] else "age unknown"
        step = run["step"].removeprefix("checkpoint-") if run["step"] else "none complete"
        note = params_note(run["info"], workspace)
        print(f"{fp}  step {step}  {run['size'] / 1e6:.1f} MB  {age}  {note}")


def clear(url: str, runs: dict[str, str], fs, which: str) -> None:
    if which != "all" and which not in runs:
        raise UserError(
            f"no cached checkpoints with fingerprint '{which}' in {url}; `lora-dvc checkpoints` lists them"
        )
    for fp in runs if which == "all" else [which]:
        fs.rm(runs[fp], recursive=True)
        print(f"cleared {fp} in {url}")
    if is_remote(url):  # the local copies staged for upload or resume
        staging = cache_dir() / "staging"
        for folder in [staging] if which == "all" else [staging / which]:
            shutil.rmtree(folder, ignore_errors=True)
    if not runs:
        print(f"no cached checkpoints in {url}: nothing to clear")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    url = store_url()
    fs, runs = cached_runs(url)
    if args.clear:
        clear(url, runs, fs, args.clear)
    else:
        show(url, runs, fs)


if __name__ == "__main__":
    run_stage(main)
