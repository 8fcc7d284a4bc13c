"""The one loader for every kind of trained classifier, and the one way to score texts with it.

`load_classifier(folder)` takes models/classifier/ (a peft LoRA adapter, a full model, or the TF-IDF
baseline) or an export, onto a `Runtime`'s device, with its `Task`. `Classifier.probabilities(texts)`
tokenizes through the tokenize stage's fast path, merges LoRA adapters into the base weights, and scores
through the one inference loop. evaluate, predict and export all go through here. `revision_root(rev,
folder)` reads a model, its labels and params of any git revision or experiment from the DVC cache.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lora_dvc.artifacts import LABELS, MODEL, TOKENIZED_META, TokenizedSplit, read_label_file, read_labels
from lora_dvc.errors import UserError
from lora_dvc.task import MULTI_LABEL, Task

if TYPE_CHECKING:
    from lora_dvc.device import Runtime

PARAMS = Path("params.yaml")
KIND_NAMES = {"lora": "LoRA", "full": "full", "tfidf": "TF-IDF baseline"}
DEFAULT_BATCH = 64
FALLBACK_MAX_LENGTH = 512  # when neither params.yaml nor the tokenizer gives a usable limit
TOKENIZER_LIMIT = 8192  # tokenizers without a limit report ~1e30: not a training length
log = logging.getLogger("classifier")


@dataclass
class Classifier:
    """A trained classifier ready for inference, with everything needed to feed it text."""

    model: Any  # a transformers model (adapters merged unless merge=False) or a TfidfClassifier
    tokenizer: Any  # None for TF-IDF
    task: Task  # the label names, single- or multi-label, the threshold and the label-set delimiter
    kind: str  # lora | full | tfidf
    base: str | None  # the base model's name (lora) or the params' model.name (full)
    source: Path
    max_length: int = 0
    truncation: str = "head"  # model.truncation as trained (data/tokenized/meta.json): head | head_tail
    buckets: tuple[int, ...] = ()
    runtime: Runtime | None = None  # device, precision and static shapes (None for TF-IDF: numpy on the CPU)
    batch_size: int = DEFAULT_BATCH

    @property
    def labels(self) -> list[str]:
        return list(self.task.labels)

    @property
    def multi_label(self) -> bool:
        """A multi-label head (config.problem_type): probabilities are per-label sigmoids."""
        return self.task.multi_label

    def predicted(self, probs: np.ndarray) -> list:
        """Each row's predicted label, or for a multi-label model its label set (a list, maybe empty)."""
        return self.task.predicted(probs)

    def confidence(self, probs: np.ndarray) -> np.ndarray:
        """The top probability, or for a multi-label model its least sure yes/no decision (metrics.set_confidence)."""
        if self.multi_label:
            from lora_dvc.metrics import set_confidence

            return set_confidence(probs)
        return probs.max(axis=1)

    @property
    def pad_id(self) -> int:
        pad = getattr(self.tokenizer, "pad_token_id", None)
        return 0 if pad is None else int(pad)

    def tokenize(self, texts: list[str], progress: bool = False, pairs: list[str] | None = None) -> TokenizedSplit:
        """The texts (or the sentence pairs (texts[i], pairs[i])) as the tokenize stage would store
        them: the tokenizer's pair encoding, truncated to max_length the way training was (head | head_tail)."""
        from lora_dvc.tokenization import token_types, tokenize_texts

        ids, truncated = tokenize_texts(
            self.tokenizer,
            texts,
            self.max_length,
            "tokenize",
            progress=progress,
            pairs=pairs,
            truncation=self.truncation,
        )
        if truncated.any():
            log.info(
                "%d of %d texts are longer than %d tokens and were truncated",
                int(truncated.sum()),
                len(texts),
                self.max_length,
            )
        return TokenizedSplit.from_ids(ids, types=token_types(self.tokenizer, ids) if pairs is not None else None)

    def probabilities(
        self,
        texts: list[str],
        tokenized: TokenizedSplit | None = None,
        progress: bool = False,
        pairs: list[str] | None = None,
    ) -> np.ndarray:
        """(len(texts), classes) probabilities in input order. `tokenized`: the same texts already
        tokenized by the tokenize stage (evaluate), so they are not tokenized twice. `pairs`: each
        text's second text, for a model trained on sentence pairs (the TF-IDF baseline reads `texts` only)."""
        if self.kind == "tfidf":
            return self._tfidf_probabilities(texts)
        split = tokenized if tokenized is not None else self.tokenize(texts, progress, pairs=pairs)
        if len(split) == 0:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        from lora_dvc.inference import batched_probabilities

        return batched_probabilities(
            self.model, split, self.runtime, self.task, list(self.buckets), self.batch_size, self.pad_id, progress
        )

    def _tfidf_probabilities(self, texts: list[str]) -> np.ndarray:
        probs = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        if texts:  # columns of the classes seen in training; the others stay 0
            probs[:, self.model.classifier.classes_] = self.model.predict_proba(texts)
        return probs


# -- loading ----------------------------------------------------------------------------------


