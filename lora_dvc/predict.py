"""predict: label new texts with the trained classifier.

    python -m lora_dvc.predict "Stocks fell sharply on Wall Street" "The Yankees won again"
    python -m lora_dvc.predict --file input.csv --out predictions.csv
    python -m lora_dvc.predict --rev my-experiment "some text"        # an experiment's model
    python -m lora_dvc.predict --model models/export "some text"      # an exported folder

For each text: the predicted label name, its probability (`confidence`) and the probability of
every class. Texts are tokenized like the pipeline does (truncated to `model.max_length`), batched
by length bucket and run on the device the train stage would pick (`train.device`, or --device).

The model is the workspace's DVC-tracked `models/classifier` by default (after `dvc exp apply NAME`,
that experiment's); --rev reads the model, labels and params of any git revision or experiment
(`dvc exp show` names) straight from the DVC cache without touching the workspace; --model
points at any folder: a peft adapter, a fully fine-tuned model (lora.enabled false) or an export
from `stages.export`. Labels come from the model's config when it names them, else from
data/prepared/labels.json.

Output: a table on stdout, or --json (one object per line), or --out FILE (.csv, .tsv or .jsonl,
written atomically) holding the input columns plus `predicted`, `confidence`, `prob_<label>`.
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

from lora_dvc.errors import UserError
from lora_dvc.runner import run_stage

from lora_dvc.artifacts import LABELS, MODEL as MODEL_DIR
PARAMS = Path("params.yaml")
DEVICES = ("auto", "cpu", "cuda", "xla")
OUT_SUFFIXES = (".csv", ".tsv", ".jsonl")
CHUNK = 2048
DEFAULT_BATCH = 64
KIND_NAMES = {"lora": "LoRA", "full": "full", "tfidf": "TF-IDF baseline"}
FALLBACK_MAX_LENGTH = 512  # when neither params.yaml nor the tokenizer gives a usable limit
log = logging.getLogger("predict")


# --------------------------------------------------------------------------------------------
# loading


@dataclass
class Classifier:
    """A trained classifier ready for inference, with everything needed to feed it text."""

    model: Any
    tokenizer: Any
    labels: list[str]
    max_length: int
    buckets: list[int]
    device: Any
    batch_size: int
    kind: str  # "lora" (peft adapter over a base model), "full" (every weight) or "tfidf" (the baseline)
    base: Optional[str]  # the base model's name as recorded (lora), or the params' model.name (full)
    source: Path

    def encode(self, texts: list[str], progress: bool = False) -> tuple[list[list[int]], int]:
        """Token ids truncated to max_length like the tokenize stage, and how many were truncated."""
        from tqdm import tqdm

        ids: list[list[int]] = []
        truncated = 0
        with tqdm(total=len(texts), desc="tokenize", unit="texts", disable=not progress, mininterval=1.0) as bar:
            for start in range(0, len(texts), CHUNK):
                chunk = texts[start : start + CHUNK]
                out = self.tokenizer(chunk, truncation=True, max_length=self.max_length + 1)["input_ids"]
                long_rows = [i for i, row in enumerate(out) if len(row) > self.max_length]
                if long_rows:
                    redo = self.tokenizer([chunk[i] for i in long_rows], truncation=True, max_length=self.max_length)
                    for i, row in zip(long_rows, redo["input_ids"]):
                        out[i] = row
                truncated += len(long_rows)
                ids.extend(out)
                bar.update(len(chunk))
        return ids, truncated

    def predict_proba(self, texts: list[str], progress: bool = False):
        """(len(texts), classes) probabilities, in input order."""
        import numpy as np

        from lora_dvc.batching import TokenizedSplit
        from lora_dvc.inference import predict_proba

        if not texts:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        if self.kind == "tfidf":
            probs = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
            probs[:, self.model.classifier.classes_] = self.model.predict_proba(texts)  # classes seen in training
            return probs
        ids, truncated = self.encode(texts, progress)
        if truncated:
            log.info("%d of %d texts are longer than %d tokens and were truncated", truncated, len(texts), self.max_length)
        split = TokenizedSplit.from_ids(ids)
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        return predict_proba(self.model, split, self.buckets, self.batch_size, pad_id, self.device,
                             desc="predict", progress=progress)


def quiet_transformers() -> None:
    """transformers resets its log level when first imported: keep its load reports and bars out."""
    import warnings

    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(transformers|peft)\b")


def clip_buckets(buckets: list[int], max_length: int) -> list[int]:
    """Length buckets below max_length, always ending at max_length (as Params.buckets does)."""
    return sorted({b for b in buckets if b < max_length}) + [max_length]


def read_labels(path: Path) -> list[str]:
    try:
        labels = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(f"{path}: cannot read the label list ({err})") from None
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
        raise UserError(f"{path}: expected a JSON list of label names in id order")
    return labels


def config_labels(model_dir: Path) -> Optional[list[str]]:
    """Label names from a folder's config.json id2label, unless they are transformers' LABEL_i defaults."""
    path = model_dir / "config.json"
    if not path.exists():
        return None
    id2label = json.loads(path.read_text(encoding="utf-8")).get("id2label") or {}
    labels = [id2label[k] for k in sorted(id2label, key=int)]
    if not labels or labels == [f"LABEL_{i}" for i in range(len(labels))]:
        return None
    return labels


def tfidf_class():
    """The TF-IDF baseline's class (train.method: tfidf), where this checkout has it."""
    try:
        from lora_dvc.tfidf import TfidfClassifier
    except ImportError:
        return None
    return TfidfClassifier


