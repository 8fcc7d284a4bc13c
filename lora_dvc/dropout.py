"""Dropout for CPU training: the same Bernoulli masks as torch's, drawn faster.

torch's CPU dropout draws every mask element with `bernoulli_` from the serial mt19937 generator
(its cost: bench/README.md). Here one 64-bit draw from the same generator gives four 16-bit
uniforms, each compared with p: the same keep mask (p rounded to 1/65536) and 1/(1 - p) scaling,
deterministic under `torch.manual_seed`, checkpointed with the generator's state. It covers every
`nn.Dropout` (embeddings, hidden states, the head, peft's LoRA dropout) and attention dropout (an
attention function registered with transformers, "sdpa" in evaluation and whenever dropout is 0).
Only CPU training uses it: GPUs and TPUs draw masks with parallel counter-based generators.
"""

from __future__ import annotations

import functools
import logging

import torch
from torch import nn

from lora_dvc.compat import (
    attn_implementation,
    refuse_attention_arguments,
    register_sdpa_variant,
    sdpa_attention,
    sdpa_is_causal,
)

log = logging.getLogger("train")

ATTENTION = "sdpa_fast_dropout"
_INT16_MIN, _INT16_MAX = -(2**15), 2**15 - 1


def keep_mask(shape: torch.Size, p: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """0 where dropped, 1 / (1 - p) where kept, each element kept with probability 1 - p."""
    count = shape.numel()
    words = torch.empty((count + 3) // 4, dtype=torch.int64, device=device).random_(-(2**63), 2**63 - 1)
    uniform16 = words.view(torch.int16)[:count].view(shape)  # four uniforms over the int16 range per word
    threshold = _INT16_MIN + round(p * 65536)  # kept where uniform16 >= threshold
    if threshold == _INT16_MIN:  # p < 1/131072: every element kept
        return torch.full(shape, 1.0 / (1.0 - p), dtype=dtype, device=device)
    if threshold > _INT16_MAX:  # p > 1 - 1/131072: none kept
        return torch.zeros(shape, dtype=dtype, device=device)
    # clamp + subtract, not `>=`: the same 0/1 keep mask, while torch's CPU int16 comparison into bool
    # and bool-to-float conversion cost more (bench/README.md, "Dropout masks")
    kept = uniform16.clamp(threshold - 1, threshold).sub_(threshold - 1)
    if dtype.is_floating_point and dtype.itemsize == 2:  # bf16 or fp16: the mask's bits in one int16 multiply
        return kept.mul_(_scale_bits(p, dtype)).view(dtype)
    return kept.to(dtype).mul_(1.0 / (1.0 - p))


@functools.cache
def _scale_bits(p: float, dtype: torch.dtype) -> int:
    """The bit pattern of 1 / (1 - p) in a 16-bit float dtype, as an int16 (once per p and dtype)."""
    return torch.tensor(1.0 / (1.0 - p), dtype=dtype).view(torch.int16).item()


class FastDropout(nn.Dropout):
    """nn.Dropout with masks from `keep_mask`; identical in evaluation (the input itself)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if self.p == 1.0:
            return x * 0.0
        return x * keep_mask(x.shape, self.p, x.dtype, x.device)


def _share_key_value_heads(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """key and value with one head per query head (grouped-query attention), as sdpa repeats them."""
    groups, remainder = divmod(query.shape[1], key.shape[1])
    if remainder:
        raise ValueError(f"{query.shape[1]} query heads do not share {key.shape[1]} key/value heads evenly")
    if groups > 1:  # each key/value head serves `groups` consecutive query heads
        key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
    return key, value


def _masked(
    scores: torch.Tensor,
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    attention_mask: torch.Tensor | None,
    is_causal: bool | None,
) -> torch.Tensor:
    """The attention scores of `query` and `key` under sdpa's mask, else the causal mask where sdpa
    would apply one itself."""
    if attention_mask is not None:  # sdpa's mask: True where a query may attend, or added to the scores
        if attention_mask.dtype == torch.bool:
            return scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
        return scores + attention_mask
    if sdpa_is_causal(module, is_causal, query.shape[2], attention_mask):
        # top-left aligned, as sdpa's is_causal: query i sees keys 0..i
        causal = torch.ones(query.shape[2], key.shape[2], dtype=torch.bool, device=query.device).tril()
        return scores.masked_fill(~causal, torch.finfo(scores.dtype).min)
    return scores


def attention_with_fast_dropout(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    position_bias: torch.Tensor | None = None,
    cache=None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """transformers' sdpa attention (the same parameters), except in training with dropout: softmax attention
    computed directly, its probabilities dropped with `keep_mask` (SDPA would draw them with bernoulli_).

    That path does what sdpa does with the same arguments: key/value heads repeated for grouped-query
    attention, the causal mask where sdpa would apply one itself (a decoder batch without padding comes
    with no mask), a position bias added to the scores; arguments it cannot honour fail loudly."""
    if dropout == 0.0 or not module.training:
        return sdpa_attention()(
            module,
            query,
            key,
            value,
            attention_mask,
            dropout=0.0,
            scaling=scaling,
            is_causal=is_causal,
            position_bias=position_bias,
            cache=cache,
            **kwargs,
        )
    refuse_attention_arguments(cache=cache, **kwargs)
    key, value = _share_key_value_heads(query, key, value)
    scaling = query.size(-1) ** -0.5 if scaling is None else scaling
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if position_bias is not None:
        scores = scores + position_bias
    scores = _masked(scores, module, query, key, attention_mask, is_causal)
    probs = nn.functional.softmax(scores, dim=-1)
    probs = probs * keep_mask(probs.shape, dropout, probs.dtype, probs.device)
    return torch.matmul(probs, value).transpose(1, 2).contiguous(), None


def _swap(model: nn.Module, old: type, new: type) -> int:
    """Replace every module of exactly type `old` with a `new` of the same p, inplace and mode."""
    swapped = 0
    for parent in model.modules():
        for name, child in list(parent.named_children()):
            if type(child) is old:
                replacement = new(child.p, child.inplace)
                replacement.train(child.training)
                setattr(parent, name, replacement)
                swapped += 1
    return swapped


def use_fast_dropout(model: nn.Module) -> int:
    """Swap every nn.Dropout in `model` for FastDropout and, where the model runs transformers' sdpa
    attention, its attention dropout too. Returns how many modules were swapped."""
    swapped = _swap(model, nn.Dropout, FastDropout)
    if attn_implementation(model) == "sdpa" and register_sdpa_variant(ATTENTION, attention_with_fast_dropout):
        model.set_attn_implementation(ATTENTION)
        if attn_implementation(model) != ATTENTION:  # transformers declines models off its interface
            log.warning(
                "%s does not take a registered attention function: its attention dropout stays torch's",
                type(model).__name__,
            )
    return swapped


def restore_dropout(model: nn.Module) -> None:
    """Back to torch's dropout and sdpa attention (before saving: a saved config names no function
    that only this process registered)."""
    _swap(model, FastDropout, nn.Dropout)
    if attn_implementation(model) == ATTENTION:
        model.set_attn_implementation("sdpa")
