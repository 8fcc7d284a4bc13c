"""Every file that passes between stages: its path, and the one function that writes or reads it.

`dvc.yaml` names the same paths (it cannot import Python); tests/test_stage_deps.py checks that
each path here appears there, so the two cannot drift. A stage never builds a path by itself.

`metrics/` holds only the numbers compared across experiments (`dvc exp show`, `dvc metrics show`);
`records/` holds everything else a run produced (data hygiene, token lengths, per-class scores,
provenance, DVCLive's curves), read by the report, the model card and `lora-dvc compare`.
Which stage writes and reads each path: README.md's stage table and docs/architecture.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lora_dvc.atomic import atomic_dir, atomic_path, write_json
from lora_dvc.errors import UserError

SPLITS = ("train", "val", "test")
LABEL_JOIN = "|"  # multi-label prepared splits: a row's label ids joined by this ("0|2")

PREPARED = Path("data/prepared")
LABELS = PREPARED / "labels.json"
TOKENIZED = Path("data/tokenized")
TOKENIZED_META = TOKENIZED / "meta.json"
MODEL = Path("models/classifier")
EXPORT = Path("models/export")
PREPARE_STATS = Path("records/prepare.json")
TOKENIZE_STATS = Path("records/tokenize.json")
TRAIN_METRICS = Path("metrics/train.json")  # val.*, fit.*: compared across experiments
TEST_METRICS = Path("metrics/test.json")  # test.*: compared across experiments
TRAIN_LIVE = Path("records/train")
TRAIN_SUMMARY = TRAIN_LIVE / "metrics.json"  # DVCLive's summary: every detail of the run
TRAIN_PLOTS = TRAIN_LIVE / "plots/metrics"
EVAL_LIVE = Path("records/evaluate")
EVAL_SUMMARY = EVAL_LIVE / "metrics.json"  # per-class scores, confidence, majority floor
EVAL_PREDICTIONS = EVAL_LIVE / "predictions.csv"
CONFUSION = EVAL_LIVE / "plots/sklearn/confusion_matrix.json"
REPORT = Path("reports/report.md")
REPORT_PLOTS = Path("plots")
COMPARISON = Path("reports/comparison.md")


def _require(path: Path, stage: str) -> Path:
    if not path.exists():
        raise UserError(f"{path} not found; run the {stage} stage first (dvc repro {stage})")
    return path


# -- prepared splits -------------------------------------------------------------------------


def write_prepared(splits: dict[str, pd.DataFrame], labels: list[str]) -> None:
    """The `text,label` splits (`text,text_pair,label` for sentence pairs; `text,labels` for multi-label
    rows, the label ids joined by LABEL_JOIN) and the label names in id order, swapped in as one folder."""
    with atomic_dir(PREPARED) as tmp:
        for name, frame in splits.items():
            frame.to_csv(tmp / f"{name}.csv", index=False)
        (tmp / LABELS.name).write_text(json.dumps(labels, ensure_ascii=False) + "\n", encoding="utf-8")


def read_prepared(split: str, root: Path = Path(".")) -> pd.DataFrame:
    path = _require(root / PREPARED / f"{split}.csv", "prepare")
    return pd.read_csv(path, dtype={"text": str, "text_pair": str, "labels": str}, keep_default_na=False)


def multi_hot(frame: pd.DataFrame, n_labels: int) -> np.ndarray:
    """A multi-label split's `labels` column ('0|2') as a (rows, n_labels) 0/1 int64 matrix."""
    out = np.zeros((len(frame), n_labels), dtype=np.int64)
    for row, cell in enumerate(frame["labels"].astype(str)):
        out[row, [int(i) for i in cell.split(LABEL_JOIN)]] = 1
    return out


def prepared_labels(frame: pd.DataFrame, n_labels: int) -> np.ndarray:
    """A prepared split's labels as the tokenized splits keep them: ids (rows,), or multi-hot (rows, labels)."""
    if "labels" in frame.columns:
        return multi_hot(frame, n_labels)
    return frame["label"].to_numpy(np.int64)


def read_labels(root: Path = Path(".")) -> list[str]:
    return read_label_file(_require(root / LABELS, "prepare"))


