"""Experiments end to end: `dvc exp run -S`, a queued sweep with a failing run, `dvc plots diff` offline.

Real dvc commands in a temp git repo holding only the project's committed files, with the tiny
model and a small slice of the AG News excerpt. Queued runs stop at `evaluate` (the comparison
needs no report or export), which keeps the file to a few minutes on two busy cores.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml
from conftest import ROOT, dvc, run, write_params
from test_compare import header_of, table_row

SMALL = {"data": {"max_train_rows": 60}, "train": {"epochs": 1}}
TEMPLATE = ROOT / ".dvc" / "plots_template.html"
REMOTE_SRC = re.compile(r"""<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)\s*=\s*["']?(?:https?:)?//""", re.I)


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def commit_small(repo: Path) -> None:
    write_params(repo, SMALL)
    run(["git", "commit", "-qam", "small data, one epoch"], repo)


def metric_leaves(tree, prefix: str = "") -> dict:
    """Every value of a metrics file, by dotted name."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    return {k: v for key, sub in tree.items() for k, v in metric_leaves(sub, f"{prefix}{key}.").items()}


def experiments(repo: Path) -> dict[str, dict]:
    """name -> {state, params, train, test, metrics (every metric value, dotted), rev} from `dvc exp show --json`."""
    out = {}
    for commit in json.loads(dvc(["exp", "show", "--json"], repo).stdout):
        for exp in commit.get("experiments") or []:
            rev = exp["revs"][0]
            data = rev.get("data") or {}
            metrics = {path: (m or {}).get("data") or {} for path, m in (data.get("metrics") or {}).items()}
            out[exp["name"]] = {
                "state": ((exp.get("executor") or {}).get("state")) or ("failed" if rev.get("error") else "success"),
                "params": ((data.get("params") or {}).get("params.yaml") or {}).get("data") or {},
                "train": metrics.get("metrics/train.json") or {},
                "test": (metrics.get("metrics/test.json") or {}).get("test") or {},
                "metrics": {f"{path}:{k}": v for path, m in metrics.items() for k, v in metric_leaves(m).items()},
                "rev": rev.get("rev"),
            }
    return out


def record(repo: Path, rev: str, path: str) -> dict:
    """A records/ file as the experiment's commit holds it."""
    return json.loads(run(["git", "show", f"{rev}:{path}"], repo).stdout)


def assert_metrics_are_the_compared_numbers(exps: dict[str, dict]) -> None:
    """What `dvc exp show` lists per experiment: at most 14 numbers, none a string or a bool."""
    for name, e in exps.items():
        if e["state"] != "success":
            continue
        values = e["metrics"]
        assert 0 < len(values) <= 14, (name, sorted(values))
        assert all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values.values()), values
        # no metric name starts with a params section: `dvc exp show` columns never collide
        assert not {k.split(":")[1].split(".")[0] for k in values} & {"data", "model", "lora", "train", "evaluate"}


def expected_trainable(model_dir: Path, r: int, n_labels: int) -> int:
    """LoRA on query and value: r x (in + out) per adapted linear, plus the classifier head in full."""
    config = json.loads((model_dir / "config.json").read_text())
    hidden, layers = config["hidden_size"], config["num_hidden_layers"]
    adapted = 2 * layers  # query and value in every layer, each hidden -> hidden
    return adapted * r * (hidden + hidden) + hidden * n_labels + n_labels


def stop_queue_workers(repo: Path) -> None:
    """End the queue workers this test started (by their recorded pid); they would idle for a minute."""
    for info in (repo / ".dvc/tmp/exps/celery").glob("dvc-exp-worker-*.json"):
        pid = json.loads(info.read_text()).get("pid")
        cmdline = Path(f"/proc/{pid}/cmdline")
        if pid and cmdline.exists() and b"queue-worker" in cmdline.read_bytes():
            os.kill(pid, signal.SIGTERM)


