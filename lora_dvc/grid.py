"""`lora-dvc sky launch`: one SkyPilot managed job per point of a `dvc exp run --queue -S` grid.

    lora-dvc sky launch -S 'lora.r=4,16,32' -S 'lora.targets=qv,all' [--name NAME] [--dry-run] [-- SKY ARGS]

The grid is expanded by DVC's own code (`dvc.utils.hydra.get_hydra_sweeps`), so `-S` values mean
exactly what they mean to `dvc exp run --queue -S`. Each point becomes one `sky jobs launch
sky/sweep.yaml --name NAME-i` whose job (scripts/sky_job.sh) runs `dvc exp run --pull
--allow-missing -n NAME-i -S ...` and `dvc exp push`. Scheduling, spot recovery and retries are
SkyPilot's; nothing here waits on jobs. Gathering the results: docs/scaling.md.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from lora_dvc.errors import UserError

TASK_FILE = Path("sky") / "sweep.yaml"
DEFAULT_PARAMS_FILE = "params.yaml"  # what DVC's -S applies to when no `file:` prefix is given


def expand(set_params: list[str]) -> list[list[str]]:
    """The grid points of `-S` values, each a list of `-S` values with no sweep left in it.

    Same order and semantics as `dvc exp run --queue -S ...` (the cartesian product, last key
    fastest). Values without a sweep repeat in every point; no `-S` at all is one point.
    """
    from dvc.exceptions import InvalidArgumentError
    from dvc.utils.cli_parse import to_path_overrides
    from dvc.utils.hydra import get_hydra_sweeps
    from hydra.errors import HydraException

    if not set_params:
        return [[]]
    try:
        points = get_hydra_sweeps(to_path_overrides(set_params))
    except (HydraException, InvalidArgumentError) as err:
        detail = str(err.__cause__ or err).splitlines()[0]
        raise UserError(
            f"-S {' '.join(set_params)!r}: {detail}; use dvc exp run --queue syntax, "
            "e.g. -S 'lora.r=4,16' -S 'train.lr=range(1,4)'"
        ) from None
    return [_as_set_params(point) for point in points]


def _as_set_params(point: dict[str, list[str]]) -> list[str]:
    """{file: [key=value, ...]} back to `-S` values (`file:key=value` outside params.yaml)."""
    return [
        value if path == DEFAULT_PARAMS_FILE else f"{path}:{value}"
        for path, values in point.items()
        for value in values
    ]


def job_names(prefix: str, count: int) -> list[str]:
    """`prefix-1` ... `prefix-N`: the names `dvc exp run --queue -n prefix` gives a sweep."""
    return [f"{prefix}-{index}" for index in range(1, count + 1)]


def launch_commands(
    task: Path, prefix: str, points: list[list[str]], checkpoints: str | None, extra: list[str]
) -> list[list[str]]:
    """One `sky jobs launch` command line per grid point."""
    commands = []
    for name, point in zip(job_names(prefix, len(points)), points):
        cmd = [
            "sky",
            "jobs",
            "launch",
            str(task),
            "--name",
            name,
            "--env",
            f"OVERRIDES={shlex.join(point)}",
            "--env",
            f"EXP_NAME={name}",
        ]
        if checkpoints:
            cmd += ["--env", f"LORA_DVC_CHECKPOINTS={checkpoints}"]
        commands.append([*cmd, "-y", *extra])
    return commands


def check_committed(root: Path) -> None:
    """Jobs run the committed code: a dirty tree would launch something no commit describes."""
    status = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True
    )
    if status.returncode != 0:
        raise UserError(f"{root} is not a git repository; run lora-dvc sky launch from a clone of the project")
    if status.stdout.strip():
        changed = ", ".join(line[3:] for line in status.stdout.splitlines()[:5])
        raise UserError(
            f"uncommitted changes ({changed}); jobs train the committed code and push experiments "
            "on top of it: commit (and git push) first, or use --dry-run to see the jobs"
        )


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="lora-dvc sky", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="action", required=True)
    launch = sub.add_parser("launch", help="one SkyPilot managed job per grid point")
    launch.add_argument(
        "-S",
        "--set-param",
        action="append",
        default=[],
        dest="set_params",
        help="as in dvc exp run --queue: 'lora.r=4,16,32', 'train.lr=range(1,4)'",
    )
    launch.add_argument(
        "--name",
        default=time.strftime("sweep-%Y%m%d-%H%M"),
        help="experiment and job name prefix: NAME-1, NAME-2, ... (default: sweep-DATE-TIME)",
    )
    launch.add_argument("--task", type=Path, default=TASK_FILE, help=f"SkyPilot task file (default: {TASK_FILE})")
    launch.add_argument(
        "--checkpoints",
        default=os.environ.get("LORA_DVC_CHECKPOINTS"),
        help="gs:// folder for resumable checkpoints (default: $LORA_DVC_CHECKPOINTS)",
    )
    launch.add_argument("--dry-run", action="store_true", help="print the sky commands, launch nothing")
    launch.add_argument("sky_args", nargs="*", help="after --: passed to every sky jobs launch (--gpus, --infra)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if not args.task.is_file():
        raise UserError(f"SkyPilot task file {args.task} not found; run from the project root or pass --task")
    commands = launch_commands(args.task, args.name, expand(args.set_params), args.checkpoints, args.sky_args)
    print(f"{len(commands)} job(s):")
    for cmd in commands:
        print("  " + shlex.join(cmd))
    if args.dry_run:
        return
    check_committed(Path.cwd())
    if shutil.which("sky") is None:
        raise UserError("the sky command is not installed; pip install -r requirements-sky.txt, then sky check gcp")
    for cmd in commands:
        if subprocess.run(cmd).returncode != 0:
            raise UserError(f"{shlex.join(cmd)} failed (SkyPilot's message is above); the jobs before it are launched")
    names = " ".join(job_names(args.name, len(commands)))
    print(f"follow: sky jobs queue; gather: dvc exp pull origin {names} && lora-dvc compare")


if __name__ == "__main__":
    from lora_dvc.runner import run_stage

    run_stage(main)
