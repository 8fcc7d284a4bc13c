"""What one training step of each seed study costs on this machine: seconds, peak memory, model FLOPs.

    python bench/studies.py                 # every study -> bench/results/studies-<time>.json
    python bench/studies.py --batch 8       # a smaller batch where the study's own does not fit in memory

For each study (studies/*.yaml) the variant with the most trainable parameters and, where the study has
one, full fine-tuning: the real architecture with random weights (no download), wrapped as the train
stage wraps it (lora_dvc.training: build from the schema's params, `ready_for_device`, AdamW), at the
study's batch size and every row at `model.max_length` tokens: an upper bound, as real batches are padded
only to their longest row. Each measurement runs in its own process (peak RSS is that process's), one
warm-up step and 3 timed steps (min/median/max). `lora-dvc study docs` turns the newest JSON into the
studies' cost sections.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path[:0] = [str(ROOT), str(BENCH)]

from benchlib import RESULTS, Encoder, flops_per_token, host_info, stamp, write_json  # noqa: E402

from lora_dvc.studies import load_study, study_files  # noqa: E402

TIMED_STEPS = 3


def representative_variants(study) -> list[str]:
    """The LoRA variant that adapts the most (modules x rank), and full fine-tuning if the study has it."""
    width = {"qv": 2, "qkv": 3, "all": 7, "all-linear": 7}  # adapted modules per layer, BERT-style

    def adapted(name: str) -> int:
        overrides = study.overrides(name)
        targets = overrides.get("lora.targets", "all")
        return (len(targets) if isinstance(targets, list) else width[targets]) * overrides.get("lora.r", 16)

    lora = [n for n, v in study.variants.items() if v.params.get("train.method", "lora") == "lora"]
    full = [n for n, v in study.variants.items() if v.params.get("train.method") == "full"]
    return [max(lora, key=adapted), *full[:1]]


def measure(study_name: str, variant: str, batch: int | None) -> dict:
    """One study variant's training steps, in this process."""
    import torch
    import transformers as tf
    import yaml

    from lora_dvc.device import device_kind, resolve_precision
    from lora_dvc.modeling import apply_method, count_params
    from lora_dvc.params import parse_params
    from lora_dvc.training import ready_for_device

    study = load_study(ROOT / "studies" / f"{study_name}.yaml")
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    for key, value in study.overrides(variant).items():
        section, name = key.split(".", 1)
        raw[section][name] = value
    params = parse_params(raw)
    arch = {k: v for k, v in study.architecture.items() if k != "model_type"}
    config_cls = {"roberta": tf.RobertaConfig, "xlm-roberta": tf.XLMRobertaConfig}[study.architecture["model_type"]]
    torch.manual_seed(0)
    model = tf.AutoModelForSequenceClassification.from_config(config_cls(**arch, num_labels=study.labels))
    model = apply_method(model, params.train.method, params.lora)
    device = device_kind("cpu")
    precision = resolve_precision(device, params.train.precision)
    ready_for_device(model, device, precision, params.train.fast_dropout)
    trainable, total = count_params(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=params.train.lr, fused=True)
    rows, length = batch or params.train.batch_size, params.model.max_length
    ids = torch.randint(5, arch["vocab_size"], (rows, length))
    labels = torch.arange(rows) % study.labels
    model.train()
    seconds = []
    for step in range(1 + TIMED_STEPS):
        started = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step:
            seconds.append(time.perf_counter() - started)
    lora = params.train.method == "lora"
    flops = (
        flops_per_token(Encoder.from_config(model.config, params.lora.r, params.lora.targets), [length])
        * length
        * rows
    )
    return {
        "study": study_name,
        "variant": variant,
        "method": params.train.method,
        "precision": precision,
        "batch": rows,
        "study_batch": params.train.batch_size,
        "tokens_per_row": length,
        "trainable_params": trainable,
        "total_params": total,
        "step_seconds": {
            "min": round(min(seconds), 2),
            "median": round(statistics.median(seconds), 2),
            "max": round(max(seconds), 2),
        },
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        # bench/benchlib's count: frozen weights get no gradient, so only LoRA runs have one
        "model_flops_per_step": flops if lora else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, help="rows per step instead of the study's train.batch_size")
    parser.add_argument("--only", nargs="+", help="these studies only")
    parser.add_argument("--child", nargs=2, metavar=("STUDY", "VARIANT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(*args.child, args.batch)))
        return
    rows = []
    for path in study_files(ROOT):
        study = load_study(path)
        if args.only and study.name not in args.only:
            continue
        for variant in representative_variants(study):
            cmd = [
                sys.executable,
                __file__,
                "--child",
                study.name,
                variant,
                *(["--batch", str(args.batch)] if args.batch else []),
            ]
            done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
            if done.returncode != 0:
                raise SystemExit(f"{study.name} {variant} failed:\n{done.stderr[-2000:]}")
            rows.append(json.loads(done.stdout.splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    result = {"bench": "studies", "host": host_info(), "timed_steps": TIMED_STEPS, "runs": rows}
    out = write_json(RESULTS / f"studies-{stamp()}.json", result)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
