"""The tokenize stage's fast path gives exactly what the tokenizer's own call gives; head_tail
truncation and the auto length; inference batches over the tokenized rows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import FIXTURES
from transformers import AutoTokenizer

import stages.tokenize
from lora_dvc.errors import UserError
from lora_dvc.params import auto_buckets, bucket_lengths, load_params, parse_params
from lora_dvc.tokenization import (
    AUTO_BUDGET,
    AUTO_PERCENTILE,
    AUTO_STEP,
    choose_max_length,
    cut_head_tail,
    tokenized_params,
)
from stages.tokenize import tokenize_texts


def test_backend_ids_and_truncation_match_the_tokenizer_call(tiny_model):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    texts = pd.read_csv(FIXTURES / "ag_news" / "test.tsv", sep="\t", header=None, quoting=3)[0].astype(str).tolist()
    texts += ["", "   ", "word " * 200, "café – naïve ✓ 東京"]
    max_length = 24  # short enough that many real rows are truncated
    ids, truncated = tokenize_texts(tokenizer, texts, max_length, "test")
    expected = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    assert ids == expected
    untruncated = tokenizer(texts)["input_ids"]
    assert truncated.tolist() == [len(row) > max_length for row in untruncated]
    assert 0 < truncated.sum() < len(texts)
    # the caller's tokenizer keeps its own settings
    assert len(tokenizer("word " * 200)["input_ids"]) > max_length


# -- model.truncation: head_tail, model.max_length / length_buckets: auto --------------------------


def _words(n: int) -> str:
    return " ".join(f"w{i}" for i in range(n))


def test_head_tail_keeps_first_quarter_and_last_rest_with_specials(tiny_model):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    text = _words(200)
    full = tokenizer(text)["input_ids"]
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    assert full[0] == cls and full[-1] == sep and len(full) > 100
    max_length = 42  # text budget 40: 10 from the head, 30 from the tail
    (ids,), truncated = tokenize_texts(tokenizer, [text], max_length, "test", truncation="head_tail")
    assert truncated.tolist() == [True]
    assert len(ids) == max_length
    assert ids == [cls] + full[1:11] + full[-31:-1] + [sep]
    assert ids[0] == cls and ids[-1] == sep and ids.count(cls) == 1 and ids.count(sep) == 1


def test_head_tail_equals_head_on_texts_that_fit_and_on_pairs(tiny_model):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    texts = pd.read_csv(FIXTURES / "ag_news" / "test.tsv", sep="\t", header=None, quoting=3)[0].astype(str).tolist()
    head, cut = tokenize_texts(tokenizer, texts, 512, "test")
    assert not cut.any()  # none longer than 512: head_tail leaves every row as head does
    assert tokenize_texts(tokenizer, texts, 512, "test", truncation="head_tail")[0] == head
    pairs = [_words(80)] * len(texts[:5])
    args = (tokenizer, texts[:5], 32, "test")
    assert tokenize_texts(*args, pairs=pairs, truncation="head_tail")[0] == tokenize_texts(*args, pairs=pairs)[0]


def test_cut_head_tail_rule():
    ids = list(range(100))  # 0 and 99 stand for the specials
    assert cut_head_tail(ids, 512, 1, 1) == ids
    out = cut_head_tail(ids, 10, 1, 1)  # budget 8: 2 head, 6 tail
    assert out == [0, 1, 2, 93, 94, 95, 96, 97, 98, 99]
    # Sun et al.'s split at 512 with [CLS]/[SEP]: 127 head + 383 tail tokens
    long = list(range(2000))
    out = cut_head_tail(long, 512, 1, 1)
    assert out[:128] == long[:128] and out[128:] == long[-384:]


def test_auto_max_length_covers_the_percentile_rounded_and_capped():
    lengths = np.array([40] * 90 + [150] * 10)  # p95 = 150 -> 192
    assert choose_max_length(lengths, 512) == 192
    assert choose_max_length(np.array([30] * 100), 512) == AUTO_STEP  # never below one step
    assert choose_max_length(np.array([120] * 100), 512) == 128  # AG News-like: the default length
    assert choose_max_length(np.array([300] * 100), 256) == 256  # the model's positions
    assert choose_max_length(np.array([3000] * 100), 4096) == AUTO_BUDGET  # the compute budget
    assert choose_max_length(np.array([3000] * 100), None) == AUTO_BUDGET
    assert AUTO_PERCENTILE == 95


def test_auto_buckets_are_quarters():
    assert auto_buckets(128) == [32, 64, 96, 128]
    assert auto_buckets(384) == [96, 192, 288, 384]
    assert bucket_lengths(384, "auto") == [96, 192, 288, 384]
    assert bucket_lengths(100, [32, 64, 96, 128]) == [32, 64, 96, 100]


def test_inference_batches_pad_to_their_longest_row_and_score_as_bucketed_ones(tiny_model):
    """CPU/CUDA batches: length-sorted, padded to the longest row rounded up to 8, never past the last
    bucket (60 here is no multiple of 8); fewer padded tokens than bucket padding, the same probabilities."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from lora_dvc.artifacts import TokenizedSplit
    from lora_dvc.batching import make_batches
    from lora_dvc.device import Runtime
    from lora_dvc.inference import batched_probabilities
    from lora_dvc.task import Task

    rng = np.random.default_rng(0)
    rows = [rng.integers(1000, 2000, n).tolist() for n in rng.integers(2, 61, 50)]
    split, buckets = TokenizedSplit.from_ids(rows), [12, 32, 60]
    dynamic = make_batches(split, buckets, 8)
    assert sorted(np.concatenate([r for _, r in dynamic]).tolist()) == list(range(50))
    for length, batch in dynamic:
        longest = int(split.lengths[batch].max())
        assert length == min(-(-longest // 8) * 8, 60), (length, longest)
    assert split.lengths.max() == 59 and dynamic[-1][0] == 60  # the cap is met: 59 would round up to 64
    static = make_batches(split, buckets, 8, static_shapes=True)
    assert {length for length, _ in static} == set(buckets)

    def padded(batches):
        return sum(length * len(batch) for length, batch in batches)

    assert padded(dynamic) < 0.9 * padded(static)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=3)
    cpu, static, task = Runtime(torch.device("cpu")), Runtime(torch.device("cpu"), static_shapes=True), Task("abc")
    probs = batched_probabilities(model, split, cpu, task, buckets, 8, 0)
    np.testing.assert_allclose(probs, batched_probabilities(model, split, static, task, buckets, 8, 0), atol=1e-5)
    assert not np.isnan(probs).any()


def _prepared(tmp_path: Path, tiny_model: Path, model: dict) -> None:
    frame = pd.DataFrame({"text": [_words(n) for n in (10, 20, 30, 200, 40, 50)] * 4, "label": [0, 1] * 12})
    (tmp_path / "data/prepared").mkdir(parents=True)
    for split in ("train", "val", "test"):
        frame.to_csv(tmp_path / f"data/prepared/{split}.csv", index=False)
    (tmp_path / "data/prepared/labels.json").write_text(json.dumps(["a", "b"]))
    params = {"model": {"name": str(tiny_model), **model}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))


