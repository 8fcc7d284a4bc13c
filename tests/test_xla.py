"""The XLA path: the real train and evaluate stages on torch_xla, run on the CPU (PJRT_DEVICE=CPU).

The XLA tests need torch_xla, which the main environment does not have: they skip there and run in
the second environment that `.ci/xla_env.sh` builds (torch 2.9 + torch_xla 2.9, the pair a TPU VM
uses). With LORA_DVC_REQUIRE_XLA=1 (set by that script) a missing torch_xla fails instead of
skipping, so CI cannot pass without running them.

What they check, on the tiny model and the AG News excerpt (length buckets 16/32/64):
  - one core: two epochs of transformers' Trainer on the XLA device (its own XLA support: the
    accelerate device loader and a graph cut per step), each step's batches padded to one length
    bucket (lora_dvc.collators.EpochSeededBucketSampler); the XLA compilations logged to DVCLive:
    none after the first epoch, at most one graph per bucket + 2 for training and as many for the val
    passes, and at most that for the evaluate stage;
  - all cores: the same through `torch_xla.launch` (train.cores=all), DVCLive written once, over 16
    short epochs (the count must not grow whatever the epoch count);
  - the adapter saved from the XLA run loads with plain peft; evaluate on XLA agrees with the CPU.
Without torch_xla, the padding logic the XLA path relies on is still tested on the CPU.

Several CPU devices (CPU_NUM_DEVICES=2) cannot be tested here: torch_xla 2.9 runs them as threads
of one process, and its all-reduce on XLA:CPU never completes (the rendezvous times out and aborts
the process; pytorch/xla#9089). On a TPU VM, `PJRT_DEVICE=TPU pytest -n 0 tests/test_xla.py` runs the
all-cores test over every core.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import dvc, head_params_after_peft_load, make_repo, run, write_params

BUCKETS = (16, 32, 64)  # tiny_params' model.length_buckets
# compile budget (docs/tpu.md, "Static shapes"), for the whole run and none after the first epoch:
# training one graph per bucket + 2 (the first step, with the optimizer state still to create, and the
# first checkpoint's rendezvous), the val passes one per bucket (+ 2 of slack); the evaluate stage too
MAX_TRAIN_COMPILES = len(BUCKETS) + 2
MAX_EVAL_COMPILES = len(BUCKETS) + 2


def needs_xla():
    if os.environ.get("LORA_DVC_REQUIRE_XLA") == "1":
        import torch_xla  # noqa: F401  (fail, not skip, where the XLA environment is expected)
    return pytest.importorskip("torch_xla")


def xla_env() -> dict:
    device = os.environ.get("PJRT_DEVICE", "CPU")
    env = {"PJRT_DEVICE": device, "TF_CPP_MIN_LOG_LEVEL": "2"}
    if device == "CPU":
        env["CPU_NUM_DEVICES"] = "1"  # more CPU devices hang in torch_xla's all-reduce (see above)
    return env


@pytest.fixture(scope="module")
def tokenized(tmp_path_factory, tiny_model) -> Path:
    """A repository with prepare and tokenize done, copied by each test."""
    needs_xla()
    repo = make_repo(tmp_path_factory.mktemp("xla") / "repo", tiny_model)
    dvc(["repro", "tokenize"], repo)
    return repo


def copy_repo(src: Path, dest: Path, **train) -> Path:
    shutil.copytree(src, dest, symlinks=True)
    write_params(dest, {"train": {"device": "xla", **train}})
    return dest


def stage(repo: Path, name: str, **env) -> str:
    """Run one stage module the way dvc does; returns stderr (logs)."""
    env = {"LORA_DVC_CHECKPOINTS": str(repo.parent / "checkpoints"), **xla_env(), **env}
    out = run([sys.executable, "-m", f"stages.{name}"], repo, env=env, timeout=900)
    return out.stderr


def tsv(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f, delimiter="\t"))


def check_train_outputs(repo: Path, stderr: str, epochs: int = 2) -> dict:
    metrics = json.loads((repo / "records/train/metrics.json").read_text())
    assert metrics["epochs_run"] == epochs
    assert metrics["step"] == metrics["steps"] == epochs * metrics["steps_per_epoch"]
    # DVCLive wrote each epoch once (one process logs, whatever the number of cores)
    steps = [str(e * metrics["steps_per_epoch"]) for e in range(1, epochs + 1)]
    assert [row["step"] for row in tsv(repo / "records/train/plots/metrics/val/accuracy.tsv")] == steps
    assert tsv(repo / "records/train/plots/metrics/train_step/loss.tsv")  # logged by LiveCallback on XLA
    # compilations: logged after each epoch (its checkpoint included), none after the first, bounded by the buckets
    plots = repo / "records/train/plots/metrics/xla"
    per_epoch = [int(row["compilations"]) for row in tsv(plots / "compilations.tsv")]
    eval_per_epoch = [int(row["eval_compilations"]) for row in tsv(plots / "eval_compilations.tsv")]
    assert len(per_epoch) == epochs and set(per_epoch) == {per_epoch[0]}, per_epoch
    assert set(eval_per_epoch) == {eval_per_epoch[0]}, eval_per_epoch
    xla = metrics["xla"]  # the whole run, the end (best-model reload, adapter save) included
    assert xla["compilations"] == per_epoch[0] == xla["train_compilations"] + xla["eval_compilations"], xla
    assert 0 < xla["train_compilations"] <= MAX_TRAIN_COMPILES, xla
    assert 0 < xla["eval_compilations"] <= MAX_EVAL_COMPILES, xla
    assert xla["compile_seconds"] > 0
    assert "shapes are not static" not in stderr
    for split in ("train", "val"):
        assert np.isfinite(metrics[split]["loss"]) and 0 <= metrics[split]["accuracy"] <= 1
    print(
        f"\nXLA compilations after each of {epochs} epochs {per_epoch}: train {xla['train_compilations']} "
        f"(budget {MAX_TRAIN_COMPILES}), val {xla['eval_compilations']} (budget {MAX_EVAL_COMPILES}), "
        f"{xla['compile_seconds']} s compiling"
    )
    return metrics


def compilations_in(stderr: str) -> int:
    """Graphs compiled by a stage run with PT_XLA_DEBUG_LEVEL=2 (torch_xla reports each one)."""
    return stderr.count("Compilation Analysis: Compilation Cause")


def test_xla_train_one_core_then_evaluate(tokenized, tmp_path, tiny_model):
    needs_xla()
    repo = copy_repo(tokenized, tmp_path / "repo", cores=1)
    stderr = stage(repo, "train")
    check_train_outputs(repo, stderr)

    # the adapter written from the XLA run loads with plain peft, in a fresh process, head included
    adapter = repo / "models/classifier"
    assert head_params_after_peft_load(repo, tiny_model, adapter) > 0

    # evaluate on XLA (padded, bucketed batches) agrees with evaluate on the CPU, in one graph per bucket
    compiled = compilations_in(stage(repo, "evaluate", PT_XLA_DEBUG_LEVEL="2"))
    print(f"evaluate stage: {compiled} XLA compilations (budget {MAX_EVAL_COMPILES})")
    assert 0 < compiled <= MAX_EVAL_COMPILES
    on_xla = tsv_csv(repo / "records/evaluate/predictions.csv")
    xla_metrics = json.loads((repo / "records/evaluate/metrics.json").read_text())["test"]
    write_params(repo, {"train": {"device": "cpu"}})
    stage(repo, "evaluate")
    on_cpu = tsv_csv(repo / "records/evaluate/predictions.csv")
    assert len(on_xla) == len(on_cpu) == 200
    confidence = np.array([[float(a["confidence"]), float(b["confidence"])] for a, b in zip(on_xla, on_cpu)])
    assert np.abs(confidence[:, 0] - confidence[:, 1]).max() < 0.02  # bf16 on XLA vs fp32 on CPU
    agree = np.mean([a["predicted"] == b["predicted"] for a, b in zip(on_xla, on_cpu)])
    assert agree >= 0.9, agree
    assert 0 <= xla_metrics["accuracy"] <= 1


def tsv_csv(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_xla_train_all_cores(tokenized, tmp_path):
    """train.cores=all: torch_xla.launch, one process (thread) per core; on CPU one device. 16 epochs
    of a few steps: no graph after the first epoch, whatever the epoch count."""
    needs_xla()
    repo = copy_repo(tokenized, tmp_path / "repo", cores="all", precision="fp32", epochs=16, batch_size=64)
    stderr = stage(repo, "train")
    metrics = check_train_outputs(repo, stderr, epochs=16)
    assert (repo / "models/classifier/adapter_model.safetensors").exists()
    assert not list((repo.parent / "checkpoints").glob("*/checkpoint-*"))  # cleaned on success
    assert metrics["train_samples_per_second"] > 0


def test_xla_forward_matches_cpu(tiny_model):
    """One forward in fp32 on the XLA device equals the CPU's, padding rows and all."""
    needs_xla()
    code = f"""
import numpy as np, torch
from transformers import AutoModelForSequenceClassification as M
from lora_dvc.batching import TokenizedSplit, collate
from lora_dvc.device import Runtime
from lora_dvc.inference import batched_probabilities
from lora_dvc.task import Task
torch.manual_seed(0)
model = M.from_pretrained({str(tiny_model)!r}, num_labels=4).eval()
rng = np.random.default_rng(0)
lengths = (5, 9, 16, 16, 3, 30, 32, 7)
split = TokenizedSplit.from_ids([list(rng.integers(1000, 2000, n)) for n in lengths], [0, 1, 2, 3] * 2)
task = Task("abcd")
cpu = batched_probabilities(model, split, Runtime(torch.device("cpu")), task, [16, 32], 4, 0)
rt = Runtime.create("xla", "fp32")
xla = batched_probabilities(model.to(rt.device), split, rt, task, [16, 32], 4, 0)
print("maxdiff", float(np.abs(cpu - xla).max()))
"""
    out = run([sys.executable, "-c", code], Path(__file__).resolve().parents[1], env=xla_env(), timeout=600)
    assert float(out.stdout.split("maxdiff")[-1]) < 1e-4, out.stdout


