"""The one door to library internals: every private or version-specific peft / transformers /
torch_xla API this project uses, each behind a check that either fails loudly (UserError, one line)
or falls back with a logged warning naming the library, its version and the lever that went off.
Never silently. Each function's docstring names its internal, its user and its fallback: the
attention interface behind fast attention dropout (lora_dvc/dropout.py), padding masks and the
scalars 0 and 1 on XLA, TPU chip detection.

The library objects are looked up when a lever is switched on, not at import: the tokenize stage,
which imports lora_dvc.modeling, does not pay for importing peft.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import inspect
import logging

from torch import nn

from lora_dvc.errors import UserError

log = logging.getLogger("compat")

# what requirements.txt pins, and the release series each lever below was written and tested against
PINNED = {"peft": "0.21.2", "transformers": "5.23.0"}
TESTED = {"peft": "0.21", "transformers": "5.23"}

FAST_ATTENTION_DROPOUT = "train.fast_dropout's attention dropout"
XLA_MASKS = "padding masks kept on the XLA device (no host sync a step)"


def version(dist: str) -> str:
    """The installed version of distribution `dist`, or "(not installed)"."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"


def tested(dist: str) -> bool:
    """Whether the installed `dist` is of the release series the levers were tested against."""
    return version(dist).split(".")[:2] == TESTED[dist].split(".")


def problem(dist: str, found: str, lever: str, instead: str) -> str:
    """The one-line message of a check that tripped: library, version, what changed, the lever, the way back."""
    return (
        f"{dist} {version(dist)}: {found}; {lever} is off, {instead}. It needs {dist} {TESTED[dist]}.x: "
        f"pin {dist}=={PINNED[dist]} (requirements.txt)"
    )


def _fall_back(dist: str, found: str, lever: str, instead: str) -> None:
    log.warning(problem(dist, found, lever, instead))


# -- transformers: attention functions -------------------------------------------------------------------------

# the parameters of transformers 5.23's sdpa attention function that an attention registered in its place handles
SDPA_PARAMETERS = (
    "module",
    "query",
    "key",
    "value",
    "attention_mask",
    "dropout",
    "scaling",
    "is_causal",
    "position_bias",
    "cache",
    "kwargs",
)


def attn_implementation(model: nn.Module) -> str | None:
    """The attention implementation `model` runs ("sdpa", "eager", ...: transformers' private
    `config._attn_implementation`, which has no public reader); None when the model has no config."""
    config = getattr(model, "config", None)
    if config is None:
        return None
    try:
        return config._attn_implementation
    except AttributeError:
        _fall_back(
            "transformers",
            "a model config without _attn_implementation",
            FAST_ATTENTION_DROPOUT,
            "torch's dropout inside sdpa runs",
        )
        return None


def sdpa_attention():
    """transformers' own sdpa attention function, as its AttentionInterface lists it."""
    from transformers import AttentionInterface

    return AttentionInterface()["sdpa"]


def register_sdpa_variant(name: str, attention) -> bool:
    """Register `attention` under `name` as an attention function (transformers' public AttentionInterface),
    masks made as for sdpa. `attention` takes sdpa's parameters (SDPA_PARAMETERS), so this refuses, with a
    warning, a transformers whose sdpa function takes others. Returns whether it is registered."""
    instead = "torch's dropout inside sdpa runs"
    try:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface

        sdpa, sdpa_mask = AttentionInterface()["sdpa"], AttentionMaskInterface()["sdpa"]
        register, register_mask = AttentionInterface.register, AttentionMaskInterface.register
    except (ImportError, KeyError, AttributeError) as err:
        _fall_back("transformers", f"no sdpa attention or mask interface ({err})", FAST_ATTENTION_DROPOUT, instead)
        return False
    parameters = tuple(inspect.signature(sdpa).parameters)
    if parameters != SDPA_PARAMETERS:
        _fall_back(
            "transformers",
            f"sdpa attention takes ({', '.join(parameters)}), not ({', '.join(SDPA_PARAMETERS)})",
            FAST_ATTENTION_DROPOUT,
            instead,
        )
        return False
    register(name, attention)
    register_mask(name, sdpa_mask)
    return True


def sdpa_is_causal(module: nn.Module, is_causal: bool | None, query_length: int, attention_mask) -> bool:
    """Whether transformers' sdpa attention applies a causal mask itself (its `is_causal` argument, else the
    attention module's `is_causal`, else True), which it does only without a mask and for more than one
    query: a decoder's mask is left out when nothing is padded, causality then rides on this flag."""
    if is_causal is None:
        is_causal = getattr(module, "is_causal", True)
    return query_length > 1 and attention_mask is None and bool(is_causal)


