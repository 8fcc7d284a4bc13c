"""Split hygiene: cleaning counts, no text in two splits, stratification; sentence pairs from the
cleaning of whole pairs through their encoding to a multi-label pair task the pipeline learns."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import FIXTURES
from helpers import dvc, make_repo, run, write_params

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


# -- sentence pairs: a row's text is the pair (text, text_pair) ---------------------------------


def write_pairs(path: Path, rows) -> None:
    pd.DataFrame(rows, columns=["premise", "hypothesis", "label"]).to_csv(path, index=False)


def pair_params(path: Path, **kw) -> DataParams:
    return DataParams(
        dataset="csv", path=str(path), text_column="premise", text_pair_column="hypothesis", val_fraction=0.2, **kw
    )


def pairs(split) -> set:
    return set(zip(split["text"], split["text_pair"]))


def test_pair_cleaning_compares_whole_pairs(tmp_path):
    pool = [(f"q{i}", f"a{i}", ["yes", "no"][i % 2]) for i in range(30)]
    pool += [("q0", " a0 ", "yes")]  # the same pair again (after stripping): dropped
    pool += [("q0", "another answer", "no")]  # the same text with another partner: a new example, kept
    pool += [("q1", "  ", "no")]  # an empty side: dropped as empty
    pool += [("clash", "x", "yes"), ("clash", "x", "no")]  # one pair, two labels: both dropped
    pool += [("clash", "y", "no")]  # the same text with another partner carries its own label: kept
    test = [("q2", "a2", "yes"), ("q3", "not a3", "no"), ("fresh", "pair", "yes"), ("fresh", "other", "no")]
    (tmp_path / "d").mkdir()
    write_pairs(tmp_path / "d" / "train.csv", pool)
    write_pairs(tmp_path / "d" / "test.csv", test)
    splits, labels, stats = make_splits(pair_params(tmp_path / "d"))
    assert stats["dropped"] == {
        "empty_text": 1,
        "conflicting_label": 2,
        "duplicate_text": 1,
        "test_text_in_train": 1,  # (q2, a2) is in the pool; (q3, not a3) is not
        "over_max_train_rows": 0,
    }
    assert stats["text_pair_column"] == "hypothesis" and stats["format"] == "csv"
    assert labels == ["no", "yes"]
    assert all(list(s.columns) == ["text", "text_pair", "label"] for s in splits.values())
    kept = pairs(splits["train"]) | pairs(splits["val"])
    assert {("q0", "a0"), ("q0", "another answer"), ("clash", "y")} <= kept and ("clash", "x") not in kept
    assert pairs(splits["test"]) == {("q3", "not a3"), ("fresh", "pair"), ("fresh", "other")}
    assert not (pairs(splits["train"]) & pairs(splits["val"])) and not (kept & pairs(splits["test"]))


def test_prepared_pairs_survive_the_csv_round_trip(tmp_path, monkeypatch):
    from lora_dvc import artifacts

    monkeypatch.chdir(tmp_path)
    split = pd.DataFrame({"text": ["a, b", "NA"], "text_pair": ["", "null"], "label": [0, 1]})
    artifacts.write_prepared({"train": split}, ["x", "y"])
    back = artifacts.read_prepared("train")
    assert back["text_pair"].tolist() == ["", "null"] and back["text"].tolist() == ["a, b", "NA"]


def test_pairs_are_encoded_with_the_tokenizers_pair_api():
    from lora_dvc.modeling import load_tokenizer
    from lora_dvc.tokenization import tokenize_texts

    tokenizer = load_tokenizer("sentence-transformers/all-MiniLM-L6-v2")
    first = ["a short premise", "a much longer premise with many more words than the other one has", "x"]
    second = ["and a long hypothesis that goes on and on for quite a while here", "short", "y z"]
    ids, truncated = tokenize_texts(tokenizer, first, 16, "test", progress=False, pairs=second)
    assert ids == tokenizer(first, second, truncation="longest_first", max_length=16)["input_ids"]
    assert truncated.tolist() == [True, True, False]
    assert all(row.count(tokenizer.sep_token_id) == 2 for row in ids)


def test_pair_token_types_are_the_tokenizers_and_reach_the_model_inputs():
    import copy

    from lora_dvc.artifacts import TokenizedSplit
    from lora_dvc.batching import collate, model_inputs
    from lora_dvc.collators import BucketCollator, SplitDataset
    from lora_dvc.modeling import load_tokenizer
    from lora_dvc.tokenization import token_types, tokenize_texts

    tokenizer = load_tokenizer("sentence-transformers/all-MiniLM-L6-v2")  # BERT: segment B has type 1
    first, second = ["a premise here", "another premise that runs much longer than that"], ["yes it is", "no"]
    ids, _ = tokenize_texts(tokenizer, first, 12, "test", progress=False, pairs=second)
    types = token_types(tokenizer, ids)
    assert types == tokenizer(first, second, truncation="longest_first", max_length=12)["token_type_ids"]
    assert all(1 in row for row in types)
    split = TokenizedSplit.from_ids(ids, [0, 1], types)
    batch = collate(split, 16, [0, 1], tokenizer.pad_token_id)
    assert batch["token_type_ids"].tolist()[0] == types[0] + [0] * (16 - len(types[0]))  # padding is type 0
    assert set(model_inputs(batch, "cpu")) == {"input_ids", "attention_mask", "token_type_ids"}
    rows = [SplitDataset(split)[i] for i in range(2)]
    assert (
        BucketCollator([8, 16], tokenizer.pad_token_id)(rows)["token_type_ids"].tolist()
        == batch["token_type_ids"].tolist()
    )
    no_types = copy.deepcopy(tokenizer)  # as RoBERTa's, XLM-R's, DistilBERT's: no token_type_ids
    no_types.model_input_names = ["input_ids", "attention_mask"]
    assert token_types(no_types, ids) is None
    assert "token_type_ids" not in collate(TokenizedSplit.from_ids(ids, [0, 1]), 16, [0, 1], 0)


def test_predict_reads_the_pair_column_or_names_the_columns(tmp_path):
    from lora_dvc.predict import read_input

    path = tmp_path / "pairs.csv"
    write_pairs(path, [("p", "h", "yes")])
    assert read_input(str(path), "csv", "premise", "hypothesis")["hypothesis"].tolist() == ["h"]
    with pytest.raises(
        UserError, match=r"no column 'second' \(columns: 'premise', 'hypothesis', 'label'\); set --text-pair-column"
    ):
        read_input(str(path), "csv", "premise", "second")


PAIR_FILLER = "the a of and to in is was for on that with as by at from it this be are have has had not but or".split()
# one keyword a label: a 2-layer, 32-wide random model learns three keyword detectors in a few dozen steps
PAIR_KEYWORDS = {"money": ["stock"], "science": ["planet"], "sports": ["football"]}


def multi_label_pair_rows(n: int, seed: int = 0) -> list[tuple[str, str, str]]:
    """A question that carries no label signal, and an answer with the keyword of each of its 1-3 labels,
    three times each, among filler, the labels joined by '|': only a model that reads the second text, and
    gives each label its own yes/no, beats always predicting the most frequent label set."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        labels = rng.sample(list(PAIR_KEYWORDS), k=rng.choices([1, 2, 3], weights=[5, 3, 2])[0])
        answer = rng.choices(PAIR_FILLER, k=rng.randint(2, 5))
        for label in labels:
            for _ in range(3):
                answer.insert(rng.randrange(len(answer) + 1), rng.choice(PAIR_KEYWORDS[label]))
        question = "which topic " + " ".join(rng.choices(PAIR_FILLER, k=rng.randint(2, 5)))
        rows.append((question, " ".join(answer), "|".join(labels)))
    return rows


