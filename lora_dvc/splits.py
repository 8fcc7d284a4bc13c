"""Clean, leak-free, stratified train/val/test splits from a raw source (the prepare stage's logic).

Every dropped row is counted by reason: empty text, conflicting labels, duplicate text, test text
also in the training pool, rows over data.max_train_rows. For sentence pairs a row's text is the
pair (text, text_pair): emptiness, duplicates, conflicts and leaks are of the whole pair.
Multi-label rows carry a tuple of label names: a conflict is one text with two label sets, and the
splits are stratified on each row's first label (lowest id), as whole sets are often too rare; a
split whose first labels are too rare is drawn unstratified (seeded). The prepared files then hold
a `labels` column: each row's label ids joined by '|' (artifacts.LABEL_JOIN).
"""

from __future__ import annotations

from collections import Counter

import pandas as pd
from sklearn.model_selection import train_test_split

from lora_dvc.artifacts import LABEL_JOIN, multi_hot
from lora_dvc.datasets import read_source
from lora_dvc.errors import UserError
from lora_dvc.params import DataParams


def text_columns(frame: pd.DataFrame) -> list[str]:
    """The columns that make up a row's text: text, and text_pair for sentence pairs."""
    return ["text", "text_pair"] if "text_pair" in frame.columns else ["text"]


def text_key(frame: pd.DataFrame) -> pd.Series:
    """Each row's text, or its (text, text_pair) tuple: what duplicates, conflicts and leaks compare."""
    columns = text_columns(frame)
    if len(columns) == 1:
        return frame["text"]
    return pd.Series(list(zip(*(frame[c] for c in columns))), index=frame.index, dtype=object)


