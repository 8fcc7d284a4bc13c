"""Split hygiene: cleaning counts, no text in two splits, stratification."""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import FIXTURES

from lora_dvc.errors import UserError
from lora_dvc.params import DataParams
from stages.prepare import make_splits


def write_pool(folder, rows, test_rows=None):
    folder.mkdir(exist_ok=True)
    pd.DataFrame(rows, columns=["text", "label"]).to_csv(folder / "val.csv", index=False)
    if test_rows is not None:
        pd.DataFrame(test_rows, columns=["text", "label"]).to_csv(folder / "test.csv", index=False)


def texts(split):
    return set(split["text"])


def test_no_text_in_two_splits_on_real_excerpt():
    splits, labels, stats = make_splits(
        DataParams(dataset="banglasenti", path=str(FIXTURES / "banglasenti"), val_fraction=0.2)
    )
    train, val, test = (texts(splits[k]) for k in ("train", "val", "test"))
    assert not (train & val) and not (train & test) and not (val & test)
    for split in splits.values():
        assert split["text"].is_unique
        assert (split["text"].str.strip() == split["text"]).all() and (split["text"] != "").all()


def test_cleaning_counts_each_reason(tmp_path):
    pool = [(f"text {i}", i % 3) for i in range(60)]
    pool += [("  text 0  ", 0), ("text 1", 1)]  # 2 duplicates (one after stripping)
    pool += [("   ", 1)]  # empty after stripping
    pool += [("both ways", 0), ("both ways", 2)]  # conflicting labels: both copies dropped
    test = [("text 5", 2), ("new one", 1), ("new two", 0), ("new three", 2)]  # "text 5" leaks from train
    write_pool(tmp_path / "d", pool, test)
    splits, labels, stats = make_splits(DataParams(dataset="banglasenti", path=str(tmp_path / "d"), val_fraction=0.2))
    assert stats["dropped"] == {
        "empty_text": 1,
        "conflicting_label": 2,
        "duplicate_text": 2,
        "test_text_in_train": 1,
        "over_max_train_rows": 0,
    }
    assert stats["rows"]["test"] == 3
    assert stats["rows"]["train"] + stats["rows"]["val"] == 60
    assert labels == ["negative", "positive", "neutral"]


def test_single_file_is_split_stratified(tmp_path):
    rows = [(f"row {i}", ["neg", "pos"][i % 2]) for i in range(200)]
    path = tmp_path / "all.csv"
    pd.DataFrame(rows, columns=["text", "label"]).to_csv(path, index=False)
    splits, labels, stats = make_splits(DataParams(dataset="csv", path=str(path), val_fraction=0.1, test_fraction=0.2))
    assert stats["rows"] == {"train": 144, "val": 16, "test": 40}  # val is 10% of what test leaves
    for split in splits.values():
        assert split["label"].value_counts().tolist() == [len(split) // 2] * 2


def test_max_train_rows_subsamples_train_only(tmp_path):
    splits, _, stats = make_splits(DataParams(dataset="ag_news", path=str(FIXTURES / "ag_news"), max_train_rows=100))
    assert stats["rows"]["train"] == 100 and stats["rows"]["test"] > 100
    assert stats["dropped"]["over_max_train_rows"] > 0


def test_same_seed_same_split():
    data = DataParams(dataset="ag_news", path=str(FIXTURES / "ag_news"))
    a, _, _ = make_splits(data)
    b, _, _ = make_splits(data)
    assert a["train"].equals(b["train"]) and a["val"].equals(b["val"])


def test_too_small_to_split(tmp_path):
    write_pool(tmp_path / "d", [("a", 0), ("b", 1), ("c", 2), ("d", 0)])
    with pytest.raises(UserError, match="dataset too small to split off test: 4 rows"):
        make_splits(DataParams(dataset="banglasenti", path=str(tmp_path / "d")))
