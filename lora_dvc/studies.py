"""study: the seed projects' studies as named experiments, each a small YAML over params.yaml (studies/).

    lora-dvc study                                   # list the studies
    lora-dvc study show banglasenti-xlmr             # its data fetch, commands, reference figures
    lora-dvc study run banglasenti-xlmr --queue      # one `dvc exp run --queue -n <study>-<variant>` each
    lora-dvc study docs [--check]                    # docs/studies/<name>.md from these files

A study file holds shared `params`, `variants` (overrides, reference figures, trainable counts), its
data fetch command and the real model's architecture.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lora_dvc.errors import UserError
from lora_dvc.runner import ArgumentParser, run_stage

STUDIES = Path("studies")


@dataclass
class Variant:
    name: str
    params: dict[str, Any]
    reference: dict[str, float]
    trainable: int | None = None
    note: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # anything else the file says of the variant


@dataclass
class Study:
    name: str
    title: str
    source: str
    fetch: str
    params: dict[str, Any]
    variants: dict[str, Variant]
    architecture: dict[str, Any]
    labels: int
    train_rows: int | None = None  # about how many rows one epoch trains on
    extra: dict[str, Any] = field(default_factory=dict)

    def overrides(self, variant: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Every params override of one variant: the study's, the variant's, then `extra`."""
        return {**self.params, **self.variants[variant].params, **(extra or {})}

    def command(self, variant: str, extra: dict[str, Any] | None = None, queue: bool = False) -> list[str]:
        """`dvc exp run [--queue] -n <study>-<variant> -S key=value ...` for one variant."""
        sets = [
            a for key, value in self.overrides(variant, extra).items() for a in ("-S", f"{key}={cli_value(value)}")
        ]
        return ["dvc", "exp", "run", *(["--queue"] if queue else []), "-n", f"{self.name}-{variant}", *sets]


def cli_value(value: Any) -> str:
    """A params value as `dvc exp run -S` parses it (YAML flow style: null, true, [a, b])."""
    if isinstance(value, list):
        return "[" + ",".join(cli_value(v) for v in value) + "]"
    return "null" if value is None else json.dumps(value) if isinstance(value, bool) else str(value)


def study_files(root: Path = Path(".")) -> list[Path]:
    return sorted((root / STUDIES).glob("*.yaml"))


def load_study(path: Path) -> Study:
    """One study file, its keys checked (one line per problem)."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise UserError(f"{path}: cannot read the study ({err})") from None
    missing = [k for k in ("title", "fetch", "params", "variants", "architecture", "labels") if k not in (raw or {})]
    if missing:
        raise UserError(f"{path}: missing {', '.join(missing)}")
    variants = {
        name: Variant(
            name,
            v.get("params") or {},
            v.get("reference") or {},
            v.get("trainable"),
            v.get("note"),
            {k: x for k, x in v.items() if k not in ("params", "reference", "trainable", "note")},
        )
        for name, v in raw["variants"].items()
    }
    known = {"title", "source", "fetch", "params", "variants", "architecture", "labels", "train_rows"}
    return Study(
        path.stem,
        raw["title"],
        raw.get("source", ""),
        raw["fetch"],
        raw["params"],
        variants,
        raw["architecture"],
        int(raw["labels"]),
        raw.get("train_rows"),
        {k: v for k, v in raw.items() if k not in known},
    )


def find_study(name: str, root: Path = Path(".")) -> Study:
    path = root / STUDIES / f"{name}.yaml"
    if not path.is_file():
        names = ", ".join(p.stem for p in study_files(root)) or "none"
        raise UserError(f"study '{name}' not found in {root / STUDIES}/; the studies are: {names}")
    return load_study(path)


def parse_set(items: list[str]) -> dict[str, Any]:
    """--set KEY=VALUE pairs, values parsed as YAML (numbers, null, lists)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--set {item}: expected KEY=VALUE, e.g. --set train.epochs=1")
        out[key] = yaml.safe_load(value)
    return out


def show(study: Study) -> str:
    lines = [f"# {study.name}: {study.title}", f"source: {study.source}", "", f"1. data: {study.fetch}", "2. runs:"]
    for name, variant in study.variants.items():
        figures = ", ".join(f"{k} {v}" for k, v in variant.reference.items())
        count = f"; {variant.trainable:,} trainable" if variant.trainable else ""
        lines.append(f"   {shlex.join(study.command(name))}")
        lines.append(f"      reference: {figures}{count}" + (f" ({variant.note})" if variant.note else ""))
    lines.append("3. compare: lora-dvc compare")
    return "\n".join(lines)


PAGES = Path("docs/studies")


