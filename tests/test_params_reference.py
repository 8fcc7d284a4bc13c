"""docs/params.md is generated from the schema: every key mapped, the file current, stale files caught."""

from __future__ import annotations

import sys

import pytest
from conftest import ROOT, run

from lora_dvc import params_reference
from lora_dvc.params import all_keys


def reference(args: list[str]):
    return run([sys.executable, "-m", "lora_dvc.params_reference", *args], ROOT, check=False)


def test_every_schema_key_has_exactly_one_mapping():
    assert set(params_reference.MAPS_TO) == set(all_keys())
    assert [k for k, _, _ in params_reference.schema_fields()] == all_keys()


def test_committed_reference_is_current():
    result = reference(["--check"])
    assert result.returncode == 0, result.stderr


def test_rows_carry_type_default_range_comment_and_peft_name():
    text = (ROOT / "docs/params.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| `lora.alpha` |"))
    assert "a number | `32` | a number > 0 | peft `LoraConfig.lora_alpha`" in row
    rslora = next(line for line in text.splitlines() if line.startswith("| `lora.rslora` |"))
    assert "`false`" in rslora and "use_rslora" in rslora and "alpha/sqrt(r)" in rslora
    assert "early_stopping_patience" in text and "loraplus_lr_ratio" in text and "target_modules" in text
    assert "`pooler.dense`" in text and f"{params_reference.TARGET_COUNTS['all']:,}" in text


def test_stale_reference_exits_1_with_one_line(tmp_path):
    stale = tmp_path / "params.md"
    stale.write_text((ROOT / "docs/params.md").read_text().replace("`LoraConfig.lora_alpha`", "`alpha`"))
    result = reference(["--check", "--out", str(stale)])
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and "is stale" in result.stderr
    assert f"run `{params_reference.COMMAND}`" in result.stderr
    assert reference(["--check", "--out", str(tmp_path / "missing.md")]).returncode == 1


def test_a_key_without_mapping_is_named(monkeypatch):
    monkeypatch.delitem(params_reference.MAPS_TO, "train.lr")
    with pytest.raises(Exception, match="MAPS_TO has no entry for train.lr"):
        params_reference.render("")


def test_documented_target_counts_are_measured_ones():
    counts = params_reference.count_trainable()
    assert {t: trainable for t, (trainable, _) in counts.items()} == params_reference.TARGET_COUNTS
    qv_trainable, qv_total = counts["qv"]
    lora_in_qv = qv_total - params_reference.TOTAL_PARAMS
    assert lora_in_qv == 12 * params_reference.COUNT_R * (384 + 384)  # 6 layers x (query, value), 384 wide