def model_kind(folder: Path) -> str:
    if (folder / "adapter_config.json").exists():
        return "lora"
    if (folder / "config.json").exists():
        return "full"
    from lora_dvc.tfidf import TfidfClassifier  # scipy and sklearn: only where no transformer model is saved

    if TfidfClassifier.is_saved_in(folder):
        return "tfidf"
    raise UserError(
        f"{folder}: holds no peft adapter (adapter_config.json), no model (config.json) "
        "and no TF-IDF model (tfidf_model.safetensors)"
    )


def load_classifier(
    folder: Path | str = MODEL,
    *,
    root: Path | str = ".",
    device: Any = None,
    labels: list[str] | None = None,
    base: str | None = None,
    batch_size: int | None = None,
    merge: bool = True,
    precision: str | None = "fp32",
    threshold: float | None = None,
) -> Classifier:
    """Load a trained classifier. `root` holds params.yaml and data/prepared/labels.json (the
    workspace, or a revision from `revision_root`); a relative `folder` is taken under it.
    `device`: anything torch.device takes (cpu, cuda:1, xla) or auto / None (train.device's choice).
    `precision`: a `train.precision` choice (None: params' train.precision; fp32 by default), both
    resolved by `Runtime.create`. `threshold`: the multi-label threshold (default: evaluate.threshold)."""
    root = Path(root)
    folder = _existing_folder(root, Path(folder))
    kind = model_kind(folder)
    params = _params_or_none(root)
    labels = labels or _labels_for(folder, root)
    batch_size = batch_size or (params.evaluate.batch_size if params else DEFAULT_BATCH)
    if kind == "tfidf":
        return _load_tfidf(folder, labels, batch_size)
    _quiet_transformers()
    runtime = _runtime(device, precision, params)
    base = _base_name(folder, kind, base, params)
    tokenizer, max_length = _tokenizer_and_length(folder, base, params)
    problem_type = _problem_type(folder, root)
    model = _load_network(folder, base, labels, problem_type)
    if merge and hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()  # one matmul per layer instead of base + A @ B
    model.to(runtime.device).eval()
    task = Task.of_model(labels, problem_type, params)
    return Classifier(
        model=model,
        tokenizer=tokenizer,
        task=task if threshold is None else replace(task, threshold=threshold),
        kind=kind,
        base=base,
        source=folder,
        max_length=max_length,
        truncation=params.model.truncation if params else "head",
        buckets=tuple(_buckets(params, max_length)),
        runtime=runtime,
        batch_size=batch_size,
    )


def _runtime(device, precision: str | None, params) -> Runtime:
    """The Runtime for `device` and `precision`, each defaulting to params' train.device / train.precision."""
    from lora_dvc.device import Runtime

    train = params.train if params else None
    device = device or (train.device if train else "auto")
    return Runtime.create(device, precision or (train.precision if train else "auto"))


def _existing_folder(root: Path, folder: Path) -> Path:
    full = folder if folder.is_absolute() else root / folder
    if not full.is_dir():
        raise UserError(
            f"{folder}: no trained model there; run `dvc repro train` (or `dvc pull {MODEL}`), "
            "or pass --model FOLDER or --rev EXPERIMENT"
        )
    return full


def _params_or_none(root: Path):
    """params.yaml with the length and truncation the tokenize stage applied (auto resolved), or None."""
    from lora_dvc.params import load_params
    from lora_dvc.tokenization import tokenized_params

    if not (root / PARAMS).exists():
        return None
    params = load_params(root / PARAMS)
    return tokenized_params(params, root, required=False) or params  # auto, no meta.json: _tokenizer_and_length


def _labels_for(folder: Path, root: Path) -> list[str]:
    """The model's own config names them (full models, exports), else its labels.json (TF-IDF
    exports), else the prepare stage's labels.json."""
    named = _config_labels(folder)
    if named:
        return named
    if (folder / "labels.json").exists():
        return read_label_file(folder / "labels.json")
    if (root / LABELS).exists():
        return read_labels(root)
    raise UserError(f"{LABELS} not found and {folder} names no labels; pass --labels labels.json")


def _config_labels(folder: Path) -> list[str] | None:
    """Label names from config.json's id2label, unless they are transformers' LABEL_i defaults."""
    path = folder / "config.json"
    if not path.exists():
        return None
    id2label = json.loads(path.read_text(encoding="utf-8")).get("id2label") or {}
    labels = [id2label[k] for k in sorted(id2label, key=int)]
    return None if labels == [f"LABEL_{i}" for i in range(len(labels))] else labels


def _load_tfidf(folder: Path, labels: list[str], batch_size: int) -> Classifier:
    from lora_dvc.tfidf import TfidfClassifier

    model = TfidfClassifier.load(folder)
    if int(model.classifier.classes_.max()) >= len(labels):
        raise UserError(
            f"{folder}: the model knows more classes than the {len(labels)} labels given "
            f"({', '.join(labels)}); pass the matching --labels"
        )
    task = Task(tuple(labels))
    return Classifier(model, None, task, "tfidf", None, folder, batch_size=batch_size)


