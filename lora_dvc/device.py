"""Device and precision, decided once per stage by `Runtime.create` (train.device: auto = TPU, else CUDA,
else CPU); train, evaluate, predict and export receive the Runtime. train.precision per device kind:

    kind   auto                                   bf16                         fp16             fp32
    cpu    bf16 with AVX512-BF16/AMX, else fp32   bf16 (warns: emulated, slow)  refused          fp32
    cuda   bf16 where the GPU has it, else fp16   refused on a GPU without it  fp16 (scaler)    fp32
    xla    bf16                                   bf16                         refused          fp32
The Runtime also owns autocast, TF32, static shapes on XLA and the CPU speed levers.
"""

from __future__ import annotations

import glob
import importlib.util
import logging
import os
from contextlib import ExitStack
from dataclasses import dataclass

import torch

from lora_dvc.compat import keep_padding_masks_on_device, tpu_chip_count
from lora_dvc.errors import UserError

log = logging.getLogger("device")


def xla_available() -> bool:
    return importlib.util.find_spec("torch_xla") is not None


def tpu_chips_attached() -> bool:
    """TPU chips on this host's PCI bus, as torch_xla counts them (Google's vendor id and the TPU
    device ids: a GCE VM's gVNIC shares the vendor id). Safe before torch_xla.launch: it reads
    /sys and does not start the XLA runtime."""
    chips = tpu_chip_count()  # torch_xla's own count (lora_dvc.compat), else the device files
    return chips > 0 if chips is not None else bool(glob.glob("/dev/accel[0-9]*"))


def xla_has_tpu() -> bool:
    """True when torch_xla is installed and PJRT points at a TPU (what `auto` picks first):
    PJRT_DEVICE=TPU, or PJRT_DEVICE unset on a host with TPU chips."""
    if not xla_available():
        return False
    pjrt = os.environ.get("PJRT_DEVICE")
    return pjrt == "TPU" if pjrt else tpu_chips_attached()


def device_kind(choice: str) -> str:
    """The device kind for `train.device`: cpu | cuda | xla (auto: a TPU, else CUDA, else CPU)."""
    if choice == "xla" or (choice == "auto" and xla_has_tpu()):
        if not xla_available():
            raise UserError("train.device=xla but torch_xla is not installed; see docs/tpu.md")
        return "xla"
    if choice == "cuda" and not torch.cuda.is_available():
        raise UserError("train.device=cuda but torch sees no CUDA GPU; use train.device=auto or cpu")
    if choice == "cpu":
        return "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"


def torch_device(kind: str) -> torch.device:
    """The torch.device of a device kind (torch_xla's current device for xla)."""
    if kind == "xla":
        import torch_xla

        return torch_xla.device()
    return torch.device(kind)


def cpu_has_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """AVX512-BF16 or AMX-BF16 in the CPU flags: bf16 matmuls run natively (without them, emulated and slow)."""
    try:
        flags = set(open(cpuinfo, encoding="utf-8").read().split())
    except OSError:  # not Linux: stay on the safe side
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16"})


AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}  # fp32: no autocast


def resolve_precision(kind: str, choice: str) -> str:
    """fp32 | bf16 | fp16 on device kind `kind` for `train.precision` `choice` (the table above)."""
    if choice == "fp32":
        return "fp32"
    if choice == "fp16" and kind != "cuda":
        raise UserError(f"train.precision=fp16 needs a CUDA GPU (this run is on {kind}); use auto, bf16 or fp32")
    if kind == "xla":
        return "bf16"
    if kind == "cuda":
        if choice == "fp16":
            return "fp16"
        if torch.cuda.is_bf16_supported():
            return "bf16"
        if choice == "bf16":
            raise UserError("train.precision=bf16 but this GPU has no bf16; use auto (fp16) or fp32")
        return "fp16"
    native = cpu_has_native_bf16()
    if choice == "bf16" and not native:
        log.warning(
            "train.precision=bf16 on a CPU without native bf16 (no AVX512-BF16 or AMX): bf16 is emulated "
            "and much slower than fp32; use train.precision=auto or fp32"
        )
    return "bf16" if choice == "bf16" or native else "fp32"


def resolve_device(choice: str | torch.device) -> torch.device:
    """A torch.device from `train.device` (auto | cpu | cuda | xla) or anything torch takes (cuda:1)."""
    if isinstance(choice, torch.device):
        return choice
    if choice in ("auto", "xla", "cpu", "cuda"):
        return torch_device(device_kind(choice))
    try:
        device = torch.device(choice)
    except RuntimeError as err:
        raise UserError(f"--device {choice}: not a torch device ({err}); try cpu, cuda, cuda:1 or xla") from None
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise UserError(
            f"--device {choice}: torch sees {torch.cuda.device_count()} CUDA GPU(s); use cpu or an index below that"
        )
    return device


