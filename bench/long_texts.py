"""Long texts: two studies on a 1,200-row file of long texts, each in 3 seeds.

    python bench/long_texts.py                       # -> bench/results/long-texts-<time>.json
    python bench/long_texts.py --study small-files   # -> bench/results/small-files-<time>.json
    python bench/long_texts.py --study min-steps     # -> bench/results/min-steps-<time>.json

truncation: head or head_tail at an equal max_length (128, which cuts nearly every text), and TF-IDF.
small-files: the shipped recipe (train.epochs 1, which train.min_steps lengthens on this file) with every added
epoch run, against train.patience auto (early stopping once min_steps adds epochs), both at max_length 128.
min-steps: the same recipe with train.min_steps 250 (12 epochs here) against 64 (3 epochs), at max_length 128.
Each row is one AG News article (its label) at a random offset in class-neutral prose (CPython's
`pydoc_data.topics`), TEXT_WORDS words in all, so only the article tells the label and it sits anywhere. Each
run is the real pipeline (`dvc repro evaluate`) in a temporary git + DVC copy of this tree, the data fixed and
`train.seed` varied, the configs alternating; the record holds every run (bench/figures.py: mean, sample std).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from benchlib import (
    RESULTS,
    ROOT,
    copy_tree,
    git_commit_all,
    host_info,
    read_raw,
    set_param,
    timed,
    write_json,
    write_params,
    write_raw,
)

RAW = ROOT / "data/raw/ag_news"
TEXT_WORDS = (100, 160)  # words per long text, drawn uniformly (MiniLM: ~140-250 tokens)
LENGTH_128 = ["model.max_length=128", "model.length_buckets=[32,64,96,128]"]
# study -> (overrides every run gets besides the data's, {config: its overrides})
STUDIES = {
    "truncation": (
        ["train.epochs=3", "train.min_steps=null"],
        {
            "tfidf": ["train.method=tfidf"],
            "head-128": [*LENGTH_128, "model.truncation=head"],
            "head_tail-128": [*LENGTH_128, "model.truncation=head_tail"],
        },
    ),
    "small-files": (
        [*LENGTH_128, "train.epochs=1", "train.min_steps=250"],
        {"patience-auto": ["train.patience=auto"], "patience-null": ["train.patience=null"]},
    ),
    "min-steps": (
        [*LENGTH_128, "train.epochs=1", "train.patience=null"],
        {"min-steps-64": ["train.min_steps=64"], "min-steps-250": ["train.min_steps=250"]},
    ),
}


def filler_words() -> list[str]:
    """Class-neutral English prose: the reference text that ships with CPython (pydoc_data.topics, PSF
    licence), paragraphs of running text only (no code, no examples), as one word list in a fixed order."""
    from pydoc_data.topics import topics

    words: list[str] = []
    for key in sorted(topics):
        for paragraph in re.split(r"\n\s*\n", topics[key]):
            lines = paragraph.split("\n")
            if any(line.startswith((" ", "\t")) for line in lines) or ">>>" in paragraph or "=" in paragraph:
                continue  # code, examples, grammar rules
            if paragraph.count("(") <= 3 and len(paragraph.split()) >= 12:
                words += paragraph.split()
    return words


def long_rows(frame, rows: int, rng: np.random.Generator, filler: list[str]):
    """`rows` long texts from an alps frame (column 0 text, 1 class): a sampled article with filler prose
    before and after it (TEXT_WORDS words in all, the article's offset uniform over the filler)."""
    import pandas as pd

    texts, labels = frame[0].to_numpy(), frame[1].to_numpy()
    picked = rng.choice(len(frame), size=rows, replace=False)

    def prose(n: int) -> list[str]:
        start = int(rng.integers(0, len(filler) - n))
        return filler[start : start + n]

    out_text, out_label = [], []
    for i in picked:
        article = texts[i].split()
        room = max(0, int(rng.integers(TEXT_WORDS[0], TEXT_WORDS[1] + 1)) - len(article))
        before = int(rng.integers(0, room + 1))
        out_text.append(" ".join(prose(before) + article + prose(room - before)))
        out_label.append(labels[i])
    return pd.DataFrame({0: out_text, 1: out_label})


def build(dest: Path, pool_rows: int, test_rows: int, seed: int) -> Path:
    """dev.tsv (pool_rows) and test.tsv (test_rows) long texts in `dest`, as the ag_news reader takes them."""
    rng, filler = np.random.default_rng(seed), filler_words()
    dest.mkdir(parents=True, exist_ok=True)
    write_raw(long_rows(read_raw(RAW / "dev.tsv"), pool_rows, rng, filler), dest / "dev.tsv")
    write_raw(long_rows(read_raw(RAW / "test.tsv"), test_rows, rng, filler), dest / "test.tsv")
    return dest


def one_run(repo: Path, base: dict, name: str, overrides: list[str], seed: int, checkpoints: Path) -> dict:
    (repo / "params.yaml").write_text(yaml.safe_dump(base, sort_keys=False))
    write_params(repo, [*overrides, f"train.seed={seed}"])
    cmd = [sys.executable, "-m", "dvc", "repro", "evaluate"]
    run = timed(
        cmd, repo, checkpoints.parent / "runs.log", {"LORA_DVC_CHECKPOINTS": str(checkpoints / f"{name}-{seed}")}
    )
    train = json.loads((repo / "metrics/train.json").read_text())
    test = json.loads((repo / "metrics/test.json").read_text())["test"]
    tokens = json.loads((repo / "records/tokenize.json").read_text())
    row = {
        "config": name,
        "seed": seed,
        "test_accuracy": test["accuracy"],
        "test_macro_f1": test["macro_f1"],
        "val_accuracy": (train.get("val") or {}).get("accuracy"),
        "epochs_run": (train.get("fit") or {}).get("epochs"),
        "train_seconds": (train.get("fit") or {}).get("seconds"),
        "process_seconds": round(run["wall_s"], 1),
        "load": {key: run[key] for key in ("other_cores", "load1_before", "load1_after")},
        "tokenize": tokens.get("choice"),
        "train_truncated_fraction": tokens["train"]["truncated_fraction"],
    }
    print(json.dumps(row), flush=True)
    return row


def token_lengths(folder: Path) -> dict:
    from lora_dvc.modeling import load_tokenizer

    tokenizer = load_tokenizer("sentence-transformers/all-MiniLM-L6-v2")
    out = {}
    for name in ("dev.tsv", "test.tsv"):
        ids = tokenizer(read_raw(folder / name)[0].tolist())["input_ids"]
        lengths = np.array([len(r) for r in ids])
        out[name] = {
            "rows": len(lengths),
            "mean": round(float(lengths.mean()), 1),
            "p5": int(np.percentile(lengths, 5)),
            "p50": int(np.percentile(lengths, 50)),
            "p95": int(np.percentile(lengths, 95)),
            "max": int(lengths.max()),
            "over_128": round(float((lengths > 128).mean()), 4),
            "over_512": round(float((lengths > 512).mean()), 4),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", choices=list(STUDIES), default="truncation")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    parser.add_argument("--configs", nargs="+", help="a subset of the study's configs (default: all)")
    parser.add_argument("--pool-rows", type=int, default=800, help="train + val rows (val: --val-rows of them)")
    parser.add_argument("--val-rows", type=int, default=100)
    parser.add_argument("--test-rows", type=int, default=400)
    parser.add_argument("--data-seed", type=int, default=0)
    args = parser.parse_args()
    study_shared, configs = STUDIES[args.study]
    if args.configs:
        configs = {name: configs[name] for name in args.configs}
    host = host_info()
    shared = [
        "data.dataset=ag_news",
        "data.path=data/long_texts",
        f"data.val_fraction={args.val_rows / args.pool_rows}",
        *study_shared,
    ]
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as scratch:
        # this working tree (outputs and the shipped raw data left out) as a git + DVC repository
        repo = git_commit_all(copy_tree(Path(scratch) / "repo", skip=("data/raw/",)))
        build(repo / "data/long_texts", args.pool_rows, args.test_rows, args.data_seed)
        lengths = token_lengths(repo / "data/long_texts")
        print(json.dumps(lengths), flush=True)
        base = yaml.safe_load((repo / "params.yaml").read_text())
        for assignment in shared:
            set_param(base, assignment)
        for i, seed in enumerate(args.seeds):
            order = list(configs) if i % 2 == 0 else list(configs)[::-1]  # alternate which config runs first
            for name in order:
                rows.append(one_run(repo, base, name, configs[name], seed, Path(scratch) / "checkpoints"))
                write_result(host, args, shared, configs, lengths, rows)


def write_result(host: dict, args, shared: list[str], configs: dict, lengths: dict, rows: list[dict]) -> None:
    """Rewritten after every run, so an interrupted bench keeps what finished."""
    result = {
        "bench": "long-texts" if args.study == "truncation" else args.study,  # the record's name
        "command": "python bench/long_texts.py " + " ".join(sys.argv[1:]),
        "date": STARTED,
        "host": host,
        "data": {
            "source": "data/raw/ag_news (alps dev.tsv pool, test.tsv test); filler: CPython's pydoc_data.topics prose",
            "rule": f"one article (the label) at a random offset in {TEXT_WORDS[0]}-{TEXT_WORDS[1]} words of "
            "class-neutral prose (the Python reference's running text)",
            "pool_rows": args.pool_rows,
            "val_rows": args.val_rows,
            "test_rows": args.test_rows,
            "data_seed": args.data_seed,
            "token_lengths": lengths,
        },
        "shared_overrides": shared,
        "configs": configs,
        "seeds": args.seeds,
        "runs": rows,
    }
    write_json(RESULTS / f"{result['bench']}-{STARTED}.json", result)


STARTED = time.strftime("%Y%m%dT%H%M%S")

if __name__ == "__main__":
    main()