def read_label_file(path: Path) -> list[str]:
    """A JSON list of label names in id order: the prepare stage's, an export's, or one a user passes."""
    try:
        labels = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(f"{path}: cannot read the label list ({err})") from None
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
        raise UserError(f"{path}: expected a JSON list of label names in id order")
    return labels


# -- tokenized splits: one .npz per split, ids concatenated, no padding -----------------------


def write_tokenized(splits: dict[str, tuple[list[list[int]], np.ndarray, list[list[int]] | None]], meta: dict) -> None:
    """Each split as `ids` (int32, rows concatenated), `offsets` (row i is ids[offsets[i]:offsets[i+1]])
    and `labels`, and for sentence pairs on models that take them `types` (int8 token type ids, laid out
    as ids); `meta` (tokenizer, pad id, max_length) beside them."""
    import itertools

    with atomic_dir(TOKENIZED) as tmp:
        for split, (ids, labels, types) in splits.items():
            lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
            offsets = np.concatenate([[0], np.cumsum(lengths)])
            flat = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int32, count=int(offsets[-1]))
            arrays = {"ids": flat, "offsets": offsets, "labels": np.asarray(labels, dtype=np.int64)}
            if types is not None:
                arrays["types"] = np.fromiter(itertools.chain.from_iterable(types), dtype=np.int8, count=len(flat))
            np.savez(tmp / f"{split}.npz", **arrays)
        (tmp / TOKENIZED_META.name).write_text(json.dumps(meta, indent=2) + "\n")


@dataclass
class TokenizedSplit:
    ids: np.ndarray  # int32, all rows concatenated
    offsets: np.ndarray  # int64, len = rows + 1
    labels: np.ndarray  # int64: ids (rows,), or multi-hot (rows, labels) for multi-label splits
    types: np.ndarray | None = None  # int8 token type ids laid out as ids: sentence pairs on BERT-like models

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def multi_label(self) -> bool:
        return self.labels.ndim == 2

    def __len__(self) -> int:
        return len(self.labels)

    @classmethod
    def load(cls, path: str | Path) -> TokenizedSplit:
        path = _require(Path(path), "tokenize")
        with np.load(path) as npz:
            return cls(npz["ids"], npz["offsets"], npz["labels"], npz["types"] if "types" in npz else None)

    @classmethod
    def from_ids(
        cls, rows: list[list[int]], labels: list[int] | None = None, types: list[list[int]] | None = None
    ) -> TokenizedSplit:
        lengths = np.array([len(r) for r in rows], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        flat = np.array([t for r in rows for t in r], dtype=np.int32)
        labels = np.asarray(labels if labels is not None else [-1] * len(rows), dtype=np.int64)
        return cls(flat, offsets, labels, None if types is None else np.array([t for r in types for t in r], np.int8))

    def row(self, i: int) -> dict:
        """Row i's input_ids (and token_type_ids for pairs) as lists, unpadded: a Trainer dataset row."""
        start, end = self.offsets[i], self.offsets[i + 1]
        out = {"input_ids": self.ids[start:end].tolist()}
        if self.types is not None:
            out["token_type_ids"] = self.types[start:end].tolist()
        return out


def tokenized_file(split: str, root: Path = Path(".")) -> Path:
    """Where a split's .npz lies, for readers of its bytes or arrays (provenance md5, checkpoint fingerprint)."""
    return _require(root / TOKENIZED / f"{split}.npz", "tokenize")


def read_tokenized(split: str, root: Path = Path(".")) -> TokenizedSplit:
    return TokenizedSplit.load(tokenized_file(split, root))


def read_tokenized_meta(root: Path = Path(".")) -> dict:
    return json.loads(_require(root / TOKENIZED_META, "tokenize").read_text())


# -- metrics files ---------------------------------------------------------------------------


def write_metrics(path: Path, data: Any) -> None:
    write_json(path, data)


def read_metrics(path: Path, root: Path = Path(".")) -> dict:
    full = root / path
    if not full.exists():
        raise UserError(f"{full} not found; run the earlier stages first (dvc repro)")
    return json.loads(full.read_text(encoding="utf-8"))


def write_table(frame: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