def assert_trainer_args_and_what_ran(repo: Path, exps: dict, summaries: dict) -> None:
    """rank6's `-S train.trainer_args.*` reached Trainer and are columns; fit.epochs and fit.steps are what ran."""
    assert summaries["rank6"]["lr_scheduler"] == "cosine" and summaries["rank2"]["lr_scheduler"] == "linear"
    assert exps["rank6"]["params"]["train"]["trainer_args"]["label_smoothing_factor"] == 0.1
    header = dvc(["exp", "show", "--csv"], repo).stdout.splitlines()[0].split(",")
    assert {"train.trainer_args.lr_scheduler_type", "train.trainer_args.label_smoothing_factor"} <= set(header)
    for name in exps:  # one epoch (tiny_params' min_steps is null), every step of it
        fit = exps[name]["train"]["fit"]
        assert fit["epochs"] == 1 and fit["steps"] == summaries[name]["steps"] == summaries[name]["steps_per_epoch"]


def test_exp_run_rank_sets_trainable_params_and_plots_diff_is_offline(repo, tiny_model, tmp_path):
    commit_small(repo)
    # up to train only: the count is all this test needs (the queued test below runs evaluate)
    dvc(["exp", "run", "-n", "rank2", "-S", "lora.r=2", "train"], repo)
    # further TrainingArguments fields by `-S` alone, each a column of `dvc exp show`
    trainer_args = [
        "-S",
        "train.trainer_args.lr_scheduler_type=cosine",
        "-S",
        "train.trainer_args.label_smoothing_factor=0.1",
    ]
    dvc(["exp", "run", "-n", "rank6", "-S", "lora.r=6", *trainer_args, "train"], repo)

    exps = experiments(repo)
    assert_metrics_are_the_compared_numbers(exps)
    n_labels = len(json.loads((repo / "data/prepared/labels.json").read_text()))
    val_rows = json.loads((repo / "records/prepare.json").read_text())["rows"]["val"]
    for name, r in (("rank2", 2), ("rank6", 6)):
        assert exps[name]["params"]["lora"]["r"] == r
        assert exps[name]["train"]["fit"]["trainable_params"] == expected_trainable(tiny_model, r, n_labels)
        # scored on the val split: the accuracy is a whole number of its rows right
        right = exps[name]["train"]["val"]["accuracy"] * val_rows
        assert abs(right - round(right)) < 1e-3, (name, exps[name]["train"]["val"], val_rows)
    # 4 more ranks on 4 adapted 32x32 linears: 4 x 4 x 64 = 1024 more weights, all trainable
    config = json.loads((tiny_model / "config.json").read_text())
    extra = (6 - 2) * 2 * config["num_hidden_layers"] * 2 * config["hidden_size"]
    assert (
        exps["rank6"]["train"]["fit"]["trainable_params"] - exps["rank2"]["train"]["fit"]["trainable_params"] == extra
    )
    summaries = {name: record(repo, exps[name]["rev"], "records/train/metrics.json") for name in exps}
    assert summaries["rank6"]["total_params"] - summaries["rank2"]["total_params"] == extra
    assert_trainer_args_and_what_ran(repo, exps, summaries)

    # dvc plots diff with the configured template: every script inline, nothing remote
    config_text = (repo / ".dvc/config").read_text()
    assert re.search(r"html_template\s*=\s*plots_template.html", config_text), config_text
    out = tmp_path / "plots_html"
    dvc(["plots", "diff", "rank2", "rank6", "-o", str(out)], repo)
    page = (out / "index.html").read_text(encoding="utf-8")
    assert "vega-embed@6" in page and "vegaEmbed('#" in page  # our inline bundle, and DVC's plot divs
    assert page.count("<script") >= 4 + 1  # vega, vega-lite, vega-embed, defaults, and one per plot
    assert not REMOTE_SRC.search(page), REMOTE_SRC.search(page)
    assert "cdn.jsdelivr" not in page and "{plot_divs}" not in page and "{scripts}" not in page
    assert page.count('"rank2"') and page.count('"rank6"')  # both revisions' data are embedded

    # the comparison on the real `dvc exp show`
    run([sys.executable, "-m", "lora_dvc.compare", "--baseline", "none"], repo)
    report = (repo / "reports/comparison.md").read_text()
    for name in ("rank2", "rank6"):
        row = next(line for line in report.splitlines() if line.startswith(("| " + name, "| **" + name)))
        assert f"{exps[name]['train']['fit']['trainable_params']:,}" in row
    assert (repo / "reports/comparison.png").read_bytes()[:4] == b"\x89PNG"