def test_stage_records_the_auto_choice_and_train_reads_it(tmp_path, tiny_model, monkeypatch):
    _prepared(tmp_path, tiny_model, {"max_length": "auto", "length_buckets": "auto", "truncation": "head_tail"})
    monkeypatch.chdir(tmp_path)
    stages.tokenize.main()
    meta = json.loads(Path("data/tokenized/meta.json").read_text())
    # p95 of the train lengths is the 200-word row (> 128 tokens); the tiny BERT has 128 positions
    assert meta["max_length"] == 128 and meta["length_buckets"] == [32, 64, 96, 128]
    assert meta["truncation"] == "head_tail" and meta["auto"]["positions"] == 128
    choice = json.loads(Path("records/tokenize.json").read_text())["choice"]
    assert choice == {k: meta[k] for k in ("max_length", "length_buckets", "truncation", "auto")}
    resolved = tokenized_params(load_params())
    assert (resolved.model.max_length, resolved.model.truncation) == (128, "head_tail")
    assert resolved.buckets == [32, 64, 96, 128]


def test_fixed_head_meta_keeps_its_three_keys(tmp_path, tiny_model, monkeypatch):
    # a fixed length cut at the head writes meta.json as it was before auto and head_tail existed
    _prepared(tmp_path, tiny_model, {"max_length": 64, "length_buckets": [16, 32, 64], "truncation": "head"})
    monkeypatch.chdir(tmp_path)
    stages.tokenize.main()
    meta = json.loads(Path("data/tokenized/meta.json").read_text())
    assert sorted(meta) == ["max_length", "pad_token_id", "tokenizer"] and meta["max_length"] == 64
    assert tokenized_params(load_params()).model.truncation == "head"


def test_auto_without_tokenized_data_is_one_line(tmp_path, tiny_model):
    _prepared(tmp_path, tiny_model, {"max_length": "auto"})
    with pytest.raises(UserError) as err:
        tokenized_params(load_params(tmp_path / "params.yaml"), tmp_path)
    assert "dvc repro tokenize" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    "key, value, fragment",
    [
        ("max_length", "long", "'model.max_length' is 'long', allowed: an integer in [8, 8192] or auto"),
        ("max_length", 4, "allowed: an integer in [8, 8192] or auto"),
        ("length_buckets", "quarters", "allowed: a non-empty list of positive integers or auto"),
        ("truncation", "tail", "'model.truncation' is 'tail', allowed: head | head_tail"),
    ],
)
def test_bad_length_values_are_one_line(key, value, fragment):
    with pytest.raises(UserError) as err:
        parse_params({"model": {key: value}})
    assert fragment in str(err.value) and "\n" not in str(err.value)
