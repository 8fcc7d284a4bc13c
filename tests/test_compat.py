"""lora_dvc.compat: each library internal the project reaches, deleted or changed here, trips its check: a
logged warning naming the library, its version and the lever that went off, or a one-line error. Also the
pins it names, and the Trainer contract the resumable sampler rests on."""

from __future__ import annotations

import logging
import re

import numpy as np
import pytest
import torch
import transformers
import transformers.masking_utils
from helpers import ROOT, tiny_classifier
from packaging.requirements import Requirement

from lora_dvc import compat, dropout
from lora_dvc.dropout import use_fast_dropout
from lora_dvc.modeling import apply_method
from lora_dvc.params import LoraParams


def tiny_lora() -> torch.nn.Module:
    torch.manual_seed(0)
    model = tiny_classifier(attn_implementation="sdpa")
    return apply_method(model, "lora", LoraParams(r=4, alpha=8, dropout=0.1, targets="all"))


def delete_from_class(monkeypatch, cls: type, name: str) -> None:
    """Delete `name` from every class in `cls`'s MRO that defines it (as a library release without it)."""
    owners = [klass for klass in cls.__mro__ if name in vars(klass)]
    assert owners, f"{cls.__name__} has no {name} to delete"
    for klass in owners:
        monkeypatch.delattr(klass, name)


def one_warning(caplog, dist: str) -> str:
    """The one warning lora_dvc.compat logged, checked for the library, its version and the way back."""
    messages = [r.getMessage() for r in caplog.records if r.name == "compat" and r.levelno == logging.WARNING]
    assert len(messages) == 1, messages
    message = messages[0]
    assert "\n" not in message
    assert message.startswith(f"{dist} {compat.version(dist)}: ")
    assert f"pin {dist}=={compat.PINNED[dist]} (requirements.txt)" in message
    return message


# -- the pins ---------------------------------------------------------------------------------------------------


def test_pinned_versions_are_requirements_txt_s_and_within_pyproject_s_ranges():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if "==" in line:
            name, pinned = line.split("==")
            pins[name.strip().lower()] = pinned.strip()
    assert {dist: pins[dist] for dist in compat.PINNED} == compat.PINNED
    ranges = {}
    for spec in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]:
        requirement = Requirement(spec)
        ranges[requirement.name.lower()] = requirement.specifier
    for dist, pinned in pins.items():  # `pip install -r requirements.txt` (which has `-e .`) installs the pins
        if dist in ranges:
            assert pinned in ranges[dist], f"{dist}=={pinned} is outside pyproject.toml's {ranges[dist]}"
    for dist, series in compat.TESTED.items():
        assert pins[dist].startswith(series + ".") and dist in ranges
    assert all(compat.tested(dist) for dist in compat.TESTED)  # this environment is the tested one


# -- transformers: the fast-dropout attention --------------------------------------------------------------------


def test_fast_dropout_attention_registers_with_the_tested_transformers(caplog):
    model = tiny_lora()
    use_fast_dropout(model)
    assert compat.attn_implementation(model) == dropout.ATTENTION
    assert not [r for r in caplog.records if r.name == "compat"]


def test_attention_stays_sdpa_when_configs_lose_attn_implementation(monkeypatch, caplog):
    model = tiny_lora()
    delete_from_class(monkeypatch, type(model.config), "_attn_implementation")
    assert use_fast_dropout(model) > 0  # the dropout modules still swap
    assert "a model config without _attn_implementation; train.fast_dropout's attention" in one_warning(
        caplog, "transformers"
    )


def test_attention_stays_sdpa_without_transformers_sdpa_entry(monkeypatch, caplog):
    model = tiny_lora()
    monkeypatch.delitem(transformers.AttentionInterface._global_mapping, "sdpa")
    use_fast_dropout(model)
    assert model.config._attn_implementation == "sdpa"
    assert "no sdpa attention or mask interface" in one_warning(caplog, "transformers")


def test_attention_stays_sdpa_without_the_mask_interface(monkeypatch, caplog):
    model = tiny_lora()
    monkeypatch.delattr(transformers.masking_utils, "AttentionMaskInterface")
    use_fast_dropout(model)
    assert model.config._attn_implementation == "sdpa"
    assert "no sdpa attention or mask interface" in one_warning(caplog, "transformers")


