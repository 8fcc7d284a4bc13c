"""The pieces the train stage adds to transformers' Trainer, tested without training a model:
precision choice, resumable length grouping, collators, the checkpoint fingerprint and store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lora_dvc.artifacts import TokenizedSplit


def test_length_grouped_order_replays_per_epoch():
    """Same (seed, epoch) -> same order, whatever ran before: what a mid-epoch resume relies on."""
    from lora_dvc.collators import EpochSeededLengthSampler

    lengths = np.random.default_rng(0).integers(3, 64, 200).tolist()
    sampler = EpochSeededLengthSampler(16, lengths, seed=42)
    sampler.set_epoch(1)
    first = list(sampler)
    torch.manual_seed(123)  # the global RNG must not matter
    sampler.set_epoch(0)
    epoch0 = list(sampler)
    sampler.set_epoch(1)
    assert list(sampler) == first != epoch0
    assert sorted(first) == list(range(200))
    # grouped: within a batch of 16, lengths are much closer than in a random batch
    spread = np.mean([np.ptp([lengths[i] for i in first[s : s + 16]]) for s in range(0, 192, 16)])
    assert spread < 0.5 * np.ptp(lengths)


def test_collators_pad_to_multiple_of_8_or_to_bucket(tiny_model):
    from lora_dvc.collators import SplitDataset, make_collator
    from lora_dvc.modeling import load_tokenizer

    split = TokenizedSplit.from_ids([[101, 5, 6, 102], [101] + [7] * 9 + [102]], [0, 1])
    rows = [SplitDataset(split)[i] for i in range(2)]
    dynamic = make_collator(load_tokenizer(str(tiny_model)), False, [16, 32], pad_id=0)(rows)
    assert dynamic["input_ids"].shape == (2, 16) and dynamic["attention_mask"].sum().item() == 15
    assert dynamic["labels"].tolist() == [0, 1]
    rows = [SplitDataset(split)[0]]
    assert make_collator(None, True, [16, 32], pad_id=0)(rows)["input_ids"].shape == (1, 16)
    assert make_collator(load_tokenizer(str(tiny_model)), False, [16, 32], 0)(rows)["input_ids"].shape == (1, 8)


def test_eval_order_sorted_by_length_keeps_labels_aligned():
    from lora_dvc.collators import SplitDataset

    split = TokenizedSplit.from_ids([[1] * 5, [1] * 2, [1] * 9, [1] * 2], [0, 1, 2, 3])
    data = SplitDataset.by_length(split)
    assert data.lengths == [2, 2, 5, 9] and data.labels.tolist() == [1, 3, 0, 2]
    assert [data[i]["labels"] for i in range(4)] == data.labels.tolist()


@pytest.fixture
def tokenized_cwd(tmp_path, monkeypatch) -> Path:
    """A working folder with data/tokenized/{train,val}.npz, as the train stage sees it."""
    monkeypatch.chdir(tmp_path)
    Path("data/tokenized").mkdir(parents=True)
    for split in ("train", "val"):
        np.savez(
            f"data/tokenized/{split}.npz",
            ids=np.arange(6, dtype=np.int32),
            offsets=np.array([0, 3, 6]),
            labels=np.array([0, 1]),
        )
    return tmp_path


def test_fingerprint_covers_result_params_and_data_only(tokenized_cwd):
    from lora_dvc.checkpoints import fingerprint
    from lora_dvc.params import Params

    base = Params()
    fp = fingerprint(base)
    volatile = Params()
    volatile.train.log_every, volatile.train.checkpoint_every, volatile.train.device = 7, 3, "cpu"
    assert fingerprint(volatile) == fp  # where and how often things are written: same run
    volatile.train.trainer_args = {**base.train.trainer_args, "dataloader_num_workers": 2, "logging_first_step": True}
    assert fingerprint(volatile) == fp  # trainer_args fields that only watch or feed the run
    changed = Params()
    changed.train.lr = 0.5
    assert fingerprint(changed) != fp
    changed = Params()
    changed.train.trainer_args = {**base.train.trainer_args, "lr_scheduler_type": "cosine"}
    assert fingerprint(changed) != fp
    np.savez(
        "data/tokenized/val.npz",
        ids=np.arange(6, dtype=np.int32),
        offsets=np.array([0, 2, 6]),
        labels=np.array([0, 1]),
    )
    assert fingerprint(base) != fp


def fake_checkpoint(folder: Path, step: int, complete: bool = True) -> Path:
    path = folder / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "weights.txt").write_bytes(b"weights %d" % step)
    (path / "live").mkdir()
    (path / "live/metrics.json").write_text("{}")
    if complete:
        from lora_dvc.checkpoints import write_marker

        write_marker(path, {"step": step})
    return path


def test_store_picks_newest_complete_checkpoint(tmp_path, monkeypatch):
    from lora_dvc.checkpoints import CheckpointStore

    monkeypatch.setenv("LORA_DVC_CHECKPOINTS", str(tmp_path / "store"))
    store = CheckpointStore("abc")
    assert store.latest() is None and store.local == tmp_path / "store/abc"
    fake_checkpoint(store.local, 10)
    fake_checkpoint(store.local, 20, complete=False)  # killed while Trainer wrote it
    assert store.latest().name == "checkpoint-10"
    store.clean()
    assert not store.local.exists()


def test_remote_store_uploads_and_downloads(tmp_path, monkeypatch):
    """An fsspec URL (memory:// here, gs:// on a TPU VM): saved locally, uploaded, fetched back on a
    machine that has none of it locally, deleted everywhere on success."""
    import fsspec

    from lora_dvc.checkpoints import CheckpointStore

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("LORA_DVC_CHECKPOINTS", "memory://bucket/ckpt")
    store = CheckpointStore("fp1")
    assert store.remote and store.where == "memory://bucket/ckpt/fp1"
    store.upload(fake_checkpoint(store.local, 5))
    store.upload(fake_checkpoint(store.local, 9))
    store.upload(fake_checkpoint(store.local, 12))
    for step in (5, 9):
        (store.local / f"checkpoint-{step}").rename(tmp_path / f"gone-{step}")  # rotated away locally
    store.upload(store.local / "checkpoint-12")
    fs = fsspec.filesystem("memory")
    # the newest two complete ones stay: one to fall back on
    assert sorted(Path(p).name for p in fs.ls("/bucket/ckpt/fp1", detail=False)) == ["checkpoint-12", "checkpoint-9"]

    import shutil

    shutil.rmtree(store.local)  # a fresh VM: nothing local
    latest = CheckpointStore("fp1").latest()
    assert latest is not None and latest.name == "checkpoint-12"
    assert (latest / "weights.txt").read_bytes() == b"weights 12"
    assert (latest / "live/metrics.json").exists()
    store.clean()
    assert not fs.exists("/bucket/ckpt/fp1")


def test_min_steps_adds_epochs_on_small_data_and_patience_auto_stops_only_those(caplog):
    from lora_dvc.params import parse_params
    from lora_dvc.training_args import early_stopping_patience, planned_epochs

    def params(epochs, min_steps, patience="auto"):
        return parse_params({"train": {"epochs": epochs, "min_steps": min_steps, "patience": patience}}, "test")

    assert planned_epochs(params(1, 600), steps_per_epoch=1000) == 1  # enough steps: unchanged
    assert planned_epochs(params(1, None), steps_per_epoch=10) == 1  # off
    with caplog.at_level("WARNING"):
        assert planned_epochs(params(2, 600), steps_per_epoch=25) == 24  # ceil(600 / 25)
    (added,) = [r for r in caplog.records if r.levelname == "WARNING"]  # not hidden at INFO
    assert (
        "train.epochs=2 gives 50 optimizer steps < train.min_steps=600: training up to 24 epochs (600 steps) "
        "instead, stopping after 2 val passes without a val macro-F1 gain (patience auto)"
    ) in added.getMessage()
    # patience auto: early stopping where min_steps added epochs, and only there
    assert early_stopping_patience(params(2, 600), 24) == 2
    assert early_stopping_patience(params(2, 600), 2) is None  # train.epochs ran as asked: never cut short
    assert early_stopping_patience(params(2, 600, None), 24) is None
    assert early_stopping_patience(params(2, 600, 5), 2) == 5
    assert planned_epochs(params(3, 50), steps_per_epoch=7) == 8  # ceil(50 / 7)
    # a max_steps bounds the run instead: the epochs it takes, whatever min_steps says
    capped = parse_params({"train": {"epochs": 1, "min_steps": 600, "trainer_args": {"max_steps": 30}}}, "test")
    assert planned_epochs(capped, steps_per_epoch=25) == 2
    assert early_stopping_patience(capped, 2) is None
