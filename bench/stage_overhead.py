"""The pipeline's fixed cost per stage: a tiny model on 64 rows, where the work is near zero.

    python bench/stage_overhead.py                      # HEAD against the working tree, 3 alternating repeats
    python bench/stage_overhead.py --trees bff7697 .    # any two git revisions ('.' = the working tree)

For each tree, a temporary git + DVC copy (the tests' tiny 2-layer BERT with the real MiniLM tokenizer,
the AG News excerpt in tests/fixtures cut to 64 training rows) runs `dvc repro` once, then, in every
repeat, `dvc repro -f -s STAGE` for each stage in pipeline order and a whole `dvc repro -f`, each timed
as its own process with DVC's start included. Trees alternate within each repeat, so drift and other
load on the machine hit both. Writes bench/results/stage-overhead-<time>.json: min/median/max seconds
per stage and for the whole repro, per tree, with the host and the load seen.

Then, in the second tree, each stage's time is split three ways: DVC's own (`dvc repro -f -s STAGE` less
the stage's command, `python -m stages.STAGE`, run alone), the libraries' (a fresh process importing
every third-party module the stage imports, listed by `python -X importtime`, in the same order), and
the rest: the stage's own code and work. Those runs alternate too, per stage and repeat.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from benchlib import IMPORT_FLOORS, RESULTS, ROOT, env, host_info, log, spread, stamp, timed, write_json

sys.path.insert(0, str(ROOT / "tests"))
from helpers import build_tiny_model, make_repo, write_params  # noqa: E402 - the tests' tiny set-up

STAGES = ("prepare", "tokenize", "train", "evaluate", "report", "export")
GOALS = {"stage": 5.0, "whole": 20.0}  # seconds (issue 25: each `dvc repro -f -s STAGE`, the whole tiny repro)
OURS = ("lora_dvc", "stages")
# imports every module named in a JSON list, in order (a private module may not import alone: skipped)
IMPORT_ALL = """
import importlib, json, sys
for name in json.load(open(sys.argv[1])):
    try:
        importlib.import_module(name)
    except Exception:
        pass
