"""The tokenize stage's fast path gives exactly what the tokenizer's own call gives."""

from __future__ import annotations

import pandas as pd
from conftest import FIXTURES
from transformers import AutoTokenizer

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