def test_queued_sweep_survives_a_failing_experiment(repo, tiny_model):
    commit_small(repo)
    # a queued run sees only what git holds: the repo has nothing uncommitted
    assert run(["git", "status", "--porcelain"], repo).stdout == ""
    dvc(["exp", "run", "--queue", "-n", "broken", "-S", "lora.targets=[nonexistent]", "evaluate"], repo)
    dvc(["exp", "run", "--queue", "-n", "tfidf", "-S", "train.method=tfidf", "evaluate"], repo)
    try:
        sweep = run(
            ["bash", "scripts/sweep_study.sh", "-j", "1", "--configs", "qv-r4", "--seeds", "1,2", "--", "evaluate"],
            repo,
            env={"SWEEP_POLL_SECONDS": "8"},  # each listing is a dvc.api.exp_show() process: seconds of CPU
            timeout=480,
        )
    finally:
        stop_queue_workers(repo)
    assert "queued 2 experiment(s)" in sweep.stdout, sweep.stdout

    exps = experiments(repo)
    assert exps["broken"]["state"] == "failed" and exps["tfidf"]["state"] == "success"
    grid = {name: e for name, e in exps.items() if name not in ("broken", "tfidf")}
    assert len(grid) == 2 and all(e["state"] == "success" for e in grid.values()), grid
    assert sorted(e["params"]["train"]["seed"] for e in grid.values()) == [1, 2]
    for e in grid.values():
        assert e["params"]["lora"]["r"] == 4 and e["params"]["lora"]["alpha"] == 8
        details = record(repo, e["rev"], "records/evaluate/metrics.json")["test"]
        assert e["train"]["fit"]["trainable_params"] > 0 and e["test"]["accuracy"] == details["accuracy"]
        assert e["test"]["learned"] in (0, 1) and details["majority_accuracy"] > 0
    assert_metrics_are_the_compared_numbers(exps)

    status = dvc(["queue", "status"], repo).stdout
    states = {line.split()[1]: line.split()[-1] for line in status.splitlines()[1:] if len(line.split()) >= 4}
    assert states["broken"] == "Failed" and [states[n] for n in [*grid, "tfidf"]] == ["Success"] * 3, status
    logs = dvc(["queue", "logs", "broken"], repo).stdout
    assert "lora.targets: module(s) ['nonexistent'] not in" in logs
    table = dvc(["exp", "show", "--no-pager", "--csv"], repo).stdout
    assert any(line.split(",")[0] == "broken" and ",Failed," in line for line in table.splitlines()), table

    # the sweep wrote the comparison (lora-dvc compare, through dvc.api): the two seeds are one row, mean ± std,
    # read from each experiment's records/ at its commit; TF-IDF the baseline; the failure listed
    report = (repo / "reports/comparison.md").read_text()
    header = header_of(report, "## All experiments")
    line = next(line for line in report.splitlines() if line.startswith("|") and all(n in line for n in grid))
    seeds = [c.strip() for c in line.strip("|").split("|")]
    assert seeds[header.index("seeds")] == "1, 2" and " ± " in seeds[header.index("test acc")]
    assert int(seeds[header.index("steps")].replace(",", "")) > 0 and seeds[header.index("train acc")][:2] == "0."
    assert table_row(report, "tfidf")[header.index("method")].strip("*") == "tfidf"
    assert "**Baseline** (auto): tfidf (tfidf)" in report
    assert "broken" in report.split("## Experiments without results")[1]
    listed = run([sys.executable, "-m", "lora_dvc.compare", "--status"], repo).stdout.splitlines()
    assert sorted(listed) == sorted(["broken\tFailed", "tfidf\tSuccess", *(f"{n}\tSuccess" for n in grid)])

    # the TF-IDF baseline: its model folder (the experiment's dvc.lock entry, the cache's listing) holds
    # safetensors, no pickle; well above chance (0.25) on 4 balanced classes from 340 training rows
    rev = exps["tfidf"]["rev"]
    lock = yaml.safe_load(run(["git", "show", f"{rev}:dvc.lock"], repo).stdout)
    md5 = next(o["md5"] for o in lock["stages"]["train"]["outs"] if o["path"] == "models/classifier")
    listing = json.loads((repo / ".dvc/cache/files/md5" / md5[:2] / md5[2:]).read_text())
    names = {entry["relpath"] for entry in listing}
    assert "tfidf_model.safetensors" in names and not any(n.endswith(".pkl") for n in names), names
    assert record(repo, rev, "records/evaluate/metrics.json")["test"]["accuracy"] > 0.4
    assert record(repo, rev, "records/train/metrics.json")["trainable_params"] > 0


