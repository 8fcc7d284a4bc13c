"""Readers on small real excerpts of the shipped datasets, and your own data in every format
(CSV, TSV, JSON, JSON lines, Parquet, a `datasets` folder saved to disk, a hub name)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from conftest import FIXTURES

from lora_dvc.datasets import AG_NEWS_LABELS, BANGLASENTI_LABELS, clean_ag_news, read_source
from lora_dvc.errors import UserError
from lora_dvc.params import DataParams
from lora_dvc.splits import make_splits


def test_ag_news_alps_tsv():
    source = read_source(DataParams(dataset="ag_news", path=str(FIXTURES / "ag_news")))
    assert source.labels == AG_NEWS_LABELS
    assert len(source.pool) == 400 and len(source.test) == 200
    assert set(source.pool["label"]) == set(AG_NEWS_LABELS)
    assert source.files[0].endswith("dev.tsv")
    # the alps file writes apostrophes as ' #39;'
    assert not source.pool["text"].str.contains("#39;").any()


def test_ag_news_canonical_csv():
    source = read_source(DataParams(dataset="ag_news", path=str(FIXTURES / "ag_news_csv")))
    assert len(source.pool) == 120 and len(source.test) == 40
    first = source.test.iloc[0]
    assert first["label"] == "Business"  # class 3
    assert first["text"].startswith("Fears for T N pension after talks. Unions representing")
    assert not source.test["text"].str.contains("\\\\", regex=False).any()


def test_clean_ag_news():
    assert clean_ag_news("It #39;s a\\second line &amp; more") == "It 's a second line & more"


def test_banglasenti_ids_to_names():
    source = read_source(DataParams(dataset="banglasenti", path=str(FIXTURES / "banglasenti")))
    assert source.labels == BANGLASENTI_LABELS
    assert len(source.pool) == 300 and len(source.test) == 150
    assert set(source.pool["label"]) <= set(BANGLASENTI_LABELS)


def test_generic_csv_with_label_list(tmp_path):
    path = tmp_path / "reviews.tsv"
    path.write_text("review\tstars\ngreat film\tpos\nawful\tneg\nfine\t1\n", encoding="utf-8")
    source = read_source(
        DataParams(dataset="csv", path=str(path), text_column="review", label_column="stars", labels=["neg", "pos"])
    )
    assert source.test is None
    assert source.pool["label"].tolist() == ["pos", "neg", "pos"]  # "1" is the id of "pos"


def test_generic_csv_infers_sorted_labels(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("text,label\na,zeta\nb,alpha\nc,zeta\n", encoding="utf-8")
    source = read_source(DataParams(dataset="csv", path=str(path)))
    assert source.labels == ["alpha", "zeta"]


def test_missing_column_names_the_columns(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("sentence,label\na,x\nb,y\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"no column 'text' \(columns: 'sentence', 'label'\); set data.text_column"):
        read_source(DataParams(dataset="csv", path=str(path)))


def test_missing_path():
    with pytest.raises(UserError, match="data.path: 'nowhere/at/all' does not exist"):
        read_source(DataParams(dataset="ag_news", path="nowhere/at/all"))


def test_label_outside_set(tmp_path):
    (tmp_path / "val.csv").write_text("text,label\ngood,1\nbad,7\n", encoding="utf-8")
    with pytest.raises(
        UserError, match=r"1 rows have labels outside the label set \(e.g. \['7'\], first at data row 2\)"
    ):
        read_source(DataParams(dataset="banglasenti", path=str(tmp_path)))


# -- your own data in every format: the same content gives the same prepared rows ---------------

# a comma, an apostrophe, non-ASCII text, a duplicate, an empty text and a conflicting pair of labels,
# so that the hygiene counts are exercised in every format too
POOL = [(f"review number {i}, it's {'good' if i % 2 else 'bad'}", "pos" if i % 2 else "neg") for i in range(36)]
POOL += [("café au lait à la carte", "pos"), ("review number 1, it's good", "pos"), ("   ", "neg")]
POOL += [("torn", "pos"), ("torn", "neg"), ("খুব ভালো লাগলো", "pos")]
TEST = [("a new one", "neg"), ("another new one", "pos"), ("review number 3, it's good", "pos"), ("last", "neg")]


def frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    """The pool and test as tables with an extra numeric column the reader must ignore."""
    pool, test = (pd.DataFrame(rows, columns=["review", "stars"]) for rows in (POOL, TEST))
    return pool.assign(id=range(len(pool))), test.assign(id=range(len(test)))


def write_as(fmt: str, folder: Path) -> None:
    """The same content in one format: train + test files, or a DatasetDict saved to disk."""
    folder.mkdir()
    pool, test = frames()
    for name, frame in (("train", pool), ("test", test)):
        if fmt == "csv":
            frame.to_csv(folder / f"{name}.csv", index=False)
        elif fmt == "tsv":
            frame.to_csv(folder / f"{name}.tsv", index=False, sep="\t")
        elif fmt == "json":  # one array of records
            frame.to_json(folder / f"{name}.json", orient="records", force_ascii=False)
        elif fmt == "jsonl":
            frame.to_json(folder / f"{name}.jsonl", orient="records", lines=True, force_ascii=False)
        elif fmt == "parquet":
            frame.to_parquet(folder / f"{name}.parquet", index=False)
    if fmt == "arrow":
        import datasets

        splits = {
            name: datasets.Dataset.from_pandas(f, preserve_index=False)
            for name, f in zip(("train", "test"), (pool, test))
        }
        datasets.DatasetDict(splits).save_to_disk(str(folder))


def own(path: Path, **kw) -> DataParams:
    return DataParams(
        dataset="csv", path=str(path), text_column="review", label_column="stars", val_fraction=0.2, **kw
    )


@pytest.fixture(scope="module")
def from_csv(tmp_path_factory):
    folder = tmp_path_factory.mktemp("reference") / "csv"
    write_as("csv", folder)
    return make_splits(own(folder))


@pytest.mark.parametrize("fmt", ["tsv", "json", "jsonl", "parquet", "arrow"])
def test_every_format_gives_the_csv_files_prepared_rows(tmp_path, fmt, from_csv):
    write_as(fmt, tmp_path / fmt)
    splits, labels, stats = make_splits(own(tmp_path / fmt))
    ref_splits, ref_labels, ref_stats = from_csv
    assert labels == ref_labels == ["neg", "pos"]
    for name in ("train", "val", "test"):
        pd.testing.assert_frame_equal(splits[name], ref_splits[name])
    assert stats["format"] == {"jsonl": "json"}.get(fmt, fmt) and ref_stats["format"] == "csv"
    assert {k: v for k, v in stats.items() if k != "format"} == {k: v for k, v in ref_stats.items() if k != "format"}
    assert stats["dropped"] == {
        "empty_text": 1,
        "conflicting_label": 2,
        "duplicate_text": 1,
        "test_text_in_train": 1,
        "over_max_train_rows": 0,
    }


def test_explicit_format_reads_a_file_whatever_its_suffix(tmp_path):
    path = tmp_path / "reviews.txt"
    pd.DataFrame(POOL[:36], columns=["review", "stars"]).to_csv(path, index=False, sep="\t")
    source = read_source(own(path, format="tsv"))
    assert source.format == "tsv" and len(source.pool) == 36


def test_arrow_dataset_keeps_its_classlabel_order_and_hidden_test_is_set_aside(tmp_path, caplog):
    import datasets

    features = datasets.Features(
        {"review": datasets.Value("string"), "stars": datasets.ClassLabel(names=["pos", "neg"])}
    )
    train = datasets.Dataset.from_dict({"review": ["great", "awful", "fine"], "stars": [0, 1, 0]}, features=features)
    test = datasets.Dataset.from_dict({"review": ["?", "!"], "stars": [-1, -1]}, features=features)  # GLUE-style
    datasets.DatasetDict(train=train, test=test).save_to_disk(str(tmp_path / "saved"))
    source = read_source(own(tmp_path / "saved"))
    assert source.labels == ["pos", "neg"]  # the dataset's own id order, not sorted
    assert source.pool["label"].tolist() == ["pos", "neg", "pos"]
    assert source.test is None and "has no labels" in caplog.text
    # a single Dataset.save_to_disk folder is the pool
    train.save_to_disk(str(tmp_path / "one"))
    assert read_source(own(tmp_path / "one")).pool["text"].tolist() == ["great", "awful", "fine"]


def test_hub_name_offline_is_one_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    with pytest.raises(UserError) as err:
        read_source(DataParams(dataset="csv", path="lora-dvc-tests/no-such-dataset"))
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("data.path: 'lora-dvc-tests/no-such-dataset' is not a local file or folder")
    assert "not in the local cache while HF_HUB_OFFLINE=1 forbids downloading it; unset HF_HUB_OFFLINE" in message


@pytest.mark.parametrize(
    "name, content, params, message",
    [
        (
            "data.xlsx",
            b"PK",
            {},
            r"data.xlsx: cannot tell the format from the suffix '.xlsx'; set data.format to one of",
        ),
        ("data.jsonl", b"", {}, r"data.jsonl: the file is empty; it needs data rows"),
        ("data.jsonl", b'{"text": "a", "label": 1}\n{"text": broken\n', {}, r"data.jsonl: cannot be read as json \("),
        (
            "data.parquet",
            b"not parquet",
            {},
            r"data.parquet: cannot be read as parquet \(.*\); fix the file or set data.format",
        ),
        ("data.json", b"\xff\xfe{}", {}, r"data.json: not UTF-8 \(byte 0, line 1\)"),
        (
            "data.jsonl",
            b'{"text": "a", "label": 1}\n',
            {"text_pair_column": "second"},
            r"data.jsonl: no column 'second' \(columns: 'text', 'label'\); set data.text_pair_column",
        ),
    ],
)
def test_bad_own_data_is_one_line(tmp_path, name, content, params, message):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(UserError, match=message) as err:
        read_source(DataParams(dataset="csv", path=str(tmp_path / name), **params))
    assert "\n" not in str(err.value)


def test_missing_column_in_parquet_names_the_columns(tmp_path):
    pd.DataFrame({"sentence": ["a", "b"], "label": [0, 1]}).to_parquet(tmp_path / "train.parquet")
    with pytest.raises(
        UserError, match=r"train.parquet: no column 'text' \(columns: 'sentence', 'label'\); set data.text_column"
    ):
        read_source(DataParams(dataset="csv", path=str(tmp_path)))


def test_folder_without_a_pool_says_what_it_holds(tmp_path):
    (tmp_path / "notes.md").write_text("hello")
    with pytest.raises(UserError, match=r"holds no train/dev/val/validation file .* \(it holds: notes.md\)"):
        read_source(DataParams(dataset="csv", path=str(tmp_path)))


def test_own_data_params_are_refused_for_the_shipped_readers():
    with pytest.raises(UserError, match=r"data.text_pair_column applies to your own data \(data.dataset: csv\)"):
        read_source(DataParams(dataset="ag_news", path=str(FIXTURES / "ag_news"), text_pair_column="x"))


def test_hub_dataset_splits_pairs_and_label_names(monkeypatch):
    """The hub path without a network: load_dataset answers with a GLUE-like DatasetDict (MRPC's
    columns, its ClassLabel, a hidden test split, a validation split the pool does not need)."""
    import datasets

    features = datasets.Features(
        {
            "sentence1": datasets.Value("string"),
            "sentence2": datasets.Value("string"),
            "label": datasets.ClassLabel(names=["not_equivalent", "equivalent"]),
        }
    )

    def split(n: int, label: int | None) -> datasets.Dataset:
        rows = {"sentence1": [f"s{i}" for i in range(n)], "sentence2": [f"t{i}" for i in range(n)]}
        return datasets.Dataset.from_dict(
            rows | {"label": [i % 2 if label is None else label for i in range(n)]}, features=features
        )

    calls = []

    def load_dataset(name, subset):
        calls.append((name, subset))
        return datasets.DatasetDict(train=split(6, None), validation=split(2, None), test=split(3, -1))

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    source = read_source(
        DataParams(
            dataset="csv", path="nyu-mll/glue", subset="mrpc", text_column="sentence1", text_pair_column="sentence2"
        )
    )
    assert calls == [("nyu-mll/glue", "mrpc")]
    assert source.format == "hub" and source.files == ["nyu-mll/glue[train]"] and source.test is None
    assert source.labels == ["not_equivalent", "equivalent"]
    assert source.pool.columns.tolist() == ["text", "text_pair", "label"]
    assert source.pool.iloc[1].tolist() == ["s1", "t1", "equivalent"]
