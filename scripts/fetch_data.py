"""Fetch a full dataset with `dvc import-url`: the exact bytes get an md5 in a committed .dvc file
and travel through the DVC remote like every other output. Needs a network; run from the project root.

    python scripts/fetch_data.py banglasenti           # full BanglaSenti CSV (122,577 rows, ~17 MB)
    python scripts/fetch_data.py ag_news               # canonical AG News train (120,000) + test (7,600)
    python scripts/fetch_data.py imdb                  # IMDB reviews train (25,000) + test (25,000), Parquet
    python scripts/fetch_data.py banglasenti --update  # re-fetch after upstream changed (dvc update)
    python scripts/fetch_data.py banglasenti --url banglasenti.csv=https://mirror/banglasenti.csv

Then commit the .dvc files and `dvc push` (the script prints the commands), and train with
`dvc exp run -S data.dataset=... -S data.path=...` (printed too). `dvc repro` never re-downloads:
import stages are frozen, only `--update` fetches again. See docs/remote.md.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

# BanglaSenti: the TPU study (github.com/niloydebbarma-code/LORA-FINETUNING-BANGLASENTI-XLMR-GOOGLE-TPU)
# ships only val/test under data/; its data/prepare.py downloads the merged corpus from this repository.
BANGLASENTI_URL = "https://raw.githubusercontent.com/niloydebbarma-code/banglasenti-dataset-prep/main/banglasenti.csv"
# AG News as published by Zhang, Zhao & LeCun (2015): headerless "class","title","description", classes 1-4.
AG_NEWS_BASE = "https://raw.githubusercontent.com/mhjabreel/CharCnn_Keras/master/data/ag_news_csv"
# IMDB (Maas et al., 2011) as the Hugging Face hub's stanfordnlp/imdb publishes it: Parquet, text + label 0/1
IMDB_BASE = "https://huggingface.co/datasets/stanfordnlp/imdb/resolve/main/plain_text"


class FetchError(Exception):
    pass


def _first_record(path: Path) -> list[str]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        try:
            return next(csv.reader(handle))
        except (StopIteration, csv.Error, UnicodeDecodeError):
            return []


def check_banglasenti(path: Path) -> None:
    header = _first_record(path)
    if [h.strip().lower() for h in header] != ["text", "label"]:
        raise FetchError(
            f"{path}: expected a CSV with header 'text,label', found {','.join(header)[:80]!r}; "
            "the URL served something else (an error page, an LFS pointer?)"
        )


def check_ag_news(path: Path) -> None:
    first = _first_record(path)
    if len(first) != 3 or first[0].strip() not in {"1", "2", "3", "4"}:
        raise FetchError(
            f'{path}: expected headerless AG News rows "class","title","description" with '
            f"class 1-4, found {','.join(first)[:80]!r}"
        )


def check_imdb(path: Path) -> None:
    import pyarrow.parquet as pq

    try:
        columns = pq.read_schema(path).names
    except Exception as err:  # noqa: BLE001 - pyarrow raises several types for a file that is not Parquet
        raise FetchError(f"{path}: not a Parquet file ({err}); the URL served something else") from None
    if not {"text", "label"} <= set(columns):
        raise FetchError(f"{path}: expected Parquet columns text, label; found {columns}")


@dataclass(frozen=True)
class Dataset:
    folder: str
    files: dict[str, str]  # file name -> URL
    data_path: str  # what params.yaml's data.path should say
    check: Callable[[Path], None]
    train_args: str = ""  # the -S overrides that train on it, besides data.path


DATASETS = {
    "banglasenti": Dataset(
        "data/external/banglasenti",
        {"banglasenti.csv": BANGLASENTI_URL},
        "data/external/banglasenti/banglasenti.csv",
        check_banglasenti,
    ),
    "ag_news": Dataset(
        "data/external/ag_news",
        {"train.csv": f"{AG_NEWS_BASE}/train.csv", "test.csv": f"{AG_NEWS_BASE}/test.csv"},
        "data/external/ag_news",
        check_ag_news,
    ),
    "imdb": Dataset(
        "data/external/imdb",
        {
            "train.parquet": f"{IMDB_BASE}/train-00000-of-00001.parquet",
            "test.parquet": f"{IMDB_BASE}/test-00000-of-00001.parquet",
        },
        "data/external/imdb",
        check_imdb,
        "-S data.dataset=csv -S data.labels=[neg,pos]",
    ),
}


def _dvc(args: list[str]) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "dvc", *args], capture_output=True, text=True)
    if result.returncode != 0:
        lines = [line for line in (result.stderr + result.stdout).splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("ERROR")] or lines[-1:] or ["(no output)"]
        raise FetchError(f"dvc {' '.join(args)} failed: {errors[0]}")
    return result


def fetch(name: str, overrides: dict[str, str], update: bool) -> list[str]:
    """Import (or update) every file of a dataset; return the .dvc files to commit."""
    if not Path(".dvc").is_dir():
        raise FetchError("run this from the project root (no .dvc/ here)")
    spec = DATASETS[name]
    unknown = set(overrides) - set(spec.files)
    if unknown:
        raise FetchError(f"--url: {name} has no file {sorted(unknown)[0]!r} (files: {', '.join(spec.files)})")
    Path(spec.folder).mkdir(parents=True, exist_ok=True)
    tracked = []
    for file_name, default_url in spec.files.items():
        url = overrides.get(file_name, default_url)
        out = Path(spec.folder) / file_name
        dvcfile = out.with_name(out.name + ".dvc")
        if dvcfile.exists():
            if update:
                _dvc(["update", str(dvcfile)])
            else:
                print(f"{out}: already tracked by {dvcfile} (pass --update to fetch again)")
        else:
            _dvc(["import-url", url, str(out)])
        try:
            spec.check(out)
        except FetchError as err:
            raise FetchError(f"{err}; nothing to commit: `dvc remove {dvcfile}`, then retry or pass --url") from None
        meta = yaml.safe_load(dvcfile.read_text())["outs"][0]
        print(f"{out}: {meta['size']:,} bytes, md5 {meta['md5']} (from {url})")
        tracked.append(str(dvcfile))
    return tracked


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dataset", choices=sorted(DATASETS))
    parser.add_argument("--update", action="store_true", help="fetch again files already tracked (dvc update)")
    parser.add_argument(
        "--url",
        action="append",
        default=[],
        metavar="FILE=URL",
        help="take FILE from URL instead (a mirror); repeatable",
    )
    args = parser.parse_args(argv)
    try:
        overrides = dict(item.split("=", 1) for item in args.url)
    except ValueError:
        print(f"error: --url takes FILE=URL, got {args.url}", file=sys.stderr)
        return 2
    try:
        tracked = fetch(args.dataset, overrides, args.update)
    except FetchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    spec = DATASETS[args.dataset]
    print(
        f"next: git add {' '.join(tracked)} {spec.folder}/.gitignore && "
        f"git commit -m 'Track full {args.dataset}' && dvc push"
    )
    dataset = spec.train_args or f"-S data.dataset={args.dataset}"
    print(f"train: dvc exp run {dataset} -S data.path={spec.data_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