def page(study: Study, root: Path = Path(".")) -> str:
    """docs/studies/<name>.md: the study's data, commands, and variants with reference figures."""
    shared = " ".join(f"`{k}={cli_value(v)}`" for k, v in study.params.items())
    rows = []
    for name, v in study.variants.items():
        own = " ".join(f"`{k}={cli_value(x)}`" for k, x in v.params.items())
        reference = ", ".join(f"{k} **{x}**" for k, x in v.reference.items())
        count = f"{v.trainable:,}" if v.trainable else "–"
        rows.append(f"| `{name}` | {own} | {reference}{f' ({v.note})' if v.note else ''} | {count} |")
    extra = [
        f"- `{name}`: the seed study's count, {v.extra['reference_trainable']['count']:,}, is that of a "
        f"{v.extra['reference_trainable']['num_hidden_layers']}-layer model "
        f"({v.extra['reference_trainable']['matches']}); `{study.params['model.name']}` gives {v.trainable:,} "
        "(both checked by tests/test_studies.py)."
        for name, v in study.variants.items()
        if "reference_trainable" in v.extra
    ]
    return f"""<!-- generated by `lora-dvc study docs` from studies/{study.name}.yaml: edit that file, not this one -->
# {study.title}

Reference figures: {study.source}. Definition: [studies/{study.name}.yaml](../../studies/{study.name}.yaml),
{len(study.variants)} variant(s) over `params.yaml`.

## Run it

```bash
{study.fetch}
lora-dvc study run {study.name} --queue      # one queued `dvc exp run` per variant
dvc queue start
lora-dvc compare                            # the variants side by side, to set against the references below
```

`lora-dvc study show {study.name}` prints each variant's full `dvc exp run` command; `--variant NAME` runs one.
Every variant sets {shared}.

## Variants and reference figures

| variant | its own overrides | reference (seed study) | trainable parameters ({study.params["model.name"]}) |
|---|---|---|---|
{chr(10).join(rows)}
{chr(10).join(extra)}
"""


def write_pages(root: Path = Path("."), check: bool = False) -> list[Path]:
    """Write docs/studies/<name>.md for every study; with `check`, the pages that differ, unwritten."""
    from lora_dvc.atomic import write_text

    stale = []
    for path in study_files(root):
        study = load_study(path)
        target = root / PAGES / f"{study.name}.md"
        text = page(study, root)
        if not target.is_file() or target.read_text(encoding="utf-8") != text:
            stale.append(target)
            if not check:
                target.parent.mkdir(parents=True, exist_ok=True)
                write_text(target, text)
    return stale


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(prog="lora-dvc study", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="action")
    sub.add_parser("list", help="the studies (the default)")
    show_p = sub.add_parser("show", help="a study's data fetch, commands and reference figures")
    show_p.add_argument("name")
    run_p = sub.add_parser("run", help="run (or queue) a study's variants with dvc exp run")
    run_p.add_argument("name")
    run_p.add_argument("--variant", action="append", default=[], help="only this variant (repeatable)")
    run_p.add_argument("--queue", action="store_true", help="queue the runs (then: dvc queue start)")
    run_p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a param")
    run_p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    run_p.epilog = "Arguments after -- go to dvc exp run as they are (e.g. -- evaluate: stop after that stage)."
    docs_p = sub.add_parser("docs", help=f"write {PAGES}/<study>.md from the study files")
    docs_p.add_argument("--check", action="store_true", help="exit 1 when a page is stale; write nothing")
    argv = sys.argv[1:] if argv is None else list(argv)
    passed = argv[argv.index("--") + 1 :] if "--" in argv else []
    args = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    if args.action in (None, "list"):
        for path in study_files():
            study = load_study(path)
            print(f"{study.name:<28} {study.title} ({len(study.variants)} runs)")
        return
    if args.action == "docs":
        stale = write_pages(check=args.check)
        if args.check and stale:
            print(f"stale: {', '.join(map(str, stale))}; run `lora-dvc study docs`", file=sys.stderr)
            sys.exit(1)
        print(f"{PAGES}: {len(stale)} page(s) {'stale' if args.check else 'written'}")
        return
    study = find_study(args.name)
    if args.action == "show":
        print(show(study))
        return
    unknown = sorted(set(args.variant) - set(study.variants))
    if unknown:
        raise UserError(
            f"--variant {', '.join(unknown)}: not in {study.name}; its variants: {', '.join(study.variants)}"
        )
    extra = parse_set(args.set)
    for variant in args.variant or list(study.variants):
        cmd = [*study.command(variant, extra, args.queue), *passed]
        print(shlex.join(cmd), flush=True)
        if args.dry_run:
            continue
        done = subprocess.run([sys.executable, "-m", *cmd], check=False)
        if done.returncode != 0:
            raise UserError(f"{study.name}-{variant}: dvc exp run exited {done.returncode}")


if __name__ == "__main__":
    run_stage(main)
