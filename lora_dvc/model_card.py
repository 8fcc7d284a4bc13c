"""The export's README.md: Hugging Face metadata, then a card rendered from templates/model_card.md.j2.

Every fact comes from data: params.yaml, the metrics files (prepare, train, evaluate), the
adapter's config, and the dataset's metadata file beside the data (`dataset.yaml`: name, source,
licence, citation). Nothing about a dataset is written here; a dataset without that file gets a
card that says its licence is not recorded.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from lora_dvc.errors import UserError

TEMPLATES = Path(__file__).parent / "templates"
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


def front_matter(facts: CardFacts, data: dict) -> str:
    """The YAML block the Hugging Face Hub reads (library, base model, tags, model-index)."""
    meta: dict[str, Any] = {"library_name": LIBRARIES[facts.kind]}
    if facts.kind != "tfidf" and base_on_hub(facts.base):
        meta["base_model"] = facts.base
    meta["pipeline_tag"] = "text-classification"
    meta["tags"] = ["text-classification", "dvc"] + TAGS[facts.kind]
    if data.get("language"):
        meta["language"] = [data["language"]]
    if data.get("hub"):
        meta["datasets"] = [data["hub"]]
    if facts.test:
        metrics = [
            {"type": "accuracy", "value": round(facts.test["accuracy"], 4), "name": "Test accuracy"},
            {
                "type": "f1",
                "value": round(facts.test["macro_f1"], 4),
                "name": "Test macro-F1",
                "args": {"average": "macro"},
            },
        ]
        if "micro_f1" in facts.test:
            micro = {"type": "f1", "value": round(facts.test["micro_f1"], 4), "name": "Test micro-F1"}
            metrics.append(micro | {"args": {"average": "micro"}})
            metrics[0]["name"] = "Test subset accuracy"
        dataset = {
            "name": data["name"].strip("`"),
            "type": data.get("hub") or facts.params.data.dataset,
            "split": "test",
        }
        meta["model-index"] = [
            {
                "name": facts.name,
                "results": [
                    {
                        "task": {"type": "text-classification", "name": "Text Classification"},
                        "dataset": dataset,
                        "metrics": metrics,
                    }
                ],
            }
        ]
    return yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).strip()


def confidence_state(test: dict | None) -> str | None:
    if not test or "mean_confidence" not in test:
        return None
    gap = test["mean_confidence"] - test["accuracy"]
    return ("over-confident" if gap > 0 else "under-confident") if abs(gap) > 0.02 else "about right on average"


def render_model_card(facts: CardFacts, root: Path = Path(".")) -> str:
    """README.md: front matter + the template filled with the facts."""
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    data = dataset_metadata(facts.params.data.dataset, facts.params.data.path, root)
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters["num"] = lambda v, digits=4: "n/a" if v is None else f"{v:.{digits}f}"
    test = facts.test
    worst = min(facts.labels, key=lambda x: test["per_class"].get(x, {}).get("f1", 1.0)) if test else None
    body = env.get_template("model_card.md.j2").render(
        **asdict(facts),
        data=data,
        on_hub=base_on_hub(facts.base),
        worst=worst,
        language=BASE_LANGUAGES.get(facts.base or "", UNKNOWN_LANGUAGE),
        targets=summarise_targets((facts.adapter_config or {}).get("target_modules")),
        confidence=confidence_state(test),
        n_test=_test_rows(facts),
    )
    return f"---\n{front_matter(facts, data)}\n---\n\n{body}"


def _test_rows(facts: CardFacts) -> int | None:
    if not facts.test:
        return None
    rows = (facts.prepare or {}).get("rows", {})
    return rows.get("test") or sum(c["support"] for c in facts.test["per_class"].values())
