"""compare: every experiment side by side -> reports/comparison.md and reports/comparison.png.

Run after experiments (not a pipeline stage): `lora-dvc compare` reads HEAD's experiments with
dvc.api.exp_show() (--all-commits, --rev, --input, --baseline, --status: see --help). Runs whose
config differs only in `train.seed` (and lora_dvc.params.RESULT_NEUTRAL_KEYS) form one row, each
metric as mean ± sample standard deviation; the best row is bold, a second table gives each row's
% change against the baseline (signed so that positive is always better), runs no better than the
majority class are flagged, and the PNG plots test scores against the LoRA rank and target set.
docs/experiments.md describes every table, flag and figure.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lora_dvc.artifacts import COMPARISON
from lora_dvc.atomic import write_text
from lora_dvc.comparison import aggregate, render, runs
from lora_dvc.errors import UserError
from lora_dvc.runner import ArgumentParser, run_stage


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = ArgumentParser(prog="lora-dvc compare", description=__doc__.splitlines()[0])
    parser.add_argument("--input", help="rows saved from dvc.api.exp_show() as JSON (default: read the repository)")
    parser.add_argument("--all-commits", action="store_true", help="experiments of every commit, not only HEAD's")
    parser.add_argument("--rev", help="experiments of this commit (e.g. the one a sweep was queued from), not HEAD's")
    parser.add_argument("--workspace", action="store_true", help="also count the workspace's results as a run")
    parser.add_argument(
        "--exclude",
        nargs="+",
        default=[],
        metavar="NAME",
        help="leave out these runs (experiment names, or the commit's name, e.g. main, "
        "when its own results come from other data than the sweep's)",
    )
    parser.add_argument(
        "--baseline",
        default="auto",
        help="auto (TF-IDF if present, else full fine-tuning) | tfidf | full | none | an experiment name",
    )
    parser.add_argument(
        "--best-by", default="test.accuracy", choices=runs.METRICS, help="metric that picks the bold row"
    )
    parser.add_argument(
        "--out", default=str(COMPARISON), help=f"markdown file to write (default {COMPARISON}); the PNG goes beside it"
    )
    parser.add_argument(
        "--status", action="store_true", help="print each experiment's state (NAME<TAB>State) and exit; writes nothing"
    )
    return parser.parse_args(argv)


def read_runs(args: argparse.Namespace) -> tuple[list[runs.Run], list[runs.Other], str]:
    if args.input:
        rows, source, keys = runs.load_rows(args.input), f"`{args.input}`", runs.param_keys()
    else:
        rows = runs.with_records(runs.exp_rows(repo=".", all_commits=args.all_commits, rev=args.rev))
        source = "dvc.api.exp_show()" + (
            " of every commit" if args.all_commits else f" of commit {args.rev}" if args.rev else ""
        )
        keys = runs.param_keys(repo=".")
    finished, others = runs.parse_rows(rows, keys, include_workspace=args.workspace)
    unknown = sorted(set(args.exclude) - {r.name for r in finished} - {o.name for o in others})
    if unknown:
        raise UserError(
            f"--exclude: no run named {', '.join(unknown)}; the runs are "
            f"{', '.join(sorted({r.name for r in finished}))}"
        )
    finished = [r for r in finished if r.name not in args.exclude]
    if not finished:
        pending = f" ({len(others)} failed, queued or running)" if others else ""
        raise UserError(
            f"no finished experiment with metrics to compare{pending}; run `dvc exp run` "
            "(or pass --workspace to use the workspace's results)"
        )
    return finished, others, source


def print_status() -> None:
    for name, state in runs.experiment_states(runs.exp_rows(repo=".")).items():
        print(f"{name}\t{state}")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.status:
        return print_status()
    out = Path(args.out)
    if out.suffix.lower() != ".md":
        raise UserError(f"--out {args.out}: expected a .md file")
    finished, others, source = read_runs(args)
    groups = aggregate.group_runs(finished)
    comparison = render.Comparison(
        groups,
        others,
        aggregate.pick_best(groups, args.best_by),
        aggregate.pick_baseline(groups, args.baseline, args.best_by),
        args.best_by,
        args.baseline,
        source,
    )
    png = out.with_suffix(".png")
    render.plot(groups, aggregate.reference_lines(groups, comparison.baseline, args.best_by), png)
    write_text(out, render.render_markdown(comparison, png.name))
    print(
        f"wrote {out} and {png}: {len(groups)} configurations, {len(finished)} runs"
        + (f", {len(others)} without results" if others else "")
    )
    if comparison.best is not None:
        best = comparison.best
        print(f"best by {args.best_by}: {best.label} ({best.method}, {render.fmt_stat(best.stat(args.best_by))})")
    flagged = [r.name for r in finished if r.below_majority]
    if flagged:
        print(f"warning: no better than the majority class on test: {', '.join(flagged)}", file=sys.stderr)


if __name__ == "__main__":
    run_stage(main)
