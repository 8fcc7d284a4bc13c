"""The stock peer: the Hugging Face `Trainer` + peft recipe an informed user of the seeds would run.

Reads the pipeline's prepared splits and params.yaml from --repo, so it trains on the train stage's rows, base
model, batch size, lr, warmup, weight decay, clipping, seed and LoRA config: `DataCollatorWithPadding` (each
batch padded to its longest row), `train_sampling_strategy="group_by_length"`, one val pass at the end, and with
--test the merged adapter predicting test, timed apart (`test_seconds`) for bench/run.py to subtract.

    python bench/peer_trainer.py --repo /tmp/copy --max-steps 47 --out peer.json [--test] [--bf16]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this tree's lora_dvc
from lora_dvc.artifacts import read_labels, read_prepared, read_tokenized_meta  # noqa: E402
from lora_dvc.modeling import resolve_model_path, resolve_targets  # noqa: E402


class Rows(torch.utils.data.Dataset):
    """Tokenized rows as lists of ids (the stock recipe's collator pads them; the padded recipe's are 128 long)."""

    def __init__(self, enc: dict, labels: np.ndarray) -> None:
        self.enc = enc
        self.labels = labels.tolist()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {**{key: values[i] for key, values in self.enc.items()}, "labels": self.labels[i]}


def samples_seen(rows: int, batch: int, steps: int) -> int:
    """Rows the Trainer's dataloader feeds in `steps` steps (last batch of each epoch short)."""
    per_epoch = math.ceil(rows / batch)
    full_epochs, rest = divmod(steps, per_epoch)
    return full_epochs * rows + min(rest * batch, rows)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repo", type=Path, default=Path("."), help="repository with params.yaml and data/prepared")
    ap.add_argument("--max-steps", type=int, default=None, help="optimizer steps (default: train.epochs epochs)")
    ap.add_argument("--test", action="store_true", help="also predict the test split (accuracy, samples/s)")
    ap.add_argument(
        "--bf16", action="store_true", help="bf16 autocast (Trainer's bf16=True), for ours with train.precision=bf16"
    )
    ap.add_argument("--out", type=Path, required=True, help="JSON results")
    args = ap.parse_args(argv)  # argv: bench/gpu.py calls main() in-process

    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    params = yaml.safe_load((args.repo / "params.yaml").read_text())
    mp, lp, tp, ep = params["model"], params["lora"], params["train"], params["evaluate"]
    labels = read_labels(args.repo)
    frames = {s: read_prepared(s, args.repo) for s in ("train", "val", "test")}
    path = resolve_model_path(mp["name"])
    tokenizer = AutoTokenizer.from_pretrained(path, use_fast=True)
    # truncated where ours is: params' model.max_length, or the tokenize stage's choice for auto
    length = read_tokenized_meta(args.repo)["max_length"] if mp["max_length"] == "auto" else mp["max_length"]

    def encode(frame: pd.DataFrame) -> Rows:
        enc = tokenizer(frame["text"].tolist(), truncation=True, max_length=length)
        return Rows(enc, frame["label"].to_numpy(np.int64))

    t0 = time.perf_counter()
    data = {s: encode(f) for s, f in frames.items() if s != "test" or args.test}
    tokenize_seconds = time.perf_counter() - t0

    set_seed(tp["seed"])
    model = AutoModelForSequenceClassification.from_pretrained(
        path,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
        use_safetensors=True,
    )
    targets = resolve_targets(model, lp["targets"])
    model = get_peft_model(
        model,
        LoraConfig(
            task_type=TaskType.SEQ_CLS,
            r=lp["r"],
            lora_alpha=lp["alpha"],
            lora_dropout=lp["dropout"],
            target_modules=targets,
            bias=lp["bias"],
        ),
    )
    steps_per_epoch = math.ceil(len(data["train"]) / tp["batch_size"])
    max_steps = args.max_steps or steps_per_epoch * tp["epochs"]
    targs = TrainingArguments(
        output_dir=str(args.out.parent / "peer_trainer_out"),
        per_device_train_batch_size=tp["batch_size"],
        per_device_eval_batch_size=ep["batch_size"],
        learning_rate=tp["lr"],
        weight_decay=tp["weight_decay"],
        warmup_steps=tp["warmup_ratio"],  # a float in [0, 1) is a ratio of the total steps
        lr_scheduler_type="linear",
        max_grad_norm=tp["max_grad_norm"],
        optim="adamw_torch",
        max_steps=max_steps,
        eval_strategy="steps",
        eval_steps=max_steps,  # one pass over val at the end, as the train stage does
        save_strategy="no",
        logging_steps=tp.get("log_every", 20),
        report_to="none",
        seed=tp["seed"],
        data_seed=tp["seed"],
        use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0,
        disable_tqdm=True,
        bf16=args.bf16,
        # the informed user's lever: batches of similar length, each padded to its own longest row
        train_sampling_strategy="group_by_length",
    )

    def accuracy(pred) -> dict:
        return {"accuracy": float((pred.predictions.argmax(-1) == pred.label_ids).mean())}

    collator = DataCollatorWithPadding(tokenizer)
    trainer = Trainer(
        model=model,
        args=targs,
        train_dataset=data["train"],
        eval_dataset=data["val"],
        data_collator=collator,
        compute_metrics=accuracy,
    )
    out = trainer.train()
    history = [h for h in trainer.state.log_history if "eval_accuracy" in h]
    samples = samples_seen(len(data["train"]), tp["batch_size"], max_steps)
    result = {
        "train_rows": len(data["train"]),
        "steps": out.global_step,
        "samples": samples,
        "train_runtime": out.metrics["train_runtime"],
        "train_samples_per_second": round(samples / out.metrics["train_runtime"], 3),
        "trainer_train_samples_per_second": out.metrics["train_samples_per_second"],
        "train_loss": out.metrics["train_loss"],
        "val_rows": len(data["val"]),
        "val_accuracy": history[-1]["eval_accuracy"] if history else None,
        "tokenize_seconds": round(tokenize_seconds, 3),
        "tokenize_rows_per_second": round(sum(len(d) for d in data.values()) / tokenize_seconds, 1),
        "threads": torch.get_num_threads(),
        "bf16": args.bf16,
    }
    if args.test:
        t0 = time.perf_counter()
        # merged before the test pass, as the evaluate stage does
        merged = Trainer(
            model=trainer.model.merge_and_unload(), args=targs, data_collator=collator, eval_dataset=data["val"]
        )  # unused; the args ask for one
        pred = merged.predict(data["test"])
        seconds = time.perf_counter() - t0
        result.update(
            test_rows=len(data["test"]),
            test_accuracy=accuracy(pred)["accuracy"],
            test_seconds=round(seconds, 3),
            test_samples_per_second=round(len(data["test"]) / seconds, 1),
        )
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result), file=sys.stderr)


if __name__ == "__main__":
    main()