def model_kind(model_dir: Path) -> str:
    if (model_dir / "adapter_config.json").exists():
        return "lora"
    if (model_dir / "config.json").exists():
        return "full"
    tfidf = tfidf_class()
    if tfidf is not None and tfidf.is_saved_in(model_dir):
        return "tfidf"
    raise UserError(f"{model_dir}: holds neither a peft adapter (adapter_config.json) nor a model (config.json)")


def load_classifier(
    model_dir: Path | str = MODEL_DIR,
    root: Path | str = ".",
    labels_path: Optional[Path] = None,
    base: Optional[str] = None,
    device: Optional[str] = None,
    batch_size: Optional[int] = None,
    merge: bool = True,
) -> Classifier:
    """Load a trained classifier. `root` holds params.yaml and data/prepared/labels.json (the
    workspace, or a revision fetched by `fetch_rev`); relative `model_dir`s are taken under it."""
    root = Path(root)
    model_dir = Path(model_dir)
    if not model_dir.is_absolute():
        model_dir = root / model_dir
    if not model_dir.is_dir():
        shown = model_dir.relative_to(root) if root != Path(".") and model_dir.is_relative_to(root) else model_dir
        raise UserError(
            f"{shown}: no trained model there; run `dvc repro train` (or `dvc pull {MODEL_DIR}`), "
            "or pass --model FOLDER or --rev EXPERIMENT"
        )
    kind = model_kind(model_dir)
    quiet_transformers()

    from lora_dvc.params import load_params

    params = load_params(root / PARAMS) if (root / PARAMS).exists() else None

    # labels: the model's own config names them (full models, exports), else labels.json
    labels = read_labels(labels_path) if labels_path else config_labels(model_dir)
    if labels is None and (model_dir / "labels.json").exists():  # a TF-IDF export
        labels = read_labels(model_dir / "labels.json")
    if labels is None:
        path = root / LABELS
        if not path.exists():
            raise UserError(f"{LABELS} not found and {model_dir} names no labels; pass --labels labels.json")
        labels = read_labels(path)

    if kind == "tfidf":
        import torch

        model = tfidf_class().load(model_dir)
        if int(model.classifier.classes_.max()) >= len(labels):
            raise UserError(f"{model_dir}: the model knows more classes than the {len(labels)} labels given ({', '.join(labels)})")
        return Classifier(model=model, tokenizer=None, labels=labels, max_length=0, buckets=[],
                          device=torch.device("cpu"), batch_size=batch_size or DEFAULT_BATCH, kind=kind,
                          base=None, source=model_dir)

    # base model (adapters) and tokenizer source
    if kind == "lora":
        recorded = json.loads((model_dir / "adapter_config.json").read_text(encoding="utf-8")).get("base_model_name_or_path")
        base = base or recorded or (params.model.name if params else None)
        if not base:
            raise UserError(f"{model_dir}/adapter_config.json names no base model; pass --base NAME_OR_FOLDER")
    else:
        base = base or (params.model.name if params else None)

    from lora_dvc.modeling import load_tokenizer, load_trained

    own_tokenizer = (model_dir / "tokenizer_config.json").exists()
    if own_tokenizer:
        tokenizer = load_tokenizer(str(model_dir))
    elif base:
        tokenizer = load_tokenizer(base)
    else:
        raise UserError(f"{model_dir} holds no tokenizer and there is no {PARAMS}; pass --base NAME_OR_FOLDER")

    # truncation: an exported tokenizer carries its training max_length; else params; else the tokenizer's
    limit = getattr(tokenizer, "model_max_length", None)
    tokenizer_limit = int(limit) if isinstance(limit, int) and 0 < limit <= 8192 else None
    if own_tokenizer and tokenizer_limit:
        max_length = tokenizer_limit
    elif params is not None:
        max_length = params.model.max_length
    else:
        max_length = tokenizer_limit or FALLBACK_MAX_LENGTH
    buckets = clip_buckets(params.model.length_buckets if params else [32, 64, 96, 128], max_length)

    from lora_dvc.device import pick_device

    torch_device = pick_device(device or (params.train.device if params else "auto"))
    try:
        model = load_trained(model_dir, base or "", labels)
    except RuntimeError as err:
        if "size mismatch" not in str(err):
            raise
        raise UserError(
            f"{model_dir}: its classification head does not have {len(labels)} outputs ({', '.join(labels)}); "
            "the labels belong to another dataset: pass the matching --labels or --rev"
        ) from None
    except OSError as err:
        raise UserError(f"{model_dir}: cannot load the model ({str(err).strip().splitlines()[0]})") from None
    n_out = getattr(model.config, "num_labels", len(labels))
    if n_out != len(labels):
        raise UserError(f"{model_dir}: the model has {n_out} outputs but {len(labels)} labels were given ({', '.join(labels)})")
    if merge and hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()  # one matmul per layer instead of two, as evaluate does
    model.to(torch_device)
    model.eval()
    return Classifier(
        model=model,
        tokenizer=tokenizer,
        labels=labels,
        max_length=max_length,
        buckets=buckets,
        device=torch_device,
        batch_size=batch_size or (params.evaluate.batch_size if params else DEFAULT_BATCH),
        kind=kind,
        base=base,
        source=model_dir,
    )


