"""Dataset readers: each turns a raw source into `text,label` rows with label *names*.

- `banglasenti`: CSV `text,label`, labels 0 negative / 1 positive / 2 neutral (names accepted too).
- `ag_news`: the canonical headerless CSV `class,title,description` (classes 1-4) or the alps TSV
  `description<TAB>class name`.
- `csv`: any CSV/TSV with `data.text_column` / `data.label_column`, labels from `data.labels`
  (in id order) or, if null, the sorted unique labels of the training pool.

`data.path` is a folder or a file. A folder holds a training pool (`train.*`, else `dev.*`, else
`val.*`) and, where the source has one, an official `test.*`, which is kept as test. A single file
is split by `prepare` (stratified, seeded).
"""

from __future__ import annotations

import csv
import html
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from lora_dvc.errors import UserError
from lora_dvc.params import DataParams

BANGLASENTI_LABELS = ["negative", "positive", "neutral"]
AG_NEWS_LABELS = ["World", "Sports", "Business", "Sci/Tech"]
POOL_NAMES = ("train", "dev", "val")
SUFFIXES = (".csv", ".tsv", ".txt")


@dataclass
class Source:
    """What a reader returns: the training pool, the official test split if any, the label order."""

    pool: pd.DataFrame  # columns text, label (label names)
    test: pd.DataFrame | None
    labels: list[str]
    files: list[str]


def _find(folder: Path, stems: tuple[str, ...]) -> Path | None:
    for stem in stems:
        for suffix in SUFFIXES:
            candidate = folder / f"{stem}{suffix}"
            if candidate.is_file():
                return candidate
    return None


def source_files(data: DataParams) -> tuple[Path, Path | None]:
    """The training-pool file and the official test file (None when the source has none)."""
    path = Path(data.path)
    if path.is_file():
        return path, None
    if path.is_dir():
        pool = _find(path, POOL_NAMES)
        if pool is None:
            raise UserError(
                f"data.path: folder '{path}' holds no train/dev/val file "
                f"({', '.join(s + '.csv|.tsv' for s in POOL_NAMES)}); point data.path at your data file"
            )
        return pool, _find(path, ("test",))
    raise UserError(f"data.path: '{path}' does not exist; set data.path to a data file or folder")


def _sep(path: Path) -> str:
    return "\t" if path.suffix == ".tsv" else ","


def _check_utf8(path: Path) -> None:
    raw = path.read_bytes()
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise UserError(f"{path}: not UTF-8 (byte {err.start}, line {line}); re-save the file as UTF-8") from None


def read_table(path: Path, header: bool, sep: str | None = None) -> pd.DataFrame:
    """Read a CSV/TSV as strings: BOM stripped, CRLF and quoted newlines handled."""
    _check_utf8(path)
    try:
        frame = pd.read_csv(
            path,
            sep=sep or _sep(path),
            header=0 if header else None,
            dtype=str,
            keep_default_na=False,
            encoding="utf-8-sig",
            quoting=csv.QUOTE_MINIMAL if (sep or _sep(path)) == "," else csv.QUOTE_NONE,
        )
    except pd.errors.EmptyDataError:
        raise UserError(f"{path}: the file is empty; it needs a header and data rows") from None
    except pd.errors.ParserError as err:
        raise UserError(f"{path}: cannot be parsed as {'TSV' if _sep(path) == chr(9) else 'CSV'}: {err}") from None
    if len(frame) == 0:
        raise UserError(f"{path}: has a header but no data rows")
    return frame


def _column(frame: pd.DataFrame, name: str, path: Path, param: str) -> pd.Series:
    if name in frame.columns:
        return frame[name]
    stripped = {str(c).strip().lower(): c for c in frame.columns}
    if name.strip().lower() in stripped:  # " Text" or "TEXT" for "text"
        return frame[stripped[name.strip().lower()]]
    cols = ", ".join(repr(str(c)) for c in frame.columns)
    raise UserError(f"{path}: no column '{name}' (columns: {cols}); set {param} to one of them")


