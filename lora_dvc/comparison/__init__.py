"""The experiment comparison, in three steps.

- `runs`: experiments read through `dvc.api.exp_show()` / `params_show()` -> `Run` (finished, with
  metrics) and `Other` (queued, running, failed), merged over lora_dvc.params.RESULT_NEUTRAL_KEYS.
- `aggregate`: runs -> rows (seeds merged as mean ± sample std), best row, baseline, % change.
- `render`: rows -> markdown tables and the matplotlib figure.

The command is `lora-dvc compare` (lora_dvc/compare.py).
"""