# --- what the XLA path relies on, tested on the CPU everywhere (no torch_xla needed) ---


def test_training_steps_have_one_shape_per_bucket_and_epochs_alike():
    """On XLA, Trainer reads the train split in the bucket sampler's order through the bucket collator:
    every micro-batch of a step (over processes and grad_accum) pads to one bucket, and every epoch has
    the same steps per bucket, so training compiles one graph per bucket, all in the first epoch."""
    from collections import Counter

    from torch.utils.data import BatchSampler

    from lora_dvc.batching import TokenizedSplit
    from lora_dvc.collators import EpochSeededBucketSampler, SplitDataset, make_collator

    rng = np.random.default_rng(0)
    lengths = np.concatenate([rng.integers(1, 17, 30), rng.integers(17, 33, 21), rng.integers(33, 64, 152)])
    split = TokenizedSplit.from_ids([[1] * int(n) for n in lengths], list(rng.integers(0, 4, len(lengths))))
    data, collate = SplitDataset(split), make_collator(None, True, list(BUCKETS), pad_id=0)
    for micro, per_step in ((8, 1), (4, 2), (3, 4)):  # one process; 2 processes or grad_accum 2; 4
        sampler = EpochSeededBucketSampler(micro, per_step, data.lengths, list(BUCKETS), seed=42)
        per_epoch = []
        for epoch in range(4):
            sampler.set_epoch(epoch)
            order = list(sampler)
            assert len(order) == len(sampler) == sampler.steps * micro * per_step and len(set(order)) == len(order)
            shapes = []
            for rows in BatchSampler(order, micro, drop_last=False):
                batch = collate([data[i] for i in rows])
                assert batch["attention_mask"].sum(1).tolist() == [split.lengths[data.order[i]] for i in rows]
                shapes.append(tuple(batch["input_ids"].shape))
            steps = [shapes[i : i + per_step] for i in range(0, len(shapes), per_step)]
            assert all(len(set(step)) == 1 for step in steps)  # one bucket a step
            assert max(steps[0][0]) == max(BUCKETS)  # the longest bucket first
            per_epoch.append(Counter(step[0] for step in steps))
        assert all(c == per_epoch[0] for c in per_epoch), per_epoch  # the same steps per bucket every epoch
        assert set(per_epoch[0]) == {(micro, b) for b in BUCKETS}
        assert len(order) > len(lengths) - len(BUCKETS) * micro * per_step  # few rows dropped


