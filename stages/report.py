"""report: metrics and plots of one run -> reports/report.md with PNG figures in plots/.

The report opens with a warning when evaluate found the model did not learn (`test.learned`
false), then states the metrics (with the majority-class floor), three figures (training curves,
the test confusion matrix, per-class F1), the run's parameters, what prepare dropped and why, and
token-length statistics. The figures and markdown are built by lora_dvc.report.
"""

from __future__ import annotations

import logging

from lora_dvc.artifacts import REPORT, REPORT_PLOTS
from lora_dvc.atomic import write_text
from lora_dvc.params import load_params
from lora_dvc.report import build_report
from lora_dvc.runner import run_stage

log = logging.getLogger("report")


def main() -> None:
    params = load_params()
    write_text(REPORT, build_report(params))
    log.info("wrote %s and figures in %s/", REPORT, REPORT_PLOTS)


if __name__ == "__main__":
    run_stage(main)
