"""predict: label new texts with the trained classifier; reads and writes what a pipe carries.

    lora-dvc predict "Stocks fell sharply on Wall Street" "The Yankees won again"
    lora-dvc predict --file input.csv --out predictions.csv     # .csv .tsv .jsonl, else text lines

By default one JSON object per text on stdout (the input's fields plus `predicted`, `confidence`,
`probabilities`), logs on stderr. A multi-label model predicts every label at or above --threshold:
`predicted` is a list, `confidence` the least sure of the row's yes/no decisions. --rev and --model
pick another model; --device and --precision resolve as training does. docs/using.md: every option.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from lora_dvc.artifacts import LABELS, MODEL, read_label_file
from lora_dvc.classifier import KIND_NAMES, load_classifier, revision_root
from lora_dvc.errors import UserError
from lora_dvc.params import PRECISIONS
from lora_dvc.runner import ArgumentParser, run_stage

STDIN = "-"
INPUT_FORMATS = ("lines", "csv", "tsv", "jsonl")
OUT_SUFFIXES = (".csv", ".tsv", ".jsonl")
log = logging.getLogger("predict")


# -- input ------------------------------------------------------------------------------------


def input_format(source: str, given: str | None) -> str:
    """--input-format, else the file's suffix (.csv, .tsv, .jsonl/.ndjson), else one text per line."""
    if given:
        return given
    suffix = Path(source).suffix.lower()
    return {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl"}.get(suffix, "lines")


def read_input(source: str, fmt: str, column: str, pair_column: str | None = None) -> pd.DataFrame:
    """The input rows (every value a string) with their text in `column` (and, for a model trained on
    sentence pairs, each row's second text in `pair_column`); `-` is stdin."""
    if source != STDIN and not Path(source).is_file():
        raise UserError(f"--file {source}: not found")
    try:
        if source == STDIN:
            frame = _parse(sys.stdin, fmt, column)
        else:
            with open(source, encoding="utf-8", newline="") as handle:
                frame = _parse(handle, fmt, column)
    except (ValueError, UnicodeDecodeError) as err:  # pandas' and json's parse errors are ValueErrors
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"{source}: not readable as {fmt} ({first}); set --input-format") from None
    for name, flag in ((column, "--text-column"), (pair_column, "--text-pair-column")):
        if name is not None and name not in frame.columns:
            raise UserError(
                f"{source}: no column '{name}' (columns: {', '.join(map(repr, frame.columns))}); set {flag}"
            )
    return frame


def _parse(handle, fmt: str, column: str) -> pd.DataFrame:
    if fmt == "lines":
        return pd.DataFrame({column: [line.rstrip("\r\n") for line in handle if line.strip()]})
    if fmt in ("csv", "tsv"):
        return pd.read_csv(handle, sep="\t" if fmt == "tsv" else ",", dtype=str, keep_default_na=False)
    records = [json.loads(line) for line in handle if line.strip()]
    if not all(isinstance(r, dict) for r in records):
        raise ValueError("every line must be a JSON object")
    frame = pd.DataFrame.from_records(records)
    return frame.fillna("").astype(str) if len(frame) else pd.DataFrame({column: []})


def true_labels(values: list[str], labels: list[str]) -> list[str] | None:
    """True labels as names (given as names or as ids), or None if they are neither."""
    if all(v in labels for v in values):
        return list(values)
    if all(v.strip().lstrip("-").isdigit() and 0 <= int(v) < len(labels) for v in values):
        return [labels[int(v)] for v in values]
    return None


# -- output -----------------------------------------------------------------------------------


def records(frame: pd.DataFrame, probs: np.ndarray, labels: list[str], sets: Sets | None = None) -> list[dict]:
    """One JSON-ready object per row: the input's fields, predicted, confidence, probabilities
    (multi-label, `sets`: predicted is the list of predicted labels)."""
    out = []
    predicted, confidence = sets.labels if sets else None, sets.confidence if sets else probs.max(axis=1)
    for i, (row, p) in enumerate(zip(frame.to_dict(orient="records"), probs)):
        row.update(
            predicted=predicted[i] if sets else labels[int(p.argmax())],
            confidence=round(float(confidence[i]), 6),
            probabilities={label: round(float(x), 6) for label, x in zip(labels, p)},
        )
        out.append(row)
    return out


