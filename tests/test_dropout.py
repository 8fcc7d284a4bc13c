"""lora_dvc.dropout: its masks are Bernoulli(1 - p) with the 1/(1 - p) scaling, follow the seed, and the
model with them computes what torch's dropout and sdpa attention compute, up to which elements drop."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import tiny_classifier
from torch import nn

from lora_dvc import dropout
from lora_dvc.dropout import FastDropout, keep_mask, restore_dropout, use_fast_dropout
from lora_dvc.errors import UserError
from lora_dvc.modeling import apply_method
from lora_dvc.params import LoraParams


def tiny_lora_bert(attention_dropout: float = 0.1) -> nn.Module:
    torch.manual_seed(0)
    model = tiny_classifier(attention_probs_dropout_prob=attention_dropout, attn_implementation="sdpa")
    return apply_method(model, "lora", LoraParams(r=4, alpha=8, dropout=0.1, targets="all"))


def batch() -> dict:
    ids = torch.randint(5, 100, (4, 12))
    mask = torch.ones(4, 12, dtype=torch.long)
    mask[1, 7:] = 0  # a padded row
    ids[1, 7:] = 0
    return {"input_ids": ids, "attention_mask": mask}


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_masks_are_bernoulli_with_inverted_scaling(p):
    torch.manual_seed(3)
    shape = torch.Size([500, 4003])  # not a multiple of 4: the last 64-bit word is cut
    mask = keep_mask(shape, p, torch.float32, torch.device("cpu"))
    assert mask.shape == shape and mask.dtype == torch.float32
    assert mask.unique().tolist() == [0.0, pytest.approx(1 / (1 - p))]
    kept = (mask > 0).double()
    n = kept.numel()
    sigma = (p * (1 - p) / n) ** 0.5
    assert abs(kept.mean().item() - (1 - p)) < 5 * sigma
    # each of the four 16-bit lanes of a 64-bit draw (one lane holds the sign bit) keeps at the same rate
    lanes = kept.flatten()[: n // 4 * 4].view(-1, 4).mean(dim=0)
    assert (lanes - (1 - p)).abs().max().item() < 5 * 2 * sigma
    assert mask.mean().item() == pytest.approx(1.0, abs=10 * sigma / (1 - p))


def test_masks_follow_the_seed_and_the_saved_generator_state():
    shape = torch.Size([64, 33])
    torch.manual_seed(11)
    first = keep_mask(shape, 0.3, torch.float32, torch.device("cpu"))
    state = torch.get_rng_state()  # what Trainer's checkpoints save and a resumed run restores
    second = keep_mask(shape, 0.3, torch.float32, torch.device("cpu"))
    torch.manual_seed(11)
    assert torch.equal(keep_mask(shape, 0.3, torch.float32, torch.device("cpu")), first)
    torch.set_rng_state(state)
    assert torch.equal(keep_mask(shape, 0.3, torch.float32, torch.device("cpu")), second)
    assert not torch.equal(first, second)


def test_module_drops_in_training_only_and_gradients_follow_the_mask():
    layer = FastDropout(0.25)
    x = torch.randn(8, 40, requires_grad=True)
    layer.eval()
    assert layer(x) is x
    layer.train()
    y = layer(x)
    kept = y != 0
    assert torch.allclose(y[kept], x[kept] / 0.75)
    y.sum().backward()
    assert torch.allclose(x.grad, kept.float() / 0.75)
    assert torch.equal(FastDropout(0.0).train()(x), x)
    assert torch.count_nonzero(FastDropout(1.0).train()(x)) == 0


def test_swapped_model_equals_the_original_in_evaluation_and_is_restored():
    model = tiny_lora_bert()
    original = copy.deepcopy(model)
    plain = sum(type(m) is nn.Dropout for m in model.modules())
    assert use_fast_dropout(model) == plain > 10  # embeddings, 2 per layer, the head, every LoRA dropout
    assert not any(type(m) is nn.Dropout for m in model.modules())
    assert model.config._attn_implementation == dropout.ATTENTION
    inputs = batch()
    model.eval(), original.eval()
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, original(**inputs).logits)
    restore_dropout(model)
    assert sum(type(m) is nn.Dropout for m in model.modules()) == plain
    assert not any(isinstance(m, FastDropout) for m in model.modules())
    assert model.config._attn_implementation == "sdpa"


def test_training_attention_is_sdpa_attention_up_to_the_dropped_elements(monkeypatch):
    """With every mask forced to keep all (scale 1), the training path computes exactly sdpa attention
    without dropout: same scaling, same padding mask. With real masks, padded keys still get no weight."""
    model, reference = tiny_lora_bert(), tiny_lora_bert(attention_dropout=0.0)
    use_fast_dropout(model)  # its dropout stays at p = 0.1: the masks below keep everything
    for module in reference.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    model.train(), reference.train()
    monkeypatch.setattr(dropout, "keep_mask", lambda shape, p, dtype, device: torch.ones(shape, dtype=dtype))
    inputs = batch()
    assert torch.allclose(model(**inputs).logits, reference(**inputs).logits, atol=1e-6)

    monkeypatch.undo()
    padded_elsewhere = {k: v.clone() for k, v in inputs.items()}
    padded_elsewhere["input_ids"][1, 7:] = 42  # different ids under the padding mask
    torch.manual_seed(5)
    out = model(**inputs).logits
    torch.manual_seed(5)
    assert torch.allclose(model(**padded_elsewhere).logits, out, atol=1e-6)
    torch.manual_seed(6)
    assert not torch.allclose(model(**inputs).logits, out)  # the masks do drop something


@pytest.mark.parametrize("p", [0.1, 0.37, 0.5])
def test_masks_are_the_uniform16_threshold_rule(p):
    """keep_mask builds its 0/1 mask with clamp + subtract (cheaper than `>=` into bool on CPU): it must keep
    exactly the elements whose 16-bit uniform is at or above the threshold, from the same generator draws."""
    shape = torch.Size([64, 1001])
    torch.manual_seed(11)
    mask = keep_mask(shape, p, torch.float32, torch.device("cpu"))
    torch.manual_seed(11)
    words = torch.empty((shape.numel() + 3) // 4, dtype=torch.int64).random_(-(2**63), 2**63 - 1)
    uniform16 = words.view(torch.int16)[: shape.numel()].view(shape)
    expected = uniform16 >= -(2**15) + round(p * 65536)
    assert torch.equal(mask > 0, expected)


@pytest.mark.parametrize(("p", "kept"), [(1e-7, 1.0), (1 - 1e-7, 0.0)])
def test_masks_at_the_ends_of_the_16_bit_resolution(p, kept):
    """p below 1/131072 keeps everything, above 1 - 1/131072 nothing (the threshold leaves int16's range)."""
    mask = keep_mask(torch.Size([4096]), p, torch.bfloat16, torch.device("cpu"))
    assert mask.dtype == torch.bfloat16
    assert (mask > 0).float().mean().item() == kept


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_16_bit_masks_equal_the_generic_path(p, dtype):
    """bf16/fp16 masks are built from their bit pattern (one int16 multiply): the same values as the
    0/1 mask converted and scaled in that dtype, from the same draws."""
    torch.manual_seed(5)
    bits_built = keep_mask(torch.Size([32, 77, 9]), p, dtype, torch.device("cpu"))
    torch.manual_seed(5)
    generic = (keep_mask(torch.Size([32, 77, 9]), p, torch.float32, torch.device("cpu")) > 0).to(dtype)
    assert bits_built.dtype == dtype
    assert torch.equal(bits_built, generic.mul_(1.0 / (1.0 - p)))


def tiny_decoder() -> nn.Module:
    """A 2-layer Llama classifier with grouped-query attention: 4 query heads share 2 key/value heads."""
    from transformers import LlamaConfig, LlamaForSequenceClassification

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
        attention_dropout=0.1,
        pad_token_id=0,
        num_labels=3,
        attn_implementation="sdpa",
    )
    return LlamaForSequenceClassification(config)


