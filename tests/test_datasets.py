"""Readers on small real excerpts of the shipped datasets."""

from __future__ import annotations

import pytest
from conftest import FIXTURES

from lora_dvc.datasets import AG_NEWS_LABELS, BANGLASENTI_LABELS, clean_ag_news, read_source
from lora_dvc.errors import UserError
from lora_dvc.params import DataParams


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