@contextmanager
def fetch_rev(rev: str, model_rel: Path) -> Iterator[Path]:
    """A temporary folder holding `model_rel`, labels.json and params.yaml as of a git revision or
    experiment, read through DVC (git for tracked files, the DVC cache for outputs)."""
    if model_rel.is_absolute():
        raise UserError("--rev takes --model as a path inside the repository (such as models/classifier), not an absolute path")
    from dvc.api import DVCFileSystem
    from dvc.exceptions import DvcException

    tmp = Path(tempfile.mkdtemp(prefix="predict-rev-"))
    try:
        try:
            fs = DVCFileSystem(".", rev=rev)
            found = fs.exists(model_rel.as_posix())
        except DvcException as err:
            raise UserError(f"--rev {rev}: {err}; use a git revision or an experiment name from `dvc exp show`") from None
        if not found:
            raise UserError(f"--rev {rev}: {model_rel.as_posix()} does not exist in that revision")
        for rel in (model_rel, LABELS, PARAMS):
            if rel != model_rel and not fs.exists(rel.as_posix()):
                continue
            dest = tmp / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                if fs.isdir(rel.as_posix()):
                    dest.mkdir()
                    for name in fs.find(rel.as_posix()):
                        target = dest / Path(name).relative_to(rel.as_posix())
                        target.parent.mkdir(parents=True, exist_ok=True)
                        fs.get_file(name, str(target))
                else:
                    fs.get_file(rel.as_posix(), str(dest))
            except (DvcException, FileNotFoundError) as err:
                raise UserError(
                    f"--rev {rev}: cannot read {rel.as_posix()} ({err}); is it in the DVC cache? try `dvc pull --rev {rev}`"
                ) from None
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# input and output


