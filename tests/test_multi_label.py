"""Multi-label rows (data.multi_label): reading a delimiter CSV and a JSON-lines list column, cleaning
and hygiene counts on label sets, the metrics (checked against scikit-learn), the train tally, and
one line for each bad input. The pipeline run (a multi-label sentence-pair task through `dvc repro`,
predict and export) is tests/test_prepare.py's test_a_multi_label_pair_task_learns_through_the_pipeline."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from lora_dvc.artifacts import multi_hot
from lora_dvc.datasets import read_source
from lora_dvc.errors import UserError
from lora_dvc.params import DataParams, parse_params
from lora_dvc.splits import make_splits


def own(path, **kw) -> DataParams:
    return DataParams(dataset="csv", path=str(path), multi_label=True, **kw)


def test_a_delimiter_csv_gives_label_sets_in_id_order(tmp_path):
    path = tmp_path / "news.csv"
    path.write_text("text,tags\nfirst,sports|politics\nsecond, politics \nthird,tech|sports|sports\n")
    source = read_source(own(path, label_column="tags", label_delimiter="|"))
    assert source.labels == ["politics", "sports", "tech"]  # sorted unique labels
    assert source.pool["label"].tolist() == [("politics", "sports"), ("politics",), ("sports", "tech")]


def test_a_jsonl_list_column_needs_no_delimiter_and_takes_ids(tmp_path):
    path = tmp_path / "rows.jsonl"
    rows = [{"text": "a", "label": ["y", "x"]}, {"text": "b", "label": ["1"]}, {"text": "c", "label": ["x"]}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    source = read_source(own(path, labels=["x", "y"]))
    assert source.format == "json"
    assert source.pool["label"].tolist() == [("x", "y"), ("y",), ("x",)]  # "1" is the id of y


def test_cleaning_and_hygiene_counts_work_on_label_sets(tmp_path):
    lines = ["text,tags"]
    lines += [f"row {i},{['a|b', 'b', 'c|a'][i % 3]}" for i in range(60)]
    lines += ["row 1,b", "row 2,a|c", "row 5,c"]  # a duplicate, the same set in another order, a conflict
    (tmp_path / "train.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "test.csv").write_text("text,tags\nrow 0,a|b\nnew one,b|c\nnew two,a\n")
    splits, labels, stats = make_splits(own(tmp_path, label_column="tags", label_delimiter="|", val_fraction=0.2))
    assert labels == ["a", "b", "c"]
    assert stats["multi_label"] is True
    assert stats["dropped"] == {
        "empty_text": 0,
        "conflicting_label": 2,  # "row 5" with {a, c} and with {c}: both copies
        "duplicate_text": 2,
        "test_text_in_train": 1,
        "over_max_train_rows": 0,
    }
    assert stats["rows"] == {"train": 47, "val": 12, "test": 2}
    train = splits["train"]
    assert list(train.columns) == ["text", "labels"]
    hot = multi_hot(train, 3)
    assert stats["class_counts"]["train"] == dict(zip(labels, hot.sum(0).tolist()))
    assert set(train["labels"]) <= {"0|1", "1", "0|2"}
    assert not set(train["text"]) & set(splits["val"]["text"])


def test_stratification_falls_back_to_none_when_a_first_label_is_too_rare(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("text,tags\n" + "".join(f"t{i},{'b' if i else 'a|b'}\n" for i in range(30)))
    splits, _, stats = make_splits(own(path, label_column="tags", label_delimiter="|"))
    assert sum(stats["rows"].values()) == 30  # "a" first in one row only: split unstratified, not refused


@pytest.mark.parametrize(
    "content, params, message",
    [
        (
            "text,label\na,x|y\nb,\n",
            {"label_delimiter": "|"},
            r"1 rows have an empty label cell \(first at data row 2\)",
        ),
        ("text,label\na,x|y\n", {}, r"holds text, not lists .*set data.label_delimiter"),
        ("text,label\na,x|zz\n", {"label_delimiter": "|", "labels": ["x", "y"]}, r"outside the label set"),
    ],
)
def test_bad_multi_label_input_is_one_line(tmp_path, content, params, message):
    path = tmp_path / "data.csv"
    path.write_text(content)
    with pytest.raises(UserError, match=message) as err:
        read_source(own(path, **params))
    assert "\n" not in str(err.value)


def test_a_list_column_without_multi_label_and_misplaced_keys_are_one_line(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"text": "a", "label": ["x", "y"]}\n{"text": "b", "label": ["x"]}\n')
    with pytest.raises(UserError, match=r"holds lists of labels .*set data.multi_label: true"):
        read_source(DataParams(dataset="csv", path=str(path)))
    with pytest.raises(UserError, match=r"data.label_delimiter='\|' .* data.multi_label is false"):
        parse_params({"data": {"dataset": "csv", "label_delimiter": "|"}})
    with pytest.raises(UserError, match=r"data.multi_label applies to your own data"):
        read_source(DataParams(multi_label=True))
    with pytest.raises(UserError, match=r"'evaluate.threshold' is 1, allowed: a number in \(0, 1\)"):
        parse_params({"evaluate": {"threshold": 1}})


def test_multi_label_metrics_match_sklearn_and_the_floor():
    from sklearn.metrics import accuracy_score, f1_score, log_loss

    from lora_dvc.metrics import compared_test, test_summary

    truth = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 1], [1, 0, 1], [0, 1, 0]])
    probs = np.array([[0.9, 0.2, 0.1], [0.8, 0.4, 0.1], [0.1, 0.1, 0.7], [0.6, 0.5, 0.55], [0.3, 0.9, 0.2]])
    train = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]])
    m = test_summary(truth, train, probs, ["a", "b", "c"], threshold=0.5)
    preds = (probs >= 0.5).astype(int)
    assert m["accuracy"] == pytest.approx(accuracy_score(truth, preds), abs=1e-6) == 0.6
    assert m["macro_f1"] == pytest.approx(f1_score(truth, preds, average="macro"), abs=1e-6)
    assert m["micro_f1"] == pytest.approx(f1_score(truth, preds, average="micro"), abs=1e-6)
    assert m["loss"] == pytest.approx(log_loss(truth.ravel(), probs.ravel()), abs=1e-6)
    # b at 0.5 in row 4 counts as predicted (at or above the threshold): one tp, one fp, one fn
    assert m["per_class"]["b"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert m["per_label_counts"]["c"] == {"tp": 2, "fp": 0, "fn": 0, "tn": 3}
    floor = np.tile([1, 0, 0], (5, 1))  # train's most frequent set: {a}
    assert m["majority_label_set"] == ["a"]
    assert m["majority_accuracy"] == pytest.approx(accuracy_score(truth, floor)) == 0.2
    assert m["majority_micro_f1"] == pytest.approx(f1_score(truth, floor, average="micro"), abs=1e-6)
    assert m["learned"] is True
    assert test_summary(truth, train, probs, ["a", "b", "c"], threshold=0.95)["learned"] is False
    assert list(compared_test(m)["test"]) == ["accuracy", "macro_f1", "loss", "micro_f1", "learned"]


def test_the_train_tally_counts_subset_accuracy_and_label_f1():
    import torch

    from lora_dvc.callbacks import Tally

    tally = Tally(3, multi_label=True)
    labels = torch.tensor([[1.0, 0, 0], [1, 1, 0], [0, 0, 1]])
    logits = torch.tensor([[2.0, -1, -1], [1, -1, -1], [-1, -1, 3]])  # rows 1 and 3 exact
    tally.add(torch.tensor(0.5), logits, labels)
    state = json.loads(json.dumps(tally.reduced_state()))  # as a checkpoint keeps it
    summary = Tally.summary(state)
    assert summary["accuracy"] == pytest.approx(2 / 3)
    assert summary["macro_f1"] == pytest.approx((1 + 0 + 1) / 3)  # label b: never predicted
    assert summary["rows"] == 3 and summary["loss"] == pytest.approx(0.5)
    restored = Tally(3, state, multi_label=True)
    restored.add(torch.tensor(0.5), logits, labels)
    assert Tally.summary(restored.reduced_state())["rows"] == 6


def test_predict_writes_label_sets(tmp_path):
    from lora_dvc.classifier import Classifier
    from lora_dvc.predict import Sets, flat_table, records
    from lora_dvc.task import Task

    clf = Classifier(None, None, Task(("a", "b"), multi_label=True, delimiter="|"), "lora", None, tmp_path)
    probs = np.array([[0.9, 0.7], [0.2, 0.1]], dtype=np.float32)
    sets = Sets(clf, probs)
    frame = pd.DataFrame({"text": ["x", "y"]})
    assert [r["predicted"] for r in records(frame, probs, ["a", "b"], sets)] == [["a", "b"], []]
    table = flat_table(frame, probs, ["a", "b"], sets)
    assert table["predicted"].tolist() == ["a|b", ""]
    assert table["confidence"].tolist() == pytest.approx([0.7, 0.8])


def test_a_lora_adapter_of_a_multi_label_run_loads_as_multi_label(tmp_path, tiny_model):
    """models/classifier holds only the adapter: the tokenize stage's meta.json says the run was multi-label,
    and the loaded head then gives per-label sigmoids, as plain peft gives them over the same base."""
    import torch
    from peft import PeftModel

    from lora_dvc.artifacts import TOKENIZED_META
    from lora_dvc.classifier import load_classifier
    from lora_dvc.modeling import apply_method, load_base_model
    from lora_dvc.params import LoraParams
    from lora_dvc.task import MULTI_LABEL

    labels = ["sports", "science", "politics"]
    torch.manual_seed(0)
    model = apply_method(
        load_base_model(str(tiny_model), labels, MULTI_LABEL), "lora", LoraParams(r=4, alpha=8, targets="all")
    )
    adapter = tmp_path / "models/classifier"
    model.save_pretrained(adapter)
    (tmp_path / TOKENIZED_META).parent.mkdir(parents=True)
    (tmp_path / TOKENIZED_META).write_text(json.dumps({"multi_label": True, "max_length": 32}))

    clf = load_classifier("models/classifier", root=tmp_path, labels=labels, base=str(tiny_model), device="cpu")
    assert clf.multi_label and clf.model.config.problem_type == MULTI_LABEL
    texts = ["the match ended in a draw", "a new vaccine was tested"]
    probs = clf.probabilities(texts)
    assert probs.shape == (2, 3) and not np.allclose(probs.sum(axis=1), 1.0)

    base = load_base_model(str(tiny_model), labels, MULTI_LABEL)
    plain = PeftModel.from_pretrained(base, adapter).eval()
    with torch.no_grad():
        batch = clf.tokenizer(texts, padding=True, truncation=True, max_length=32, return_tensors="pt")
        expected = plain(**batch).logits.sigmoid().numpy()
    np.testing.assert_allclose(probs, expected, atol=1e-5)