def test_padded_eval_equals_plain(tiny_model):
    """Static shapes pad the last batch of each bucket with rows the output drops."""
    from transformers import AutoModelForSequenceClassification

    from lora_dvc.batching import TokenizedSplit
    from lora_dvc.device import Runtime
    from lora_dvc.inference import batched_probabilities
    from lora_dvc.task import Task

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=4).eval()
    rng = np.random.default_rng(1)
    split = TokenizedSplit.from_ids([list(rng.integers(1000, 2000, int(n))) for n in rng.integers(2, 33, 23)])
    cpu, task = torch.device("cpu"), Task("abcd")
    plain = batched_probabilities(model, split, Runtime(cpu), task, [16, 32], 4, 0)
    padded = batched_probabilities(model, split, Runtime(cpu, static_shapes=True), task, [16, 32], 4, 0)
    assert not np.isnan(plain).any()
    np.testing.assert_allclose(padded, plain, atol=1e-5)


def test_cores_all_needs_xla(tmp_path, monkeypatch):
    """train.cores=all on a device other than XLA is a user error, raised before anything loads."""
    import yaml

    from lora_dvc.errors import UserError
    from stages import train

    params = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    params["train"].update(cores="all", device="cpu")
    params["model"].update(max_length=128, length_buckets=[32, 64, 96, 128])  # auto would want the tokenize stage
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="train.cores=all"):
        train.main()


def test_tally_counts_without_boolean_indexing():
    """The train tally adds padded rows (label -100) as nothing, without a data-dependent shape (which XLA
    reads on the host every step): the same counts as one-hot rows of the kept rows."""
    import torch.nn.functional as F

    from lora_dvc.callbacks import Tally

    torch.manual_seed(0)
    logits, labels = torch.randn(16, 4), torch.randint(0, 4, (16,))
    labels[[3, 9, 15]] = -100
    tally = Tally(4)
    tally.add(torch.tensor(0.5), logits, labels)
    keep = labels >= 0
    expected = F.one_hot(labels[keep], 4).double().T @ F.one_hot(logits[keep].argmax(-1), 4).double()
    assert torch.equal(tally.confusion, expected)
    assert Tally.summary(tally.reduced_state())["rows"] == 13 and tally.reduced_state()["loss"] == 6.5