@pytest.mark.integration
def test_a_multi_label_pair_task_learns_through_the_pipeline(tmp_path, tiny_model):
    """One `dvc repro` for two input paths. Sentence pairs catch the second text never reaching the model
    (prepare, tokenize or train dropping it) and predict encoding pairs differently from the tokenize stage;
    multi-label rows catch label sets lost on the way (prepare's ids, tokenize's multi-hot rows, train's BCE
    loss and sigmoid val metrics), evaluate's threshold, predict's label sets and export's sigmoid check."""
    repo = make_repo(tmp_path / "repo", tiny_model)
    (repo / "data/raw/pairs").mkdir(parents=True)
    write_pairs(repo / "data/raw/pairs/pairs.csv", multi_label_pair_rows(300))
    write_params(
        repo,
        {
            "data": {
                "dataset": "csv",
                "path": "data/raw/pairs/pairs.csv",
                "text_column": "premise",
                "text_pair_column": "hypothesis",
                "multi_label": True,
                "label_delimiter": "|",
                "val_fraction": 0.2,
                "test_fraction": 0.2,
            },
            # every weight: LoRA over the tiny model's random, frozen embeddings learns three independent
            # keyword detectors far slower than one (r8 on all layers, lr 0.05: val loss 0.69 -> 0.68 in 8 epochs)
            "train": {"method": "full", "epochs": 6, "lr": 0.005, "checkpoint_every": 0},
        },
    )
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "multi-label pair task"], repo)
    dvc(["repro", "export"], repo)  # not the report: its figures cost seconds and test nothing of this

    assert (repo / "data/prepared/train.csv").read_text().startswith("text,text_pair,labels\n")
    with np.load(repo / "data/tokenized/train.npz") as npz:
        sep = int(np.sum(npz["ids"] == 102))  # MiniLM's [SEP]: two per pair, one per single text
        assert sep == 2 * (len(npz["offsets"]) - 1)
        assert npz["labels"].shape == (len(npz["offsets"]) - 1, 3)  # multi-hot rows
        assert npz["types"].shape == npz["ids"].shape and npz["types"].any()  # BERT: segment B is type 1
    test = json.loads((repo / "records/evaluate/metrics.json").read_text())["test"]
    assert test["learned"] is True, json.dumps(test)
    assert test["macro_f1"] >= test["majority_macro_f1"] + 0.3, test
    assert test["micro_f1"] >= test["majority_micro_f1"] + 0.15, test
    assert test["accuracy"] >= test["majority_accuracy"] + 0.08, test  # subset accuracy: not "every label, always"
    assert set(json.loads((repo / "metrics/test.json").read_text())["test"]) >= {"accuracy", "macro_f1", "micro_f1"}

    # predict, given the same pairs, gives evaluate's label sets (both on train.device and train.precision)
    args = ["--file", "data/prepared/test.csv", "--text-pair-column", "text_pair", "--out", "predicted.csv"]
    run([sys.executable, "-m", "lora_dvc.predict", *args], repo)
    predicted = pd.read_csv(repo / "predicted.csv", keep_default_na=False)["predicted"].tolist()
    evaluated = pd.read_csv(repo / "records/evaluate/predictions.csv", keep_default_na=False)
    assert predicted == evaluated["predicted"].tolist()
    assert any("|" in p for p in predicted)  # label sets, not single labels
    # the export reloads with plain transformers (its check compared sigmoids) and says how to threshold
    assert json.loads((repo / "models/export/config.json").read_text())["problem_type"] == "multi_label_classification"
    assert "Multi-label" in (repo / "models/export/README.md").read_text()
