"""Tokenization shared by the tokenize stage and the classifier loader: fast-path batch encoding of
texts or sentence pairs, truncation to max_length (and which rows it shortened), length statistics
per bucket, and the `model.max_length: auto` / `model.length_buckets: auto` choices.

Truncation (`model.truncation`): head keeps the first max_length tokens (transformers'
`truncation=True`); head_tail keeps a long single text's first quarter and last three quarters of
the text budget (max_length less the special tokens; the quarter rounded down), specials in place:
at 512 on BERT, [CLS] + 127 head + 383 tail + [SEP] (Sun et al. 2019). Texts that fit are
untouched. Sentence pairs are always truncated 'longest_first' (head of each side).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import weakref
from pathlib import Path

import numpy as np
from tqdm import tqdm

from lora_dvc.params import TRUNCATIONS, bucket_lengths

# rows per call of the Rust batch encoder: fewer, larger calls ran faster than smaller ones
CHUNK = 8192
# one private copy of each tokenizer's backend, made once (copying it is a large share of a small split's time)
_ENCODERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
HEAD_SHARE = 4  # head_tail: 1/HEAD_SHARE of the text budget from the head, the rest from the tail
# model.max_length: auto covers this percentile of the train split's token lengths, rounded up to a
# multiple of AUTO_STEP, at least AUTO_STEP, at most the model's positions and AUTO_BUDGET (compute:
# a step's cost grows with the length)
AUTO_PERCENTILE = 95
AUTO_STEP = 64
AUTO_BUDGET = 512


def tokenize_texts(
    tokenizer,
    texts: list[str],
    max_length: int,
    desc: str,
    progress: bool = True,
    pairs: list[str] | None = None,
    truncation: str = "head",
) -> tuple[list[list[int]], np.ndarray]:
    """Token ids truncated to max_length, and which rows were longer than that. With `pairs`, row i
    is the pair (texts[i], pairs[i]) as the tokenizer joins two sequences ([CLS] a [SEP] b [SEP] on
    BERT), truncated 'longest_first': one token at a time off the longer of the two. `truncation`:
    head | head_tail (module docstring; pairs are always truncated longest_first)."""
    if pairs is not None and len(pairs) != len(texts):
        raise ValueError(f"{len(texts)} texts but {len(pairs)} pair texts")
    if truncation not in TRUNCATIONS:
        raise ValueError(f"truncation {truncation!r}: expected one of {', '.join(TRUNCATIONS)}")
    head_tail = truncation == "head_tail" and pairs is None
    encode = _ENCODERS.get(tokenizer)
    if encode is None:
        encode = _ENCODERS[tokenizer] = _batch_encoder(tokenizer)
    inputs = texts if pairs is None else list(zip(texts, pairs))
    ids: list[list[int]] = []
    truncated = np.zeros(len(texts), dtype=bool)
    with tqdm(total=len(texts), desc=desc, unit="rows", mininterval=1.0, disable=not progress) as bar:
        for start in range(0, len(inputs), CHUNK):
            chunk = inputs[start : start + CHUNK]
            # one token over the limit tells which rows truncation shortens
            out = encode(chunk, max_length + 1)
            long_rows = [i for i, row in enumerate(out) if len(row) > max_length]
            if long_rows and head_tail:
                prefix, suffix = _special_ends(tokenizer)
                for i, row in zip(long_rows, encode([chunk[i] for i in long_rows], None)):
                    out[i] = cut_head_tail(row, max_length, prefix, suffix)
                    truncated[start + i] = True
            elif long_rows:
                for i, row in zip(long_rows, encode([chunk[i] for i in long_rows], max_length)):
                    out[i] = row
                    truncated[start + i] = True
            ids.extend(out)
            bar.update(len(chunk))
    return ids, truncated


def token_types(tokenizer, rows: list[list[int]]) -> list[list[int]] | None:
    """Pair rows' token type ids (segment A 0, segment B 1), as the tokenizer's own pair call returns them,
    for tokenizers whose models take them (BERT, ELECTRA, DeBERTa: `token_type_ids` in model_input_names);
    None for the rest (RoBERTa, XLM-R, DistilBERT, ModernBERT). Segment B starts after the first separator:
    `[CLS] a [SEP]` is 0s, `b [SEP]` 1s."""
    if "token_type_ids" not in getattr(tokenizer, "model_input_names", ()):
        return None
    sep = tokenizer.sep_token_id
    out = []
    for row in rows:
        first = row.index(sep) + 1 if sep in row else len(row)
        out.append([0] * first + [1] * (len(row) - first))
    return out


def cut_head_tail(ids: list[int], max_length: int, prefix: int, suffix: int) -> list[int]:
    """`ids` (with `prefix` leading and `suffix` trailing special tokens) cut to max_length: the
    specials kept, the first budget // HEAD_SHARE text tokens and the last of the rest."""
    if len(ids) <= max_length:
        return ids
    budget = max_length - prefix - suffix
    if budget <= 0:
        return ids[:max_length]
    head = budget // HEAD_SHARE
    tail = budget - head
    end = len(ids) - suffix
    return ids[: prefix + head] + ids[end - tail : end] + ids[end:]