def test_attention_stays_sdpa_when_sdpa_takes_other_parameters(monkeypatch, caplog):
    """A new sdpa parameter (say attention sinks) is something the fast-dropout path would silently drop."""

    def sdpa_with_sinks(
        module,
        query,
        key,
        value,
        attention_mask,
        dropout=0.0,
        scaling=None,
        is_causal=None,
        position_bias=None,
        cache=None,
        sinks=None,
        **kwargs,
    ):
        raise AssertionError("not called")

    model = tiny_lora()
    monkeypatch.setitem(transformers.AttentionInterface._global_mapping, "sdpa", sdpa_with_sinks)
    use_fast_dropout(model)
    assert model.config._attn_implementation == "sdpa"
    message = one_warning(caplog, "transformers")
    assert re.search(r"sdpa attention takes \(.*, sinks, kwargs\), not \(", message)


# -- transformers: the length-grouped order and Trainer's set_epoch -----------------------------------------------


def test_length_grouped_order_is_the_one_transformers_sampler_gave():
    """EpochSeededLengthSampler once subclassed transformers' LengthGroupedSampler (setting its generator): its
    own order must be the same, so that runs before and after give the same batches."""
    from transformers.trainer_pt_utils import get_length_grouped_indices

    from lora_dvc.collators import length_grouped_order

    for rows, batch, seed in [(200, 16, 0), (7, 16, 1), (1000, 8, 2)]:
        lengths = np.random.default_rng(seed).integers(3, 64, rows).tolist()
        theirs = get_length_grouped_indices(lengths, batch, generator=torch.Generator().manual_seed(seed))
        assert length_grouped_order(lengths, batch, torch.Generator().manual_seed(seed)) == theirs


def test_trainer_draws_the_sampler_s_order_and_sets_its_epoch(monkeypatch, tmp_path):
    """TallyingTrainer builds its train DataLoader through Trainer's public `get_train_dataloader`, and Trainer
    calls the sampler's `set_epoch` before each epoch: what makes a resumed run replay the order."""
    from transformers import TrainingArguments

    from lora_dvc.artifacts import TokenizedSplit
    from lora_dvc.callbacks import Tallies
    from lora_dvc.collators import EpochSeededLengthSampler, SplitDataset, make_collator
    from lora_dvc.trainer import TallyingTrainer

    rng = np.random.default_rng(0)
    rows = [[10 + i] + [5] * int(rng.integers(1, 12)) for i in range(24)]  # the first id names the row
    data = SplitDataset(TokenizedSplit.from_ids(rows, [i % 3 for i in range(24)]))
    epochs, orders, seen = [], [], []
    iterate = EpochSeededLengthSampler.__iter__

    def recorded(self):
        epochs.append(self.epoch)
        orders.append(list(iterate(self)))
        return iter(orders[-1])

    monkeypatch.setattr(EpochSeededLengthSampler, "__iter__", recorded)
    collate = make_collator(None, True, [16], pad_id=0)

    def collator(batch):
        seen.extend(row["input_ids"][0] - 10 for row in batch)
        return collate(batch)

    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        num_train_epochs=2,
        seed=3,
        use_cpu=True,
        report_to="none",
        remove_unused_columns=False,
        save_strategy="no",
        eval_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
    )
    torch.manual_seed(0)
    trainer = TallyingTrainer(
        model=tiny_classifier(), args=args, train_dataset=data, data_collator=collator, tallies=Tallies(3)
    )
    trainer.train()
    assert epochs == [0, 1]
    assert seen == orders[0] + orders[1] and orders[0] != orders[1]


# -- transformers: padding masks on XLA ---------------------------------------------------------------------------


@pytest.fixture
def mask_skips(monkeypatch):
    """transformers' mask skips, put back after the test whatever it wraps."""
    for name in compat.MASK_SKIPS:
        monkeypatch.setattr(transformers.masking_utils, name, getattr(transformers.masking_utils, name))
    return transformers.masking_utils


