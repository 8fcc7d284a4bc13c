"""Where the train stage's resumable checkpoints live: outside the workspace, keyed by fingerprint.

A queued experiment runs in a temporary copy of the repository that DVC deletes when the run
ends, killed or not; a checkpoint inside it would die with it. So checkpoints go to
`${XDG_CACHE_HOME:-~/.cache}/lora-dvc/checkpoints/<fingerprint>/`, or under any fsspec URL
(`gs://bucket/ckpt`) named by the environment variable LORA_DVC_CHECKPOINTS (never a param: where
checkpoints go must not change an experiment's identity). The fingerprint covers every param that
changes the result, the tokenized data and the code, so the same run queued again finds its own
checkpoint and nothing else. Trainer writes them locally; for a remote URL each one is uploaded
once complete and downloaded before resuming. They are deleted when the run succeeds, and folders
untouched for more than MAX_AGE_DAYS are pruned (logged) at the start of every run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import fsspec
import numpy as np

from lora_dvc.artifacts import tokenized_file
from lora_dvc.params import RESULT_NEUTRAL_KEYS, Params

ENV_VAR = "LORA_DVC_CHECKPOINTS"
MAX_AGE_DAYS = 14
COMPLETE = "lora_dvc_state.json"  # written last into a checkpoint: its presence means complete
_STEP = re.compile(r"^checkpoint-(\d+)$")
log = logging.getLogger("train")


def fingerprint(params: Params) -> str:
    """sha256 over the result-changing params, the tokenized train/val data and the package code."""
    keys = {
        f"{section}.{key}": value
        for section in ("model", "lora", "train", "evaluate")
        for key, value in asdict(getattr(params, section)).items()
        if f"{section}.{key}" not in RESULT_NEUTRAL_KEYS
    }
    digest = hashlib.sha256(json.dumps(keys, sort_keys=True).encode())
    for split in ("train", "val"):
        # the arrays, not the .npz bytes: numpy stamps the zip entries with the time of writing, so a
        # queued run that re-tokenizes the same data would otherwise never find its checkpoint
        with np.load(tokenized_file(split)) as arrays:
            for name in sorted(arrays.files):
                digest.update(name.encode() + np.ascontiguousarray(arrays[name]).tobytes())
    package = Path(__file__).resolve().parent
    for source in sorted(package.glob("*.py")):
        digest.update(source.name.encode() + source.read_bytes())
    return digest.hexdigest()[:32]


def store_url() -> str:
    """The folder (local path or fsspec URL) holding every run's checkpoint folder."""
    configured = os.environ.get(ENV_VAR)
    if configured:
        return configured.rstrip("/")
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return str(Path(cache) / "lora-dvc" / "checkpoints")


def is_remote(url: str) -> bool:
    return "://" in url and not url.startswith("file://")


class CheckpointStore:
    """One run's checkpoints: a local folder Trainer writes to, mirrored to a remote URL if set."""

    def __init__(self, fp: str, url: str | None = None) -> None:
        self.url = url or store_url()
        self.remote = is_remote(self.url)
        cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        root = Path(cache) / "lora-dvc" / "staging" if self.remote else Path(self.url.removeprefix("file://"))
        self.local = root / fp
        self.remote_dir = f"{self.url}/{fp}"

    @property
    def where(self) -> str:
        return self.remote_dir if self.remote else str(self.local)

    def latest(self) -> Path | None:
        """The newest complete checkpoint, fetched from the remote first if there is one."""
        if self.remote:
            self._download()
        if not self.local.is_dir():
            return None
        done = [p for p in self.local.iterdir() if _STEP.match(p.name) and (p / COMPLETE).exists()]
        return max(done, key=lambda p: int(_STEP.match(p.name).group(1)), default=None)

    def upload(self, checkpoint: Path) -> None:
        """Mirror a complete checkpoint to the remote, then drop older remote ones."""
        if not self.remote:
            return
        fs, path = fsspec.core.url_to_fs(self.remote_dir)
        target = f"{path}/{checkpoint.name}"
        fs.put(str(checkpoint), target, recursive=True)
        fs.pipe(f"{target}/{COMPLETE}", (checkpoint / COMPLETE).read_bytes())  # last: marks it complete
        for old in self._remote_steps(fs, path):
            if old != checkpoint.name and not (self.local / old).exists():
                fs.rm(f"{path}/{old}", recursive=True)

    def _remote_steps(self, fs, path: str) -> list[str]:
        if not fs.exists(path):
            return []
        return [Path(p).name for p in fs.ls(path, detail=False) if _STEP.match(Path(p).name)]

    def _download(self) -> None:
        fs, path = fsspec.core.url_to_fs(self.remote_dir)
        complete = [s for s in self._remote_steps(fs, path) if fs.exists(f"{path}/{s}/{COMPLETE}")]
        if not complete:
            return
        newest = max(complete, key=lambda s: int(_STEP.match(s).group(1)))
        if (self.local / newest / COMPLETE).exists():
            return
        shutil.rmtree(self.local / newest, ignore_errors=True)
        self.local.mkdir(parents=True, exist_ok=True)
        fs.get(f"{path}/{newest}", str(self.local / newest), recursive=True)

    def clean(self) -> None:
        """The run succeeded: its checkpoints are no longer needed, here or remotely."""
        shutil.rmtree(self.local, ignore_errors=True)
        if self.remote:
            fs, path = fsspec.core.url_to_fs(self.remote_dir)
            if fs.exists(path):
                fs.rm(path, recursive=True)


def prune_stale(root: Path | None = None, max_age_days: float = MAX_AGE_DAYS) -> list[Path]:
    """Delete local checkpoint folders not written to for max_age_days (runs never resumed)."""
    roots = [root] if root else [Path(store_url())] if not is_remote(store_url()) else []
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    roots.append(Path(cache) / "lora-dvc" / "staging")
    cutoff, pruned = time.time() - max_age_days * 86400, []
    for folder in (f for r in roots if r.is_dir() for f in r.iterdir() if f.is_dir()):
        newest = max((p.stat().st_mtime for p in folder.rglob("*")), default=folder.stat().st_mtime)
        if newest < cutoff:
            shutil.rmtree(folder, ignore_errors=True)
            log.info("pruned stale checkpoint %s (untouched for over %g days)", folder, max_age_days)
            pruned.append(folder)
    return pruned
