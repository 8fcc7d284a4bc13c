"""The seed studies (studies/*.yaml) cannot rot: every variant passes the params schema, trains one step
on a tiny stand-in of its architecture, and keeps its trainable-parameter count on the real architecture
(built on the meta device: no weights); one variant runs end to end through `lora-dvc study run`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import transformers as tf
import yaml
from helpers import ROOT, build_tiny_model, make_repo, run

from lora_dvc.modeling import apply_method, count_params
from lora_dvc.params import parse_params
from lora_dvc.studies import find_study, load_study, study_files

STUDIES = {path.stem: load_study(path) for path in study_files(ROOT)}
VARIANTS = [(study, variant) for study, s in STUDIES.items() for variant in s.variants]
CONFIGS = {"roberta": tf.RobertaConfig, "xlm-roberta": tf.XLMRobertaConfig}
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, vocab_size=100)


def params_of(overrides: dict) -> object:
    """params.yaml with dotted overrides, through the schema (what `dvc exp run -S` would give the stages)."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    for key, value in overrides.items():
        section, name = key.split(".", 1)
        raw[section][name] = value
    return parse_params(raw)


def model_of(architecture: dict, labels: int, **shape) -> torch.nn.Module:
    fields = {k: v for k, v in architecture.items() if k != "model_type"}
    config = CONFIGS[architecture["model_type"]](**{**fields, **shape}, num_labels=labels)
    return tf.AutoModelForSequenceClassification.from_config(config)


def test_the_four_seed_studies_are_defined():
    assert set(STUDIES) == {"banglasenti-xlmr", "ag-news-roberta-budget", "ag-news-roberta-qv", "imdb-roberta-rslora"}
    assert len(STUDIES["banglasenti-xlmr"].variants) == 6
    for study in STUDIES.values():
        assert study.fetch.startswith("python scripts/fetch_data.py ") and study.variants
        assert all(v.reference for v in study.variants.values())


@pytest.mark.parametrize("study, variant", VARIANTS)
def test_each_variant_trains_a_step_on_a_tiny_stand_in(study, variant):
    s = STUDIES[study]
    params = params_of(s.overrides(variant))
    assert params.model.name == s.params["model.name"]
    torch.manual_seed(0)
    model = apply_method(model_of(s.architecture, s.labels, **TINY), params.train.method, params.lora)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-2)
    ids = torch.randint(3, 100, (4, 16))
    loss = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=torch.arange(4) % s.labels).loss
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss) and all(p.grad is not None for p in trainable)


@pytest.mark.parametrize(
    "study, variant", [(s, v) for s, v in VARIANTS if STUDIES[s].variants[v].trainable is not None]
)
def test_trainable_count_on_the_real_architecture(study, variant):
    s = STUDIES[study]
    params = params_of(s.overrides(variant))
    with torch.device("meta"):  # the real shapes, no weights
        model = apply_method(model_of(s.architecture, s.labels), params.train.method, params.lora)
    trainable, _ = count_params(model)
    assert trainable == s.variants[variant].trainable
    budget = params.lora.max_trainable
    assert budget is None or trainable <= budget


def test_the_reference_count_of_the_qv_study_is_distilroberta_base():
    s = STUDIES["ag-news-roberta-qv"]
    quoted = s.variants["qv-r16"].extra["reference_trainable"]
    params = params_of(s.overrides("qv-r16"))
    with torch.device("meta"):
        six_layers = apply_method(
            model_of(s.architecture, s.labels, num_hidden_layers=quoted["num_hidden_layers"]), "lora", params.lora
        )
    assert count_params(six_layers)[0] == quoted["count"]


def test_commands_are_dvc_exp_runs_with_every_override():
    s = find_study("imdb-roberta-rslora", ROOT)
    cmd = s.command("rslora-r8", queue=True)
    assert cmd[:6] == ["dvc", "exp", "run", "--queue", "-n", "imdb-roberta-rslora-rslora-r8"]
    sets = dict(a.split("=", 1) for a in cmd[7::2])
    assert sets["lora.targets"] == "[query,key,value,dense,word_embeddings]" and sets["lora.rslora"] == "true"
    assert sets["data.labels"] == "[neg,pos]" and sets["lora.bias"] == "lora_only"


