"""The bench's pure functions: model FLOPs of a BERT encoder under LoRA, ratios, the result schema, the table.

No timing and no I/O here, so tests/test_bench.py can check every figure the bench derives.

FLOPs count a multiply-add as 2. Per encoder layer and per token of a row of length L (hidden d, FFN width
f, LoRA rank r on m hidden x hidden projections):

- forward: Q, K, V and attention-output projections 4 * 2d^2; attention scores QK^T and the weighted sum
  of V 2 * 2Ld; FFN in and out 2 * 2df; LoRA down and up 2 * 2dr per adapted projection;
- backward to the inputs: the same matmuls again, except that both operands of the two attention matmuls
  are activations, so those count twice (4 * 2Ld);
- backward to the weights: only the adapters' (2 * 2dr per projection); the frozen weights get no gradient.

Embeddings, LayerNorm, softmax, GELU, dropout and the classifier head are left out (elementwise or per
row, a few percent at most). Every layer is counted with its input gradient, though autograd skips part
of the first layer's: an overcount of at most 1/layers of the backward-to-inputs term.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

# LoRA target aliases of params.yaml -> projections per layer (each treated as hidden x hidden)
TARGET_COUNT = {"qv": 2, "qkv": 3, "all": 4, "all-linear": 4}


@dataclass(frozen=True)
class Encoder:
    layers: int
    hidden: int
    ffn: int
    lora_r: int = 0
    lora_modules: int = 0  # adapted hidden x hidden projections per layer

    @classmethod
    def from_config(cls, config, lora_r: int, targets) -> Encoder:
        modules = TARGET_COUNT.get(targets, 4) if isinstance(targets, str) else len(targets)
        return cls(config.num_hidden_layers, config.hidden_size, config.intermediate_size, lora_r, modules)


def layer_flops(enc: Encoder, length: int) -> dict[str, float]:
    """FLOPs per token of one layer for a row of `length` tokens: forward, backward to inputs, to adapters."""
    d, f = enc.hidden, enc.ffn
    projections, scores, ffn = 4 * 2 * d * d, 2 * 2 * length * d, 2 * 2 * d * f
    lora = enc.lora_modules * 2 * 2 * d * enc.lora_r
    return {
        "forward": projections + scores + ffn + lora,
        "backward_inputs": projections + 2 * scores + ffn + lora,
        "backward_adapters": lora,
    }


def flops_per_token(enc: Encoder, lengths: list[int], train: bool = True) -> float:
    """Mean model FLOPs per real (non-pad) token over rows of these lengths; train adds the backward."""
    total = 0.0
    for length in lengths:
        per_layer = layer_flops(enc, length)
        per_token = per_layer["forward"] + (
            per_layer["backward_inputs"] + per_layer["backward_adapters"] if train else 0
        )
        total += enc.layers * per_token * length
    return total / max(1, sum(lengths))


def run_flops(enc: Encoder, train_lengths: list[int], val_lengths: list[int], epochs: float = 1.0) -> float:
    """Model FLOPs of one training run: train rows forward + backward, one forward val pass per epoch."""
    train = flops_per_token(enc, train_lengths) * sum(train_lengths) * epochs
    return train + flops_per_token(enc, val_lengths, train=False) * sum(val_lengths) * epochs


def epochs_trained(runs: list[dict], train: dict, train_rows: int) -> int:
    """Epochs the runs trained: train.epochs, or more where train.min_steps added some (from our steps taken)."""
    steps = next((r["steps"] for r in runs if r.get("side") == "ours" and r.get("steps")), None)
    per_epoch = -(-train_rows // train["batch_size"])
    return max(train["epochs"], round(steps / per_epoch)) if steps else train["epochs"]


def matmul_flops(n: int) -> float:
    """FLOPs of an n x n by n x n matmul."""
    return 2.0 * n**3


def ratio(ours_seconds: float | None, peer_seconds: float | None) -> float | None:
    """How many times faster ours is than the peer (peer time / our time); None if either is missing."""
    if not ours_seconds or not peer_seconds:
        return None
    return round(peer_seconds / ours_seconds, 3)


def run_order(default: str, padded_precisions: list[str]) -> list[tuple[str, str]]:
    """One repeat's (side, precision) runs, each within two places of the runs it is compared with, so that
    drift of the machine's speed (measured: 12-17% within an hour on this VM) falls on both sides of a
    ratio: ours in the default precision first (its step count sets the peers'), then the stock default
    (fp32, the headline peer), the stock recipe in our default precision, ours in the other precision,
    then the padded peer."""
    other = "fp32" if default == "bf16" else "bf16"
    order = [("ours", default), ("stock", "fp32")]
    order += [("stock", default)] if default != "fp32" else [("stock", other)]
    order += [("ours", other)]
    order += [("padded", p) for p in padded_precisions]
    return order


def alternate(sides: list[str], repeats: int) -> list[str]:
    """A B C, B C A, ...: each side leads in turn so drift and other load fall on all sides alike."""
    order = []
    for i in range(repeats):
        k = i % len(sides)
        order += sides[k:] + sides[:k]
    return order


# the keys every results/*.json carries (the README's table is rebuilt from them)
SCHEMA = {
    "command": str,
    "date": str,
    "host": dict,
    "args": dict,
    "params": dict,
    "runs": list,
    "speed": dict,
    "accuracy": dict,
    "flops": dict,
    "peak": dict,
    "tokenize": dict,
    "noop_repro_s": (float, type(None)),
    "peak_rss_mb": (dict, float, type(None)),  # {precision: MB}; a float in results before 2026-11-28T12
    "processes_vs_threads": dict,
}
HOST_KEYS = ("hostname", "cpu", "avx512_bf16", "amx", "torch", "threads", "cores")


def schema_errors(result: dict) -> list[str]:
    """What a result JSON lacks or has of the wrong type (empty when it is valid)."""
    errors = [f"{key}: missing" for key in SCHEMA if key not in result]
    errors += [
        f"{key}: {type(result[key]).__name__}, expected {kind}"
        for key, kind in SCHEMA.items()
        if key in result and not isinstance(result[key], kind)
    ]
    host = result.get("host") if isinstance(result.get("host"), dict) else {}
    errors += [f"host.{key}: missing" for key in HOST_KEYS if key not in host]
    return errors


def fmt(value, digits: int = 1, suffix: str = "") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:,.{digits}f}{suffix}"
    return f"{value}{suffix}"


def mean_std(values, digits: int = 4) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for a single value), rounded: a bench row over seeds."""
    values = list(values)
    std = round(statistics.stdev(values), digits) if len(values) > 1 else None
    return round(statistics.mean(values), digits), std
