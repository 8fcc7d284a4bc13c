"""Where the train stage's resumable checkpoints live, and how a resume finds an intact one.

Outside the workspace (a queued run's temporary copy dies with it): `${XDG_CACHE_HOME:-~/.cache}/
lora-dvc/checkpoints/<fingerprint>/`, or the fsspec URL in LORA_DVC_CHECKPOINTS (`gs://...`: staged
locally, uploaded once complete). The fingerprint covers the result-changing params, the tokenized data,
the code and the torch/transformers/peft/torch_xla versions. The marker, written last, records each
file's size and sha256; a resume takes the newest checkpoint that matches and loads, renames a damaged
one to `damaged-checkpoint-N` (one WARNING; a remote copy is deleted) and falls back to the older one
kept beside it. Deleted when the run succeeds, pruned when untouched for MAX_AGE_DAYS; `lora-dvc
checkpoints` lists and clears them."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import time
import zipfile
from dataclasses import asdict
from importlib import metadata
from pathlib import Path

import fsspec
import numpy as np

from lora_dvc.artifacts import tokenized_file
from lora_dvc.params import RESULT_NEUTRAL_KEYS, Params

ENV_VAR = "LORA_DVC_CHECKPOINTS"
MAX_AGE_DAYS = 14
COMPLETE = "lora_dvc_state.json"  # written last into a checkpoint: its presence means complete
RUN_INFO = "run.json"  # beside a run's checkpoints: its params and library versions, for `lora-dvc checkpoints`
DAMAGED = "damaged-"  # a damaged checkpoint's new name: damaged-checkpoint-N (Trainer's rotation skips it)
KEEP = 2  # complete checkpoints kept on a remote store: the newest, and one to fall back on
LIBRARIES = ("torch", "transformers", "peft", "torch_xla")
STEP = re.compile(r"^checkpoint-(\d+)$")
log = logging.getLogger("train")


def result_params(params: Params) -> dict:
    """The params that change a run's result, as `section.key`: value."""
    found = {
        f"{section}.{key}": value
        for section in ("model", "lora", "train", "evaluate")
        for key, value in asdict(getattr(params, section)).items()
        if f"{section}.{key}" not in RESULT_NEUTRAL_KEYS
    }
    # the fields of train.trainer_args one by one: a watch-only one (logging, workers) changes no result
    trainer_args = found.pop("train.trainer_args", {})
    found.update({f"train.trainer_args.{k}": v for k, v in trainer_args.items()})
    return {key: value for key, value in found.items() if key not in RESULT_NEUTRAL_KEYS}


def library_versions() -> dict[str, str]:
    """The installed versions of the libraries whose state a checkpoint holds (from metadata: no imports)."""
    found = {}
    for name in LIBRARIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def fingerprint(params: Params) -> str:
    """sha256 over the result-changing params, the library versions, the tokenized train/val data and the code."""
    identity = {"params": result_params(params), "versions": library_versions()}
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode())
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
    return str(cache_dir() / "checkpoints")


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lora-dvc"


def is_remote(url: str) -> bool:
    return "://" in url and not url.startswith("file://")


def step_number(name: str) -> int:
    return int(STEP.match(name).group(1))


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_marker(folder: Path, state: dict) -> None:
    """Complete a checkpoint: the marker with `state` and every file's size and sha256, written last."""
    files = {
        path.relative_to(folder).as_posix(): [path.stat().st_size, sha256(path)]
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != COMPLETE
    }
    (folder / COMPLETE).write_text(json.dumps({"state": state, "files": files, "saved": time.time()}))


def read_state(folder: Path) -> dict:
    """The state CheckpointCallback saved with a (verified) checkpoint."""
    return json.loads((folder / COMPLETE).read_text())["state"]


def damage(folder: Path) -> str | None:
    """What is wrong with a complete checkpoint, or None: each file has its recorded size and sha256, and loads."""
    try:
        files = json.loads((folder / COMPLETE).read_text())["files"]
        recorded = [(name, int(size), str(digest)) for name, (size, digest) in files.items()]
    except (OSError, ValueError, KeyError, TypeError) as error:
        return f"{COMPLETE}: unreadable ({type(error).__name__}: {error})"
    for name, size, digest in recorded:
        path = folder / name
        try:
            if path.stat().st_size != size:
                return f"{name}: {path.stat().st_size} bytes, {size} were written"
            if sha256(path) != digest:
                return f"{name}: sha256 differs from the one written (bytes changed)"
            _load(path)
        except Exception as error:  # any read or load error is damage, never a crash
            return (
                f"{name}: does not load ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})"
            )
    return None


def _load(path: Path) -> None:
    """Read a file as far as can be done without unpickling: torch's zip archives member by member
    (the CRCs torch's PytorchStreamReader checks), safetensors' header, JSON."""
    if path.suffix in (".pt", ".pth", ".bin"):
        with zipfile.ZipFile(path) as archive:
            failed = archive.testzip()
        if failed is not None:
            raise ValueError(f"archive member {failed} fails its CRC check")
    elif path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            handle.keys()
    elif path.suffix == ".json":
        json.loads(path.read_text())


