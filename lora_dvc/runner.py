"""The command runner shared by every stage and command: logging set-up, one clear line and a
non-zero exit for anything the user can fix.

Stages raise `UserError` (lora_dvc.errors) with a message that says what is wrong, where, and how
to fix it; `run_stage` turns it into `error: ...` on stderr and exit code 2 instead of a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from lora_dvc.errors import EXIT_USER_ERROR, UserError


def setup_logging() -> None:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        force=True,  # an imported library may have configured the root logger already
    )
    # transformers and peft are chatty about expected things (a fresh classifier head)
    for name in ("transformers", "peft", "huggingface_hub", "dvc", "dvclive"):
        logging.getLogger(name).setLevel(logging.ERROR)


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage's main(), mapping user errors to one line and exit code 2."""
    setup_logging()
    try:
        main()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


class ArgumentParser(argparse.ArgumentParser):
    """argparse for the commands: a bad option is a user error (one line, exit 2), like any other."""

    def error(self, message: str) -> None:
        raise UserError(f"{message} (see {self.prog} --help)")
