"""export: the trained model -> a folder in Hugging Face's layout, ready to share or publish.

    python -m stages.export                       # models/classifier -> models/export (the DVC stage)
    python -m stages.export --merge --out DIR     # also a merged full model in DIR/merged/

The folder holds
- for a LoRA run: the peft adapter as trained (`adapter_model.safetensors`, `adapter_config.json`,
  classifier head included, `base_model_name_or_path` the portable `model.name`) and the base
  model's `config.json` with `num_labels`, `id2label` and `label2id`;
- for a full fine-tune (lora.enabled false): `model.safetensors` and that `config.json`;
- the tokenizer, its `model_max_length` set to the `model.max_length` the model was trained with;
- `README.md`, a model card built from params.yaml and the metrics files (base model, dataset and
  its licence, LoRA config, trainable parameters, test accuracy / macro-F1, per-class scores,
  intended use, limitations, how to load it);
- with --merge (LoRA only): `merged/`, the adapter merged into the base weights
  (`merge_and_unload`), loadable with transformers alone and no base model download.

Before the folder replaces the old one, the export is loaded back the way the model card tells a
user to, and its predictions are checked against the trained model's.
"""
from __future__ import annotations

import argparse
import copy
import json
import logging
import re
import shutil
from collections import Counter
from pathlib import Path
from typing import Any, Optional

from lora_dvc.errors import UserError
from lora_dvc.runner import run_stage

from lora_dvc.artifacts import EVAL_METRICS, EXPORT as OUT_DIR, MODEL as MODEL_DIR, PREPARE_METRICS, TRAIN_METRICS
CHECK_TEXTS = [
    "Stocks fell sharply on Wall Street after the central bank raised interest rates.",
    "The home side scored twice in the final ten minutes to win the cup.",
    "A new space telescope sent back its first images of a distant galaxy.",
    "Rebels and the government signed a ceasefire after weeks of talks.",
    "ভালো লাগলো",
    "",
]
TOLERANCE = 1e-4  # max absolute difference in probabilities between the export and the trained model

# what the model card says about the datasets shipped with the repository
DATASETS = {
    "ag_news": {
        "name": "AG News",
        "hub": "fancyzhx/ag_news",
        "language": "en",
        "task": "news topic classification",
        "source": "10,001 rows of the AG News train split (train/val pool) and its canonical 7,600-row test "
                  "split, as sampled by github.com/forest-snow/alps",
        "licence": "the sample is distributed under the MIT licence (forest-snow/alps); the AG corpus itself "
                   "is provided by its authors for research and non-commercial use (Zhang, Zhao & LeCun, 2015, "
                   "*Character-level Convolutional Networks for Text Classification*)",
    },
    "banglasenti": {
        "name": "BanglaSenti",
        "hub": None,
        "language": "bn",
        "task": "Bengali sentiment classification (negative / positive / neutral)",
        "source": "the official BanglaSenti validation split (train/val pool) and test split, from "
                  "github.com/niloydebbarma-code/LORA-FINETUNING-BANGLASENTI-XLMR-GOOGLE-TPU",
        "licence": "Apache-2.0 (the repository the data was taken from); the merged upstream corpora carry "
                   "their own terms",
    },
}
# languages of the base models the README names (anything else: stated as unknown)
BASE_LANGUAGES = {
    "sentence-transformers/all-MiniLM-L6-v2": "English",
    "roberta-base": "English",
    "FacebookAI/roberta-base": "English",
    "bert-base-uncased": "English",
    "xlm-roberta-base": "about 100 languages (XLM-R)",
    "FacebookAI/xlm-roberta-base": "about 100 languages (XLM-R)",
}
log = logging.getLogger("export")


def read_json(path: Path) -> Optional[dict]:
    if not path.exists():
        log.warning("%s not found: the model card leaves those numbers out", path)
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def dataset_info(dataset: str, data_path: str) -> dict:
    if dataset in DATASETS:
        return DATASETS[dataset]
    folder = Path(data_path) if Path(data_path).is_dir() else Path(data_path).parent
    licence = "not recorded in this repository: state it here before publishing the model"
    for name in ("LICENSE", "LICENSE.txt", "LICENSE.md", "LICENCE"):
        if (folder / name).is_file():
            first = next((ln.strip() for ln in (folder / name).read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()), "")
            licence = f"{first} (from `{folder / name}`)"
            break
    return {"name": f"`{data_path}`", "hub": None, "language": None, "task": "text classification",
            "source": f"the CSV at `{data_path}`", "licence": licence}


