"""Dataset readers: each turns a raw source into `text,label` rows (plus `text_pair` for sentence
pairs) with label *names*: `banglasenti` and `ag_news` (their shipped files), and `csv`, your own
data as CSV, TSV, JSON, Parquet, a saved `datasets` folder or a Hugging Face Hub dataset (README.md's
"Your own data": each `data.format`, its columns and labels); multi-label: tuples of names in id order.

`data.path` is a single file (split by `prepare`), a hub name, or a folder: a training pool
(`train.*`, else `dev.*`, `val.*`, `validation.*`) and an optional official `test.*`, kept as test
unless it has no labels. `python -m lora_dvc.datasets NAME FOLDER` saves a hub dataset as an
Arrow folder, to `dvc add` and name in `data.path`.
"""

from __future__ import annotations

import contextlib
import csv
import html
import logging
import math
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from lora_dvc.errors import UserError
from lora_dvc.params import DataParams

BANGLASENTI_LABELS = ["negative", "positive", "neutral"]
AG_NEWS_LABELS = ["World", "Sports", "Business", "Sci/Tech"]
POOL_NAMES = ("train", "dev", "val", "validation")
SUFFIXES = (".csv", ".tsv", ".txt")  # the files banglasenti and ag_news come in
# the file formats of data.format and their suffixes, in the order a folder is searched
FORMAT_SUFFIXES = {
    "csv": (".csv", ".txt"),
    "tsv": (".tsv",),
    "json": (".json", ".jsonl", ".ndjson"),
    "parquet": (".parquet", ".pq"),
    "arrow": (".arrow",),
}
SUFFIX_FORMAT = {suffix: fmt for fmt, suffixes in FORMAT_SUFFIXES.items() for suffix in suffixes}
TABLE_SUFFIXES = (".csv", ".tsv", ".txt", ".json", ".jsonl", ".ndjson", ".parquet", ".pq")
HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")  # `imdb`, `stanfordnlp/imdb`
OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
log = logging.getLogger("data")  # not "datasets": that is the library's own logger


@dataclass
class Source:
    """What a reader returns: the training pool, the official test split if any, the label order."""

    pool: pd.DataFrame  # columns text, label (label names); text_pair too for sentence pairs
    test: pd.DataFrame | None
    labels: list[str]
    files: list[str]
    format: str | None = None  # what the `csv` reader read: csv | tsv | json | parquet | arrow | hub


@dataclass
class Table:
    """One raw split as read: its columns, each read as strings on demand (a hub dataset may carry
    wide columns nobody asked for), where it came from, and the names of each `datasets` ClassLabel
    column (a source's own label order)."""

    columns: list
    column: Callable[[str], pd.Series]  # one column's values as strings
    where: str  # a file, or `folder[split]` / `hub name[split]`
    class_names: dict[str, list[str]] = field(default_factory=dict)  # column -> ClassLabel names

    @classmethod
    def of_frame(cls, frame: pd.DataFrame, where: str) -> Table:
        return cls(list(frame.columns), frame.__getitem__, where)


def _find(folder: Path, stems: tuple[str, ...], suffixes: tuple[str, ...] = SUFFIXES) -> Path | None:
    for stem in stems:
        for suffix in suffixes:
            candidate = folder / f"{stem}{suffix}"
            if candidate.is_file():
                return candidate
    return None


def _missing(path: Path) -> UserError:
    return UserError(f"data.path: '{path}' does not exist; set data.path to a data file or folder")


def source_files(data: DataParams, suffixes: tuple[str, ...] = SUFFIXES) -> tuple[Path, Path | None]:
    """The training-pool file and the official test file (None when the source has none)."""
    path = Path(data.path)
    if path.is_file():
        return path, None
    if path.is_dir():
        pool = _find(path, POOL_NAMES, suffixes)
        if pool is None:
            found = ", ".join(sorted(p.name for p in path.iterdir())[:8]) or "nothing"
            raise UserError(
                f"data.path: folder '{path}' holds no train/dev/val/validation file with a suffix of "
                f"{'|'.join(suffixes)} (it holds: {found}); point data.path at your data file"
            )
        return pool, _find(path, ("test",), suffixes)
    raise _missing(path)


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
    sep = sep or _sep(path)
    try:
        frame = pd.read_csv(
            path,
            sep=sep,
            header=0 if header else None,
            dtype=str,
            keep_default_na=False,
            encoding="utf-8-sig",
            quoting=csv.QUOTE_MINIMAL if sep == "," else csv.QUOTE_NONE,
        )
    except pd.errors.EmptyDataError:
        raise UserError(f"{path}: the file is empty; it needs a header and data rows") from None
    except pd.errors.ParserError as err:
        raise UserError(f"{path}: cannot be parsed as {'TSV' if sep == chr(9) else 'CSV'}: {err}") from None
    if len(frame) == 0:
        raise UserError(f"{path}: has a header but no data rows")
    return frame