_ENDS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _special_ends(tokenizer) -> tuple[int, int]:
    """How many special tokens the tokenizer puts before and after a single text ([CLS] / [SEP]: 1, 1)."""
    ends = _ENDS.get(tokenizer)
    if ends is None:
        mask = tokenizer("x y", return_special_tokens_mask=True)["special_tokens_mask"]
        prefix = next((i for i, m in enumerate(mask) if not m), len(mask))
        suffix = next((i for i, m in enumerate(reversed(mask)) if not m), 0)
        ends = _ENDS[tokenizer] = (prefix, suffix)
    return ends


def auto_length_cap(positions: int | None) -> int:
    """The longest `model.max_length: auto` may choose: the model's positions, at most AUTO_BUDGET."""
    return min(AUTO_BUDGET, positions) if positions else AUTO_BUDGET


def choose_max_length(lengths: np.ndarray, positions: int | None) -> int:
    """`model.max_length: auto`: the AUTO_PERCENTILE-th percentile of the train split's token lengths
    rounded up to a multiple of AUTO_STEP (at least AUTO_STEP), capped at auto_length_cap."""
    cap = auto_length_cap(positions)
    need = float(np.percentile(lengths, AUTO_PERCENTILE)) if len(lengths) else 0.0
    return int(min(cap, max(AUTO_STEP, math.ceil(need / AUTO_STEP) * AUTO_STEP)))


def tokenized_params(params, root: Path = Path("."), required: bool = True):
    """`params` with model.max_length, model.length_buckets and model.truncation as the tokenize stage
    applied them (data/tokenized/meta.json, via artifacts.read_tokenized_meta): what train, evaluate and
    predict use, so `auto` means the stage's choice. meta.json without `truncation` means head, without
    `length_buckets` params' buckets. No meta.json: params as they are, an error for auto unless not
    `required` (then None)."""
    from lora_dvc.artifacts import TOKENIZED_META, read_tokenized_meta
    from lora_dvc.errors import UserError

    model = params.model
    if not (root / TOKENIZED_META).exists():
        if "auto" not in (model.max_length, model.length_buckets):
            return params
        if not required:
            return None
        raise UserError(
            f"{TOKENIZED_META} not found: model.max_length / model.length_buckets auto are chosen by the "
            "tokenize stage; run `dvc repro tokenize` first"
        )
    meta = read_tokenized_meta(root)
    length = int(meta["max_length"])
    buckets = meta.get("length_buckets") or bucket_lengths(length, model.length_buckets)
    model = dataclasses.replace(
        model, max_length=length, length_buckets=list(buckets), truncation=meta.get("truncation", "head")
    )
    return dataclasses.replace(params, model=model)


def _batch_encoder(tokenizer):
    """encode(inputs, max_length) -> lists of ids, with special tokens, truncated (max_length None:
    not truncated), unpadded; an input is a text or a (text, text_pair) tuple.

    A fast tokenizer's Rust backend is called directly (`encode_batch_fast` skips the character
    offsets that transformers' wrapper computes and we never use): the same ids, more rows/s.
    Other tokenizers go through the usual call.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or not hasattr(backend, "encode_batch_fast"):

        def slow(inputs: list, max_length: int) -> list[list[int]]:
            if inputs and isinstance(inputs[0], tuple):
                first, second = (list(side) for side in zip(*inputs))
                out = tokenizer(first, second, truncation="longest_first", max_length=max_length)
            else:
                out = tokenizer(inputs, truncation=max_length is not None, max_length=max_length)
            return out["input_ids"]

        return slow
    backend = copy.deepcopy(backend)  # leave the caller's tokenizer settings alone
    backend.no_padding()

    def encode(inputs: list, max_length: int) -> list[list[int]]:
        if max_length is None:
            backend.no_truncation()
        else:
            backend.enable_truncation(max_length=max_length, strategy="longest_first")
        return [e.ids for e in backend.encode_batch_fast(inputs, add_special_tokens=True)]

    return encode


def bucket_of(lengths, buckets: list[int]) -> np.ndarray:
    """Index of the smallest bucket (`buckets` ascending) that holds each length, or of the last bucket for a
    longer one: the one rule for the tokenize stage's bucket counts, inference batches and XLA's padding."""
    return np.searchsorted(np.asarray(buckets), lengths, side="left").clip(max=len(buckets) - 1)


def length_stats(lengths: np.ndarray, truncated: np.ndarray, buckets: list[int]) -> dict:
    counts = np.bincount(bucket_of(lengths, buckets), minlength=len(buckets))
    return {
        "rows": int(len(lengths)),
        "tokens_mean": round(float(lengths.mean()), 2),
        "tokens_p50": int(np.percentile(lengths, 50)),
        "tokens_p95": int(np.percentile(lengths, 95)),
        "tokens_max": int(lengths.max()),
        "truncated_fraction": round(float(truncated.mean()), 4),
        "bucket_rows": {str(b): int(c) for b, c in zip(buckets, counts)},
    }
