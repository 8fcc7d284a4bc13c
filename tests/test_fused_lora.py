"""lora_dvc.fused_lora: the fused LoRA layer computes what peft's computes, trains the same weights, and
leaves every other case (disabled or merged adapters, DoRA) to peft."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import tiny_classifier
from peft.tuners.lora.layer import Linear as LoraLinear

from lora_dvc.fused_lora import FusedLoraLinear, use_fused_lora
from lora_dvc.modeling import apply_method
from lora_dvc.params import LoraParams


def tiny_lora(**lora) -> torch.nn.Module:
    torch.manual_seed(0)
    model = tiny_classifier(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = apply_method(model, "lora", LoraParams(**{"r": 4, "alpha": 8, "dropout": 0.0, "targets": "all", **lora}))
    for name, param in model.named_parameters():  # B starts at zero: give it weights so the adapter counts
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.5)
    return model


def batch() -> dict:
    torch.manual_seed(1)
    ids = torch.randint(5, 100, (4, 9))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.tensor([0, 1, 2, 1])}


def loss_and_grads(model) -> tuple[torch.Tensor, torch.Tensor, dict]:
    out = model(**batch())
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return out.loss.detach(), out.logits.detach(), grads


def test_every_lora_linear_is_swapped_and_the_state_dict_is_unchanged():
    model = tiny_lora()
    plain = sum(type(m) is LoraLinear for m in model.modules())
    keys = list(model.state_dict())
    assert use_fused_lora(model) == plain > 0
    assert not any(type(m) is LoraLinear for m in model.modules())
    assert list(model.state_dict()) == keys


def test_fused_forward_and_gradients_equal_peft_in_fp32():
    model = tiny_lora()
    fused = copy.deepcopy(model)
    use_fused_lora(fused)
    loss, logits, grads = loss_and_grads(model)
    fused_loss, fused_logits, fused_grads = loss_and_grads(fused)
    torch.testing.assert_close(fused_logits, logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fused_loss, loss, rtol=1e-5, atol=1e-5)
    assert fused_grads.keys() == grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(fused_grads[name], grad, rtol=1e-4, atol=1e-5, msg=name)


def test_fused_under_bf16_autocast_stays_close_to_peft():
    model = tiny_lora()
    fused = copy.deepcopy(model)
    use_fused_lora(fused)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(**batch()).logits.float()
        fused_logits = fused(**batch()).logits.float()
    torch.testing.assert_close(fused_logits, logits, rtol=0.05, atol=0.05)


def test_disabled_and_merged_adapters_go_through_peft():
    model = tiny_lora()
    use_fused_lora(model)
    model.eval()
    with torch.no_grad():
        adapted = model(**batch()).logits
        with model.disable_adapter():
            base = model(**batch()).logits
        assert not torch.allclose(adapted, base)  # the adapter changes the output
        model.merge_adapter()
        torch.testing.assert_close(model(**batch()).logits, adapted, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("lora", [{"dora": True}])
def test_variants_fall_back_to_peft(lora):
    model = tiny_lora(**lora)
    reference = copy.deepcopy(model)
    use_fused_lora(model)
    assert any(isinstance(m, FusedLoraLinear) for m in model.modules())
    torch.testing.assert_close(model(**batch()).logits, reference(**batch()).logits)
