"""CI: committed results come from committed code. Fails when any stage's deps, params or command
differ from what dvc.lock recorded (missing cached outputs are fine on a fresh clone).

    python scripts/check_lock.py      # one line per stale stage and exit 1, or "dvc.lock: up to date"

Uses DVC's Python API (`Repo.status`), not its text output.
"""

from __future__ import annotations

import sys

from dvc.repo import Repo

STALE = ("changed deps", "changed command", "changed checksum", "always changed")


def stale_stages(root: str = ".") -> dict[str, list[str]]:
    """stage -> what changed, for every stage whose inputs differ from dvc.lock."""
    with Repo(root) as repo:
        status = repo.status()
    out = {}
    for stage, changes in status.items():
        reasons = []
        for change in changes:
            if isinstance(change, str):  # "changed command", "always changed"
                reasons += [change] if change in STALE else []
            elif isinstance(change, dict):
                for kind, detail in change.items():
                    # a dep that is another stage's output is "deleted" on a fresh clone (not pulled):
                    # missing, not stale; anything "modified" or "new" is a real difference
                    changed = (
                        {k: v for k, v in detail.items() if v != "deleted"} if isinstance(detail, dict) else detail
                    )
                    if kind in STALE and changed:
                        reasons.append(f"{kind}: {', '.join(f'{k} {v}' for k, v in changed.items())}")
        if reasons:
            out[stage.split(":")[-1]] = reasons
    return out


def main() -> int:
    stale = stale_stages()
    for stage, reasons in stale.items():
        print(
            f"error: dvc.lock is stale for stage '{stage}' ({'; '.join(reasons)}): re-run `dvc repro` and "
            "commit dvc.lock with its metrics and report",
            file=sys.stderr,
        )
    if not stale:
        print("dvc.lock: every stage's deps and params match the committed code")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
