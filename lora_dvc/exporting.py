"""The export folder: a trained classifier in Hugging Face's layout, and the check that it reloads.

- LoRA: the peft adapter byte for byte as trained, plus the base model's `config.json` carrying
  `num_labels`, `id2label` and `label2id`; with `merged`, also `merged/` (merge_and_unload);
- full fine-tune: `model.safetensors` and its config;
- TF-IDF: the pickle-free files as trained plus `labels.json`;
- the tokenizer, its `model_max_length` set to the length the model was trained with.

`check_export` loads the folder back the way the model card tells a user to (transformers + peft
and no code of ours, or lora_dvc.classifier for TF-IDF) and compares its probabilities.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np

from lora_dvc.classifier import Classifier, load_classifier
from lora_dvc.errors import UserError

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
        return model.eval()(**batch).logits.float().softmax(-1).numpy()
