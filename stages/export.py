"""export: the trained model -> a folder in Hugging Face's layout with a model card, ready to share.

    python -m stages.export                       # models/classifier -> models/export (the DVC stage)
    lora-dvc export --merge --out DIR             # also a merged full model in DIR/merged/

Loads the model with the one classifier loader, writes its files (lora_dvc.exporting: the adapter
as trained and its config with the label mapping, or the full model, or the TF-IDF files; the
tokenizer truncating at the training length), renders README.md from the model card template with
facts from params.yaml, the metrics files and the dataset's metadata (lora_dvc.model_card), loads
the folder back the way the card tells a user to and checks its predictions against the trained
model's, and only then swaps it in for the old folder.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from lora_dvc import exporting
from lora_dvc.artifacts import EVAL_METRICS, EXPORT, MODEL, PREPARE_METRICS, TRAIN_METRICS
from lora_dvc.atomic import atomic_dir, read_json, write_text
from lora_dvc.classifier import KIND_NAMES, load_classifier
from lora_dvc.errors import UserError
from lora_dvc.model_card import CardFacts, render_model_card
from lora_dvc.params import load_params
from lora_dvc.runner import ArgumentParser, run_stage

log = logging.getLogger("export")


def parse_args(argv: list[str] | None = None):
    p = ArgumentParser(prog="lora-dvc export", description="Export the trained model in Hugging Face's layout.")
    p.add_argument("--model", type=Path, default=MODEL, help=f"the trained model folder (default: {MODEL})")
    p.add_argument(
        "--out", type=Path, default=EXPORT, help=f"the export folder, replaced atomically (default: {EXPORT})"
    )
    p.add_argument("--merge", action="store_true", help="also write merged/, the adapter merged into the base weights")
    p.add_argument("--name", help="the model's name in the card (default: <base>-<lora|full>-<dataset>)")
    args = p.parse_args(argv)
    if args.out.resolve() == args.model.resolve() or args.model.resolve().is_relative_to(args.out.resolve()):
        raise UserError(f"--out {args.out} would replace the model it exports; choose another folder")
    return args


def optional_metrics(path: Path) -> dict | None:
    if not path.exists():
        log.warning("%s not found: the model card leaves those numbers out", path)
        return None
    return read_json(path)


def card_facts(clf, params, args) -> CardFacts:
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
        train=optional_metrics(TRAIN_METRICS),
        test=(optional_metrics(EVAL_METRICS) or {}).get("test"),
        prepare=optional_metrics(PREPARE_METRICS),
        merged=args.merge and clf.kind == "lora",
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    params = load_params()
    # on the CPU and unmerged: the files are written from CPU tensors, the adapter as trained
    clf = load_classifier(args.model, device="cpu", merge=False)
    if args.merge and clf.kind != "lora":
        log.info("%s is a %s model: --merge has nothing to merge", args.model, KIND_NAMES[clf.kind])
    expected = clf.probabilities(exporting.CHECK_TEXTS)  # the trained model, as predict and evaluate see it
    facts = card_facts(clf, params, args)
    with atomic_dir(args.out) as tmp:
        exporting.write_export(clf, tmp)
        write_text(tmp / "README.md", render_model_card(facts))
        diff = exporting.check_export(tmp, clf, clf.kind, expected)
        log.info(
            "checked: the export reloads with %s and matches the trained model (max |dp| %.1e)",
            exporting.LOADED_WITH[clf.kind],
            diff,
        )
        if facts.merged:
            exporting.write_merged(clf, tmp / "merged")
            diff = exporting.check_export(tmp / "merged", clf, "full", expected)
            log.info("merged/: the adapter merged into the base weights (max |dp| %.1e)", diff)
    files = sorted(p.relative_to(args.out).as_posix() for p in args.out.rglob("*") if p.is_file())
    size = sum((args.out / f).stat().st_size for f in files)
    log.info("exported %s to %s: %d files, %.1f MB", facts.name, args.out, len(files), size / 1e6)


if __name__ == "__main__":
    run_stage(main)