def read_texts(path: Path, column: str):
    """The input table and its text column (every value a string, empty cells as '')."""
    import pandas as pd

    if not path.is_file():
        raise UserError(f"--file {path}: not found")
    sep = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        frame = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise UserError(f"--file {path}: not a readable {'TSV' if sep == chr(9) else 'CSV'} with a header row ({str(err).strip().splitlines()[0]})") from None
    if column not in frame.columns:
        raise UserError(f"--file {path}: no column '{column}'; its columns are {list(frame.columns)}; pick one with --text-column")
    if frame.empty:
        raise UserError(f"--file {path}: no rows to predict")
    return frame


def true_labels(values: list[str], labels: list[str]) -> Optional[list[str]]:
    """A column of true labels as names (given as names or as ids), or None if it is neither."""
    if all(v in labels for v in values):
        return list(values)
    if all(v.strip().lstrip("-").isdigit() and 0 <= int(v) < len(labels) for v in values):
        return [labels[int(v)] for v in values]
    return None


def result_table(frame, probs, labels: list[str]):
    """The input columns plus predicted, confidence and prob_<label> for each class."""
    import numpy as np

    out = frame.copy()
    new = {"predicted": [labels[i] for i in probs.argmax(axis=1)], "confidence": np.round(probs.max(axis=1), 6)}
    for i, label in enumerate(labels):
        new[f"prob_{label}"] = np.round(probs[:, i], 6)
    for name in new:
        if name in out.columns:
            log.warning("input column '%s' is replaced by the prediction's", name)
    for name, values in new.items():
        out[name] = values
    return out


def write_table(table, path: Path) -> None:
    from lora_dvc.atomic import atomic_path

    suffix = path.suffix.lower()
    with atomic_path(path) as tmp:
        if suffix == ".jsonl":
            table.to_json(tmp, orient="records", lines=True, force_ascii=False)
        else:
            table.to_csv(tmp, index=False, sep="\t" if suffix == ".tsv" else ",")


def shorten(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def format_table(texts: list[str], probs, labels: list[str], truth: Optional[list[str]] = None, width: int = 60) -> str:
    """A plain-text table: [true label,] predicted, confidence, one column per class, the text."""
    headers = (["true"] if truth else []) + ["predicted", "confidence"] + labels + ["text"]
    rows = []
    for r, text in enumerate(texts):
        p = probs[r]
        cells = ([truth[r]] if truth else []) + [labels[int(p.argmax())], f"{p.max():.3f}"]
        rows.append(cells + [f"{x:.3f}" for x in p] + [shorten(text, width)])
    widths = [max(len(h), *(len(row[c]) for row in rows)) for c, h in enumerate(headers)]
    numeric = set(range(len(headers) - len(labels) - 2, len(headers) - 1))  # confidence + class columns

    def line(cells: list[str]) -> str:
        parts = [c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))]
        return "  ".join(parts).rstrip()

    return "\n".join([line(headers)] + [line(row) for row in rows])