class CheckpointStore:
    """One run's checkpoints: a local folder Trainer writes to, mirrored to a remote URL if set."""

    def __init__(self, fp: str, url: str | None = None) -> None:
        self.url = url or store_url()
        self.remote = is_remote(self.url)
        root = cache_dir() / "staging" if self.remote else Path(self.url.removeprefix("file://"))
        self.local = root / fp
        self.remote_dir = f"{self.url}/{fp}"

    @property
    def where(self) -> str:
        return self.remote_dir if self.remote else str(self.local)

    def describe(self, params: Params) -> None:
        """Note which params and library versions the run's checkpoints belong to (`lora-dvc checkpoints`)."""
        info = {"params": result_params(params), "versions": library_versions(), "started": time.time()}
        self.local.mkdir(parents=True, exist_ok=True)
        (self.local / RUN_INFO).write_text(json.dumps(info, indent=1))
        if self.remote:
            fs, path = fsspec.core.url_to_fs(self.remote_dir)
            fs.pipe(f"{path}/{RUN_INFO}", (self.local / RUN_INFO).read_bytes())

    def latest(self, quiet: bool = False) -> Path | None:
        """The newest intact checkpoint (fetched from the remote if need be); damaged ones are set aside.
        `quiet`: no warnings (the processes beside rank 0, which come to the same choice and say nothing)."""
        damaged = 0
        for step in self._complete_steps():
            folder = self.local / step
            if self.remote and not (folder / COMPLETE).exists():
                self._download(step)
            problem = damage(folder)
            if problem is None:
                return folder
            self.set_aside(folder, problem, quiet)
            damaged += 1
        if damaged and not quiet:
            log.warning("no intact checkpoint left in %s: starting over from step 0", self.where)
        return None

    def set_aside(self, folder: Path, problem: str, quiet: bool = False) -> None:
        """Rename a damaged checkpoint to damaged-checkpoint-N (kept for a look); delete its remote copy."""
        aside = folder.with_name(DAMAGED + folder.name)
        where = f"{self.remote_dir}/{folder.name}" if self.remote else str(folder)
        log.log(
            logging.DEBUG if quiet else logging.WARNING,
            "damaged checkpoint %s: %s; moved aside to %s",
            where,
            problem,
            aside,
        )
        shutil.rmtree(aside, ignore_errors=True)
        try:
            folder.rename(aside)
        except FileNotFoundError:  # another process of the same run set it aside first
            pass
        if self.remote:
            fs, path = fsspec.core.url_to_fs(self.remote_dir)
            if fs.exists(f"{path}/{folder.name}"):
                fs.rm(f"{path}/{folder.name}", recursive=True)

    def _complete_steps(self) -> list[str]:
        """Names of the complete checkpoints, here and on the remote, newest first."""
        steps = {p.name for p in self.local.glob("checkpoint-*") if STEP.match(p.name) and (p / COMPLETE).exists()}
        if self.remote:
            steps |= set(self._remote_complete(*fsspec.core.url_to_fs(self.remote_dir)))
        return sorted(steps, key=step_number, reverse=True)

    def upload(self, checkpoint: Path) -> None:
        """Mirror a complete checkpoint to the remote; keep there the newest KEEP complete ones and any kept here."""
        if not self.remote:
            return
        fs, path = fsspec.core.url_to_fs(self.remote_dir)
        target = f"{path}/{checkpoint.name}"
        fs.put(str(checkpoint), target, recursive=True)
        fs.pipe(f"{target}/{COMPLETE}", (checkpoint / COMPLETE).read_bytes())  # last: marks it complete
        kept = {p.name for p in self.local.glob("checkpoint-*")}
        kept |= set(sorted(self._remote_complete(fs, path), key=step_number)[-KEEP:])
        for old in self._remote_steps(fs, path):
            if old not in kept:
                fs.rm(f"{path}/{old}", recursive=True)

    def _remote_steps(self, fs, path: str) -> list[str]:
        if not fs.exists(path):
            return []
        return [Path(p).name for p in fs.ls(path, detail=False) if STEP.match(Path(p).name)]

    def _remote_complete(self, fs, path: str) -> list[str]:
        return [
            Path(p).parent.name for p in fs.glob(f"{path}/checkpoint-*/{COMPLETE}") if STEP.match(Path(p).parent.name)
        ]

    def _download(self, step: str) -> None:
        fs, path = fsspec.core.url_to_fs(self.remote_dir)
        shutil.rmtree(self.local / step, ignore_errors=True)
        self.local.mkdir(parents=True, exist_ok=True)
        fs.get(f"{path}/{step}", str(self.local / step), recursive=True)

    def clean(self) -> None:
        """The run succeeded: its checkpoints are no longer needed, here or remotely."""
        shutil.rmtree(self.local, ignore_errors=True)
        if self.remote:
            fs, path = fsspec.core.url_to_fs(self.remote_dir)
            if fs.exists(path):
                fs.rm(path, recursive=True)


def last_written(folder: Path) -> float:
    """The newest modification time under `folder`; files that vanish meanwhile (another run's rotation or
    clean-up) are skipped, and a folder gone altogether counts as written now (nothing to prune)."""
    times = []
    try:
        for path in (folder, *folder.rglob("*")):
            try:
                times.append(path.stat().st_mtime)
            except FileNotFoundError:
                continue
    except OSError:
        pass
    return max(times, default=time.time())


def prune_stale(root: Path | None = None, max_age_days: float = MAX_AGE_DAYS) -> list[Path]:
    """Delete local checkpoint folders not written to for max_age_days (runs never resumed)."""
    roots = [root] if root else [Path(store_url())] if not is_remote(store_url()) else []
    roots.append(cache_dir() / "staging")
    cutoff, pruned = time.time() - max_age_days * 86400, []
    for folder in (f for r in roots if r.is_dir() for f in r.iterdir() if f.is_dir()):
        newest = last_written(folder)
        if newest < cutoff:
            shutil.rmtree(folder, ignore_errors=True)
            log.info("pruned stale checkpoint %s (untouched for over %g days)", folder, max_age_days)
            pruned.append(folder)
    return pruned