class Sets:
    """A multi-label model's predictions: each row's predicted label set, its confidence, and how a set
    is written in a table (joined by data.label_delimiter, '|' by default)."""

    def __init__(self, clf, probs: np.ndarray) -> None:
        self.task, self.labels, self.confidence = clf.task, clf.predicted(probs), clf.confidence(probs)
        self.delimiter = self.task.delimiter

    def joined(self) -> list[str]:
        return [self.task.join(s) for s in self.labels]


def flat_table(frame: pd.DataFrame, probs: np.ndarray, labels: list[str], sets: Sets | None = None) -> pd.DataFrame:
    """The input columns plus predicted, confidence and prob_<label> for each class (.csv, .tsv)."""
    if sets:
        new = {"predicted": sets.joined(), "confidence": np.round(sets.confidence, 6)}
    else:
        new = {"predicted": [labels[i] for i in probs.argmax(axis=1)], "confidence": np.round(probs.max(axis=1), 6)}
    new.update({f"prob_{label}": np.round(probs[:, i], 6) for i, label in enumerate(labels)})
    for name in set(new) & set(frame.columns):
        log.warning("input column '%s' is replaced by the prediction's", name)
    return frame.assign(**new)


def write_predictions(
    path: Path, frame: pd.DataFrame, probs: np.ndarray, labels: list[str], sets: Sets | None = None
) -> None:
    from lora_dvc.atomic import atomic_path, write_text

    if path.suffix.lower() == ".jsonl":
        lines = (json.dumps(r, ensure_ascii=False) + "\n" for r in records(frame, probs, labels, sets))
        write_text(path, "".join(lines))
        return
    with atomic_path(path) as tmp:
        table = flat_table(frame, probs, labels, sets)
        table.to_csv(tmp, index=False, sep="\t" if path.suffix.lower() == ".tsv" else ",")


def format_table(
    texts: list[str], probs: np.ndarray, labels: list[str], width: int = 60, sets: Sets | None = None
) -> str:
    """A plain-text table for people: predicted, confidence, one column per class, the text."""
    table = pd.DataFrame(probs, columns=labels).round(3)
    table.insert(0, "predicted", sets.joined() if sets else [labels[i] for i in probs.argmax(axis=1)])
    table.insert(1, "confidence", (sets.confidence if sets else probs.max(axis=1)).round(3))
    short = [" ".join(t.split()) for t in texts]
    table["text"] = [t if len(t) <= width else t[: width - 3] + "..." for t in short]
    return table.to_string(index=False, float_format="{:.3f}".format, justify="left")


# -- command line -----------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None):
    p = ArgumentParser(prog="lora-dvc predict", description="Label texts with the trained classifier.")
    p.add_argument("texts", nargs="*", help="texts to classify; a single '-' reads standard input")
    p.add_argument("--file", help="input file (.csv/.tsv with a header, .jsonl, else one text per line); - = stdin")
    p.add_argument("--input-format", choices=INPUT_FORMATS, help="how to read --file or stdin (default: by suffix)")
    p.add_argument("--text-column", default="text", help="the input's field holding the texts (default: text)")
    p.add_argument(
        "--text-pair-column",
        help="the field holding each row's second text, for a model trained on sentence pairs (data.text_pair_column)",
    )
    p.add_argument("--label-column", default="label", help="an input field with true labels: logs the accuracy")
    p.add_argument("--out", type=Path, help="write the predictions here (.csv, .tsv or .jsonl), not to stdout")
    p.add_argument("--table", action="store_true", help="print a table for people instead of JSONL")
    p.add_argument("--model", type=Path, default=MODEL, help=f"the model folder (default: {MODEL})")
    p.add_argument("--rev", help="read the model, labels and params of this git revision or experiment")
    p.add_argument("--labels", type=Path, help=f"a JSON list of label names (default: the model's, else {LABELS})")
    p.add_argument("--base", help="base model name or folder for an adapter (default: the one it records)")
    p.add_argument("--device", help="a torch device: cpu, cuda, cuda:1, xla (default: train.device's choice)")
    p.add_argument("--batch-size", type=int, help="texts per batch (default: params' evaluate.batch_size)")
    p.add_argument(
        "--threshold",
        type=float,
        help="multi-label models: predict a label at sigmoid probability >= this (default: evaluate.threshold)",
    )
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="auto | fp32 | bf16 | fp16, resolved for the device as in training (default: params' train.precision)",
    )
    args = p.parse_args(argv)
    if args.texts == [STDIN] and not args.file:
        args.file, args.texts = STDIN, []
    if args.texts and args.file:
        raise UserError("give texts as arguments or --file, not both")
    if not args.texts and not args.file:
        raise UserError("nothing to predict: give texts as arguments, --file input.csv, or - for stdin")
    if args.text_pair_column and (not args.file or input_format(args.file, args.input_format) == "lines"):
        raise UserError("--text-pair-column needs a --file with columns (.csv, .tsv or .jsonl) holding both texts")
    if args.out and args.out.suffix.lower() not in OUT_SUFFIXES:
        raise UserError(f"--out {args.out}: use a file ending in {', '.join(OUT_SUFFIXES)}")
    if args.threshold is not None and not 0 < args.threshold < 1:
        raise UserError(f"--threshold {args.threshold}: use a number in (0, 1)")
    if args.batch_size is not None and args.batch_size < 1:
        raise UserError("--batch-size must be a positive integer")
    return args


