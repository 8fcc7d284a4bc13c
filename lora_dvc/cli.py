"""`lora-dvc`: the commands people run by hand, beside the DVC stages (each is also `python -m <module>`).

lora-dvc predict "some text"        label texts with the trained classifier (lora_dvc.predict)
lora-dvc compare                    every experiment side by side (lora_dvc.compare)
lora-dvc export --out DIR           the trained model in Hugging Face's layout (lora_dvc.exporting)
lora-dvc sky launch -S 'lora.r=4,16' one SkyPilot managed job per grid point (lora_dvc.grid)
lora-dvc study show NAME            a seed study as named experiments (lora_dvc.studies, studies/)
lora-dvc checkpoints [--clear FP]   the cached runs' checkpoints, listed or cleared (lora_dvc.checkpoint_cache)
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "predict": ("lora_dvc.predict", "label texts with the trained classifier"),
    "compare": ("lora_dvc.compare", "compare every experiment: reports/comparison.md and a figure"),
    "export": ("lora_dvc.exporting", "the trained model in Hugging Face's layout, with a model card"),
    "sky": ("lora_dvc.grid", "sky launch -S ...: one SkyPilot managed job per grid point (docs/scaling.md)"),
    "study": ("lora_dvc.studies", "the seed projects' studies as named experiments: list | show | run (studies/)"),
    "checkpoints": ("lora_dvc.checkpoint_cache", "the cached runs' resumable checkpoints: list, or --clear FP|all"),
}


def usage() -> str:
    lines = ["usage: lora-dvc COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<12} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "lora-dvc COMMAND --help shows a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"error: unknown command '{name}'; one of: {', '.join(COMMANDS)}", file=sys.stderr)
        sys.exit(2)
    from lora_dvc.runner import run_stage

    module = importlib.import_module(COMMANDS[name][0])
    sys.argv = [f"lora-dvc {name}", *rest]  # argparse's usage line names the command as typed
    run_stage(lambda: module.main(rest))


if __name__ == "__main__":
    main()