def _pick(columns: list, name: str, where, param: str):
    """The column called `name` (or differing only in case or surrounding spaces), else one line naming those found."""
    if name in columns:
        return name
    stripped = {str(c).strip().lower(): c for c in columns}
    if name.strip().lower() in stripped:  # " Text" or "TEXT" for "text"
        return stripped[name.strip().lower()]
    cols = ", ".join(repr(str(c)) for c in columns)
    raise UserError(f"{where}: no column '{name}' (columns: {cols}); set {param} to one of them")


def _column(frame: pd.DataFrame, name: str, path, param: str) -> pd.Series:
    return frame[_pick(list(frame.columns), name, path, param)]


def map_labels(raw: pd.Series, labels: list[str], path, offset: int = 0) -> pd.Series:
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


def _frame(text: pd.Series, label: pd.Series, text_pair: pd.Series | None = None) -> pd.DataFrame:
    columns = {"text": text.astype(str).to_numpy()}
    if text_pair is not None:
        columns["text_pair"] = text_pair.astype(str).to_numpy()
    return pd.DataFrame(columns | {"label": label.to_numpy()})


def read_banglasenti(path: Path) -> pd.DataFrame:
    """CSV `text,label`, labels 0 negative / 1 positive / 2 neutral (names accepted too)."""
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
    """The canonical headerless CSV `class,title,description` (classes 1-4) or the alps TSV
    `description<TAB>class name`."""
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


# -- your own data: csv | tsv | json | parquet | arrow | hub ------------------------------------


def _as_string(value, names: list[str] | None) -> str | list:
    """One cell as the CSV reader would give it: missing values empty, ClassLabel ids as their names
    (a list cell, multi-label's label sets, as a list of such strings)."""
    if isinstance(value, (list, tuple)):
        return [_as_string(v, names) for v in value]
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if names is not None and isinstance(value, int) and not isinstance(value, bool):
        return names[value] if 0 <= value < len(names) else ""  # -1: no label (hidden test sets)
    return str(value)


def _from_dataset(dataset, where: str) -> Table:
    """A `datasets.Dataset` read as strings column by column, with the names of its ClassLabel columns."""
    from datasets import ClassLabel

    names = {c: f.names for c, f in dataset.features.items() if isinstance(f, ClassLabel)}
    for c, f in dataset.features.items():  # a sequence of ClassLabel ids: multi-label's label sets
        if isinstance(getattr(f, "feature", None), ClassLabel):
            names[c] = f.feature.names

    def column(name: str) -> pd.Series:
        return pd.Series([_as_string(v, names.get(name)) for v in dataset[name]], dtype=object)

    if len(dataset) == 0:
        raise UserError(f"{where}: has no data rows")
    return Table(list(dataset.column_names), column, where, names)


@contextlib.contextmanager
def _quiet_datasets():
    """No progress bars and no duplicate error logs from `datasets`: a bad file is reported in one line."""
    import datasets

    bars_were_off = datasets.utils.are_progress_bars_disabled()
    level = datasets.logging.get_verbosity()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity(logging.CRITICAL)
    try:
        yield datasets
    finally:
        datasets.logging.set_verbosity(level)
        if not bars_were_off:
            datasets.enable_progress_bars()


def _first_line(err: BaseException) -> str:
    cause = err.__cause__ or err
    text = str(cause).strip()
    return text.splitlines()[0] if text else type(cause).__name__


