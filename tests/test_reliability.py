"""Reliability: bad input gives one clear line and leaves nothing; kill -9 resumes; runs repeat exactly."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import dvc, make_repo, run, write_params

# ---------------------------------------------------------------- bad input, table-driven
NUMBERED = "text,label\n" + "".join(f"review number {i},{i % 3}\n" for i in range(30))


def data_case(files: dict[str, bytes | str], **data):
    return {"files": files, "data": {"dataset": "banglasenti", "path": "my_data", **data}}


BAD_INPUT = [
    # (case id, setup, stage, expected fragment, exit code)
    ("missing file", {"data": {"path": "no/such/folder"}}, "prepare", "data.path: 'no/such/folder' does not exist", 2),
    (
        "missing column",
        data_case({"val.csv": "sentence,label\na,0\n"}),
        "prepare",
        "no column 'text' (columns: 'sentence', 'label'); set data.text_column",
        2,
    ),
    (
        "renamed column",
        data_case({"val.csv": "review,label\na,0\n"}, dataset="csv", text_column="text"),
        "prepare",
        "no column 'text' (columns: 'review', 'label')",
        2,
    ),
    (
        "label outside set",
        data_case({"val.csv": NUMBERED + "odd one,7\n"}),
        "prepare",
        "1 rows have labels outside the label set (e.g. ['7'], first at data row 31)",
        2,
    ),
    (
        "non-UTF-8 bytes",
        data_case({"val.csv": b"text,label\ngood,1\ncaf\xe9,0\n"}),
        "prepare",
        "not UTF-8 (byte 21, line 3); re-save the file as UTF-8",
        2,
    ),
    ("header only", data_case({"val.csv": "text,label\n"}), "prepare", "has a header but no data rows", 2),
    ("empty file", data_case({"val.csv": ""}), "prepare", "the file is empty", 2),
    (
        "class with no examples",
        data_case(
            {"val.csv": "".join(f"t{i},{i % 2}\n" for i in range(30)).join(["text,label\n", ""])},
            dataset="csv",
            labels=["0", "1", "2"],
        ),
        "prepare",
        "no training examples left for class(es) ['2']",
        2,
    ),
    (
        "too small to split",
        data_case({"val.csv": "text,label\na,0\nb,1\nc,2\n"}),
        "prepare",
        "dataset too small to split off test: 3 rows",
        2,
    ),
    (
        "unknown dataset",
        {"data": {"dataset": "imdb"}},
        "prepare",
        "'data.dataset' is 'imdb', allowed: ag_news | banglasenti | csv",
        2,
    ),
    ("typo in key", {"lora": {"rank": 8}}, "prepare", "unknown key 'lora.rank'. Did you mean 'lora.r'?", 2),
    ("negative rank", {"lora": {"r": -4}}, "train", "'lora.r' is -4, allowed: an integer in [1, 1024]", 2),
    ("alpha 0", {"lora": {"alpha": 0}}, "train", "'lora.alpha' is 0, allowed: a number > 0", 2),
    ("dropout 1", {"lora": {"dropout": 1.0}}, "train", "'lora.dropout' is 1.0, allowed: a number in [0, 1)", 2),
    ("lr 0", {"train": {"lr": 0}}, "train", "'train.lr' is 0, allowed: a number in (0, 1)", 2),
    ("batch size 0", {"train": {"batch_size": 0}}, "train", "'train.batch_size' is 0", 2),
    ("unknown target alias", {"lora": {"targets": "qvk"}}, "train", "lora.targets: unknown alias 'qvk'", 2),
    (
        "absent target module",
        {"lora": {"targets": ["q_proj"]}},
        "train",
        "module(s) ['q_proj'] not in bert model; its linear and embedding modules are",
        2,
    ),
    (
        "max_length over positions",
        {"model": {"max_length": 512, "length_buckets": [64, 512]}},
        "tokenize",
        "model.max_length=512 exceeds the 128 positions",
        2,
    ),
]


@pytest.fixture(scope="module")
def tokenized_repo(tmp_path_factory, tiny_model) -> Path:
    """One repository with prepare and tokenize done, shared by the train cases."""
    repo = make_repo(tmp_path_factory.mktemp("tokenized") / "repo", tiny_model)
    run([sys.executable, "-m", "stages.prepare"], repo)
    run([sys.executable, "-m", "stages.tokenize"], repo)
    return repo


@pytest.mark.parametrize("case, setup, stage, fragment, code", BAD_INPUT, ids=[c[0] for c in BAD_INPUT])
def test_bad_input_one_line_no_outputs(request, case, setup, stage, fragment, code):
    # prepare and tokenize cases get a fresh repository; train cases share one whose earlier stages ran on good params
    repo = request.getfixturevalue("tokenized_repo" if stage == "train" else "repo")
    if stage == "tokenize":
        run([sys.executable, "-m", "stages.prepare"], repo)
    for name, content in setup.get("files", {}).items():
        path = repo / "my_data" / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    overrides = {k: v for k, v in setup.items() if k != "files"}
    good_params = (repo / "params.yaml").read_text()
    write_params(repo, overrides)
    try:
        result = run([sys.executable, "-m", f"stages.{stage}"], repo, check=False)
    finally:
        (repo / "params.yaml").write_text(good_params)
    assert result.returncode == code, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and fragment in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    outputs = {
        "prepare": ["data/prepared", "records/prepare.json"],
        "tokenize": ["data/tokenized", "records/tokenize.json"],
        "train": ["models/classifier", "records/train"],
    }[stage]
    for out in outputs:
        assert not (repo / out).exists(), f"{out} left behind"
    assert not list(repo.glob("**/.*.tmp"))


FIXED = [
    ("BOM and CRLF", b"\xef\xbb\xbftext,label\r\n" + b"".join(b"line %d,%d\r\n" % (i, i % 3) for i in range(30))),
    (
        "quoted newlines and commas",
        b"text,label\n" + b"".join(b'"row %d, with comma\nand newline",%d\n' % (i, i % 3) for i in range(30)),
    ),
    (
        "names for ids",
        b"text,label\n"
        + b"".join(b"t%d,%s\n" % (i, [b"negative", b"positive", b"neutral"][i % 3]) for i in range(30)),
    ),
    (
        "empty and blank texts",
        b"text,label\n" + b"".join(b"t%d,%d\n" % (i, i % 3) for i in range(30)) + b'"",0\n"   ",1\n',
    ),
]


@pytest.mark.parametrize("case, content", FIXED, ids=[c[0] for c in FIXED])
def test_fixable_input_is_fixed_and_counted(repo, case, content):
    (repo / "my_data").mkdir()
    (repo / "my_data/val.csv").write_bytes(content)
    write_params(
        repo, {"data": {"dataset": "banglasenti", "path": "my_data", "val_fraction": 0.2, "test_fraction": 0.2}}
    )
    run([sys.executable, "-m", "stages.prepare"], repo)
    stats = json.loads((repo / "records/prepare.json").read_text())
    assert sum(stats["rows"].values()) == 30
    assert stats["dropped"]["empty_text"] == (2 if case == "empty and blank texts" else 0)
    train = (repo / "data/prepared/train.csv").read_text(encoding="utf-8")
    assert "\ufeff" not in train and "\r" not in train


def test_ids_for_names_in_ag_news(repo):
    (repo / "my_data").mkdir()
    rows = "".join(f"story {i}\t{['World', '2', 'business', 'Sci/Tech'][i % 4]}\n" for i in range(40))
    (repo / "my_data/dev.tsv").write_text(rows)
    write_params(repo, {"data": {"dataset": "ag_news", "path": "my_data", "val_fraction": 0.2, "test_fraction": 0.2}})
    run([sys.executable, "-m", "stages.prepare"], repo)
    counts = json.loads((repo / "records/prepare.json").read_text())["class_counts"]["train"]
    assert all(n > 0 for n in counts.values())


# ---------------------------------------------------------------- interruption and determinism
RESULT_FILES = ("models/classifier", "records/train/plots/metrics/train_step/loss.tsv")
TIMING_KEYS = {"train_seconds", "train_samples_per_second"}


def outcome(repo: Path) -> dict:
    """What must match between runs: adapter bytes, step history, metrics less timings."""
    metrics = json.loads((repo / "records/train/metrics.json").read_text())
    history = (repo / RESULT_FILES[1]).read_text().splitlines()  # step and loss (dvclive writes no timestamps)
    test = json.loads((repo / "records/evaluate/metrics.json").read_text())["test"]
    test.pop("samples_per_second")
    adapter = {f.name: f.read_bytes() for f in sorted((repo / "models/classifier").iterdir())}  # weights and config
    return {
        "adapter": adapter,
        "history": history,
        "test": test,
        "metrics": {k: v for k, v in metrics.items() if k not in TIMING_KEYS | {"provenance"}},
    }


def checkpoint_env(store: Path) -> dict:
    """Checkpoints in a folder of the test's own (LORA_DVC_CHECKPOINTS), never the user's cache."""
    return {
        "LORA_DVC_CHECKPOINTS": str(store),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }


def complete_checkpoints(store: Path) -> list[Path]:
    return sorted(store.glob("*/checkpoint-*/lora_dvc_state.json"))


def start_and_kill_after_checkpoint(cmd: list[str], repo: Path, store: Path, count: int = 1) -> None:
    """Start `cmd`, SIGKILL its whole process group right after the `count`th complete checkpoint."""
    proc = subprocess.Popen(
        cmd,
        cwd=repo,
        env={**os.environ, **checkpoint_env(store)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 180
    while len(complete_checkpoints(store)) < count and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "training finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def test_determinism_and_kill_resume(repo, tmp_path):
    store = tmp_path / "checkpoints"
    write_params(repo, {"train": {"epochs": 2, "checkpoint_every": 3, "log_every": 2}})
    run(["git", "commit", "-qam", "params"], repo)
    dvc(["repro", "evaluate"], repo, env=checkpoint_env(store))  # what outcome() reads; report and export add nothing
    first = outcome(repo)
    assert not complete_checkpoints(store)  # cleaned on success

    # kill -9 the stage mid-epoch, right after its second checkpoint, and damage that one as a storage fault
    # would: `dvc repro` then sets it aside, says so, and resumes from the first
    start_and_kill_after_checkpoint([sys.executable, "-m", "dvc", "repro", "-f", "train"], repo, store, count=2)
    assert not (repo / "models/classifier").exists()  # DVC removed it before the run; nothing half-written came back
    older, newest = sorted((m.parent for m in complete_checkpoints(store)), key=lambda p: int(p.name.split("-")[1]))[
        -2:
    ]
    assert not list(repo.glob("checkpoints")), "checkpoints must live outside the workspace"
    optimizer = newest / "optimizer.pt"
    optimizer.write_bytes(optimizer.read_bytes()[: optimizer.stat().st_size // 2])

    resumed = dvc(["repro", "evaluate"], repo, env=checkpoint_env(store))
    said = resumed.stderr + resumed.stdout
    assert re.search(rf"train: damaged checkpoint {re.escape(str(newest))}: optimizer\.pt: \d+ bytes", said), said
    assert re.search(rf"resuming from {re.escape(str(store))}/\w+ at step {older.name.split('-')[1]}\b", said)
    # from the intact checkpoint, to the uninterrupted run's bytes: the steps before it ran again in the killed
    # run, so this is also a second run with the same params and seed giving identical numbers and bytes
    assert outcome(repo) == first
    assert not list(store.glob("*/checkpoint-*"))  # cleaned up once the adapter is saved


# the train stage, with SIGTERM delivered to itself right before the callbacks see the epoch's last step
TRAIN_SIGNALLED_AT_EPOCH_END = """
import os, signal
from lora_dvc import callbacks
step_end = callbacks.StopOnSignal.on_step_end
def on_step_end(self, args, state, control, **kwargs):
    if state.global_step == self.steps_per_epoch:
        os.kill(os.getpid(), signal.SIGTERM)
    return step_end(self, args, state, control, **kwargs)