def drop_empty(frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    columns = text_columns(frame)
    frame = frame.assign(**{c: frame[c].str.strip() for c in columns})
    keep = (frame[columns] != "").all(axis=1)
    return frame[keep], int((~keep).sum())


def drop_conflicting(frames: dict[str, pd.DataFrame]) -> tuple[dict[str, pd.DataFrame], int]:
    """Drop every copy of a text (a pair) that appears with more than one label, in any split."""
    both = pd.concat(frames.values(), ignore_index=True)
    columns = text_columns(both)
    n_labels = both.groupby(columns[0] if len(columns) == 1 else columns)["label"].nunique()
    conflicting = set(n_labels[n_labels > 1].index)  # texts, or (text, text_pair) tuples
    kept = {name: f[~text_key(f).isin(conflicting)] for name, f in frames.items()}
    return kept, sum(len(frames[n]) - len(kept[n]) for n in frames)


def is_multi_label(frame: pd.DataFrame) -> bool:
    """Whether the label column holds label sets (tuples), as read with data.multi_label."""
    return len(frame) > 0 and isinstance(frame["label"].iloc[0], tuple)


def multi_label_strata(frame: pd.DataFrame, n_holdout: int) -> pd.Series | None:
    """Each row's first label (lowest id) to stratify on, or None (no stratification) where it cannot."""
    first = frame["label"].map(lambda labels: labels[0])
    counts = first.value_counts()
    if counts.min() < 2 or n_holdout < len(counts) or len(frame) - n_holdout < len(counts):
        return None
    return first


def stratified_split(frame: pd.DataFrame, fraction: float, seed: int, what: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split off `fraction` of `frame`, stratified by label; refuse when a class is too small."""
    n_holdout = round(len(frame) * fraction)
    if is_multi_label(frame):
        if n_holdout < 1 or n_holdout >= len(frame):
            raise UserError(
                f"dataset too small to split off {what}: {len(frame)} rows; add data or change data.{what}_fraction"
            )
        strata = multi_label_strata(frame, n_holdout)
        return train_test_split(frame, test_size=n_holdout, random_state=seed, stratify=strata)
    counts = frame["label"].value_counts()
    if counts.min() < 2 or n_holdout < len(counts) or len(frame) - n_holdout < len(counts):
        raise UserError(
            f"dataset too small to split off {what}: {len(frame)} rows, smallest class "
            f"'{counts.idxmin()}' has {counts.min()}; each class needs at least 2 rows "
            f"and {what} at least one row per class (add data or change data.{what}_fraction)"
        )
    rest, held = train_test_split(frame, test_size=n_holdout, random_state=seed, stratify=frame["label"])
    return rest, held


def subsample(frame: pd.DataFrame, rows: int | None, seed: int) -> pd.DataFrame:
    if rows is None or rows >= len(frame):
        return frame
    if is_multi_label(frame):
        strata = multi_label_strata(frame, len(frame) - rows)
        kept, _ = train_test_split(frame, train_size=rows, random_state=seed, stratify=strata)
        return kept
    if rows < frame["label"].nunique():
        raise UserError(f"data.max_train_rows={rows} is below the number of classes; raise it")
    kept, _ = train_test_split(frame, train_size=rows, random_state=seed, stratify=frame["label"])
    return kept


def clean(raw: dict[str, pd.DataFrame]) -> tuple[dict[str, pd.DataFrame], Counter]:
    """Each raw split without empty texts, conflicting labels and duplicates; the rows dropped by reason."""
    dropped: Counter = Counter()
    cleaned = {}
    for name, frame in raw.items():
        cleaned[name], n_empty = drop_empty(frame)
        dropped["empty_text"] += n_empty
    cleaned, dropped["conflicting_label"] = drop_conflicting(cleaned)
    for name, frame in cleaned.items():
        deduped = frame.drop_duplicates(text_columns(frame), keep="first")
        dropped["duplicate_text"] += len(frame) - len(deduped)
        cleaned[name] = deduped
    return cleaned, dropped


def carve(
    cleaned: dict[str, pd.DataFrame], data: DataParams, dropped: Counter
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """train, val and test: test without texts of the pool (or split off it), val split off the pool,
    train subsampled to data.max_train_rows; the rows this drops are counted into `dropped`."""
    pool = cleaned["pool"]
    if "test" in cleaned:
        test = cleaned["test"]
        leaked = text_key(test).isin(set(text_key(pool)))
        dropped["test_text_in_train"] = int(leaked.sum())
        test = test[~leaked]
    else:
        pool, test = stratified_split(pool, data.test_fraction, data.seed, "test")
    train, val = stratified_split(pool, data.val_fraction, data.seed, "val")
    before = len(train)
    train = subsample(train, data.max_train_rows, data.seed)
    dropped["over_max_train_rows"] = before - len(train)
    return train, val, test


def with_label_ids(
    splits: dict[str, pd.DataFrame], labels: list[str], multi: bool
) -> tuple[dict[str, pd.DataFrame], dict]:
    """The splits as written (text columns, then `label` ids, or `labels`: ids joined by '|', see
    artifacts.LABEL_JOIN), and each split's rows per label (multi-label: rows holding each label)."""
    ids = {name: i for i, name in enumerate(labels)}
    if multi:
        splits = {
            k: pd.DataFrame(
                {c: v[c].to_numpy() for c in text_columns(v)}
                | {"labels": v["label"].map(lambda s: LABEL_JOIN.join(str(ids[n]) for n in s)).to_numpy()}
            )
            for k, v in splits.items()
        }
        class_counts = {
            name: {label: int(multi_hot(frame, len(labels))[:, i].sum()) for i, label in enumerate(labels)}
            for name, frame in splits.items()
        }
    else:
        splits = {
            k: pd.DataFrame({c: v[c].to_numpy() for c in text_columns(v)} | {"label": v["label"].map(ids).to_numpy()})
            for k, v in splits.items()
        }
        class_counts = {
            name: {label: int((frame["label"] == i).sum()) for i, label in enumerate(labels)}
            for name, frame in splits.items()
        }
    return splits, class_counts


def make_splits(data: DataParams) -> tuple[dict[str, pd.DataFrame], list[str], dict]:
    source = read_source(data)
    raw = {"pool": source.pool} | ({"test": source.test} if source.test is not None else {})
    cleaned, dropped = clean(raw)
    train, val, test = carve(cleaned, data, dropped)
    multi = is_multi_label(train)
    seen = {name for labels in train["label"] for name in labels} if multi else set(train["label"])
    missing = [label for label in source.labels if label not in seen]
    if missing:
        raise UserError(
            f"{source.files[0]}: no training examples left for class(es) {missing}; "
            "add examples or drop the class from data.labels"
        )
    splits, class_counts = with_label_ids({"train": train, "val": val, "test": test}, source.labels, multi)
    # the keys beyond `dataset` appear only for your own data, so the shipped datasets' records stay as they were
    own = {"format": source.format} if source.format else {}
    own |= {"text_pair_column": data.text_pair_column} if data.text_pair_column else {}
    own |= {"multi_label": True} if multi else {}
    stats = {
        "dataset": data.dataset,
        **own,
        "source_rows": {name: len(frame) for name, frame in raw.items()},
        "dropped": dict(dropped),
        "rows": {name: len(frame) for name, frame in splits.items()},
        "class_counts": class_counts,
    }
    return splits, source.labels, stats
