"""export: the trained model -> a folder in Hugging Face's layout with a model card, ready to share.

    python -m stages.export                       # models/classifier -> models/export (the DVC stage)
    lora-dvc export --merge --out DIR             # also a merged full model in DIR/merged/ (export.merge: true)

The folder (the registered `text-classifier` artifact): the peft adapter as trained plus a `config.json`
with the label names (or the full model, or the TF-IDF files), the tokenizer at its training length, and
README.md (lora_dvc.model_card). `check_export` loads it back the way the card tells a user to and
compares its probabilities with the trained model's before the new folder replaces the old one.
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
from pathlib import Path

import numpy as np

from lora_dvc.artifacts import EVAL_SUMMARY, EXPORT, MODEL, PREPARE_STATS, TRAIN_SUMMARY
from lora_dvc.atomic import atomic_dir, read_json, write_text
from lora_dvc.classifier import KIND_NAMES, Classifier, load_classifier
from lora_dvc.errors import UserError
from lora_dvc.model_card import CardFacts, render_model_card
from lora_dvc.params import load_params
from lora_dvc.runner import ArgumentParser, run_stage
from lora_dvc.task import Task

ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")
TOLERANCE = 1e-4  # max absolute difference in probabilities between the export and the trained model
CHECK_TEXTS = [
    "Stocks fell sharply on Wall Street after the central bank raised interest rates.",
    "The home side scored twice in the final ten minutes to win the cup.",
    "A new space telescope sent back its first images of a distant galaxy.",
    "Rebels and the government signed a ceasefire after weeks of talks.",
    "ভালো লাগলো",
    "",
]
LOADED_WITH = {"lora": "transformers + peft", "full": "transformers", "tfidf": "lora_dvc.classifier"}
log = logging.getLogger("export")


def write_export(clf: Classifier, folder: Path) -> None:
    """The model files of `clf` (loaded with merge=False) into the empty `folder`."""
    if clf.kind == "tfidf":
        for path in sorted(clf.source.iterdir()):
            if path.is_file():
                shutil.copy2(path, folder / path.name)
        (folder / "labels.json").write_text(json.dumps(clf.labels, ensure_ascii=False) + "\n", encoding="utf-8")
        return
    if clf.kind == "lora":
        for name in ADAPTER_FILES:
            shutil.copy2(clf.source / name, folder / name)  # byte for byte what train saved
        config = copy.deepcopy(clf.model.config)
        config.architectures = [type(clf.model.get_base_model()).__name__]
        config.save_pretrained(folder)  # the head's size and id2label / label2id
    else:
        clf.model.save_pretrained(folder, safe_serialization=True)
    export_tokenizer(clf).save_pretrained(folder)


def export_tokenizer(clf: Classifier):
    tokenizer = copy.deepcopy(clf.tokenizer)
    tokenizer.model_max_length = clf.max_length  # plain transformers truncates where training did
    return tokenizer


def write_merged(clf: Classifier, folder: Path) -> None:
    """The adapter merged into the base weights: a plain transformers model. Merges clf.model in
    place (no second copy of the weights in memory): call it last."""
    merged = clf.model.merge_and_unload()
    merged.config.architectures = [type(merged).__name__]
    merged.save_pretrained(folder, safe_serialization=True)
    export_tokenizer(clf).save_pretrained(folder)


def check_export(folder: Path, clf: Classifier, kind: str, expected: np.ndarray) -> float:
    """Reload `folder` as the card says and fail unless it gives `expected` (CHECK_TEXTS' probabilities)."""
    if kind == "tfidf":
        probs = load_classifier(folder, device="cpu").probabilities(CHECK_TEXTS)
    else:
        probs = _plain_transformers_probabilities(folder, clf, kind)
    diff = float(np.abs(probs - expected).max())
    if diff > TOLERANCE:
        raise UserError(
            f"export check failed: {folder.name}'s probabilities differ by {diff:.2e} from the trained "
            "model's; re-run the export, and report it if it persists"
        )
    return diff


def _plain_transformers_probabilities(folder: Path, clf: Classifier, kind: str) -> np.ndarray:
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    from lora_dvc.modeling import peft_wrapping, resolve_model_path

    config = AutoConfig.from_pretrained(folder)
    if [config.id2label[i] for i in range(len(clf.labels))] != clf.labels:
        raise UserError(f"export check failed: {folder}/config.json id2label does not match the labels {clf.labels}")
    if kind == "lora":
        from peft import PeftModel

        base = AutoModelForSequenceClassification.from_pretrained(
            resolve_model_path(clf.base), config=config, use_safetensors=True
        )
        with peft_wrapping():
            model = PeftModel.from_pretrained(base, folder)
    else:
        model = AutoModelForSequenceClassification.from_pretrained(folder, use_safetensors=True)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    with torch.inference_mode():
        batch = tokenizer(CHECK_TEXTS, padding=True, truncation=True, return_tensors="pt")
        logits = model.eval()(**batch).logits.float()
        # a multi-label head (config.json's problem_type): one sigmoid per label, as lora_dvc.inference gives them
        return Task.of_model(clf.labels, config.problem_type).probabilities(logits).numpy()


# -- command line -----------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None):
    p = ArgumentParser(prog="lora-dvc export", description="Export the trained model in Hugging Face's layout.")
    p.add_argument("--model", type=Path, default=MODEL, help=f"the trained model folder (default: {MODEL})")
    p.add_argument(
        "--out", type=Path, default=EXPORT, help=f"the export folder, replaced atomically (default: {EXPORT})"
    )
    p.add_argument(
        "--merge",
        action="store_true",
        help="also write merged/, the adapter merged into the base weights (as export.merge: true does)",
    )
    p.add_argument("--name", help="the model's name in the card (default: <base>-<lora|full>-<dataset>)")
    args = p.parse_args(argv)
    if args.out.resolve() == args.model.resolve() or args.model.resolve().is_relative_to(args.out.resolve()):
        raise UserError(f"--out {args.out} would replace the model it exports; choose another folder")
    return args


def optional_record(path: Path) -> dict | None:
    if not path.exists():
        log.warning("%s not found: the model card leaves those numbers out", path)
        return None
    return read_json(path)


def card_facts(clf: Classifier, params, args) -> CardFacts:
    """What the model card states about `clf`, from params.yaml and the run's records."""
    stem = "tfidf" if clf.kind == "tfidf" else f"{Path(clf.base).name}-{'lora' if clf.kind == 'lora' else 'full'}"
    adapter = json.loads((args.model / "adapter_config.json").read_text()) if clf.kind == "lora" else None
    return CardFacts(
        name=args.name or f"{stem}-{params.data.dataset}",
        kind=clf.kind,
        base=clf.base,
        labels=clf.labels,
        max_length=clf.max_length,
        params=params,
        adapter_config=adapter,
        train=optional_record(TRAIN_SUMMARY),
        test=(optional_record(EVAL_SUMMARY) or {}).get("test"),
        prepare=optional_record(PREPARE_STATS),
        merged=(args.merge or params.export.merge) and clf.kind == "lora",
        truncation=clf.truncation,
        multi_label=clf.multi_label,
        threshold=clf.task.threshold,
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    params = load_params()
    # on the CPU and unmerged: the files are written from CPU tensors, the adapter as trained
    clf = load_classifier(args.model, device="cpu", merge=False)
    if (args.merge or params.export.merge) and clf.kind != "lora":
        log.info("%s is a %s model: --merge has nothing to merge", args.model, KIND_NAMES[clf.kind])
    expected = clf.probabilities(CHECK_TEXTS)  # the trained model, as predict and evaluate see it
    facts = card_facts(clf, params, args)
    with atomic_dir(args.out) as tmp:
        write_export(clf, tmp)
        write_text(tmp / "README.md", render_model_card(facts))
        diff = check_export(tmp, clf, clf.kind, expected)
        log.info(
            "checked: the export reloads with %s and matches the trained model (max |dp| %.1e)",
            LOADED_WITH[clf.kind],
            diff,
        )
        if facts.merged:
            write_merged(clf, tmp / "merged")
            diff = check_export(tmp / "merged", clf, "full", expected)
            log.info("merged/: the adapter merged into the base weights (max |dp| %.1e)", diff)
    files = sorted(p.relative_to(args.out).as_posix() for p in args.out.rglob("*") if p.is_file())
    size = sum((args.out / f).stat().st_size for f in files)
    log.info("exported %s to %s: %d files, %.1f MB", facts.name, args.out, len(files), size / 1e6)


if __name__ == "__main__":
    run_stage(main)