def load(args):
    """The classifier --model/--rev/--labels/--base/--device name."""
    labels = read_label_file(args.labels) if args.labels else None
    options = dict(
        device=args.device,
        labels=labels,
        base=args.base,
        batch_size=args.batch_size,
        precision=args.precision,
        threshold=args.threshold,
    )
    if not args.rev:
        return load_classifier(args.model, **options)
    with revision_root(args.rev, args.model) as root:
        return load_classifier(args.model, root=root, **options)


def log_accuracy(frame: pd.DataFrame, args, probs: np.ndarray, labels: list[str], sets: Sets | None = None) -> None:
    if args.label_column not in frame.columns or args.label_column == args.text_column:
        return
    if sets:  # multi-label: subset accuracy against label sets written as predict writes them
        truth = [{x.strip() for x in v.split(sets.delimiter) if x.strip()} for v in frame[args.label_column]]
        correct = sum(t == set(p) for t, p in zip(truth, sets.labels))
        log.info(
            "subset accuracy against '%s': %.4f (%d of %d)",
            args.label_column,
            correct / max(len(truth), 1),
            correct,
            len(truth),
        )
        return
    truth = true_labels(frame[args.label_column].tolist(), labels)
    if truth is None:
        log.warning("field '%s' holds values that are neither label names nor ids: no accuracy", args.label_column)
        return
    correct = sum(t == labels[i] for t, i in zip(truth, probs.argmax(axis=1)))
    log.info(
        "accuracy against '%s': %.4f (%d of %d)", args.label_column, correct / max(len(truth), 1), correct, len(truth)
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.file:
        fmt = input_format(args.file, args.input_format)
        frame = read_input(args.file, fmt, args.text_column, args.text_pair_column)
    else:
        frame = pd.DataFrame({args.text_column: list(args.texts)})
    texts = frame[args.text_column].tolist()
    pairs = frame[args.text_pair_column].tolist() if args.text_pair_column else None
    clf = load(args)
    log.info(
        "%s: %s model, %d labels, on %s",
        f"{args.model} at {args.rev}" if args.rev else clf.source,
        KIND_NAMES[clf.kind],
        len(clf.labels),
        clf.runtime.device if clf.runtime else "cpu",
    )
    if any(not t.strip() for t in texts):
        log.warning("%d empty texts: their predictions carry no information", sum(not t.strip() for t in texts))
    started = time.perf_counter()
    probs = clf.probabilities(texts, progress=len(texts) > 256, pairs=pairs)
    seconds = time.perf_counter() - started
    log.info("%d texts in %.1f s (%.0f texts/s)", len(texts), seconds, len(texts) / max(seconds, 1e-9))
    sets = Sets(clf, probs) if clf.multi_label else None
    log_accuracy(frame, args, probs, clf.labels, sets)
    if args.out:
        write_predictions(args.out, frame, probs, clf.labels, sets)
        log.info("wrote %s (%d rows)", args.out, len(frame))
    elif args.table:
        print(format_table(texts, probs, clf.labels, sets=sets))
    else:
        for record in records(frame, probs, clf.labels, sets):
            print(json.dumps(record, ensure_ascii=False))
    sys.stdout.flush()


if __name__ == "__main__":
    run_stage(main)