# --------------------------------------------------------------------------------------------
# command line


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line and exit 2, like every other user error
        raise UserError(f"{message} (see python -m lora_dvc.predict --help)")


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = _Parser(prog="python -m lora_dvc.predict", description="Label texts with the trained classifier.")
    p.add_argument("texts", nargs="*", help="texts to classify (or use --file)")
    p.add_argument("--file", type=Path, help="a .csv or .tsv with a header row; one text per row")
    p.add_argument("--text-column", default="text", help="the column of --file holding the texts (default: text)")
    p.add_argument("--label-column", default="label",
                   help="a column of --file with true labels (names or ids): reported as accuracy (default: label, if present)")
    p.add_argument("--out", type=Path, help="write the predictions here (.csv, .tsv or .jsonl) instead of printing them")
    p.add_argument("--json", action="store_true", help="print one JSON object per text instead of a table")
    p.add_argument("--model", type=Path, default=MODEL_DIR,
                   help=f"the model folder: an adapter, a full model or an export (default: {MODEL_DIR})")
    p.add_argument("--rev", help="read the model, labels and params of this git revision or experiment name")
    p.add_argument("--labels", type=Path, help=f"a JSON list of label names (default: the model's config, else {LABELS})")
    p.add_argument("--base", help="base model name or folder for an adapter (default: the one the adapter records)")
    p.add_argument("--device", choices=DEVICES, help="default: params' train.device, as the train stage picks")
    p.add_argument("--batch-size", type=int, help="texts per batch (default: params' evaluate.batch_size)")
    args = p.parse_args(argv)
    if args.texts and args.file:
        raise UserError("give texts as arguments or --file, not both")
    if not args.texts and not args.file:
        raise UserError("nothing to predict: give texts as arguments or --file input.csv")
    if args.out and args.out.suffix.lower() not in OUT_SUFFIXES:
        raise UserError(f"--out {args.out}: use a file ending in {', '.join(OUT_SUFFIXES)}")
    if args.batch_size is not None and args.batch_size < 1:
        raise UserError("--batch-size must be a positive integer")
    return args


def main(argv: Optional[list[str]] = None) -> None:
    import pandas as pd

    args = parse_args(argv)
    if args.file:
        frame = read_texts(args.file, args.text_column)
        texts = frame[args.text_column].tolist()
    else:
        texts = list(args.texts)
        frame = pd.DataFrame({"text": texts})

    @contextmanager
    def source() -> Iterator[tuple[Path, Path]]:
        if args.rev:
            with fetch_rev(args.rev, args.model) as root:
                yield root, args.model
        else:
            yield Path("."), args.model

    with source() as (root, model_dir):
        clf = load_classifier(model_dir, root, args.labels, args.base, args.device, args.batch_size)
    where = f"{args.model} at {args.rev}" if args.rev else str(clf.source)
    log.info("%s: %s model, %d labels, on %s", where, KIND_NAMES[clf.kind], len(clf.labels), clf.device)

    empty = sum(1 for t in texts if not t.strip())
    if empty:
        log.warning("%d empty texts: their predictions carry no information", empty)
    started = time.perf_counter()
    probs = clf.predict_proba(texts, progress=len(texts) > 256)
    seconds = time.perf_counter() - started
    log.info("%d texts in %.1f s (%.0f texts/s)", len(texts), seconds, len(texts) / max(seconds, 1e-9))

    truth = None
    if args.file and args.label_column in frame.columns and args.label_column != args.text_column:
        truth = true_labels(frame[args.label_column].tolist(), clf.labels)
        if truth is None:
            log.warning("column '%s' holds values that are neither label names nor ids: no accuracy", args.label_column)
        else:
            correct = sum(t == clf.labels[i] for t, i in zip(truth, probs.argmax(axis=1)))
            log.info("accuracy against column '%s': %.4f (%d of %d)", args.label_column, correct / len(truth), correct, len(truth))

    table = result_table(frame, probs, clf.labels)
    if args.out:
        write_table(table, args.out)
        log.info("wrote %s (%d rows)", args.out, len(table))
    elif args.json:
        for r, text in enumerate(texts):
            record = {"text": text, "predicted": table["predicted"].iat[r], "confidence": float(probs[r].max()),
                      "probabilities": {label: float(probs[r, i]) for i, label in enumerate(clf.labels)}}
            if truth:
                record["label"] = truth[r]
            print(json.dumps(record, ensure_ascii=False))
    else:
        print(format_table(texts, probs, clf.labels, truth))
    sys.stdout.flush()


if __name__ == "__main__":
    run_stage(main)