def test_sweep_script_grid_and_single_accelerator_guard(tmp_path):
    dry = run(["bash", "scripts/sweep_study.sh", "--dry-run"], ROOT).stdout.splitlines()
    queued = [line for line in dry if " exp run --queue " in line]
    assert len(queued) == 7, dry
    wanted = [
        ("lora.targets=qv", "lora.r=4", "lora.alpha=8"),
        ("lora.targets=qv", "lora.r=16", "lora.alpha=32"),
        ("lora.targets=qv", "lora.r=32", "lora.alpha=64"),
        ("lora.targets=qkv", "lora.r=32", "lora.alpha=64"),
        ("lora.targets=all", "lora.r=32", "lora.alpha=64"),
        ("train.method=full",),
        ("train.method=tfidf",),
    ]
    for line, parts in zip(queued, wanted):
        assert all(f"-S {p}" in line for p in parts), (line, parts)
    assert dry[-1].endswith("queue start -j 1")
    seeds = run(
        ["bash", "scripts/sweep_study.sh", "--dry-run", "--configs", "qv-r4,tfidf", "--seeds", "1,2"], ROOT
    ).stdout
    assert "train.seed=1\\,2" in seeds.splitlines()[0] and "train.seed" not in seeds.splitlines()[1]

    # a machine with torch_xla (a TPU) or a CUDA device: -j 2 is refused unless forced
    fake = tmp_path / "site"
    (fake / "torch_xla").mkdir(parents=True)
    (fake / "torch_xla" / "__init__.py").write_text("")
    env = {"PYTHONPATH": str(fake)}
    refused = run(["bash", "scripts/sweep_study.sh", "-j", "2", "--dry-run"], ROOT, check=False, env=env)
    assert refused.returncode == 2
    assert refused.stderr.startswith("error: -j 2 refused: torch_xla is installed") and "use -j 1" in refused.stderr
    assert refused.stdout == ""  # nothing queued or printed
    assert run(["bash", "scripts/sweep_study.sh", "-j", "1", "--dry-run"], ROOT, env=env).returncode == 0
    assert (
        run(["bash", "scripts/sweep_study.sh", "-j", "2", "--force-parallel", "--dry-run"], ROOT, env=env).returncode
        == 0
    )
    import torch

    cpu_only = run(["bash", "scripts/sweep_study.sh", "-j", "2", "--dry-run"], ROOT, check=False)
    assert cpu_only.returncode == (2 if torch.cuda.is_available() else 0), cpu_only.stderr

    for args, message in (
        (["-j", "0"], "expected a positive integer"),
        (["--configs", "qv-r5"], "unknown configuration 'qv-r5'"),
        (["--seeds", "a,b"], "expected integers"),
        (["--preset", "gpt"], "--preset 'gpt'"),
        (["--bogus"], "unknown option '--bogus'"),
    ):
        bad = run(["bash", "scripts/sweep_study.sh", *args, "--dry-run"], ROOT, check=False)
        assert bad.returncode == 2 and bad.stderr.startswith("error: ") and message in bad.stderr, (args, bad.stderr)