@pytest.mark.parametrize("padded", [False, True])
def test_training_attention_of_a_decoder_is_causal_with_grouped_query_heads(monkeypatch, padded):
    """A decoder batch without padding comes to the attention with no mask, causality in `is_causal`, and its
    key/value heads unrepeated: with every mask forced to keep all, the training path computes sdpa's
    attention (causal, each key/value head serving its query heads), not a bidirectional one."""
    model = tiny_decoder()
    reference = copy.deepcopy(model)
    for module in reference.modules():
        if hasattr(module, "attention_dropout"):
            module.attention_dropout = 0.0
    use_fast_dropout(model)
    assert model.config._attn_implementation == dropout.ATTENTION
    model.train(), reference.train()
    ids = torch.randint(5, 100, (3, 10))
    mask = torch.ones_like(ids)
    if padded:
        mask[1, 6:] = 0
        ids[1, 6:] = 0
    monkeypatch.setattr(dropout, "keep_mask", lambda shape, p, dtype, device: torch.ones(shape, dtype=dtype))
    out = model(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(out, reference(input_ids=ids, attention_mask=mask).logits, rtol=1e-5, atol=1e-5)
    later = ids.clone()
    later[0, -1] = 7 if ids[0, -1] != 7 else 8  # a later token changes no earlier position's state
    hidden = model.model(input_ids=ids, attention_mask=mask).last_hidden_state
    assert torch.equal(model.model(input_ids=later, attention_mask=mask).last_hidden_state[0, :-1], hidden[0, :-1])


def test_training_attention_refuses_arguments_it_cannot_honour():
    model = tiny_lora_bert()
    layer = next(m for m in model.modules() if type(m).__name__ == "BertSelfAttention").train()
    q = torch.randn(2, 2, 5, 16)
    with pytest.raises(UserError, match=r"transformers \S+: this model passes softcap .* train.fast_dropout: false"):
        dropout.attention_with_fast_dropout(layer, q, q, q, None, dropout=0.1, softcap=30.0)