def _read_file(path: Path, fmt: str) -> Table:
    """One local file of a table format, as strings."""
    if fmt in ("csv", "tsv"):
        return Table.of_frame(read_table(path, header=True, sep="\t" if fmt == "tsv" else ","), str(path))
    if path.stat().st_size == 0:
        raise UserError(f"{path}: the file is empty; it needs data rows")
    if fmt == "json":
        _check_utf8(path)
    with _quiet_datasets() as datasets, tempfile.TemporaryDirectory(prefix="lora-dvc-datasets-") as cache:
        try:
            if fmt == "arrow":
                dataset = datasets.Dataset.from_file(str(path))
            else:  # the builder's Arrow copy goes to a throwaway cache (kept in memory): the data's home is data.path
                dataset = datasets.load_dataset(
                    fmt, data_files=str(path), split="train", cache_dir=cache, keep_in_memory=True
                )
        except Exception as err:  # noqa: BLE001  pyarrow's and the builders' errors share no base class
            raise UserError(
                f"{path}: cannot be read as {fmt} ({_first_line(err)}); fix the file or set data.format"
            ) from None
    return _from_dataset(dataset, str(path))


def _file_format(path: Path, data: DataParams) -> str:
    if data.format != "auto":
        return data.format
    fmt = SUFFIX_FORMAT.get(path.suffix.lower())
    if fmt is None:
        raise UserError(
            f"{path}: cannot tell the format from the suffix '{path.suffix}'; "
            f"set data.format to one of {' | '.join(FORMAT_SUFFIXES)}, or rename the file"
        )
    return fmt


def _pick_splits(splits: dict, where: str) -> tuple[str, str | None]:
    """The pool split (train, else dev, val, validation) and the test split of a split -> data mapping."""
    pool = next((name for name in POOL_NAMES if name in splits), None)
    if pool is None:
        raise UserError(
            f"{where}: holds the splits {sorted(splits)}, none of them {'/'.join(POOL_NAMES)}; "
            "name the training split train, or point data.path at one split"
        )
    return pool, "test" if "test" in splits else None


def _is_arrow_folder(path: Path) -> bool:
    return (path / "dataset_dict.json").is_file() or (path / "state.json").is_file()


def _arrow_split_folders(path: Path) -> dict[str, Path]:
    """Split folders each written by `Dataset.save_to_disk` (train/, test/ ...) without a dataset_dict.json."""
    return {p.name: p for p in sorted(path.iterdir()) if p.is_dir() and (p / "state.json").is_file()}


def _read_arrow_folder(path: Path) -> list[Table]:
    with _quiet_datasets() as datasets:
        try:
            if _is_arrow_folder(path):  # memory-mapped, as datasets reads its own folders
                loaded = datasets.load_from_disk(str(path))
            else:
                loaded = {name: datasets.load_from_disk(str(p)) for name, p in _arrow_split_folders(path).items()}
        except Exception as err:  # noqa: BLE001  a damaged folder raises whatever pyarrow or json met first
            raise UserError(
                f"{path}: cannot be read as a saved `datasets` folder ({_first_line(err)}); "
                "write it again with save_to_disk, or set data.format"
            ) from None
        if isinstance(loaded, datasets.Dataset):
            return [_from_dataset(loaded, str(path))]
        pool, test = _pick_splits(loaded, str(path))
        return [_from_dataset(loaded[s], f"{path}[{s}]") for s in (pool, test) if s is not None]


def offline_vars() -> list[str]:
    """Which of HF_HUB_OFFLINE / HF_DATASETS_OFFLINE forbid downloads (read now, not at import)."""
    return [var for var in OFFLINE_VARS if os.environ.get(var, "").strip().upper() in ("1", "ON", "YES", "TRUE")]


def load_hub(name: str, subset: str | None):
    """`datasets.load_dataset(name, subset)` (its cache first), or one line saying why it cannot load."""
    import datasets

    label = f"'{name}'" + (f" (subset '{subset}')" if subset else "")
    try:
        return datasets.load_dataset(name, subset)
    except Exception as err:  # noqa: BLE001  network, hub and builder errors share no base class
        switched = "/".join(offline_vars())
        if switched:
            raise UserError(
                f"data.path: {label} is not a local file or folder, and as a Hugging Face Hub dataset it is "
                f"not in the local cache while {switched}=1 forbids downloading it; unset {switched} "
                "on a machine with a network, or point data.path at a local copy"
            ) from None
        raise UserError(
            f"data.path: {label} is neither a local file or folder nor a Hugging Face Hub dataset that "
            f"loads ({_first_line(err)}); fix data.path (or data.subset)"
        ) from None


