"""peft's LoRA linear layer with the adapter's scale and sum folded into one matmul: same weights, fewer passes.

peft computes a LoRA layer as `result + lora_B(lora_A(dropout(x))) * scaling`: two full passes over the
layer's output (the multiply and the add) forward, and the multiply again backward, on top of the
matmuls. For MiniLM on a CPU those passes over 1536-wide FFN outputs cost more than the rank-16 matmul
itself (bench/README.md, "Levers"). `FusedLoraForward.forward` computes the same sum as one
`torch.addmm(result, h, B^T, alpha=scaling)`: the scale rides in the matmul, the sum is its accumulator,
and backward scales only the rank-r gradient.

It takes over only the plain case: one active LoRA adapter, not merged and not disabled, no DoRA or other
variant, no bias on B, no per-row adapter names, and the operands in one dtype or under autocast.
Everything else goes to peft's own forward. Parameters, state dict and saved adapter are peft's, so
checkpoints, `save_pretrained`, merging and loading are unchanged. The forward mirrors peft 0.21's;
lora_dvc.compat checks that peft is that release, with every attribute the forward reads, before any layer
is swapped, and leaves peft's layers as they are (with a warning) otherwise.
"""

from __future__ import annotations

import torch
from torch import nn

from lora_dvc.compat import swap_lora_linears


class FusedLoraForward:
    """The fused forward, mixed into peft's LoRA Linear class by `use_fused_lora` (its `super()` is peft's)."""

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        active = self.active_adapters
        if args or kwargs or self.disable_adapters or self.merged or len(active) != 1:
            return super().forward(x, *args, **kwargs)
        name = active[0]
        if name not in self.lora_A or name in self.lora_variant or self.lora_B[name].bias is not None:
            return super().forward(x, *args, **kwargs)
        lora_A, weight_B = self.lora_A[name], self.lora_B[name].weight
        if self.base_layer.weight.dtype != weight_B.dtype and not torch.is_autocast_enabled(x.device.type):
            return super().forward(x, *args, **kwargs)  # peft's path promotes mixed dtypes
        result = self.base_layer(x)
        # the dropout after the base layer, as peft draws it: the same masks from the same generator
        h = lora_A(self.lora_dropout[name](self._cast_input_dtype(x, lora_A.weight.dtype)))
        out_features = result.shape[-1]
        fused = torch.addmm(
            result.reshape(-1, out_features), h.reshape(-1, h.shape[-1]), weight_B.t(), alpha=self.scaling[name]
        )
        return fused.view(result.shape).to(result.dtype)


def use_fused_lora(model: nn.Module) -> int:
    """Make every peft LoRA Linear in `model` fused (in place). Returns how many; 0, with a logged warning, where
    the installed peft is not the one this forward mirrors (lora_dvc.compat.swap_lora_linears)."""
    return swap_lora_linears(model, FusedLoraForward)
