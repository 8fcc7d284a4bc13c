"""Stage deps are exactly each stage's import closure, and `dvc status` follows a library edit."""

from __future__ import annotations

import json
import shutil
import sys

import yaml
from helpers import ROOT, dvc, run

from lora_dvc.deps import closure, differences


def test_dvc_yaml_lists_exactly_what_each_stage_imports():
    diff = differences(ROOT)
    assert not diff, "\n".join(f"{s}: add {sorted(m)}, remove {sorted(e)}" for s, (m, e) in diff.items())


def test_a_missing_or_extra_dep_is_reported(tmp_path):
    for folder in ("stages", "lora_dvc"):
        shutil.copytree(ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    spec["stages"]["evaluate"]["deps"].remove("lora_dvc/classifier.py")
    spec["stages"]["report"]["deps"].append("lora_dvc/tfidf.py")
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(spec))
    diff = differences(tmp_path)
    assert diff["evaluate"] == ({"lora_dvc/classifier.py"}, set())
    assert diff["report"] == (set(), {"lora_dvc/tfidf.py"})
    assert set(diff) == {"evaluate", "report"}


def test_imports_inside_functions_count():
    # training imports lora_dvc.device at module level; the classifier loader imports peft-related
    # modules lazily: the closure must follow both kinds
    assert "lora_dvc/tokenization.py" in closure("stages.evaluate", ROOT)
    assert "lora_dvc/training.py" in closure("stages.train", ROOT)


def test_editing_a_library_module_marks_exactly_its_importers_changed(repo):
    dvc(["repro"], repo)
    assert json.loads(dvc(["status", "--json"], repo).stdout) == {}
    assert run([sys.executable, "scripts/check_lock.py"], repo).returncode == 0  # CI's lock check: clean
    edited = "lora_dvc/tfidf.py"
    with (repo / edited).open("a") as f:
        f.write("\n# an edit\n")
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    importers = {name for name, stage in stages.items() if edited in closure(stage["cmd"].split()[-1], repo)}
    changed = set(json.loads(dvc(["status", "--json"], repo).stdout))
    assert importers and importers != set(stages), importers
    assert changed == importers
    stale = run([sys.executable, "scripts/check_lock.py"], repo, check=False)
    assert stale.returncode == 1
    assert {line.split("'")[1] for line in stale.stderr.splitlines() if line.startswith("error:")} == importers


def test_provenance_code_hash_follows_exactly_the_stage_code(tmp_path):
    from lora_dvc.provenance import code_md5

    for folder in ("stages", "lora_dvc"):
        shutil.copytree(ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    before = code_md5("stages.train", tmp_path)
    assert before == code_md5("stages.train", ROOT)  # the same files: the same hash, wherever they lie
    (tmp_path / "lora_dvc/report.py").write_text("# not run by train\n")
    assert code_md5("stages.train", tmp_path) == before
    with (tmp_path / "lora_dvc/training.py").open("a") as f:
        f.write("\n# an edit\n")
    assert code_md5("stages.train", tmp_path) != before


def test_train_stage_lists_every_param_it_reads():
    """A knob missing from the train stage's params would not re-run training when changed with -S."""
    from lora_dvc.params import all_keys

    listed = set(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["train"]["params"])
    # where and how often the run logs and checkpoints: read by train, but they never change its outputs
    unlisted = {"train.log_every", "train.checkpoint_every"}
    read = {k for k in all_keys() if k.split(".")[0] in ("model", "lora", "train")} - unlisted
    assert read <= listed, sorted(read - listed)
