"""How the train stage starts its processes, and which one of them writes the outputs.

`train.processes` > 1: the stage re-runs itself under torchrun (torch.distributed.run), one process per
rank on this host (DDP over lora_dvc.training's Trainer). `train.cores: all`: torch_xla.launch starts one
process per TPU core. Either way only the main process (rank 0; process 0 of worker 0 on XLA) writes.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

from lora_dvc.device import xla_available, xla_has_tpu
from lora_dvc.errors import UserError
from lora_dvc.params import Params
from lora_dvc.runner import setup_logging

log = logging.getLogger("train")


def is_main_process(device: str) -> bool:
    """Rank 0 under torchrun (or the only process); on XLA, process 0 of worker 0."""
    return int(os.environ.get("RANK", "0")) == 0 if device != "xla" else _xla_is_main()


def _xla_is_main() -> bool:
    import torch_xla.runtime as xr

    return xr.global_ordinal() == 0


def launch_processes(processes: int) -> None:
    """Re-run this stage under torchrun (torch.distributed.run) with `processes` processes on this host."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    log.info("starting %d data-parallel processes with torchrun", processes)
    try:
        torchrun(["--standalone", f"--nproc-per-node={processes}", "--module", "stages.train"])
    except ChildFailedError as failed:
        codes = [f.exitcode for f in failed.failures.values()]
        sys.exit(next((c for c in codes if c == 2), codes[0] if codes else 1))


def launch_tpu_cores(train: Callable[[Params], None], params: Params) -> None:
    """`train(params)` in one process per TPU core (torch_xla.launch), for train.cores=all."""
    # decided before launch: touching the XLA device first would stop torch_xla.launch from starting
    if not (params.train.device == "xla" and xla_available() or params.train.device == "auto" and xla_has_tpu()):
        raise UserError(
            "train.cores=all runs one process per TPU core: it needs torch_xla and "
            f"train.device=xla, or auto on a TPU host (now {params.train.device}); see docs/tpu.md"
        )
    import torch_xla

    torch_xla.launch(_xla_worker, args=(train, params))


def _xla_worker(index: int, train: Callable[[Params], None], params: Params) -> None:
    # torch_xla.launch passes the process index
    setup_logging()  # a spawned process starts with logging unconfigured
    train(params)
