"""The experiment comparison, in three steps.

- `runs`: experiments read through `dvc.api.exp_show()` / `params_show()` -> `Run` (finished, with
  metrics) and `Other` (queued, running, failed); `RESULT_NEUTRAL_KEYS`, the knobs that do not
  change a result.
- `aggregate`: runs -> rows (seeds merged as mean ± sample std), best row, baseline, % change.
- `render`: rows -> markdown tables and the matplotlib figure.

The command is `lora-dvc compare` (lora_dvc/compare.py).
"""