def _read_hub(name: str, subset: str | None) -> list[Table]:
    loaded = load_hub(name, subset)  # download bars stay: a first download can take minutes
    label = f"hub dataset '{name}'" + (f" (subset '{subset}')" if subset else "")
    pool, test = _pick_splits(loaded, label)
    return [_from_dataset(loaded[s], f"{name}[{s}]") for s in (pool, test) if s is not None]


def _is_hub_name(path: str) -> bool:
    return HUB_NAME.fullmatch(path) is not None and Path(path).suffix.lower() not in SUFFIX_FORMAT


def read_tables(data: DataParams) -> tuple[str, list[Table]]:
    """The format read and the raw pool (and test) tables of `data.path`."""
    path = Path(data.path)
    if data.format == "hub" or (data.format == "auto" and not path.exists() and _is_hub_name(data.path)):
        return "hub", _read_hub(data.path, data.subset)
    if not path.exists():
        raise _missing(path)
    if path.is_dir() and (
        data.format == "arrow" or (data.format == "auto" and (_is_arrow_folder(path) or _arrow_split_folders(path)))
    ):
        return "arrow", _read_arrow_folder(path)
    suffixes = TABLE_SUFFIXES if data.format == "auto" else FORMAT_SUFFIXES[data.format] + TABLE_SUFFIXES
    pool, test = source_files(data, tuple(dict.fromkeys(suffixes)))
    formats = [_file_format(p, data) for p in (pool, test) if p is not None]
    tables = [_read_file(p, fmt) for p, fmt in zip((pool, test), formats) if p is not None]
    return formats[0], tables


def _own_columns(table: Table, data: DataParams) -> tuple[pd.DataFrame, list[str] | None]:
    """text, [text_pair,] label (raw strings) of one table, and its label column's ClassLabel names."""
    text = _pick(table.columns, data.text_column, table.where, "data.text_column")
    label = _pick(table.columns, data.label_column, table.where, "data.label_column")
    pair = None
    if data.text_pair_column is not None:
        pair = _pick(table.columns, data.text_pair_column, table.where, "data.text_pair_column")
    raw = table.column(label)
    if data.multi_label:
        values = label_sets(raw, data.label_delimiter, table.where, label)
    else:
        lists = raw.map(lambda v: isinstance(v, list))
        if lists.any():
            raise UserError(
                f"{table.where}: column '{label}' holds lists of labels (first at data row {lists.idxmax() + 1}); "
                "set data.multi_label: true for multi-label rows, or data.label_column to a single-label column"
            )
        values = raw.str.strip()
    frame = _frame(table.column(text), values, table.column(pair) if pair is not None else None)
    return frame, table.class_names.get(label)


def label_sets(raw: pd.Series, delimiter: str | None, where, column: str) -> pd.Series:
    """Multi-label cells as tuples of stripped labels (duplicates and empty parts dropped): a list cell
    as it is, a text cell split by `delimiter` (data.label_delimiter)."""
    texts = raw.map(lambda v: not isinstance(v, list))
    if delimiter is None and texts.any():
        raise UserError(
            f"{where}: data.multi_label is true but column '{column}' holds text, not lists "
            f"(first at data row {texts.idxmax() + 1}: {raw[texts.idxmax()]!r}); set data.label_delimiter to the "
            "character between labels (e.g. '|'), or store the labels as a list column (JSON, Parquet, Arrow)"
        )

    def one(value) -> tuple:
        parts = value if isinstance(value, list) else value.split(delimiter)
        return tuple(dict.fromkeys(p.strip() for p in parts if p.strip()))

    return raw.map(one)


def map_label_sets(raw: pd.Series, labels: list[str], where) -> pd.Series:
    """map_labels for label sets: each label a name or an id, each set ordered by label id."""
    order = {name: i for i, name in enumerate(labels)}
    names = map_labels(raw.explode().astype(str), labels, where)  # the row index kept: errors name the data row
    sets = names.groupby(level=0).agg(lambda s: tuple(sorted(set(s), key=order.__getitem__)))
    return sets.reindex(raw.index)


def _no_empty_label_sets(frame: pd.DataFrame, where) -> None:
    empty = frame["label"].map(len) == 0
    if empty.any():
        raise UserError(
            f"{where}: {int(empty.sum())} rows have an empty label cell (first at data row {empty.idxmax() + 1}); "
            "with data.multi_label every row needs at least one label: fix the file or drop those rows"
        )


