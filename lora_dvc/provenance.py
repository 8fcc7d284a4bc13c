"""Where a result came from: git revision, package versions, Python, host CPU and threads.

The train stage writes this into records/train/metrics.json (`provenance`) and the report prints
it, so a number in `dvc exp show` or a report always says which code, libraries and host made it.
"""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path

PACKAGES = ("torch", "transformers", "peft", "accelerate", "dvc", "dvclive")


def git_revision(root: Path = Path(".")) -> dict:
    """HEAD's commit and whether the work tree differs from it (None outside a git repository).

    Inside `dvc exp run` the work tree holds the experiment's params, so `dirty` is true there:
    the experiment's own commit records them."""

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def versions() -> dict:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def provenance() -> dict:
    """git, versions, python and host; the trainer adds device, precision, threads and data md5s."""
    return {
        "git": git_revision(),
        "versions": versions(),
        "python": platform.python_version(),
        "host": {"cpu": cpu_model(), "machine": platform.machine(), "system": platform.system()},
    }
