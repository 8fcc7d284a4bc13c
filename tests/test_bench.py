"""The bench's pure functions (bench/benchlib.py, the summaries of run.py and step_levers.py): FLOP counting,
ratios and spreads, run order, the result JSON schema.

No timing here: the bench itself is run by hand (bench/README.md).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import benchlib  # noqa: E402
import figures  # noqa: E402
from benchlib import Encoder  # noqa: E402

MINILM = Encoder(layers=6, hidden=384, ffn=1536, lora_r=8, adapted=((384, 384), (384, 384)))  # qv, r 8


def test_layer_flops_matches_the_hand_count_for_minilm():
    d, f, length, r = 384, 1536, 40, 8
    flops = benchlib.layer_flops(MINILM, length)
    forward = 8 * d * d + 4 * length * d + 4 * d * f + 2 * 4 * d * r
    assert flops["forward"] == forward
    # the attention matmuls have two activation operands: their input gradient counts twice
    assert flops["backward_inputs"] == forward + 4 * length * d
    assert flops["backward_adapters"] == 2 * 4 * d * r


def test_frozen_model_gets_no_weight_gradient_and_lora_adds_little():
    frozen = benchlib.layer_flops(Encoder(6, 384, 1536), 64)
    assert frozen["backward_adapters"] == 0
    with_lora = benchlib.flops_per_token(MINILM, [64])
    without = benchlib.flops_per_token(Encoder(6, 384, 1536), [64])
    assert 0 < with_lora / without - 1 < 0.02


def test_train_flops_are_about_two_forwards_and_grow_with_length():
    train = benchlib.flops_per_token(MINILM, [40, 40])
    forward = benchlib.flops_per_token(MINILM, [40, 40], train=False)
    assert 2.0 < train / forward < 2.1  # backward to inputs ~1x, adapters tiny, no frozen weight gradients
    assert benchlib.flops_per_token(MINILM, [128]) > benchlib.flops_per_token(MINILM, [16])
    # about 22 M parameters, of which ~10.6 M in the encoder's matmuls: forward ~2 FLOPs per weight per token
    assert 20e6 < forward < 26e6


def test_flops_per_token_weights_rows_by_their_tokens():
    short, long = benchlib.flops_per_token(MINILM, [10]), benchlib.flops_per_token(MINILM, [100])
    mixed = benchlib.flops_per_token(MINILM, [10, 100])
    assert mixed == pytest.approx((10 * short + 100 * long) / 110)


def test_run_flops_adds_a_forward_val_pass():
    train_only = benchlib.run_flops(MINILM, [40] * 4, [])
    with_val = benchlib.run_flops(MINILM, [40] * 4, [40] * 2)
    assert with_val - train_only == pytest.approx(benchlib.flops_per_token(MINILM, [40], train=False) * 80)
    assert benchlib.run_flops(MINILM, [40] * 4, [], epochs=2) == pytest.approx(2 * train_only)


def test_run_order_keeps_compared_runs_near_each_other():
    order = benchlib.run_order("bf16")
    assert order[0] == ("ours", "bf16")  # its step count sets the peers'
    assert len(order) == len(set(order)) == 4
    place = {run: i for i, run in enumerate(order)}
    for ours, peer in [
        (("ours", "bf16"), ("stock", "fp32")),  # the headline: our default against the stock default
        (("ours", "bf16"), ("stock", "bf16")),
        (("ours", "fp32"), ("stock", "fp32")),
    ]:
        assert abs(place[ours] - place[peer]) <= 2
    assert set(benchlib.run_order("fp32")) == {
        ("ours", "fp32"),
        ("stock", "fp32"),
        ("stock", "bf16"),
        ("ours", "bf16"),
    }
    assert benchlib.run_order("fp32", ("fp32",)) == [("ours", "fp32"), ("stock", "fp32")]  # no native bf16


def test_the_flop_count_reads_the_default_models_adapters_as_a_hand_count_does():
    # all-MiniLM-L6-v2, LoRA r=16 on `targets: all`, 4 labels: 677,380 trainable parameters, by hand 6 layers x
    # (4 attention projections 16 x (384 + 384) + FFN in and out 16 x (384 + 1536) each) + the pooler's
    # 16 x (384 + 384) + the head 384 x 4 + 4
    from lora_dvc.modeling import apply_method, count_params, load_base_model
    from lora_dvc.params import load_params

    params = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
    assert (params.lora.r, params.lora.targets) == (16, "all")
    model = apply_method(load_base_model(params.model.name, list("abcd")), "lora", params.lora)
    enc = Encoder.from_model(model)
    assert (enc.layers, enc.hidden, enc.ffn, enc.lora_r) == (6, 384, 1536, 16)
    assert enc.lora_params() == 4 * 16 * (384 + 384) + 2 * 16 * (384 + 1536) == 110_592
    assert count_params(model)[0] == 6 * enc.lora_params() + 12_288 + 1_540 == 677_380
    # the LoRA FLOPs per token and layer: 2 per adapter weight, forward
    assert benchlib.layer_flops(enc, 40)["backward_adapters"] == 2 * 110_592


def test_alternate_rotates_which_side_leads():
    assert benchlib.alternate(["a", "b", "c"], 3) == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert benchlib.alternate(["a", "b"], 2)[0] == "a"  # ours leads first: it sets the peers' step count


def test_spread_is_min_median_max():
    assert benchlib.spread([3.0, 1.0, 2.0, 10.0]) == {"min": 1.0, "median": 2.5, "max": 10.0}
    with pytest.raises(ValueError):
        benchlib.spread([])


def runs_of(seconds: dict) -> list[dict]:
    """Runs in run order, repeat by repeat: {(side, precision): [s of repeat 0, 1, ...]}."""
    repeats = len(next(iter(seconds.values())))
    return [
        {"side": side, "precision": precision, "wall_s": values[i], "repeat": i}
        for i in range(repeats)
        for (side, precision), values in seconds.items()
    ]


def test_ratios_pair_each_run_with_the_peer_of_its_own_repeat():
    # the machine slows down from repeat to repeat; per-repeat pairs keep the ratio, medians across repeats mix
    runs = runs_of({("ours", "bf16"): [10.0, 20.0, 40.0], ("stock", "fp32"): [20.0, 40.0, 80.0]})
    assert benchlib.paired_ratios(runs, ("ours", "bf16"), ("stock", "fp32")) == [2.0, 2.0, 2.0]
    assert benchlib.paired_ratios(runs, ("ours", "fp32"), ("stock", "fp32")) == []


def test_speed_summary_gives_spreads_and_per_repeat_ratios():
    import run

    runs = runs_of(
        {
            ("ours", "bf16"): [10.0, 12.0, 11.0],
            ("stock", "fp32"): [30.0, 24.0, 33.0],
            ("stock", "bf16"): [20.0, 24.0, 22.0],
            ("ours", "fp32"): [15.0, 15.0, 30.0],
        }
    )
    summary = run.speed_summary(runs, "bf16")
    assert summary["default"]["ours_s"] == {"min": 10.0, "median": 11.0, "max": 12.0}
    assert summary["default"]["vs_stock"] == {"min": 2.0, "median": 3.0, "max": 3.0}
    assert summary["fp32"]["vs_stock"] == {"min": 1.1, "median": 1.6, "max": 2.0}
    assert summary["bf16"]["vs_stock"]["median"] == 2.0
    fp32_host = run.speed_summary([r for r in runs if r["precision"] == "fp32"], "fp32", ("fp32",))
    assert list(fp32_host) == ["fp32"] and fp32_host["fp32"] == summary["fp32"]  # no unequal row, no bf16 row


def test_step_levers_summary_compares_each_lever_with_base_of_its_repeat():
    import step_levers

    runs = [
        {"lever": lever, "s_per_step": s, "repeat": i, "warmup_s": 1.0, "threads": 2, "tokens_per_step": 1648.0}
        for i, pair in enumerate([(0.6, 0.3), (0.9, 0.3), (0.6, 0.4)])
        for lever, s in zip(("base", "default"), pair, strict=True)
    ]
    rows = {r["lever"]: r for r in step_levers.summarise(runs, ["base", "default"])}
    assert rows["default"]["s_per_step_spread"] == {"min": 0.3, "median": 0.3, "max": 0.4}
    assert figures.per_repeat({"runs": runs}, "default", "base") == {"min": 1.5, "median": 2.0, "max": 3.0}


def test_host_kind_names_what_decides_bf16_speed():
    assert benchlib.host_kind({"amx": True, "avx512_bf16": True}) == "AMX"
    assert benchlib.host_kind({"amx": False, "avx512_bf16": True}) == "AVX512-BF16, no AMX"
    assert "no native bf16" in benchlib.host_kind({"amx": False, "avx512_bf16": False})
