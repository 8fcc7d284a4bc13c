"""lora_dvc.fused_lora: the fused LoRA layer computes what peft's computes (its dropout masks too), trains the
same weights, leaves every other case (disabled or merged adapters, DoRA) to peft, and a step with every CPU
speed lever on computes the step of plain fp32 peft."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import tiny_classifier
from peft.tuners.lora.layer import Linear as LoraLinear

from lora_dvc import dropout
from lora_dvc.dropout import use_fast_dropout
from lora_dvc.fused_lora import FusedLoraForward, use_fused_lora
from lora_dvc.modeling import apply_method, ready_for_bf16_autocast
from lora_dvc.params import LoraParams


def tiny_lora(config: dict | None = None, **lora) -> torch.nn.Module:
    torch.manual_seed(0)
    model = tiny_classifier(**{"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0, **(config or {})})
    model = apply_method(model, "lora", LoraParams(**{"r": 4, "alpha": 8, "dropout": 0.0, "targets": "all", **lora}))
    for name, param in model.named_parameters():  # B starts at zero: give it weights so the adapter counts
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.5)
    return model


def batch() -> dict:
    torch.manual_seed(1)
    ids = torch.randint(5, 100, (4, 9))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.tensor([0, 1, 2, 1])}


def loss_and_grads(
    model, inputs: dict | None = None, seed: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, dict]:
    inputs = batch() if inputs is None else inputs
    if seed is not None:
        torch.manual_seed(seed)  # the dropout masks' generator
    out = model(**inputs)
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
    assert any(isinstance(m, FusedLoraForward) for m in model.modules())
    torch.testing.assert_close(model(**batch()).logits, reference(**batch()).logits)


def test_fused_layer_draws_the_dropout_masks_peft_draws_in_fp32():
    """With LoRA dropout on, the same seed gives the fused and peft's layers the same masks: the same outputs
    and gradients. A fused forward that skipped or moved the dropout would differ."""
    model = tiny_lora(dropout=0.3)
    fused = copy.deepcopy(model)
    assert use_fused_lora(fused) > 0
    model.train(), fused.train()
    inputs = batch()
    loss, logits, grads = loss_and_grads(model, inputs, seed=7)
    fused_loss, fused_logits, fused_grads = loss_and_grads(fused, inputs, seed=7)
    torch.testing.assert_close(fused_logits, logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fused_loss, loss, rtol=1e-5, atol=1e-5)
    for name, grad in grads.items():
        torch.testing.assert_close(fused_grads[name], grad, rtol=1e-4, atol=1e-5, msg=name)
    model.eval()
    with torch.no_grad():
        assert not torch.allclose(model(**inputs).logits, logits, atol=1e-3)  # the dropout did drop


class MaskStream:
    """Dropout masks from one private generator, in call order: two models drawing the same sequence of
    shapes get the same masks, whichever dropout code draws them."""

    def __init__(self) -> None:
        self.generator, self.shapes = torch.Generator().manual_seed(0), []

    def mask(self, shape, p: float, dtype: torch.dtype) -> torch.Tensor:
        self.shapes.append(tuple(shape))
        return (torch.rand(shape, generator=self.generator) >= p).to(dtype) * (1.0 / (1.0 - p))


def test_a_step_with_every_lever_is_the_step_of_plain_fp32_peft(monkeypatch):
    """Fast dropout (modules and attention), frozen Linear weights in bf16, the fused LoRA layer and bf16
    autocast, against fp32 peft with torch's dropout, both drawing the same masks: the same masks in the same
    order, and the loss and LoRA gradients within bf16's precision."""
    dropouts = {"hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1, "attn_implementation": "sdpa"}
    reference = tiny_lora(dropouts, dropout=0.2)
    levered = copy.deepcopy(reference)
    reference.set_attn_implementation("eager")  # its attention dropout through nn.functional.dropout too
    assert reference.config._attn_implementation == "eager"
    assert use_fast_dropout(levered) > 0 and ready_for_bf16_autocast(levered) > 0 and use_fused_lora(levered) > 0
    assert levered.config._attn_implementation == dropout.ATTENTION
    plain, fast = MaskStream(), MaskStream()
    monkeypatch.setattr(dropout, "keep_mask", lambda shape, p, dtype, device: fast.mask(shape, p, dtype))

    def torch_dropout(x, p=0.5, training=True, inplace=False):
        return x * plain.mask(x.shape, p, x.dtype) if training and p > 0 else x

    inputs = batch()
    inputs["attention_mask"][1, 6:] = 0  # a padded row
    reference.train(), levered.train()
    with monkeypatch.context() as patch:
        patch.setattr(torch.nn.functional, "dropout", torch_dropout)
        loss, _, grads = loss_and_grads(reference, inputs)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fast_loss, _, fast_grads = loss_and_grads(levered, inputs)
    assert fast.shapes == plain.shapes and len(plain.shapes) > 10
    torch.testing.assert_close(fast_loss.float(), loss, rtol=0.02, atol=0.02)
    lora = [name for name in grads if "lora_" in name]
    assert lora and fast_grads.keys() == grads.keys()
    for name in lora:
        assert fast_grads[name].dtype == torch.float32
        # bf16 autocast alone, no lever, is up to 5% off fp32 here (its matmuls round to 8 bits)
        error = (fast_grads[name] - grads[name]).norm() / grads[name].norm()
        assert error < 0.1, f"{name}: relative error {error:.3f}"
