"""The params schema: one clear line for unknown keys, wrong types and out-of-range values."""

from __future__ import annotations

import pytest
import yaml
from conftest import ROOT

from lora_dvc.errors import UserError
from lora_dvc.params import load_params, parse_params


def shipped() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def with_value(key: str, value) -> dict:
    raw = shipped()
    section, name = key.split(".")
    raw[section][name] = value
    return raw


def test_shipped_params_are_valid():
    params = load_params(ROOT / "params.yaml")
    assert params.lora.r == 16 and params.lora.targets == "all"
    # the length is the tokenize stage's choice (AG News: 128); long texts keep their head (bench/long_texts.py)
    assert (params.model.max_length, params.model.length_buckets, params.model.truncation) == (
        "auto",
        "auto",
        "head",
    )


def test_exponent_without_a_dot_is_a_number_as_dvc_writes_it(tmp_path):
    # `dvc exp run -S train.lr=5e-5` writes `lr: 5e-05`: a float in YAML 1.2, a string in PyYAML's YAML 1.1
    path = tmp_path / "params.yaml"
    path.write_text((ROOT / "params.yaml").read_text().replace("  lr: 0.001", "  lr: 5e-05"))
    assert "lr: 5e-05" in path.read_text()
    assert load_params(path).train.lr == 5e-05
    path.write_text((ROOT / "params.yaml").read_text().replace("  lr: 0.001", "  lr: 1E+2"))
    with pytest.raises(UserError, match="train.lr"):  # read as the number 100, then refused by the range
        load_params(path)


@pytest.mark.parametrize(
    "key, value, fragment",
    [
        ("lora.r", 0, "'lora.r' is 0, allowed: an integer in [1, 1024]"),
        ("lora.r", -4, "'lora.r' is -4"),
        ("lora.r", "eight", "expected an integer"),
        ("lora.alpha", 0, "'lora.alpha' is 0, allowed: a number > 0"),
        ("lora.dropout", 1.0, "allowed: a number in [0, 1)"),
        ("train.lr", 0, "'train.lr' is 0"),
        ("train.batch_size", 0, "'train.batch_size' is 0"),
        ("train.device", "tpu", "allowed: auto | cpu | cuda | xla"),
        ("data.dataset", "imdb", "allowed: ag_news | banglasenti | csv"),
        ("train.epochs", 1.5, "expected an integer"),
        ("lora.rslora", "yes", "expected true/false"),
    ],
)
def test_bad_values_name_the_key_and_range(key, value, fragment):
    with pytest.raises(UserError, match=None) as err:
        parse_params(with_value(key, value))
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


def test_unknown_key_suggests_nearest():
    raw = shipped()
    raw["lora"]["rank"] = 8
    with pytest.raises(UserError) as err:
        parse_params(raw)
    assert "unknown key 'lora.rank'" in str(err.value) and "'lora.r'" in str(err.value)


def test_unknown_section():
    raw = shipped()
    raw["trian"] = {"lr": 1}
    with pytest.raises(UserError) as err:
        parse_params(raw)
    assert "unknown key 'trian'" in str(err.value) and "'train" in str(err.value)


def test_buckets_end_at_max_length():
    raw = with_value("model.max_length", 100)
    raw["model"]["length_buckets"] = [32, 64, 96, 128]
    assert parse_params(raw).buckets == [32, 64, 96, 100]
    raw["model"]["length_buckets"] = "auto"  # quarters of max_length, rounded up to multiples of 8
    assert parse_params(raw).buckets == [32, 56, 80, 100]
