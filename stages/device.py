"""Device choice, shared by train, evaluate and predict.

`train.device`: auto (TPU through torch_xla if it finds one, else CUDA, else CPU) | cpu | cuda | xla.
"""
from __future__ import annotations

import importlib.util
import logging

import torch

from stages.errors import UserError

log = logging.getLogger("device")


def xla_available() -> bool:
    return importlib.util.find_spec("torch_xla") is not None


def pick_device(choice: str) -> torch.device:
    if choice == "cpu":
        return torch.device("cpu")
    if choice == "cuda":
        if not torch.cuda.is_available():
            raise UserError("train.device=cuda but torch sees no CUDA GPU; use train.device=auto or cpu")
        return torch.device("cuda")
    if choice == "xla" or (choice == "auto" and xla_available()):
        if not xla_available():
            raise UserError("train.device=xla but torch_xla is not installed; see the README's TPU section")
        import torch_xla

        return torch_xla.device()
    if torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")