def _base_name(folder: Path, kind: str, base: str | None, params) -> str | None:
    if kind == "lora":
        config = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
        base = base or config.get("base_model_name_or_path") or (params.model.name if params else None)
        if not base:
            raise UserError(f"{folder}/adapter_config.json names no base model; pass --base NAME_OR_FOLDER")
        return base
    return base or (params.model.name if params else None)


def _tokenizer_and_length(folder: Path, base: str | None, params) -> tuple[Any, int]:
    """The tokenizer (an export's own, else the base model's) and the truncation length: an exported
    tokenizer carries its training max_length, else the tokenize stage's (meta.json; params' model.max_length),
    else the tokenizer's."""
    from lora_dvc.modeling import load_tokenizer

    own = (folder / "tokenizer_config.json").exists()
    if not own and not base:
        raise UserError(f"{folder} holds no tokenizer and there is no {PARAMS}; pass --base NAME_OR_FOLDER")
    tokenizer = load_tokenizer(str(folder) if own else base)
    limit = getattr(tokenizer, "model_max_length", None)
    limit = int(limit) if isinstance(limit, int) and 0 < limit <= TOKENIZER_LIMIT else None
    if own and limit:
        return tokenizer, limit
    if params is not None and params.model.max_length != "auto":
        return tokenizer, params.model.max_length
    return tokenizer, limit or FALLBACK_MAX_LENGTH


def _buckets(params, max_length: int) -> list[int]:
    """params' length buckets (Params.buckets) for the classifier's max_length."""
    from lora_dvc.params import Params, bucket_lengths

    params = params or Params()
    return bucket_lengths(max_length, params.model.length_buckets)


def _problem_type(folder: Path, root: Path) -> str | None:
    """An export's or a full model's config.json problem_type, else multi-label where the tokenize stage
    says so (data/tokenized/meta.json: an adapter in models/classifier), else None (single-label)."""
    path = folder / "config.json"
    if path.exists():
        return json.loads(path.read_text(encoding="utf-8")).get("problem_type")
    meta = root / TOKENIZED_META
    if meta.exists() and json.loads(meta.read_text(encoding="utf-8")).get("multi_label"):
        return MULTI_LABEL
    return None


def _load_network(folder: Path, base: str | None, labels: list[str], problem_type: str | None = None):
    from lora_dvc.modeling import load_trained

    try:
        model = load_trained(folder, base or "", labels, problem_type)
    except RuntimeError as err:
        if "size mismatch" not in str(err):
            raise
        raise UserError(
            f"{folder}: its classification head does not have {len(labels)} outputs "
            f"({', '.join(labels)}); the labels belong to another dataset: pass the matching "
            "--labels or --rev"
        ) from None
    except OSError as err:
        raise UserError(f"{folder}: cannot load the model ({str(err).strip().splitlines()[0]})") from None
    outputs = getattr(model.config, "num_labels", len(labels))
    if outputs != len(labels):
        raise UserError(
            f"{folder}: the model has {outputs} outputs but {len(labels)} labels were given "
            f"({', '.join(labels)}); pass the matching --labels"
        )
    return model


def _quiet_transformers() -> None:
    """transformers resets its log level when first imported: keep its load reports and bars out."""
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


# -- a model of another revision --------------------------------------------------------------


@contextmanager
def revision_root(rev: str, folder: Path) -> Iterator[Path]:
    """A temporary root holding `folder`, labels.json and params.yaml as of a git revision or
    experiment, read through DVC (git for tracked files, the DVC cache for outputs)."""
    if folder.is_absolute():
        raise UserError("--rev takes --model as a path inside the repository (such as models/classifier)")
    from dvc.api import DVCFileSystem
    from dvc.exceptions import DvcException

    tmp = Path(tempfile.mkdtemp(prefix="classifier-rev-"))
    try:
        try:
            fs = DVCFileSystem(".", rev=rev)
            found = fs.exists(folder.as_posix())
        except DvcException as err:
            raise UserError(
                f"--rev {rev}: {err}; use a git revision or an experiment name from `dvc exp show`"
            ) from None
        if not found:
            raise UserError(f"--rev {rev}: {folder.as_posix()} does not exist in that revision")
        for rel in (folder, LABELS, PARAMS, TOKENIZED_META):
            if rel == folder or fs.exists(rel.as_posix()):
                _copy_from_revision(fs, rev, rel, tmp / rel)
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _copy_from_revision(fs, rev: str, rel: Path, dest: Path) -> None:
    from dvc.exceptions import DvcException

    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        names = fs.find(rel.as_posix()) if fs.isdir(rel.as_posix()) else [rel.as_posix()]
        for name in names:
            target = dest / Path(name).relative_to(rel.as_posix()) if name != rel.as_posix() else dest
            target.parent.mkdir(parents=True, exist_ok=True)
            fs.get_file(name, str(target))
    except (DvcException, FileNotFoundError) as err:
        raise UserError(
            f"--rev {rev}: cannot read {rel.as_posix()} ({err}); is it in the DVC cache? try `dvc pull --rev {rev}`"
        ) from None