class XlaMask:
    """Stands for a mask on an XLA device: reading it on the host would fail this test."""

    device = torch.device("xla")

    def all(self):
        raise AssertionError("read on the host")


def test_padding_masks_on_xla_are_kept_and_others_are_asked_as_before(mask_skips, caplog):
    originals = {name: getattr(mask_skips, name) for name in compat.MASK_SKIPS}
    compat.keep_padding_masks_on_device()
    compat.keep_padding_masks_on_device()  # once is enough: no wrapper around the wrapper
    full = torch.ones(2, 6, dtype=torch.bool)
    bidirectional, causal = (getattr(mask_skips, name) for name in compat.MASK_SKIPS)
    for name in compat.MASK_SKIPS:
        assert getattr(mask_skips, name).__kwdefaults__["_original"] is originals[name]
    assert bidirectional.keeps_xla_masks and bidirectional(XlaMask(), 6) is False
    assert causal(XlaMask(), 6, 6, 0, 0) is False
    assert bidirectional(full, 6) == originals["_ignore_bidirectional_mask_sdpa"](full, 6)
    assert causal(full, 6, 6, 0, 0) == originals["_ignore_causal_mask_sdpa"](full, 6, 6, 0, 0)
    assert not [r for r in caplog.records if r.name == "compat"]


@pytest.mark.parametrize("name", compat.MASK_SKIPS)
def test_padding_masks_check_warns_when_a_mask_skip_is_gone(mask_skips, monkeypatch, caplog, name):
    monkeypatch.delattr(mask_skips, name)
    compat.keep_padding_masks_on_device()
    assert f"masking_utils has no {name}; padding masks kept on the XLA device" in one_warning(caplog, "transformers")


def test_padding_masks_check_warns_when_a_mask_skip_takes_other_arguments(mask_skips, monkeypatch, caplog):
    monkeypatch.setattr(mask_skips, "_ignore_causal_mask_sdpa", lambda mask_info, q_length: False)
    compat.keep_padding_masks_on_device()
    assert "_ignore_causal_mask_sdpa takes mask_info first, not padding_mask" in one_warning(caplog, "transformers")
    assert not getattr(mask_skips._ignore_causal_mask_sdpa, "keeps_xla_masks", False)


def test_tpu_detection_falls_back_visibly_when_torch_xla_moves_its_chip_count(monkeypatch, caplog):
    import importlib.util
    import sys
    import types

    from lora_dvc import device

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)  # no torch_xla: None, silently
    assert compat.tpu_chip_count() is None and not [r for r in caplog.records if r.name == "compat"]
    fake = types.ModuleType("torch_xla")  # a torch_xla without _internal.tpu
    monkeypatch.setitem(sys.modules, "torch_xla", fake)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "torch_xla" else None)
    monkeypatch.setattr(device.glob, "glob", lambda pattern: ["/dev/accel0"])
    with caplog.at_level(logging.WARNING, logger="compat"):
        assert device.tpu_chips_attached()  # the device files decide
    warned = [r.getMessage() for r in caplog.records if r.name == "compat"]
    assert len(warned) == 1 and warned[0].startswith("torch_xla ") and "counts /dev/accel* device files" in warned[0]


def test_xla_scalars_as_inputs_falls_back_visibly_without_torch_xla_s_setter(monkeypatch, caplog):
    import sys
    import types

    calls = []
    fake = types.ModuleType("torch_xla")  # the tested torch_xla: the private setter is there and gets False
    fake._XLAC = types.SimpleNamespace(_set_xla_handle_special_scalars=calls.append)
    monkeypatch.setitem(sys.modules, "torch_xla", fake)
    assert compat.xla_scalars_as_inputs() and calls == [False]
    assert not [r for r in caplog.records if r.name == "compat"]
    fake._XLAC = types.SimpleNamespace()  # a torch_xla without it: a warning, constants stay
    with caplog.at_level(logging.WARNING, logger="compat"):
        assert not compat.xla_scalars_as_inputs()
    warned = [r.getMessage() for r in caplog.records if r.name == "compat"]
    assert len(warned) == 1 and warned[0].startswith("torch_xla ") and "compiles 2 more graphs" in warned[0]
    assert "\n" not in warned[0]
