"""How close to the matmul peak can this model's training step get? The matmuls of one step at its own shapes.

    python bench/matmul_ceiling.py [--batch 32] [--length 45] [--seconds 1.0] [--out FILE]

The bench's "share of peak" compares the loop's model FLOP/s with the best rate of a 2048 x 2048 matmul.
MiniLM's matmuls are far smaller: per layer, tokens x 384 x 384 projections, tokens x 384 x 1536 FFN,
attention over 12 heads of 32 dimensions on rows of about 45 tokens, and rank-16 LoRA factors. This
times every matmul one encoder layer runs in a training step (forward, backward to the inputs, backward
to the adapter weights; LoRA on q, k, v and every dense layer as params.yaml's `targets: all`), each at
its real shape, alone, in a tight loop with warm caches, in fp32 and bf16 on all threads, next to the
2048 x 2048 peak measured in the same run. Their summed FLOPs over their summed best times is the
**ceiling**: the model FLOP/s of a step that spent no time at all outside its matmuls (no dropout,
softmax, GELU, LayerNorm, casts, optimizer or Python). A training loop cannot reach a higher share of
peak than this. Writes bench/results/matmul-ceiling-<date>.json.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from benchlib import best_seconds, matmul_peak, save_probe

HIDDEN, FFN, HEADS, RANK = 384, 1536, 12, 16  # all-MiniLM-L6-v2, LoRA r=16


def layer_matmuls(batch: int, length: int) -> list[tuple[str, int, int, int, int]]:
    """(what, batch count, m, k, n) of every matmul one encoder layer runs in a LoRA training step."""
    t, d, f, r = batch * length, HIDDEN, FFN, RANK
    heads, dh = batch * HEADS, HIDDEN // HEADS
    shapes = []
    # frozen projections: forward x W^T, and backward to the input grad W (same sizes, k and n swapped)
    for name, k, n in (("q", d, d), ("k", d, d), ("v", d, d), ("attn out", d, d), ("ffn in", d, f), ("ffn out", f, d)):
        shapes += [(f"{name} forward", 1, t, k, n), (f"{name} backward to input", 1, t, n, k)]
        # its LoRA adapter: down (k -> r) and up (r -> n), forward, backward to inputs and to both weights
        shapes += [
            (f"{name} lora forward down", 1, t, k, r),
            (f"{name} lora forward up", 1, t, r, n),
            (f"{name} lora backward to input", 1, t, n, r),
            (f"{name} lora backward to input", 1, t, r, k),
            (f"{name} lora grad B", 1, r, t, n),
            (f"{name} lora grad A", 1, k, t, r),
        ]
    # attention: scores Q K^T and probs V, forward; backward: both operands of each are activations
    shapes += [
        ("attention scores forward", heads, length, dh, length),
        ("attention weighted sum forward", heads, length, length, dh),
        ("attention scores backward (dQ)", heads, length, length, dh),
        ("attention scores backward (dK)", heads, length, length, dh),
        ("attention weighted sum backward (dP)", heads, length, dh, length),
        ("attention weighted sum backward (dV)", heads, length, length, dh),
    ]
    return shapes


def measure(dtype: torch.dtype, peak: float, batch: int, length: int, seconds: float) -> dict:
    rows, total_flops, total_s = [], 0.0, 0.0
    for what, count, m, k, n in layer_matmuls(batch, length):
        x, w = torch.randn(count, m, k, dtype=dtype).squeeze(0), torch.randn(count, k, n, dtype=dtype).squeeze(0)
        s = best_seconds(lambda x=x, w=w: torch.matmul(x, w), seconds)
        flops = 2 * count * m * k * n
        rows.append({"matmul": what, "shape": [count, m, k, n], "seconds": s, "flops_per_s": flops / s})
        total_flops, total_s = total_flops + flops, total_s + s
    ceiling = total_flops / total_s
    return {
        "peak_flops_per_s": peak,
        "ceiling_flops_per_s": ceiling,
        "ceiling_share_of_peak": ceiling / peak,
        "layer_matmul_flops": total_flops,
        "layer_matmul_seconds": total_s,
        "matmuls": rows,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=32, help="rows per step (params.yaml train.batch_size)")
    ap.add_argument("--length", type=int, default=45, help="tokens per row (AG News rows average about 45)")
    ap.add_argument("--seconds", type=float, default=1.0, help="timing per matmul shape")
    ap.add_argument("--out", type=Path, help="JSON path (default bench/results/matmul-ceiling-<date>.json)")
    args = ap.parse_args()
    peak = matmul_peak(seconds=3 * args.seconds)["flops_per_s"]  # the bench's peak: 2048 x 2048, best time
    result = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        result[name] = measure(dtype, peak[name], args.batch, args.length, args.seconds)
        r = result[name]
        print(
            f"{name}: peak {r['peak_flops_per_s'] / 1e9:,.0f} GFLOP/s; the model's matmuls at their shapes "
            f"{r['ceiling_flops_per_s'] / 1e9:,.0f} GFLOP/s = {100 * r['ceiling_share_of_peak']:.0f}% of peak",
            flush=True,
        )
    print("\n| matmul (one layer, batch x m x k x n) | fp32 GFLOP/s | bf16 GFLOP/s | bf16 share of step matmul time |")
    print("|---|---|---|---|")
    for f32, b16 in zip(result["fp32"]["matmuls"], result["bf16"]["matmuls"], strict=True):
        share = b16["seconds"] / result["bf16"]["layer_matmul_seconds"]
        print(
            f"| {b16['matmul']} {'x'.join(map(str, b16['shape']))} | {f32['flops_per_s'] / 1e9:,.0f} | "
            f"{b16['flops_per_s'] / 1e9:,.0f} | {100 * share:.1f}% |"
        )
    save_probe("matmul-ceiling", {"batch": args.batch, "length": args.length, "results": result}, args.out)


if __name__ == "__main__":
    main()
