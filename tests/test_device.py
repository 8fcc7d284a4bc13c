"""The one device-and-precision rule (lora_dvc.device): every branch, with the hardware probes faked.

CUDA GPUs with and without bf16 (an H100 and a T4, say), CPUs with and without native bf16, and
TPUs through torch_xla are each a monkeypatched probe here; train (resolve_precision), evaluate
(Runtime) and predict/export (load_classifier) must all land on the same answer.
"""

from __future__ import annotations

import logging

import pytest
import torch

from lora_dvc import device
from lora_dvc.errors import UserError


@pytest.fixture
def host(monkeypatch):
    """Set the probes: host(cuda=bool, gpu_bf16=bool, cpu_bf16=bool, tpu=bool)."""

    def set_probes(cuda: bool = False, gpu_bf16: bool = False, cpu_bf16: bool = False, tpu: bool = False) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: gpu_bf16)
        monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: cpu_bf16)
        monkeypatch.setattr(device, "xla_has_tpu", lambda: tpu)
        monkeypatch.setattr(device, "xla_available", lambda: tpu)

    return set_probes


def test_cpu_flags_say_whether_bf16_is_native(tmp_path):
    with_bf16, without = tmp_path / "bf16", tmp_path / "plain"
    with_bf16.write_text("flags\t\t: fpu avx512f avx512_bf16 amx_tile\n")
    without.write_text("flags\t\t: fpu avx2 avx512f\n")
    assert device.cpu_has_native_bf16(str(with_bf16)) and not device.cpu_has_native_bf16(str(without))
    assert not device.cpu_has_native_bf16(str(tmp_path / "missing"))


@pytest.mark.parametrize(
    "probes, choice, kind, precision",
    [
        # CPUs: bf16 only where native, fp32 elsewhere
        (dict(cpu_bf16=True), "auto", "cpu", "bf16"),
        (dict(cpu_bf16=False), "auto", "cpu", "fp32"),
        (dict(cpu_bf16=True), "fp32", "cpu", "fp32"),
        # a bf16 GPU (A100, H100): bf16; a GPU without it (T4, V100): fp16 with a gradient scaler
        (dict(cuda=True, gpu_bf16=True), "auto", "cuda", "bf16"),
        (dict(cuda=True, gpu_bf16=False), "auto", "cuda", "fp16"),
        (dict(cuda=True, gpu_bf16=True), "fp16", "cuda", "fp16"),
        (dict(cuda=True, gpu_bf16=False), "fp32", "cuda", "fp32"),
        # a TPU: bf16
        (dict(tpu=True), "auto", "xla", "bf16"),
        (dict(tpu=True), "fp32", "xla", "fp32"),
    ],
)
def test_auto_device_and_precision(host, probes, choice, kind, precision):
    host(**probes)
    assert device.device_kind("auto") == kind
    assert device.resolve_precision(kind, choice) == precision


def test_refusals_are_one_line(host):
    host(cuda=True, gpu_bf16=False)
    with pytest.raises(UserError, match=r"^train.precision=bf16 but this GPU has no bf16; use auto \(fp16\) or fp32$"):
        device.resolve_precision("cuda", "bf16")
    for kind in ("cpu", "xla"):
        with pytest.raises(UserError, match=f"^train.precision=fp16 needs a CUDA GPU \\(this run is on {kind}\\)"):
            device.resolve_precision(kind, "fp16")
    host(cuda=False)
    with pytest.raises(UserError, match="^train.device=cuda but torch sees no CUDA GPU"):
        device.device_kind("cuda")
    with pytest.raises(UserError, match="^train.device=xla but torch_xla is not installed"):
        device.device_kind("xla")


def test_forced_bf16_on_a_cpu_without_it_warns_once(host, caplog):
    host(cpu_bf16=False)
    with caplog.at_level(logging.WARNING, logger="device"):
        assert device.resolve_precision("cpu", "bf16") == "bf16"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "without native bf16" in warnings[0] and "\n" not in warnings[0]
    caplog.clear()
    host(cpu_bf16=True)
    with caplog.at_level(logging.WARNING, logger="device"):
        device.resolve_precision("cpu", "bf16")
    assert not caplog.records


@pytest.mark.parametrize(
    "probes, dtype",
    [
        (dict(cuda=True, gpu_bf16=True), torch.bfloat16),
        (dict(cuda=True, gpu_bf16=False), torch.float16),  # was fp32 training and fp16 evaluation
        (dict(cpu_bf16=True), torch.bfloat16),
        (dict(cpu_bf16=False), None),
    ],
)
def test_evaluation_runs_at_the_precision_training_ran(host, probes, dtype):
    host(**probes)
    runtime = device.Runtime.create("auto", "auto")
    trained = device.resolve_precision(device.device_kind("auto"), "auto")
    assert runtime.dtype is dtype and device.AUTOCAST_DTYPES.get(trained) is dtype
    assert runtime.device.type == device.device_kind("auto")


def test_schema_takes_fp16():
    from lora_dvc.params import parse_params

    assert parse_params({"train": {"precision": "fp16"}}).train.precision == "fp16"
    with pytest.raises(UserError, match="train.precision"):
        parse_params({"train": {"precision": "fp8"}})