def summarise_targets(target_modules: Any) -> str:
    """`query, value` in 6 layers (12 modules), from peft's list of full module names."""
    if isinstance(target_modules, str):
        return f"`{target_modules}`"
    names = list(target_modules or [])
    leaves = Counter(n.rsplit(".", 1)[-1] for n in names)
    layers = {m.group(1) for n in names if (m := re.search(r"\.layer\.(\d+)\.", n))}
    where = f" in {len(layers)} layers" if layers else ""
    return f"{', '.join(f'`{leaf}`' for leaf in sorted(leaves))}{where} ({len(names)} modules)"


def fmt(value: Optional[float], digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def model_card(
    *,
    name: str,
    params,
    labels: list[str],
    kind: str,
    base: str,
    max_length: int,
    adapter_config: Optional[dict],
    train: Optional[dict],
    test: Optional[dict],
    prepare: Optional[dict],
    merged: bool,
) -> str:
    """The README.md of the export: YAML metadata for the Hub, then the card."""
    import yaml

    data = dataset_info(params.data.dataset, params.data.path)
    language = BASE_LANGUAGES.get(base, "not recorded here (see the base model's card)")
    meta: dict[str, Any] = {
        "library_name": {"lora": "peft", "full": "transformers", "tfidf": "scikit-learn"}[kind],
        "base_model": base,
        "pipeline_tag": "text-classification",
        "tags": ["text-classification", "dvc"] + {"lora": ["lora", "peft"], "full": ["full-fine-tuning"],
                                                  "tfidf": ["tfidf", "baseline"]}[kind],
    }
    on_hub = not (Path(base).is_absolute() or Path(base).exists())  # a local folder is no Hub base_model
    if kind == "tfidf" or not on_hub:
        del meta["base_model"]
    if data.get("language"):
        meta["language"] = [data["language"]]
    if data.get("hub"):
        meta["datasets"] = [data["hub"]]
    if test:
        dataset_meta = {"name": data["name"].strip("`"), "type": data.get("hub") or params.data.dataset, "split": "test"}
        meta["model-index"] = [{
            "name": name,
            "results": [{
                "task": {"type": "text-classification", "name": "Text Classification"},
                "dataset": dataset_meta,
                "metrics": [
                    {"type": "accuracy", "value": round(test["accuracy"], 4), "name": "Test accuracy"},
                    {"type": "f1", "value": round(test["macro_f1"], 4), "name": "Test macro-F1", "args": {"average": "macro"}},
                ],
            }],
        }]
    front = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).strip()

    base_ref = f"[`{base}`](https://huggingface.co/{base})" if on_hub else f"`{base}` (a local folder)"
    what = {"lora": f"A LoRA adapter (peft) over {base_ref}",
            "full": f"A fully fine-tuned {base_ref}",
            "tfidf": "A TF-IDF (char 2-5 and word 1-2 n-grams) + logistic regression baseline"}[kind]
    out = [f"---\n{front}\n---\n", f"# {name}\n",
           f"{what} for {data['task']} on {data['name']}: "
           f"one of {len(labels)} labels ({', '.join(f'`{x}`' for x in labels)}) per text. Trained, evaluated and "
           "exported by a DVC pipeline (prepare -> tokenize -> train -> evaluate -> export); every number below "
           "comes from that run's params and metrics files.\n"]

    out.append("## Results\n")
    if test:
        rows = (prepare or {}).get("rows", {})
        n_test = rows.get("test") or sum(c["support"] for c in test["per_class"].values())
        out.append(f"On the held-out test split ({n_test:,} texts):\n")
        out.append("| metric | value |\n|---|---|")
        out.append(f"| accuracy | {fmt(test['accuracy'])} |")
        out.append(f"| macro-F1 | {fmt(test['macro_f1'])} |")
        if "majority_accuracy" in test:
            out.append(f"| majority-class accuracy (baseline) | {fmt(test['majority_accuracy'])} |")
        if "loss" in test:
            out.append(f"| log loss | {fmt(test['loss'])} |")
        if "mean_confidence" in test:
            out.append(f"| mean confidence of the predicted label | {fmt(test['mean_confidence'])} |")
        out.append("")
        out.append("| class | precision | recall | F1 | support |\n|---|---|---|---|---|")
        for label in labels:
            c = test["per_class"].get(label, {})
            out.append(f"| {label} | {fmt(c.get('precision'))} | {fmt(c.get('recall'))} | {fmt(c.get('f1'))} | {c.get('support', 'n/a')} |")
        out.append("")
    else:
        out.append("Not evaluated: `metrics/evaluate/metrics.json` was missing at export time (`dvc repro evaluate`).\n")
    if train and "val" in train:
        out.append(f"Validation at the end of training: accuracy {fmt(train['val'].get('accuracy'))}, "
                   f"macro-F1 {fmt(train['val'].get('macro_f1'))}.\n")

    out.append("## Training\n")
    out.append("| | |\n|---|---|")
    if kind != "tfidf":
        out.append(f"| base model | `{base}` ({language}) |")
    rows = (prepare or {}).get("rows")
    split_text = f" ({', '.join(f'{k} {v:,}' for k, v in rows.items())} rows)" if rows else ""
    out.append(f"| data | {data['name']}{split_text}: {data['source']} |")
    out.append(f"| labels (id order) | {', '.join(f'{i} `{x}`' for i, x in enumerate(labels))} |")
    if kind != "tfidf":
        out.append(f"| max length | {max_length} tokens (longer texts are truncated) |")
    if kind == "lora" and adapter_config:
        ac = adapter_config
        out.append(f"| LoRA | r={ac.get('r')}, alpha={ac.get('lora_alpha')}, dropout={ac.get('lora_dropout')}, "
                   f"bias={ac.get('bias')} on {summarise_targets(ac.get('target_modules'))}; "
                   "the classification head trained in full |")
    elif kind == "full":
        out.append("| fine-tuning | every weight (no LoRA) |")
    else:
        out.append("| model | TF-IDF features, multinomial logistic regression; no neural network |")
    if train and "trainable_params" in train:
        out.append(f"| trainable parameters | {train['trainable_params']:,} of {train['total_params']:,} "
                   f"({train.get('trainable_percent', 100 * train['trainable_params'] / train['total_params']):.2f} %) |")
    tp = params.train
    if kind != "tfidf":
        out.append(f"| optimisation | {tp.epochs} epoch(s), batch {tp.batch_size}, AdamW lr {tp.lr:g}, weight decay "
               f"{tp.weight_decay:g}, warmup {tp.warmup_ratio:g}, grad-norm clip {tp.max_grad_norm:g}, seed {tp.seed} |")
    if train and "train_seconds" in train:
        out.append(f"| training time | {train['train_seconds']:.0f} s ({train.get('train_samples_per_second', 0):.1f} samples/s) |")
    out.append("")

    out.append("## Usage\n")
    if kind == "lora":
        out.append(
            "With transformers and peft (`pip install transformers peft torch`). The adapter records its base "
            f"model as `{base}`; `config.json` beside it carries the label mapping and the head's size:\n")
        out.append("```python\nimport torch\nfrom peft import PeftModel\n"
                   "from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer\n\n"
                   "folder = \"path/to/this/folder\"  # or the Hub repository you pushed it to\n"
                   f"base = \"{base}\"  # or a local copy of it\n"
                   "config = AutoConfig.from_pretrained(folder)  # num_labels, id2label, label2id\n"
                   "model = PeftModel.from_pretrained(\n"
                   "    AutoModelForSequenceClassification.from_pretrained(base, config=config), folder).eval()\n"
                   "tokenizer = AutoTokenizer.from_pretrained(folder)\n\n"
                   "batch = tokenizer([\"Stocks fell sharply on Wall Street\"], padding=True, truncation=True, return_tensors=\"pt\")\n"
                   "with torch.no_grad():\n    probs = model(**batch).logits.softmax(-1)\n"
                   "print([config.id2label[i] for i in probs.argmax(-1).tolist()], probs)\n```\n")
        out.append("Where the base name in `adapter_config.json` resolves (network access, or after pointing it at a "
                   "local copy), peft's auto class loads base and adapter in one call; pass the label mapping, "
                   "without it the base model gets 2 outputs and the trained head does not fit:\n")
        out.append("```python\nfrom peft import AutoPeftModelForSequenceClassification\n"
                   "model = AutoPeftModelForSequenceClassification.from_pretrained(\n"
                   "    folder, num_labels=config.num_labels, id2label=config.id2label, label2id=config.label2id)\n```\n")
        if merged:
            out.append("`merged/` holds the adapter merged into the base weights: a plain transformers model that "
                       "needs neither peft nor the base model:\n")
            out.append("```python\nfrom transformers import pipeline\n"
                       "classify = pipeline(\"text-classification\", model=\"path/to/this/folder/merged\", top_k=None)\n"
                       "print(classify(\"Stocks fell sharply on Wall Street\"))\n```\n")
    elif kind == "tfidf":
        out.append("Not a transformers model: `tfidf_model.safetensors` holds the IDF weights and the logistic "
                   "regression's coefficients, `tfidf_vocabulary.json` the n-gram vocabularies, `labels.json` the "
                   "label names in id order (no pickle). `lora_dvc/tfidf.py` of the training repository loads them:\n")
        out.append("```bash\npython -m lora_dvc.predict --model path/to/this/folder \"Stocks fell sharply on Wall Street\"\n```\n")
    else:
        out.append("With transformers alone:\n")
        out.append("```python\nfrom transformers import pipeline\n"
                   "classify = pipeline(\"text-classification\", model=\"path/to/this/folder\", top_k=None)\n"
                   "print(classify(\"Stocks fell sharply on Wall Street\"))\n```\n")
    if kind != "tfidf":
        out.append("The tokenizer truncates at the training length by itself (`model_max_length` is "
                   f"{max_length}). In the training repository, `python -m lora_dvc.predict --model <this folder> \"text\"` "
                   "gives the same probabilities.\n")

    worst = None
    if test:
        worst = min(labels, key=lambda x: test["per_class"].get(x, {}).get("f1", 1.0))
    out.append("## Intended use\n")
    task = data["task"]
    out.append(f"{task[0].upper()}{task[1:]} of texts like those in {data['name']}, as a baseline or research "
               "artefact, and as a starting point for further fine-tuning. Not for decisions about people, and not "
               "without first checking it on a labelled sample of your own data.\n")
    out.append("## Limitations\n")
    lims = [
        f"It always answers with one of the {len(labels)} labels: it has no \"none of these\" and no notion of "
        "texts outside its domain, which still get a confident-looking label.",
        f"It saw only {data['name']}; texts from other sources, periods or styles will score lower than the test "
        "numbers above.",
    ]
    if kind != "tfidf":
        lims += [f"Texts longer than {max_length} tokens are cut; only their beginning counts.",
                 f"The base model covers {language}; text in other languages gets near-arbitrary labels."]
    else:
        lims.append("It sees n-grams, not meaning: words and spellings absent from its training data count for nothing.")
    if test and "mean_confidence" in test:
        gap = test["mean_confidence"] - test["accuracy"]
        state = ("over-confident" if gap > 0 else "under-confident") if abs(gap) > 0.02 else "about right on average"
        lims.append(f"Confidence is {state} on test (mean confidence {test['mean_confidence']:.3f}, accuracy "
                    f"{test['accuracy']:.3f}); that does not make a single text's confidence a calibrated probability, "
                    "and it drifts on other data.")
    if worst:
        lims.append(f"The weakest class is `{worst}` (test F1 {test['per_class'][worst]['f1']:.3f}).")
    lims.append("It inherits the biases of the base model's pre-training data and of the dataset's sources.")
    out.extend(f"- {x}" for x in lims)
    out.append("")
    out.append("## Dataset licence\n")
    out.append(f"{data['name']}: {data['licence']}. Check that these terms allow your use of the model.\n")
    return "\n".join(out)


