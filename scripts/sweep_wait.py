"""The sweep's view of the DVC queue, read through dvc.api.exp_show() (no text output parsed).

    python scripts/sweep_wait.py names > before.txt      # the experiments that exist now
    ... dvc exp run --queue ...; dvc queue start -j N
    python scripts/sweep_wait.py wait --before before.txt -j N [--poll 10]

`wait` follows the experiments that are not in `before.txt` (the ones just queued) until each is
Success or Failed, printing one progress line per poll. When tasks are still queued but nothing
has run for three polls in a row (the workers exited, e.g. after an idle minute), it runs
`dvc queue start -j N` again, which only starts the workers that are missing. An experiment
that vanishes from five listings in a row (`dvc queue remove`) stops being waited for.
Exit 0 when every one succeeded, 1 (listing them) when some did not, 2 on a usage error.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from lora_dvc.comparison.runs import exp_rows, experiment_states
from lora_dvc.errors import UserError
from lora_dvc.runner import ArgumentParser, run_stage

FINAL = ("Success", "Failed")
STALLED_POLLS = 3  # queued, none running: workers are gone
GONE_POLLS = 5  # absent from this many listings in a row: removed from the queue


LISTING_TIMEOUT = 120  # seconds one listing may take before it counts as failed


def states(rev: str | None = None) -> dict[str, str]:
    return experiment_states(exp_rows(repo=".", rev=rev))


def states_in_child(rev: str | None) -> dict[str, str]:
    """states() in a child process with a time limit: dvc.api.exp_show can also hang for good (seen in
    tests: a futex wait after a queue worker deleted the temporary workspace it was reading), and a
    killed child is a failed listing, retried like any other."""
    cmd = [sys.executable, __file__, "states", *(["--rev", rev] if rev else [])]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=LISTING_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise UserError(f"dvc.api.exp_show() did not answer within {LISTING_TIMEOUT} s") from None
    if out.returncode != 0:
        lines = out.stderr.strip().splitlines()
        raise UserError(lines[-1] if lines else f"listing exited {out.returncode}")
    return json.loads(out.stdout)


def listing_or_none(failures: int, rev: str | None) -> dict[str, str] | None:
    """states(), or None while a listing fails: exp_show can trip over a run's temporary workspace as a
    queue worker creates or removes it. Only GONE_POLLS failures in a row are an error."""
    try:
        return states_in_child(rev)
    except UserError as err:
        if failures + 1 >= GONE_POLLS:
            raise
        print(f"listing failed, retrying: {err}", flush=True)
        return None


def restart_workers(jobs: int) -> None:
    print(f"tasks queued but no worker running: dvc queue start -j {jobs}", flush=True)
    subprocess.run([sys.executable, "-m", "dvc", "queue", "start", "-j", str(jobs)], check=False)


def wait(before: set[str], jobs: int, poll: float, rev: str | None = None) -> dict[str, str]:
    """Poll until every new experiment reached a final state (or vanished); their last states."""
    last: dict[str, str] = {}
    missing: dict[str, int] = {}
    stalled, failures, started = 0, 0, time.monotonic()
    while True:
        listing = listing_or_none(failures, rev)
        if listing is None:
            failures += 1
            time.sleep(poll)
            continue
        failures = 0
        now = {name: state for name, state in listing.items() if name not in before}
        if now and not last:
            print(f"queued {len(now)} experiment(s): {' '.join(sorted(now))}", flush=True)
        for name in set(last) | set(now):
            missing[name] = 0 if name in now else missing.get(name, 0) + 1
        last.update(now)
        pending = [n for n, s in last.items() if s not in FINAL and missing[n] < GONE_POLLS]
        if last and not pending:
            return last
        if not last and time.monotonic() - started > GONE_POLLS * poll:
            raise UserError("no new experiment appeared in dvc.api.exp_show(): nothing was queued")
        running = sum(s == "Running" for s in now.values())
        stalled = stalled + 1 if running == 0 and any(s == "Queued" for s in now.values()) else 0
        if stalled >= STALLED_POLLS:
            restart_workers(jobs)
            stalled = 0
        print(
            f"{time.monotonic() - started:.0f}s: {len(pending)} of {len(last)} experiment(s) queued or running "
            f"({running} running)",
            flush=True,
        )
        time.sleep(poll)


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(prog="scripts/sweep_wait.py", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("names", help="print the names of the experiments that exist now, one per line")
    listing = sub.add_parser("states", help="print {name: state} of the experiments as JSON (one listing)")
    listing.add_argument("--rev", help="the commit whose experiments to list (default: HEAD)")
    waiting = sub.add_parser("wait", help="wait for the experiments not listed in --before")
    waiting.add_argument("--before", required=True, help="the output of `names` before queueing")
    waiting.add_argument("-j", "--jobs", type=int, default=1, help="queue workers to (re)start")
    waiting.add_argument("--poll", type=float, default=10.0, help="seconds between listings")
    # a commit made while the sweep runs moves HEAD, and HEAD's listing no longer holds the sweep's
    # experiments (they would look removed); the sweep's own commit keeps them in view
    waiting.add_argument("--rev", help="the commit the experiments were queued from (default: HEAD at each poll)")
    args = parser.parse_args(argv)
    if args.command == "names":
        print("\n".join(states()))
        return
    if args.command == "states":
        print(json.dumps(states(args.rev)))
        return
    before_file = Path(args.before)
    if not before_file.is_file():
        raise UserError(f"--before {args.before}: file not found (write it with `sweep_wait.py names`)")
    final = wait(set(before_file.read_text().split()), args.jobs, args.poll, args.rev)
    failed = sorted(n for n, s in final.items() if s != "Success")
    print(f"{len(final) - len(failed)} of {len(final)} experiment(s) succeeded")
    if failed:
        print(f"error: did not succeed: {', '.join(failed)} (see: dvc queue logs NAME)", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    run_stage(main)