@dataclass(frozen=True)
class Runtime:
    """Where and how a stage computes: built once per stage by `create`, passed to whatever computes."""

    device: torch.device
    precision: str = "fp32"  # fp32 | bf16 | fp16 (resolve_precision's answer)
    # XLA compiles one graph per shape: fixed batch sizes, batches padded to their length bucket
    static_shapes: bool = False

    @classmethod
    def create(cls, device_choice: str | torch.device = "auto", precision_choice: str = "auto") -> Runtime:
        """The one place a stage's device and precision are decided, and the device made ready."""
        device = resolve_device(device_choice)
        precision = resolve_precision(device.type, precision_choice)
        if device.type == "xla":
            keep_padding_masks_on_device()
        elif device.type == "cuda":  # TF32 matmuls in fp32, for training and inference alike
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        log.debug("device %s, precision %s", device, precision)
        return cls(device, precision, static_shapes=device.type == "xla")

    @property
    def kind(self) -> str:
        return self.device.type

    @property
    def dtype(self) -> torch.dtype | None:
        """The autocast dtype (None in fp32)."""
        return AUTOCAST_DTYPES.get(self.precision)

    def autocast(self):
        """Mixed precision for a forward pass (a no-op in fp32).

        On XLA it also swaps an enclosing `torch.inference_mode` for `torch.no_grad`: torch_xla does
        not support inference tensors (views of XLA tensors fail with "Cannot set version_counter
        for inference tensor"), so inference_mode would break every XLA forward.
        """
        return _Forward(self.kind, self.dtype)

    def trainer_arguments(self, processes: int) -> dict:
        """The TrainingArguments fields that follow from the device and precision."""
        xla, kind = self.static_shapes, self.kind
        return {
            "bf16": self.precision == "bf16",
            "fp16": self.precision == "fp16",
            "use_cpu": kind == "cpu",
            "dataloader_drop_last": xla,  # static shapes: every training batch full
            "dataloader_pin_memory": kind == "cuda",
            "ddp_backend": ("nccl" if kind == "cuda" else "gloo") if processes > 1 else None,
            # on XLA Trainer's per-log loss read-out (a cross-process mesh_reduce, a reset of its loss sum) compiles
            # graphs of its own and changes the next step's graph: LiveCallback logs the same window there instead
            "logging_strategy": "no" if xla else "steps",
        }

    def ready_for_training(self, model: torch.nn.Module, fast_dropout: bool) -> None:
        """The speed levers a model gets before training here (bench/README.md measures each)."""
        from lora_dvc.dropout import use_fast_dropout
        from lora_dvc.modeling import ready_for_bf16_autocast

        if self.kind == "cpu" and fast_dropout:  # GPUs and TPUs keep their own dropout
            log.info("fast dropout masks in %d dropout modules and the attention", use_fast_dropout(model))
        if self.precision == "bf16" and self.kind in ("cpu", "cuda"):
            log.info("bf16: %d frozen weight tensors stored in bf16", ready_for_bf16_autocast(model))


class _Forward:
    """The context `Runtime.autocast()` returns; decides at entry, so it can see inference mode."""

    def __init__(self, kind: str, dtype: torch.dtype | None) -> None:
        self.kind, self.dtype = kind, dtype
        self.stack: ExitStack | None = None

    def __enter__(self) -> None:
        self.stack = ExitStack()
        if self.kind == "xla" and torch.is_inference_mode_enabled():
            self.stack.enter_context(torch.inference_mode(False))
            self.stack.enter_context(torch.no_grad())
        if self.dtype is not None:
            self.stack.enter_context(torch.autocast(device_type=self.kind, dtype=self.dtype))

    def __exit__(self, *exc) -> bool:
        return self.stack.__exit__(*exc)


def xla_sync() -> None:
    """Cut and run the pending XLA graph now (torch_xla.sync; what the device data loader does at each batch)."""
    import torch_xla

    torch_xla.sync()


def xla_compile_stats() -> dict | None:
    """(compilations, compile seconds) so far, from torch_xla's metrics; None off XLA."""
    if not xla_available():
        return None
    import torch_xla.debug.metrics as met

    data = met.metric_data("CompileTime")
    if not data:
        return {"compilations": 0, "compile_seconds": 0.0}
    count, total_ns = data[0], data[1]
    return {"compilations": int(count), "compile_seconds": round(total_ns / 1e9, 3)}