def verify_export(folder: Path, clf, kind: str, texts: list[str], expected) -> float:
    """Load `folder` as the model card says (transformers + peft, no code of ours but the base
    folder's resolution) and return the largest probability difference to the trained model."""
    import numpy as np
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    from lora_dvc.modeling import resolve_model_path

    config = AutoConfig.from_pretrained(folder)
    if kind == "lora":
        from peft import PeftModel

        base_path = resolve_model_path(clf.base)
        model = PeftModel.from_pretrained(
            AutoModelForSequenceClassification.from_pretrained(base_path, config=config, use_safetensors=True), folder)
    else:
        model = AutoModelForSequenceClassification.from_pretrained(folder, use_safetensors=True)
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    with torch.inference_mode():
        batch = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
        probs = model(**batch).logits.float().softmax(-1).numpy()
    if [config.id2label[i] for i in range(len(clf.labels))] != clf.labels:
        raise UserError(f"export check failed: {folder}/config.json id2label does not match the labels {clf.labels}")
    return float(np.abs(probs - expected).max())


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        raise UserError(f"{message} (see python -m stages.export --help)")


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = _Parser(prog="python -m stages.export", description="Export the trained model in Hugging Face's layout.")
    p.add_argument("--model", type=Path, default=MODEL_DIR, help=f"the trained model folder (default: {MODEL_DIR})")
    p.add_argument("--out", type=Path, default=OUT_DIR, help=f"the export folder, replaced atomically (default: {OUT_DIR})")
    p.add_argument("--merge", action="store_true", help="also write merged/, the adapter merged into the base weights")
    p.add_argument("--name", help="the model's name in the card (default: <base>-<lora|full>-<dataset>)")
    return p.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> None:
    args = parse_args(argv)
    from lora_dvc.params import load_params
    from lora_dvc.predict import KIND_NAMES, load_classifier, model_kind

    params = load_params()
    if not args.model.is_dir():
        raise UserError(f"{args.model}: no trained model there; run `dvc repro train` (or `dvc pull {MODEL_DIR}`)")
    if args.out.resolve() == args.model.resolve() or args.model.resolve().is_relative_to(args.out.resolve()):
        raise UserError(f"--out {args.out} would replace the model it exports")
    kind = model_kind(args.model)
    if args.merge and kind != "lora":
        log.info("%s is a %s model: --merge has nothing to merge", args.model, KIND_NAMES[kind])
    # on the CPU: the export is written from CPU tensors and the check compares CPU numbers
    clf = load_classifier(args.model, device="cpu", merge=False)
    base = clf.base or params.model.name
    adapter_config = json.loads((args.model / "adapter_config.json").read_text()) if kind == "lora" else None
    stem = "tfidf" if kind == "tfidf" else f"{Path(base).name}-{'lora' if kind == 'lora' else 'full'}"
    name = args.name or f"{stem}-{params.data.dataset}"
    expected = clf.predict_proba(CHECK_TEXTS)  # the trained model, as predict and evaluate see it

    from lora_dvc.atomic import atomic_dir

    with atomic_dir(args.out) as tmp:
        if kind == "tfidf":
            for path in sorted(args.model.iterdir()):
                if path.is_file():
                    shutil.copy2(path, tmp / path.name)
            (tmp / "labels.json").write_text(json.dumps(clf.labels, ensure_ascii=False) + "\n", encoding="utf-8")
        else:
            tokenizer = copy.deepcopy(clf.tokenizer)
            tokenizer.model_max_length = clf.max_length  # plain transformers truncates where training did
            if kind == "lora":
                for fname in ("adapter_model.safetensors", "adapter_config.json"):
                    shutil.copy2(args.model / fname, tmp / fname)  # byte for byte what train saved
                config = copy.deepcopy(clf.model.config)
                config.architectures = [type(clf.model.get_base_model()).__name__]
                config.save_pretrained(tmp)  # the head's size and id2label / label2id
            else:
                clf.model.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
        (tmp / "README.md").write_text(
            model_card(name=name, params=params, labels=clf.labels, kind=kind, base=base, max_length=clf.max_length,
                       adapter_config=adapter_config, train=read_json(TRAIN_METRICS),
                       test=(read_json(EVAL_METRICS) or {}).get("test"), prepare=read_json(PREPARE_METRICS),
                       merged=args.merge and kind == "lora"),
            encoding="utf-8")

        if kind == "tfidf":
            diff = float(abs(load_classifier(tmp, labels_path=tmp / "labels.json").predict_proba(CHECK_TEXTS) - expected).max())
        else:
            diff = verify_export(tmp, clf, kind, CHECK_TEXTS, expected)
        if diff > TOLERANCE:
            raise UserError(f"export check failed: the exported model's probabilities differ by {diff:.2e} from the trained model's")
        how = {"lora": "transformers + peft", "full": "transformers", "tfidf": "lora_dvc/tfidf.py"}[kind]
        log.info("checked: the export reloads with %s and matches the trained model (max |dp| %.1e)", how, diff)

        if args.merge and kind == "lora":
            merged = clf.model.merge_and_unload()
            merged.config.architectures = [type(merged).__name__]
            merged.save_pretrained(tmp / "merged", safe_serialization=True)
            tokenizer.save_pretrained(tmp / "merged")
            diff = verify_export(tmp / "merged", clf, "full", CHECK_TEXTS, expected)
            if diff > TOLERANCE:
                raise UserError(f"export check failed: merged/ differs by {diff:.2e} from the trained model")
            log.info("merged/: the adapter merged into the base weights (max |dp| %.1e)", diff)
    files = sorted(p.relative_to(args.out).as_posix() for p in args.out.rglob("*") if p.is_file())
    size = sum((args.out / f).stat().st_size for f in files)
    log.info("exported %s to %s: %d files, %.1f MB (%s)", name, args.out, len(files), size / 1e6, ", ".join(files))


if __name__ == "__main__":
    run_stage(main)