def test_a_study_runs_end_to_end_on_a_tiny_stand_in(tmp_path):
    model = build_tiny_model(tmp_path / "tiny-roberta", kind="roberta")
    repo = make_repo(tmp_path / "repo", model)
    stand_in = [
        f"model.name={model}",
        "data.path=tests/fixtures/ag_news",
        "data.max_train_rows=64",
        "train.batch_size=16",
    ]
    out = run(
        [
            str(Path(sys.executable).parent / "lora-dvc"),
            "study",
            "run",
            "ag-news-roberta-budget",
            *[a for s in stand_in for a in ("--set", s)],
            "--",
            "evaluate",
        ],
        repo,
    )
    assert "dvc exp run -n ag-news-roberta-budget-value-r22" in out.stdout
    shown = json.loads(run([sys.executable, "-m", "dvc", "exp", "show", "--json"], repo).stdout)
    exp = next(e for c in shown for e in c.get("experiments") or [] if e["name"] == "ag-news-roberta-budget-value-r22")
    data = exp["revs"][0]["data"]
    lora = data["params"]["params.yaml"]["data"]["lora"]
    assert (lora["r"], lora["alpha"], lora["targets"]) == (22, 44, ["value"])
    test = data["metrics"]["metrics/test.json"]["data"]["test"]
    # scored on the experiment's own test split: accuracy is a whole number of its rows right
    prepared = json.loads(run(["git", "show", f"{exp['revs'][0]['rev']}:records/prepare.json"], repo).stdout)
    right = test["accuracy"] * prepared["rows"]["test"]
    assert test["loss"] > 0 and abs(right - round(right)) < 1e-3, (test, prepared["rows"])


def test_unknown_study_and_variant_are_one_line(tmp_path):
    lora_dvc = str(Path(sys.executable).parent / "lora-dvc")
    missing = run([lora_dvc, "study", "show", "nope"], ROOT, check=False)
    assert missing.returncode == 2 and missing.stderr.strip().startswith("error: study 'nope' not found")
    bad = run([lora_dvc, "study", "run", "banglasenti-xlmr", "--variant", "qv-r5", "--dry-run"], ROOT, check=False)
    assert bad.returncode == 2 and "--variant qv-r5: not in banglasenti-xlmr" in bad.stderr
    dry = run([lora_dvc, "study", "run", "banglasenti-xlmr", "--dry-run"], ROOT).stdout.splitlines()
    assert len(dry) == 6 and all(line.startswith("dvc exp run -n banglasenti-xlmr-") for line in dry)


def test_imdb_fetch_checks_what_the_url_served(tmp_path):
    import importlib.util
    from unittest import mock

    import pandas as pd

    spec = importlib.util.spec_from_file_location("fetch_data", ROOT / "scripts/fetch_data.py")
    fetch_data = importlib.util.module_from_spec(spec)
    with mock.patch.dict(sys.modules, {"fetch_data": fetch_data}):  # its dataclass looks itself up there
        spec.loader.exec_module(fetch_data)
    good = tmp_path / "train.parquet"
    pd.DataFrame({"text": ["a fine film", "dull"], "label": [1, 0]}).to_parquet(good)
    fetch_data.check_imdb(good)
    page = tmp_path / "page.parquet"
    page.write_text("<html>rate limited</html>")
    with pytest.raises(fetch_data.FetchError, match="not a Parquet file"):
        fetch_data.check_imdb(page)
    wrong = tmp_path / "wrong.parquet"
    pd.DataFrame({"review": ["x"], "sentiment": [1]}).to_parquet(wrong)
    with pytest.raises(
        fetch_data.FetchError, match=r"expected Parquet columns text, label; found \['review', 'sentiment'\]"
    ):
        fetch_data.check_imdb(wrong)
    assert set(fetch_data.DATASETS["imdb"].files) == {"train.parquet", "test.parquet"}


def test_study_pages_are_generated_from_the_study_files():
    from lora_dvc.studies import write_pages

    assert write_pages(ROOT, check=True) == [], "run `lora-dvc study docs` and commit docs/studies/"