def map_labels(raw: pd.Series, labels: list[str], path: Path, offset: int = 0) -> pd.Series:
    """Map raw label values to names: a name as is, or an integer id (minus `offset`)."""
    by_name = {name.lower(): name for name in labels}

    def to_name(value: str) -> str | None:
        value = value.strip()
        if value.lower() in by_name:
            return by_name[value.lower()]
        if re.fullmatch(r"[+-]?\d+(\.0+)?", value):
            idx = int(float(value)) - offset
            if 0 <= idx < len(labels):
                return labels[idx]
        return None

    mapped = raw.map(to_name)
    bad = mapped.isna()
    if bad.any():
        first = raw[bad].index[0]
        values = sorted(set(raw[bad].str.strip()))[:5]
        ids = ", ".join(str(i + offset) for i in range(len(labels)))
        raise UserError(
            f"{path}: {int(bad.sum())} rows have labels outside the label set "
            f"(e.g. {values!r}, first at data row {first + 1}); allowed: {labels} or ids {ids}; "
            "fix the file or set data.labels"
        )
    return mapped


def _frame(text: pd.Series, label: pd.Series) -> pd.DataFrame:
    return pd.DataFrame({"text": text.astype(str).to_numpy(), "label": label.to_numpy()})


def read_banglasenti(path: Path) -> pd.DataFrame:
    frame = read_table(path, header=True)
    text = _column(frame, "text", path, "data.text_column")
    label = map_labels(_column(frame, "label", path, "data.label_column"), BANGLASENTI_LABELS, path)
    return _frame(text, label)


_ENTITY = re.compile(r"#(\d+);")


def clean_ag_news(text: str) -> str:
    """AG News quirks: HTML entities written as ' #39;' and backslashes for line breaks."""
    text = _ENTITY.sub(lambda m: chr(int(m.group(1))), text)
    return html.unescape(text).replace("\\", " ")


def read_ag_news(path: Path) -> pd.DataFrame:
    if path.suffix == ".tsv":  # alps: description<TAB>class name
        frame = read_table(path, header=False)
        if frame.shape[1] != 2:
            raise UserError(
                f"{path}: expected 2 tab-separated columns (description, class name), found {frame.shape[1]}"
            )
        text, label = frame[0], map_labels(frame[1], AG_NEWS_LABELS, path, offset=1)  # ids 1-4 as in the canonical CSV
    else:  # canonical: class index 1-4, title, description
        frame = read_table(path, header=False)
        if frame.shape[1] != 3:
            raise UserError(f"{path}: expected 3 columns (class, title, description), found {frame.shape[1]}")
        text = frame[1].str.strip() + ". " + frame[2].str.strip()
        label = map_labels(frame[0], AG_NEWS_LABELS, path, offset=1)
    return _frame(text.map(clean_ag_news), label)


def read_generic(path: Path, data: DataParams) -> pd.DataFrame:
    """Any CSV/TSV with a header; labels stay raw strings until the label set is known."""
    frame = read_table(path, header=True)
    text = _column(frame, data.text_column, path, "data.text_column")
    label = _column(frame, data.label_column, path, "data.label_column")
    return _frame(text, label.str.strip())


def read_source(data: DataParams) -> Source:
    pool_path, test_path = source_files(data)
    paths = [p for p in (pool_path, test_path) if p is not None]
    if data.dataset == "banglasenti":
        frames, labels = [read_banglasenti(p) for p in paths], BANGLASENTI_LABELS
    elif data.dataset == "ag_news":
        frames, labels = [read_ag_news(p) for p in paths], AG_NEWS_LABELS
    else:
        frames = [read_generic(p, data) for p in paths]
        # without data.labels the label set is what the training pool uses, in sorted order
        labels = data.labels or sorted(set(frames[0]["label"]) - {""})
        frames = [_frame(f["text"], map_labels(f["label"], labels, p)) for f, p in zip(frames, paths)]
    if len(labels) < 2:
        raise UserError(f"{pool_path}: found {len(labels)} label(s) {labels}; a classifier needs at least 2")
    return Source(
        pool=frames[0],
        test=frames[1] if test_path is not None else None,
        labels=list(labels),
        files=[str(p) for p in paths],
    )
