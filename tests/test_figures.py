"""README's figures of the default study are the committed record's, and the record is the committed results'.

`bench/default_study.py` times the default study from scratch, stage by stage, and writes
bench/results/default-study-<time>.json with the scores the stages wrote. A quoted figure that differs from
the newest record, or a record whose scores differ from the committed metrics files, fails here.
"""

from __future__ import annotations

import json
import re

from helpers import ROOT

RECORD = sorted((ROOT / "bench/results").glob("default-study-*.json"))[-1]
README = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())  # wrapping aside


def record() -> dict:
    return json.loads(RECORD.read_text())


def minutes(seconds: float) -> str:
    whole = round(seconds)
    return f"{whole // 60} min {whole % 60} s"


def test_the_record_holds_the_committed_scores():
    rec = record()
    test = json.loads((ROOT / "metrics/test.json").read_text())["test"]
    train = json.loads((ROOT / "metrics/train.json").read_text())
    assert rec["test"] == test and rec["val"] == train["val"]
    assert rec["total_seconds"] == round(sum(rec["stage_seconds"].values()), 1)
    assert list(rec["stage_seconds"]) == ["prepare", "tokenize", "train", "evaluate", "report", "export"]


def test_readme_first_screen_quotes_the_record():
    rec = record()
    first = README.split("```bash")[0]  # the first screen
    quoted = re.search(
        r"measured on this host \(([^)]*)\): (\d+ min \d+ s) from scratch, test accuracy (0\.\d{4}), "
        r"macro-F1 (0\.\d{4})",
        first,
    )
    assert quoted, "README's first screen must quote the default study's record"
    host, total, accuracy, macro_f1 = quoted.groups()
    assert total == minutes(rec["total_seconds"])
    assert accuracy == f"{rec['test']['accuracy']:.4f}" and macro_f1 == f"{rec['test']['macro_f1']:.4f}"
    native = rec["host"]["avx512_bf16"] or rec["host"]["amx"]
    assert ("native bf16" in host) == native and ("AVX2" in host) == (not native)


def test_readme_performance_section_quotes_the_record():
    rec = record()
    stages = ", ".join(f"{stage} {seconds:g} s" for stage, seconds in rec["stage_seconds"].items())
    sentence = (
        f"**{minutes(rec['total_seconds'])}** from scratch ({stages}; train stage "
        f"{rec['fit']['samples_per_second']:g} samples/s), test accuracy {rec['test']['accuracy']:.4f}"
    )
    assert sentence in README, f"README's Performance section should say: {sentence}"
    assert RECORD.name in README


def test_bench_readme_bf16_storage_figures_are_the_records():
    text = " ".join((ROOT / "bench/README.md").read_text(encoding="utf-8").split())  # wrapping aside
    storage = json.loads((ROOT / "bench/results/bf16-storage-20261204T180320.json").read_text())["summary"]
    for rule in ("all-frozen", "linear"):
        assert f"**{storage[rule]['test_accuracy_mean']:.4f} ± {storage[rule]['test_accuracy_std']:.4f}**" in text
    levers = json.loads((ROOT / "bench/results/step-levers-20261204T181239.json").read_text())["results"]
    spread = {r["lever"]: " / ".join(f"{x:g}" for x in r["s_per_step_min_median_max"]) for r in levers}
    assert f"{spread['default']} s against {spread['default_fp32_norms']} s" in text