def refuse_attention_arguments(**arguments) -> None:
    """Fail loudly on attention arguments that the fast-dropout attention cannot honour in training: a paged
    cache (generation), logit soft-capping, attention sinks."""
    for name in ("cache", "softcap", "s_aux", "sinks"):
        if arguments.get(name) is not None:
            raise UserError(
                f"transformers {version('transformers')}: this model passes {name} to its attention, which "
                f"{FAST_ATTENTION_DROPOUT} does not support; set train.fast_dropout: false"
            )


# -- transformers: attention masks on XLA -------------------------------------------------------------------------

MASK_SKIPS = ("_ignore_bidirectional_mask_sdpa", "_ignore_causal_mask_sdpa")


def keep_padding_masks_on_device() -> None:
    """Stop transformers from reading the attention mask on the host in every forward, on XLA.

    transformers drops the mask of a batch without padding, and to find out it asks
    `padding_mask.all()` on the host (masking_utils `_ignore_*_mask_sdpa`). On an XLA device that is
    a device-to-host sync in the middle of every step, plus a second graph per bucket for batches
    that happen to have no padding. For masks on an XLA device the mask is now always kept, which
    is what transformers already does while tracing or exporting; other devices are unchanged.
    A transformers without those functions, or whose functions take something else first, is left as
    it is, with a warning.
    """
    instead = "transformers reads each batch's mask on the host (a device sync a step)"
    try:
        from transformers import masking_utils
    except ImportError:
        _fall_back("transformers", "no masking_utils", XLA_MASKS, instead)
        return
    for name in MASK_SKIPS:
        original = getattr(masking_utils, name, None)
        if original is None:
            _fall_back("transformers", f"masking_utils has no {name}", XLA_MASKS, instead)
            continue
        if getattr(original, "keeps_xla_masks", False):
            continue
        first = next(iter(inspect.signature(original).parameters), None)
        if first != "padding_mask":
            _fall_back(
                "transformers", f"masking_utils.{name} takes {first} first, not padding_mask", XLA_MASKS, instead
            )
            continue

        def keep_on_xla(padding_mask, *args, _original=original, **kwargs):
            if padding_mask is not None and padding_mask.device.type == "xla":
                return False
            return _original(padding_mask, *args, **kwargs)

        keep_on_xla.keeps_xla_masks = True
        setattr(masking_utils, name, keep_on_xla)


# -- torch_xla: scalars as graph inputs -------------------------------------------------------------------------


def xla_scalars_as_inputs() -> bool:
    """Make torch_xla pass the scalars 0 and 1 into its graphs as inputs, like every other scalar.

    By default torch_xla bakes a 0-dim 0 or 1 into the graph as a constant, so the same step with a learning
    rate of 0 (the first step of a warmup from 0: its weight decay factor is 1) or with a loss sum just set to
    0 (Trainer's, at the start) is another graph to compile. `XLA_NO_SPECIAL_SCALARS=1` does the same but is
    read once, when torch_xla is imported, which transformers does on import; this calls the setter behind
    it (torch_xla's private `_XLAC._set_xla_handle_special_scalars`). Returns whether it is on; a torch_xla
    without that function keeps its constants, with a warning (training then compiles 2 more graphs).
    """
    try:
        import torch_xla

        setter = torch_xla._XLAC._set_xla_handle_special_scalars
    except (ImportError, AttributeError) as err:
        log.warning(
            "torch_xla %s: %s; the scalars 0 and 1 stay constants of XLA's graphs, so training compiles 2 more "
            "graphs (the first step's and its loss sum's). requirements-xla.txt pins the torch_xla it was tested with",
            version("torch_xla"),
            str(err).splitlines()[0] if str(err) else "no _XLAC._set_xla_handle_special_scalars",
        )
        return False
    setter(False)
    return True


# -- torch_xla: counting TPU chips ------------------------------------------------------------------------------


def tpu_chip_count() -> int | None:
    """TPU chips on this host as torch_xla counts them (its private `_internal.tpu.num_available_chips`: Google's
    vendor id and the TPU device ids on the PCI bus, read from /sys without starting the XLA runtime), or None:
    silently without torch_xla (no TPU software), with a warning when torch_xla no longer has that function."""
    if importlib.util.find_spec("torch_xla") is None:
        return None
    try:
        from torch_xla._internal import tpu

        return int(tpu.num_available_chips())
    except (ImportError, AttributeError) as err:
        log.warning(
            "torch_xla %s: %s; TPU detection for train.device=auto counts /dev/accel* device files instead. "
            "requirements-xla.txt pins the torch_xla it was tested with",
            version("torch_xla"),
            str(err).splitlines()[0] if str(err) else "no _internal.tpu.num_available_chips",
        )
        return None