callbacks.StopOnSignal.on_step_end = on_step_end
from lora_dvc.runner import run_stage
from stages.train import run
run_stage(run)
"""


def train_outcome(repo: Path) -> dict:
    metrics = json.loads((repo / "records/train/metrics.json").read_text())
    return {
        "adapter": {f.name: f.read_bytes() for f in sorted((repo / "models/classifier").iterdir())},
        "val": (repo / "records/train/plots/metrics/val/accuracy.tsv").read_text(),
        "metrics": {k: v for k, v in metrics.items() if k not in TIMING_KEYS | {"provenance"}},
    }


def test_sigterm_on_an_epochs_last_step_resumes_like_an_uninterrupted_run(repo, tmp_path):
    """A signal on the last step of an epoch stops after that epoch's val pass and checkpoint: the val pass
    draws from torch's generator, so a checkpoint taken before it and resumed into the next epoch shifted
    every later dropout mask (a queued run killed there ended with another adapter)."""
    store = tmp_path / "checkpoints"
    write_params(repo, {"train": {"epochs": 2, "checkpoint_every": 0, "log_every": 2}})
    run([sys.executable, "-m", "stages.prepare"], repo)
    run([sys.executable, "-m", "stages.tokenize"], repo)
    run([sys.executable, "-m", "stages.train"], repo, env=checkpoint_env(store))
    whole = train_outcome(repo)
    assert len(whole["val"].splitlines()) == 3  # header and one val pass per epoch

    stopped = run([sys.executable, "-c", TRAIN_SIGNALLED_AT_EPOCH_END], repo, check=False, env=checkpoint_env(store))
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr
    assert "checkpoint saved in" in stopped.stderr and len(complete_checkpoints(store)) == 1
    assert re.search(r"epoch 1/2, step \d+: val accuracy", stopped.stderr)  # the epoch's val pass ran before the stop

    resumed = run([sys.executable, "-m", "stages.train"], repo, env=checkpoint_env(store))
    assert "resuming from" in resumed.stderr
    assert train_outcome(repo) == whole


def test_stale_checkpoints_pruned(tmp_path, monkeypatch, caplog):
    from lora_dvc.checkpoints import MAX_AGE_DAYS, prune_stale

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("LORA_DVC_CHECKPOINTS", raising=False)
    root = tmp_path / "cache/lora-dvc/checkpoints"
    old, fresh = root / "old", root / "fresh"
    for folder in (old, fresh):
        (folder / "checkpoint-3").mkdir(parents=True)
        (folder / "checkpoint-3/state.json").write_text("{}")
    past = time.time() - (MAX_AGE_DAYS + 1) * 86400
    for path in [old, *old.rglob("*")]:
        os.utime(path, (past, past))
    with caplog.at_level("INFO"):
        assert prune_stale() == [old]
    assert fresh.exists() and not old.exists()
    assert "pruned stale checkpoint" in caplog.text
