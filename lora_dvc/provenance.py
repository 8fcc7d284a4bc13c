"""Where a result came from: git revision, the stage's code, package versions, Python, host CPU and threads.

The train stage writes this into records/train/metrics.json (`provenance`) and the report prints
it, so a number in `dvc exp show` or a report always says which code, libraries and host made it.
The git revision alone cannot say that: DVC deletes a stage's outputs before running it, so the work
tree always differs from HEAD; `code_md5` hashes the files the stage actually runs instead.
"""

from __future__ import annotations

import hashlib
import platform
import subprocess
from importlib import metadata
from pathlib import Path

PACKAGES = ("torch", "transformers", "peft", "accelerate", "dvc", "dvclive")


def git_commit(root: Path = Path(".")) -> str | None:
    """HEAD's commit (None outside a git repository)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def code_md5(stage_module: str, root: Path = Path(".")) -> str:
    """md5 over the path and bytes of every project file `stage_module` runs (its import closure, the
    code deps dvc.yaml lists): equal hashes mean the same code, committed or not."""
    from lora_dvc.deps import closure

    digest = hashlib.md5()
    for path in sorted(closure(stage_module, root)):
        digest.update(path.encode() + b"\0" + (root / path).read_bytes() + b"\0")
    return digest.hexdigest()


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


def provenance(stage_module: str) -> dict:
    """git commit and the stage's code hash, versions, python and host; the trainer adds device, precision,
    threads and data md5s."""
    return {
        "git": {"commit": git_commit(), "code_md5": code_md5(stage_module)},
        "versions": versions(),
        "python": platform.python_version(),
        "host": {"cpu": cpu_model(), "machine": platform.machine(), "system": platform.system()},
    }