def test_plots_template_is_committed_inline_and_configured():
    tracked = run(
        ["git", "ls-files", ".dvc/plots_template.html", "scripts/make_plots_template.py"], ROOT
    ).stdout.split()
    assert tracked == [".dvc/plots_template.html", "scripts/make_plots_template.py"]
    config = subprocess.run(
        [sys.executable, "-m", "dvc", "config", "plots.html_template"], cwd=ROOT, capture_output=True, text=True
    )
    assert config.stdout.strip() == "plots_template.html", config.stderr

    maker = load_script("make_plots_template")
    page = TEMPLATE.read_text(encoding="utf-8")
    maker.check_page(page)  # one {plot_divs}, no {scripts}, nothing remote
    assert page.count("{plot_divs}") == 1 and "{scripts}" not in page and not REMOTE_SRC.search(page)
    for package, version in maker.VERSIONS.items():
        assert f"{package}@{version}" in page.split("-->", 1)[0]  # the banner names what was inlined
        assert f"/* {package}@{version} */" in page
    # each inline script closes exactly once: no stray "</script" inside the bundles
    assert len(re.findall(r"</script", page, re.I)) == len(re.findall(r"<script", page, re.I))


def test_plots_template_builder_escapes_and_refuses():
    maker = load_script("make_plots_template")
    page = maker.build_page({"fake@1": 'var s = "</script><!-- x";'}, {"fake@1": "MIT -- by someone"})
    assert '"<\\/script><\\!-- x"' in page
    assert "MIT - - by someone" in page  # no "--" inside the licence comment
    maker.check_page(page)
    for js, message in (
        ("var a = '{plot_divs}';", "placeholder {plot_divs}"),
        ("'{scripts}'", "placeholder {scripts}"),
    ):
        try:
            maker.build_page({"bad@1": js}, {"bad@1": "MIT"})
        except maker.TemplateError as err:
            assert message in str(err)
        else:
            raise AssertionError(f"{js!r} was accepted")
    for bad_page in (
        '<html>{plot_divs}<script src="https://cdn.example/x.js"></script>',
        "<html></html>",
        "{plot_divs}{scripts}",
    ):
        try:
            maker.check_page(bad_page)
        except maker.TemplateError:
            pass
        else:
            raise AssertionError(f"{bad_page!r} passed check_page")


def test_every_stage_dependency_is_tracked_by_git():
    """Queued runs start from a git commit: a dependency that is only on disk breaks them."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    outs = set()
    for stage in stages.values():
        for out in stage.get("outs", []) + stage.get("metrics", []) + stage.get("plots", []):
            outs.add(next(iter(out)) if isinstance(out, dict) else out)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    untracked = []
    for name, stage in stages.items():
        for dep in stage.get("deps", []):
            dep = re.sub(r"\$\{([\w.]+)\}", lambda m: str(_lookup(params, m.group(1))), dep)
            if any(dep == o or dep.startswith(o.rstrip("/") + "/") for o in outs):
                continue
            if not run(["git", "ls-files", "--", dep], ROOT).stdout.strip():
                untracked.append(f"{name}: {dep}")
    assert not untracked, f"stage dependencies not tracked by git: {untracked}"


def _lookup(tree: dict, dotted: str):
    for key in dotted.split("."):
        tree = tree[key]
    return tree


# ---------------------------------------------------------------- queued runs resume (issue 13)


def queue_state(repo: Path, name: str) -> str | None:
    for line in dvc(["queue", "status"], repo).stdout.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 4 and fields[1] == name:
            return fields[-1]
    return None


def wait_for(condition, timeout: float, what: str) -> None:
    """Poll `condition` until it holds: a cheap one every 0.2 s; one that runs a dvc command (seconds of CPU)
    at most a third of the time, so that the wait leaves the cores to the run it waits for."""
    deadline = time.time() + timeout
    while True:
        asked = time.monotonic()
        if condition():
            return
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(max(0.2, 2 * (time.monotonic() - asked)))
