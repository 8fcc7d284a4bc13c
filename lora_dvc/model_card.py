"""The export's README.md: a huggingface_hub ModelCard, its metadata from ModelCardData (model-index and all).

Every fact comes from data: params.yaml, the metrics files (prepare, train, evaluate), the
adapter's config, and the dataset's metadata file beside the data (`dataset.yaml`: name, source,
licence, citation). Nothing about a dataset is written here; a dataset without that file gets a
card that says its licence is not recorded.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from lora_dvc.errors import UserError
from lora_dvc.params import TRAINER_ARGS_LISTED, lora_variant

DATASET_FILE = "dataset.yaml"
RAW_DATA = Path("data/raw")
LIBRARIES = {"lora": "peft", "full": "transformers", "tfidf": "scikit-learn"}
TAGS = {"lora": ["lora", "peft"], "full": ["full-fine-tuning"], "tfidf": ["tfidf", "baseline"]}
UNKNOWN_LANGUAGE = "not recorded here (see the base model's card)"
# languages of the base models the README names
BASE_LANGUAGES = {
    "sentence-transformers/all-MiniLM-L6-v2": "English",
    "roberta-base": "English",
    "FacebookAI/roberta-base": "English",
    "bert-base-uncased": "English",
    "xlm-roberta-base": "about 100 languages (XLM-R)",
    "FacebookAI/xlm-roberta-base": "about 100 languages (XLM-R)",
}


@dataclass
class CardFacts:
    """What the card states; each field read from a params or metrics file by the export stage."""

    name: str
    kind: str  # lora | full | tfidf
    base: str | None
    labels: list[str]
    max_length: int
    params: Any  # lora_dvc.params.Params
    adapter_config: dict | None = None
    train: dict | None = None  # records/train/metrics.json
    test: dict | None = None  # records/evaluate/metrics.json's "test"
    prepare: dict | None = None  # records/prepare.json
    merged: bool = False
    truncation: str = "head"  # model.truncation as tokenized: head | head_tail
    multi_label: bool = False  # a multi-label head (sigmoid per label, predicted at >= threshold)
    threshold: float = 0.5  # evaluate.threshold


def dataset_metadata(dataset: str, data_path: str, root: Path = Path(".")) -> dict:
    """The `dataset.yaml` beside the data (data.path's folder, else data/raw/<dataset>/)."""
    given = root / data_path
    for folder in (given if given.is_dir() else given.parent, root / RAW_DATA / dataset):
        path = folder / DATASET_FILE
        if path.is_file():
            try:
                meta = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            except yaml.YAMLError as err:
                raise UserError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
            return {"hub": None, "language": None, "citation": None, "task": "text classification", **meta}
    return {
        "name": f"`{data_path}`",
        "hub": None,
        "language": None,
        "citation": None,
        "task": "text classification",
        "source": f"the data at `{data_path}`",
        "licence": f"not recorded in this repository (no {DATASET_FILE} beside the data): "
        "state it here before publishing the model",
    }


def summarise_targets(target_modules: Any) -> str:
    """`query`, `value` in 6 layers (12 modules), from peft's list of full module names."""
    if isinstance(target_modules, str):
        return f"`{target_modules}`"
    names = list(target_modules or [])
    leaves = Counter(n.rsplit(".", 1)[-1] for n in names)
    layers = {m.group(1) for n in names if (m := re.search(r"\.layer\.(\d+)\.", n))}
    where = f" in {len(layers)} layers" if layers else ""
    return f"{', '.join(f'`{leaf}`' for leaf in sorted(leaves))}{where} ({len(names)} modules)"


def base_on_hub(base: str | None) -> bool:
    """A local folder is no Hub base_model."""
    return bool(base) and not (Path(base).is_absolute() or Path(base).exists())


def card_data(facts: CardFacts, data: dict) -> ModelCardData:
    """The metadata the Hugging Face Hub reads (library, base model, tags, dataset, model-index)."""
    return ModelCardData(
        model_name=facts.name,
        library_name=LIBRARIES[facts.kind],
        base_model=facts.base if facts.kind != "tfidf" and base_on_hub(facts.base) else None,
        pipeline_tag="text-classification",
        tags=["text-classification", "dvc"] + TAGS[facts.kind],
        language=[data["language"]] if data.get("language") else None,
        datasets=[data["hub"]] if data.get("hub") else None,
        eval_results=eval_results(facts, data) if facts.test else None,
    )


def eval_results(facts: CardFacts, data: dict) -> list[EvalResult]:
    """The test metrics under the Hub's metric names (accuracy, f1 with its average)."""
    test, multi = facts.test, facts.multi_label
    metrics = [("accuracy", test["accuracy"], "Test subset accuracy" if multi else "Test accuracy", None)]
    metrics.append(("f1", test["macro_f1"], "Test macro-F1", {"average": "macro"}))
    if "micro_f1" in test:
        metrics.append(("f1", test["micro_f1"], "Test micro-F1", {"average": "micro"}))
    return [
        EvalResult(
            task_type="text-classification",
            task_name="Text Classification",
            dataset_type=data.get("hub") or facts.params.data.dataset,
            dataset_name=data["name"].strip("`"),
            dataset_split="test",
            metric_type=kind,
            metric_value=round(value, 4),
            metric_name=name,
            metric_args=args,
        )
        for kind, value, name, args in metrics
    ]


def confidence_state(test: dict | None) -> str | None:
    if not test or "mean_confidence" not in test:
        return None
    gap = test["mean_confidence"] - test["accuracy"]
    return ("over-confident" if gap > 0 else "under-confident") if abs(gap) > 0.02 else "about right on average"


def render_model_card(facts: CardFacts, root: Path = Path(".")) -> str:
    """README.md: huggingface_hub's ModelCard of the metadata and the sections below."""
    data = dataset_metadata(facts.params.data.dataset, facts.params.data.path, root)
    card = ModelCard(f"---\n{card_data(facts, data).to_yaml()}\n---\n\n{body(facts, data)}")
    return str(card)


def _test_rows(facts: CardFacts) -> int | None:
    if not facts.test:
        return None
    rows = (facts.prepare or {}).get("rows", {})
    return rows.get("test") or sum(c["support"] for c in facts.test["per_class"].values())


# -- the card's text: one function per section ---------------------------------------------------------


def num(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def body(facts: CardFacts, data: dict) -> str:
    sections = [intro(facts, data), results(facts), training(facts, data), usage(facts)]
    sections += [intended_use(data), limitations(facts, data), licence(data)]
    return "\n\n".join(section.strip("\n") for section in sections if section) + "\n"


def intro(facts: CardFacts, data: dict) -> str:
    base = (
        f"[`{facts.base}`](https://huggingface.co/{facts.base})"
        if base_on_hub(facts.base)
        else f"`{facts.base}` (a local folder)"
    )
    what = {
        "lora": f"A LoRA adapter (peft) over {base}",
        "full": f"A fully fine-tuned {base}",
        "tfidf": "A TF-IDF (char 2-5 and word 1-2 n-grams) + logistic regression baseline",
    }[facts.kind]
    names = ", ".join(f"`{x}`" for x in facts.labels)
    n = len(facts.labels)
    per_text = (
        f"a set of any of {n} labels ({names}) per text"
        if facts.multi_label
        else f"one of {n} labels ({names}) per text"
    )
    if facts.multi_label:
        per_text += f" (multi-label: a sigmoid per label, a label predicted at probability >= {facts.threshold})"
    return (
        f"# {facts.name}\n\n{what} for {data['task']} on {data['name']}: {per_text}. Trained, evaluated and "
        "exported by a DVC pipeline (prepare -> tokenize -> train -> evaluate -> export); every number below "
        "comes from that run's params and metrics files."
    )


def results(facts: CardFacts) -> str:
    test, train = facts.test, facts.train or {}
    if not test:
        text = "## Results\n\nNot evaluated: `records/evaluate/metrics.json` was missing at export time "
        text += "(`dvc repro evaluate`)."
    else:
        warning = ""
        if not test.get("learned", True):
            warning = (
                "> **Warning:** this model did not learn the task: its test macro-F1 is within the margin of always "
                f"predicting the majority class ({num(test.get('majority_macro_f1'))}). Do not use it.\n\n"
            )
        text = f"## Results\n\n{warning}On the held-out test split ({_test_rows(facts):,} texts):\n\n"
        text += "| metric | value |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in test_rows(facts)) + "\n\n"
        text += per_class_table(facts)
    if "val" in train:
        val = train["val"]
        scores = f"accuracy {num(val.get('accuracy'))}, macro-F1 {num(val.get('macro_f1'))}"
        text += f"\n\nValidation of the kept weights: {scores}."
    return text


def test_rows(facts: CardFacts) -> list[tuple[str, str]]:
    test = facts.test
    if facts.multi_label:
        rows = [
            ("subset accuracy (every label of a text right)", num(test["accuracy"])),
            ("macro-F1 (mean over labels)", num(test["macro_f1"])),
            ("micro-F1", num(test.get("micro_f1"))),
        ]
        if "majority_accuracy" in test:
            floor = f"{num(test['majority_accuracy'])} / {num(test.get('majority_micro_f1'))}"
            rows.append(("always the most frequent label set (baseline): subset accuracy / micro-F1", floor))
    else:
        rows = [("accuracy", num(test["accuracy"])), ("macro-F1", num(test["macro_f1"]))]
        if "majority_accuracy" in test:
            rows.append(("majority-class accuracy (baseline)", num(test["majority_accuracy"])))
    if "loss" in test:
        rows.append(("log loss", num(test["loss"])))
    if "mean_confidence" in test:
        rows.append(("mean confidence of the predicted label", num(test["mean_confidence"])))
    return rows


def per_class_table(facts: CardFacts) -> str:
    head = (
        f"| {'label' if facts.multi_label else 'class'} | precision | recall | F1 | support |\n|---|---|---|---|---|\n"
    )
    lines = []
    for label in facts.labels:
        c = facts.test["per_class"].get(label, {})
        scores = " | ".join(num(c.get(k)) for k in ("precision", "recall", "f1"))
        lines.append(f"| {label} | {scores} | {c.get('support', 'n/a')} |")
    return head + "\n".join(lines)


def training(facts: CardFacts, data: dict) -> str:
    rows = []
    if facts.kind != "tfidf":
        rows.append(("base model", f"`{facts.base}` ({BASE_LANGUAGES.get(facts.base or '', UNKNOWN_LANGUAGE)})"))
    counts = (facts.prepare or {}).get("rows")
    sizes = f" ({', '.join(f'{k} {v:,}' for k, v in counts.items())} rows)" if counts else ""
    rows.append(("data", f"{data['name']}{sizes}: {data['source']}"))
    rows.append(("labels (id order)", ", ".join(f"{i} `{x}`" for i, x in enumerate(facts.labels))))
    if facts.kind != "tfidf":
        cut = (
            ": head_tail, a quarter of the tokens from the head, the rest from the tail"
            if facts.truncation == "head_tail"
            else ""
        )
        rows.append(("max length", f"{facts.max_length} tokens (longer texts are truncated{cut})"))
    rows.append(method_row(facts))
    train = facts.train or {}
    if "trainable_params" in train:
        share = 100 * train["trainable_params"] / train["total_params"]
        rows.append(
            ("trainable parameters", f"{train['trainable_params']:,} of {train['total_params']:,} ({share:.2f} %)")
        )
    if facts.kind != "tfidf":
        rows += run_rows(facts)
    if "train_seconds" in train:
        speed = train.get("train_samples_per_second", 0)
        rows.append(("training time", f"{train['train_seconds']:.0f} s ({speed:.1f} samples/s)"))
    return "## Training\n\n| | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)


def method_row(facts: CardFacts) -> tuple[str, str]:
    config = facts.adapter_config
    if facts.kind == "lora" and config:
        kind = lora_variant(bool(config.get("use_rslora")), bool(config.get("use_dora")))
        targets = summarise_targets(config.get("target_modules"))
        return (
            kind,
            f"r={config['r']}, alpha={config['lora_alpha']}, dropout={config['lora_dropout']}, bias={config['bias']} "
            f"on {targets}; the classification head trained in full",
        )
    if facts.kind == "full":
        return "fine-tuning", "every weight (no LoRA)"
    return "model", "TF-IDF features, multinomial logistic regression; no neural network"


def epochs_ran(train: dict, planned_epochs: int) -> str:
    """The what-ran row of the report and the model card, from the train summary: epochs and optimizer steps as
    trained, and why they differ from train.epochs (min_steps added epochs, early stopping or a max_steps ended
    the run before the planned ones)."""
    epochs = train.get("epochs", train.get("epochs_run"))
    if "steps" not in train or epochs is None:
        return f"{planned_epochs} epoch(s)"
    ran = f"{epochs:g} epoch(s), {train['steps']:,} optimizer steps"
    if epochs == planned_epochs:
        return ran
    why = f"train.epochs is {planned_epochs}: train.min_steps or a max_steps changed it"
    planned, patience = train.get("epochs_planned"), train.get("patience")
    if patience and planned is not None and epochs < planned:
        why += f"; {planned} planned, stopped after {patience} val passes without val macro-F1 gain"
    return f"{ran} ({why})"


def run_rows(facts: CardFacts) -> list[tuple[str, str]]:
    """What ran, from the train stage's summary (records/train/metrics.json): epochs and steps as trained,
    optimizer, schedule, precision, device, the data's hash."""
    tp, train = facts.params.train, facts.train or {}
    ran = epochs_ran(train, tp.epochs)
    listed = TRAINER_ARGS_LISTED | {"lr_scheduler_type": None}  # the schedule has its own words
    extra = {k: v for k, v in (train.get("trainer_args") or {}).items() if listed.get(k, ...) not in (v, None)}
    optimisation = (
        f"{train.get('optimizer', 'AdamW')} lr {tp.lr:g}, {train.get('lr_scheduler', 'linear')} schedule, warmup "
        f"{tp.warmup_ratio:g}, weight decay {tp.weight_decay:g}, grad-norm clip {tp.max_grad_norm:g}, batch "
        f"{tp.batch_size}, seed {tp.seed}" + "".join(f", {k} {v}" for k, v in extra.items())
    )
    rows = [("training run", ran), ("optimisation", optimisation)]
    if "precision" in train:
        rows.append(("precision, device", f"{train['precision']}, {train.get('device')}"))
    md5 = (train.get("provenance") or {}).get("data_md5") or {}
    if md5:
        rows.append(("tokenized data md5", ", ".join(f"{name} `{value}`" for name, value in sorted(md5.items()))))
    return rows


SAMPLE_TEXT = "Stocks fell sharply on Wall Street"
# The load snippet: run from the exported folder, it loads the adapter with transformers + peft alone
LORA_SNIPPET = """import torch
from peft import AutoPeftModelForSequenceClassification
from transformers import AutoConfig, AutoTokenizer

folder = "."  # this folder (run from it), or the Hub repository you pushed it to
config = AutoConfig.from_pretrained(folder)  # num_labels, id2label, label2id
model = AutoPeftModelForSequenceClassification.from_pretrained(
    folder, num_labels=config.num_labels, id2label=config.id2label, label2id=config.label2id
).eval()
tokenizer = AutoTokenizer.from_pretrained(folder)

batch = tokenizer([TEXT], padding=True, truncation=True, return_tensors="pt")
with torch.no_grad():
    probs = model(**batch).logits.OUTPUT
"""
SINGLE_LABEL_OUTPUT = """softmax(-1)
print([config.id2label[i] for i in probs.argmax(-1).tolist()], probs)"""
MULTI_LABEL_OUTPUT = """sigmoid()  # multi-label: one independent probability per label
threshold = THRESHOLD  # evaluate.threshold at training time
print([[config.id2label[j] for j, p in enumerate(row) if p >= threshold] for row in probs.tolist()], probs)"""


def load_snippet(facts: CardFacts) -> str:
    """The card's python block that loads the LoRA export and classifies a text."""
    output = (
        MULTI_LABEL_OUTPUT.replace("THRESHOLD", str(facts.threshold)) if facts.multi_label else SINGLE_LABEL_OUTPUT
    )
    return LORA_SNIPPET.replace("TEXT", repr(SAMPLE_TEXT)).replace("OUTPUT", output)


def pipeline_snippet(folder: str) -> str:
    return (
        "from transformers import pipeline\n"
        f'classify = pipeline("text-classification", model="{folder}", top_k=None)\n'
        f"print(classify({SAMPLE_TEXT!r}, truncation=True))  # truncation: at the training length\n"
    )


def usage(facts: CardFacts) -> str:
    if facts.kind == "tfidf":
        return (
            "## Usage\n\nNot a transformers model: `tfidf_model.safetensors` holds the IDF weights and the logistic "
            "regression's coefficients, `tfidf_vocabulary.json` the n-gram vocabularies, `labels.json` the label "
            "names in id order (no pickle). The training repository's `lora-dvc predict` loads them:\n\n```bash\n"
            f'lora-dvc predict --model path/to/this/folder "{SAMPLE_TEXT}"\n```'
        )
    if facts.kind == "full":
        text = f"## Usage\n\nWith transformers alone:\n\n```python\n{pipeline_snippet('path/to/this/folder')}```"
    else:
        text = (
            "## Usage\n\nWith transformers and peft (`pip install transformers peft torch`). The adapter records its "
            f"base model as `{facts.base}` (peft loads it from there: point `base_model_name_or_path` in "
            "`adapter_config.json` at a local copy to load offline); `config.json` carries the label mapping and the "
            "head's size, which peft needs (without them the base model gets 2 outputs and the trained head does not "
            f"fit):\n\n```python\n{load_snippet(facts)}```"
        )
        if facts.merged:
            text += (
                "\n\n`merged/` holds the adapter merged into the base weights: a plain transformers model that needs "
                f"neither peft nor the base model:\n\n```python\n{pipeline_snippet('path/to/this/folder/merged')}```"
            )
    return text + "\n\n" + usage_notes(facts)


def usage_notes(facts: CardFacts) -> str:
    n = facts.max_length
    text = (
        f"The tokenizer truncates at the training length by itself (`model_max_length` is {n}). In the training "
        'repository, `lora-dvc predict --model <this folder> "text"` gives the same probabilities.'
    )
    if facts.truncation == "head_tail":
        text += (
            " The model was trained with head_tail truncation (a long text's first quarter and last three quarters of "
            f"the token budget); plain transformers truncation keeps the first {n} tokens only, so texts longer than "
            "that score differently here than with `lora-dvc predict` in the training repository."
        )
    if facts.multi_label:
        text += (
            '\n\n**Multi-label.** `config.json` says `"problem_type": "multi_label_classification"`: each label gets '
            "its own sigmoid probability, and a text gets every label whose probability is at or above the threshold "
            f"({facts.threshold} here, the training run's `evaluate.threshold`; its val and test numbers above are at "
            "that threshold). Raise it for fewer, surer labels, lower it to miss fewer; a text may get no label at "
            'all. transformers\' `pipeline("text-classification", top_k=None)` applies the sigmoid by itself (it '
            "reads `problem_type`) and leaves the threshold to you."
        )
    return text


def intended_use(data: dict) -> str:
    task = data["task"][0].upper() + data["task"][1:]
    return (
        f"## Intended use\n\n{task} of texts like those in {data['name']}, as a baseline or research artefact, and as "
        "a starting point for further fine-tuning. Not for decisions about people, and not without first checking it "
        "on a labelled sample of your own data."
    )


def limitations(facts: CardFacts, data: dict) -> str:
    n, test = len(facts.labels), facts.test
    items = [
        f"It knows only the {n} labels, and texts outside its domain still get confident-looking labels (or none)."
        if facts.multi_label
        else f'It always answers with one of the {n} labels: it has no "none of these" and no notion of texts outside '
        "its domain, which still get a confident-looking label.",
        f"It saw only {data['name']}; texts from other sources, periods or styles will score lower than the test "
        "numbers above.",
    ]
    if facts.kind != "tfidf":
        kept = "their beginning and end count" if facts.truncation == "head_tail" else "their beginning counts"
        language = BASE_LANGUAGES.get(facts.base or "", UNKNOWN_LANGUAGE)
        items.append(f"Texts longer than {facts.max_length} tokens are cut; only {kept}.")
        items.append(f"The base model covers {language}; text in other languages gets near-arbitrary labels.")
    else:
        items.append(
            "It sees n-grams, not meaning: words and spellings absent from its training data count for nothing."
        )
    confidence = confidence_state(test)
    if confidence:
        items.append(
            f"Confidence is {confidence} on test (mean confidence {num(test['mean_confidence'], 3)}, accuracy "
            f"{num(test['accuracy'], 3)}); that does not make a single text's confidence a calibrated probability, "
            "and it drifts on other data."
        )
    if test:
        worst = min(facts.labels, key=lambda x: test["per_class"].get(x, {}).get("f1", 1.0))
        items.append(f"The weakest class is `{worst}` (test F1 {num(test['per_class'][worst]['f1'], 3)}).")
    items.append("It inherits the biases of the base model's pre-training data and of the dataset's sources.")
    return "## Limitations\n\n" + "\n".join(f"- {item}" for item in items)


def licence(data: dict) -> str:
    text = (
        f"## Dataset licence\n\n{data['name']}: {data['licence']}. Check that these terms allow your use of the model."
    )
    if data.get("citation"):
        text += f"\n\nCite the dataset as: {data['citation']}."
    return text
