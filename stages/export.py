"""export: the trained model -> models/export, the registered `text-classifier` artifact: the
adapter (or full model, or TF-IDF files), config.json with the label names, the tokenizer and a
model card, in Hugging Face's layout, checked to reload with plain transformers + peft.

    python -m stages.export               # the DVC stage: models/classifier -> models/export
    lora-dvc export --merge --out DIR     # the same command, from the installed package

The command lives in lora_dvc/exporting.py, so that the installed `lora-dvc` has it too.
"""

from lora_dvc.exporting import main
from lora_dvc.runner import run_stage

if __name__ == "__main__":
    run_stage(main)
