"""lora_dvc: the library behind the DVC stages in stages/ and the `lora-dvc` command."""