"""


def stage_libraries(repo: Path, stage: str) -> list[str]:
    """The third-party modules `python -m stages.STAGE` imports, in the order `python -X importtime` lists them
    (optional imports the libraries try and find not installed included: they cost the stage a search too)."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", f"stages.{stage}"],
        cwd=repo,
        env=env(),
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise SystemExit(f"bench: stages.{stage} exited {proc.returncode}\n{proc.stderr[-4000:]}")
    names = [line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")]
    top = {name: name.split(".")[0] for name in names[1:]}  # names[0] is the header
    return [n for n, t in top.items() if t not in sys.stdlib_module_names and t not in OURS]


def tree_copy(rev: str, dest: Path, model: Path) -> Path:
    """A git + DVC repository at dest with the files of `rev` ('.' = this working tree), set up for `model`."""
    if rev == ".":
        return make_repo(dest, model)
    src = dest.with_name(dest.name + "-src")
    src.mkdir()
    archive = subprocess.run(["git", "archive", rev], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
    # make_repo copies what git lists in its ROOT: list the archive instead by making it a repo
    subprocess.run(["git", "init", "-q"], cwd=src, check=True)
    import helpers

    saved, helpers.ROOT = helpers.ROOT, src
    try:
        return make_repo(dest, model)
    finally:
        helpers.ROOT = saved
        shutil.rmtree(src)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trees", nargs=2, default=["HEAD", "."], metavar=("BEFORE", "AFTER"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rows", type=int, default=64, help="training rows (data.max_train_rows)")
    args = parser.parse_args()

    host = host_info()
    revs = {
        rev: subprocess.run(
            ["git", "rev-parse", "--short", rev], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        if rev != "."
        else f"{host['tree']} (working tree)"
        for rev in args.trees
    }
    scratch = Path(tempfile.mkdtemp(prefix="stage-overhead-"))
    log_file = scratch / "log.txt"
    runs: list[dict] = []
    try:
        model = build_tiny_model(scratch / "model")
        repos = {}
        for i, rev in enumerate(args.trees):
            repo = tree_copy(rev, scratch / f"tree{i}", model)
            write_params(repo, {"data": {"max_train_rows": args.rows}})
            timed([sys.executable, "-m", "dvc", "repro"], repo, log_file)  # outputs exist before anything is forced
            repos[rev] = repo
        for repeat in range(args.repeats):
            order = args.trees if repeat % 2 == 0 else args.trees[::-1]
            for rev in order:
                for stage in (*STAGES, "whole"):
                    cmd = [sys.executable, "-m", "dvc", "repro", "-f", *(["-s", stage] if stage != "whole" else [])]
                    runs.append(
                        {"tree": revs[rev], "stage": stage, "repeat": repeat, **timed(cmd, repos[rev], log_file)}
                    )
                log(
                    f"repeat {repeat + 1} {revs[rev]}: "
                    + ", ".join(f"{r['stage']} {r['wall_s']:.1f}" for r in runs[-7:])
                )
            for name, statement in IMPORT_FLOORS.items():
                runs.append(
                    {
                        "tree": None,
                        "stage": f"import {name}",
                        "repeat": repeat,
                        **timed([sys.executable, "-c", statement], scratch, log_file),
                    }
                )
        runs += split_stages(repos[args.trees[-1]], revs[args.trees[-1]], scratch, log_file, args.repeats)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    def seconds(tree: str | None, stage: str) -> dict:
        return spread([r["wall_s"] for r in runs if r["tree"] == tree and r["stage"] == stage])

    trees = []
    for rev in args.trees:
        per = {stage: seconds(revs[rev], stage) for stage in (*STAGES, "whole")}
        trees.append(
            {
                "rev": rev,
                "tree": revs[rev],
                "seconds": per,
                "goals_met": {
                    "every_stage_at_most_5_s": all(per[s]["median"] <= GOALS["stage"] for s in STAGES),
                    "whole_at_most_20_s": per["whole"]["median"] <= GOALS["whole"],
                },
            }
        )
    after = revs[args.trees[-1]]
    split = {}
    for stage in STAGES:
        repro, command, libraries = (
            seconds(after, stage)["median"],
            seconds(after, f"python -m stages.{stage}")["median"],
            seconds(after, f"libraries of {stage}")["median"],
        )
        split[stage] = {
            "dvc_repro_s": repro,
            "dvc_own_s": round(repro - command, 2),
            "libraries_s": libraries,
            "stage_code_and_work_s": round(command - libraries, 2),
            "libraries": [r["libraries"] for r in runs if r["stage"] == f"libraries of {stage}"][0],
        }
    others = [r["other_cores"] for r in runs if r["other_cores"] is not None]
    record = {
        "bench": "stage-overhead",
        "command": "python bench/stage_overhead.py " + " ".join(sys.argv[1:]),
        "host": host,
        "set_up": f"the tests' tiny BERT (2 layers x 32), {args.rows} AG News training rows, "
        f"{args.repeats} repeats, the trees alternating",
        "repeats": args.repeats,
        "goals_seconds": GOALS,
        "trees": trees,
        "import_floor_seconds": {name: seconds(None, f"import {name}") for name in IMPORT_FLOORS},
        "split": {
            "tree": after,
            "does": "medians: DVC's own start and bookkeeping (dvc repro -f -s STAGE less python -m stages.STAGE), "
            "the libraries' imports (a fresh process importing the stage's third-party modules), and the stage's "
            "own code and work (the command less the libraries)",
            "per_stage": split,
        },
        "other_cores": spread(others) if others else None,
        "load1_before": spread([r["load1_before"] for r in runs]),
        "runs": runs,
    }
    out = write_json(RESULTS / f"stage-overhead-{stamp()}.json", record)
    for tree in trees:
        log(f"{tree['tree']}: median s: " + ", ".join(f"{s} {v['median']}" for s, v in tree["seconds"].items()))
    print(f"wrote {out}")


def split_stages(repo: Path, tree: str, scratch: Path, log_file: Path, repeats: int) -> list[dict]:
    """Per stage and repeat: its command alone, then a process importing its third-party modules."""
    libraries = {stage: stage_libraries(repo, stage) for stage in STAGES}
    runs = []
    for repeat in range(repeats):
        for stage in STAGES:
            names = scratch / f"{stage}-modules.json"
            names.write_text(json.dumps(libraries[stage]))
            command = [sys.executable, "-m", f"stages.{stage}"]
            runs.append(
                {
                    "tree": tree,
                    "stage": f"python -m stages.{stage}",
                    "repeat": repeat,
                    **timed(command, repo, log_file),
                }
            )
            floor = [sys.executable, "-c", IMPORT_ALL, str(names)]
            runs.append(
                {
                    "tree": tree,
                    "stage": f"libraries of {stage}",
                    "repeat": repeat,
                    "libraries": sorted({n.split(".")[0] for n in libraries[stage]}),
                    **timed(floor, repo, log_file),
                }
            )
        log(f"split, repeat {repeat + 1}: " + ", ".join(f"{r['stage']} {r['wall_s']:.1f}" for r in runs[-12:]))
    return runs


if __name__ == "__main__":
    main()