def read_own(data: DataParams) -> Source:
    """Your own data (`data.dataset: csv`) in any format: named columns, labels mapped to names."""
    fmt, tables = read_tables(data)
    frames, declared = zip(*(_own_columns(t, data) for t in tables))
    frames, wheres = list(frames), [t.where for t in tables]
    unlabelled = (
        (lambda f: (f["label"].map(len) == 0).all()) if data.multi_label else (lambda f: (f["label"] == "").all())
    )
    if len(frames) > 1 and unlabelled(frames[1]):
        log.warning("%s has no labels (a hidden test set): test is split off the training pool instead", wheres[1])
        frames, wheres = frames[:1], wheres[:1]
    pair = "text_pair" in frames[0].columns
    if data.multi_label:
        for f, w in zip(frames, wheres):
            _no_empty_label_sets(f, w)
        labels = data.labels or declared[0] or sorted({name for s in frames[0]["label"] for name in s})
        mapped = [map_label_sets(f["label"], labels, w) for f, w in zip(frames, wheres)]
    else:
        # without data.labels: the names the source declares, else what the training pool uses, sorted
        labels = data.labels or declared[0] or sorted(set(frames[0]["label"]) - {""})
        mapped = [map_labels(f["label"], labels, w) for f, w in zip(frames, wheres)]
    frames = [_frame(f["text"], m, f["text_pair"] if pair else None) for f, m in zip(frames, mapped)]
    return Source(
        pool=frames[0], test=frames[1] if len(frames) > 1 else None, labels=list(labels), files=wheres, format=fmt
    )


def read_source(data: DataParams) -> Source:
    if data.dataset == "csv":
        source = read_own(data)
    else:
        for key, default in (
            ("format", "auto"),
            ("subset", None),
            ("text_pair_column", None),
            ("multi_label", False),
            ("label_delimiter", None),
        ):
            if getattr(data, key) != default:
                raise UserError(
                    f"data.{key} applies to your own data (data.dataset: csv), not to the {data.dataset} "
                    f"files; remove it, or set data.dataset: csv"
                )
        pool_path, test_path = source_files(data)
        paths = [p for p in (pool_path, test_path) if p is not None]
        if data.dataset == "banglasenti":
            frames, labels = [read_banglasenti(p) for p in paths], BANGLASENTI_LABELS
        else:
            frames, labels = [read_ag_news(p) for p in paths], AG_NEWS_LABELS
        source = Source(
            pool=frames[0],
            test=frames[1] if test_path is not None else None,
            labels=list(labels),
            files=[str(p) for p in paths],
        )
    if len(source.labels) < 2:
        raise UserError(
            f"{source.files[0]}: found {len(source.labels)} label(s) {source.labels}; a classifier needs at least 2"
        )
    return source


# -- a hub dataset as a local, DVC-trackable folder ---------------------------------------------


def save_hub_dataset(name: str, folder: Path, subset: str | None = None) -> list[str]:
    """Download a hub dataset and write it with `DatasetDict.save_to_disk`; returns its split names."""
    loaded = load_hub(name, subset)
    loaded.save_to_disk(str(folder))
    return sorted(loaded)


def main(argv: list[str] | None = None) -> None:
    from lora_dvc.runner import ArgumentParser

    p = ArgumentParser(
        prog="python -m lora_dvc.datasets",
        description="Save a Hugging Face Hub dataset as an Arrow folder that data.path can name.",
    )
    p.add_argument("name", help="the hub dataset, e.g. imdb or nyu-mll/glue")
    p.add_argument("folder", type=Path, help="where to write it, e.g. data/raw/imdb")
    p.add_argument("--subset", help="the dataset's configuration, e.g. mrpc of nyu-mll/glue")
    args = p.parse_args(argv)
    if args.folder.exists():
        raise UserError(f"{args.folder}: already exists; pick a new folder or delete it first")
    splits = save_hub_dataset(args.name, args.folder, args.subset)
    log.info("wrote %s (splits: %s)", args.folder, ", ".join(splits))
    log.info("next: dvc add %s, and dvc exp run -S data.dataset=csv -S data.path=%s", args.folder, args.folder)


if __name__ == "__main__":
    from lora_dvc.runner import run_stage

    run_stage(main)
