"""`lora.targets` aliases on every common encoder family, resolved by inspecting the model.

A tiny random config of each family (BERT, RoBERTa, XLM-R, DeBERTa-v2/v3, DistilBERT, ELECTRA,
ModernBERT): `qv`, `qkv` and `all` must pick that family's own query/key/value projections and
linear layers, never the task head, and one real LoRA training step must move every adapter and the
head while leaving the frozen weights untouched.
"""

from __future__ import annotations

import logging

import pytest
import torch
import transformers as tf

from lora_dvc.errors import UserError
from lora_dvc.modeling import apply_method, head_module_names, resolve_targets
from lora_dvc.params import LoraParams

LAYERS = 2
SIZES = dict(vocab_size=100, num_labels=3)
BERT_LIKE = dict(hidden_size=32, num_hidden_layers=LAYERS, num_attention_heads=2, intermediate_size=64)
# family -> (config, its q/k/v projection names, the task head's modules, encoder linears per layer, others)
FAMILIES = {
    "bert": (tf.BertConfig(**BERT_LIKE), ("query", "key", "value"), ["classifier"], 6, 1),  # + pooler
    "roberta": (tf.RobertaConfig(**BERT_LIKE), ("query", "key", "value"), ["classifier"], 6, 0),
    "xlm-roberta": (tf.XLMRobertaConfig(**BERT_LIKE), ("query", "key", "value"), ["classifier"], 6, 0),
    "deberta-v2": (  # v3 is this architecture; its relative attention adds pos_key_proj, pos_query_proj per layer
        tf.DebertaV2Config(
            **BERT_LIKE, relative_attention=True, pos_att_type=["p2c", "c2p"], max_relative_positions=16
        ),
        ("query_proj", "key_proj", "value_proj"),
        ["pooler", "classifier"],
        8,
        0,
    ),
    "distilbert": (
        tf.DistilBertConfig(dim=32, n_layers=LAYERS, n_heads=2, hidden_dim=64),
        ("q_lin", "k_lin", "v_lin"),
        ["pre_classifier", "classifier"],
        6,
        0,
    ),
    "electra": (  # + embeddings_project (embedding size 16 -> hidden 32)
        tf.ElectraConfig(**BERT_LIKE, embedding_size=16),
        ("query", "key", "value"),
        ["classifier"],
        6,
        1,
    ),
    "modernbert": (  # query, key and value in one fused Wqkv; attention output Wo, feed-forward Wi, Wo
        tf.ModernBertConfig(
            **BERT_LIKE, pad_token_id=0, bos_token_id=1, eos_token_id=2, cls_token_id=1, sep_token_id=2
        ),
        ("Wqkv", "Wqkv", "Wqkv"),
        ["head", "classifier"],
        4,
        0,
    ),
}


def tiny(family: str) -> torch.nn.Module:
    config = FAMILIES[family][0]
    for key, value in SIZES.items():
        setattr(config, key, value)
    torch.manual_seed(0)
    return tf.AutoModelForSequenceClassification.from_config(config)


def leaves(names) -> set[str]:
    return {n.rsplit(".", 1)[-1] for n in names}


@pytest.mark.parametrize("family", FAMILIES)
def test_aliases_pick_the_familys_own_modules_and_never_the_head(family):
    _, (q, k, v), head, per_layer, others = FAMILIES[family]
    model = tiny(family)
    assert head_module_names(model) == head
    fused = q == k == v
    qv, qkv, every = (resolve_targets(model, alias) for alias in ("qv", "qkv", "all"))
    assert leaves(qv) == {q, v} and len(qv) == LAYERS * (1 if fused else 2)
    assert leaves(qkv) == {q, k, v} and len(qkv) == LAYERS * (1 if fused else 3)
    assert set(qkv) <= set(every) and len(every) == LAYERS * per_layer + others
    linear = {n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    assert set(every) == {n for n in linear if n.split(".")[0] not in head}


@pytest.mark.parametrize("family", FAMILIES)
def test_one_lora_training_step_moves_adapters_and_head_only(family):
    model = apply_method(tiny(family), "lora", LoraParams(r=4, alpha=8, dropout=0.0, targets="qkv"))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    head = FAMILIES[family][2]
    # every head module is trained in full (peft's modules_to_save copies), none is LoRA-adapted
    assert all(any(f".{h}.modules_to_save." in n for n in trainable) for h in head), sorted(trainable)
    assert not any("lora_" in n and any(f".{h}." in n for h in head) for n in trainable)

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    ids = torch.randint(3, 100, (4, 12))
    out = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=torch.tensor([0, 1, 2, 0]))
    assert torch.isfinite(out.loss)
    out.loss.backward()
    optimizer.step()
    moved = {n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert moved == trainable  # LoRA A and B, the head; nothing frozen
    assert any("lora_B" in n for n in moved) and any("lora_A" in n for n in moved)


def test_fused_qkv_says_qv_adapts_all_three(caplog):
    with caplog.at_level(logging.WARNING, logger="train"):
        resolve_targets(tiny("modernbert"), "qv")
    assert any("fused" in r.getMessage() and "Wqkv" in r.getMessage() for r in caplog.records)


def test_an_attention_block_with_unrecognisable_projections_is_refused():
    class OddAttention(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.first, self.second, self.third = (torch.nn.Linear(8, 8) for _ in range(3))

    model = tiny("bert")
    model.bert.encoder.layer[0].attention.self = OddAttention()
    with pytest.raises(UserError, match=r"cannot tell query, key and value apart in OddAttention"):
        resolve_targets(model, "qv")
    assert resolve_targets(model, ["first"]) == ["bert.encoder.layer.0.attention.self.first"]  # a list still works


def test_embeddings_can_be_listed():
    names = resolve_targets(tiny("roberta"), ["query", "value", "word_embeddings"])
    assert "roberta.embeddings.word_embeddings" in names and len(names) == 2 * LAYERS + 1
