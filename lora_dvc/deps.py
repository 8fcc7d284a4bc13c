"""Each stage's code dependencies, computed from its imports, so `dvc.yaml` lists exactly what it runs.

    python -m lora_dvc.deps            # print, per stage, the lines dvc.yaml lacks or has in excess
    python -m lora_dvc.deps --check    # exit 1 with one line per stage that differs (tests run this)

The closure starts at the module in the stage's `cmd` (`python -m stages.<name>`) and follows every
`import` / `from ... import` of a project module (`stages`, `lora_dvc`), including imports inside
functions, transitively. Only `.py` deps are compared: data, templates and params are listed by hand.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

import yaml

PROJECT_PACKAGES = ("stages", "lora_dvc")


def module_file(module: str, root: Path) -> Path | None:
    path = root.joinpath(*module.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(file: Path) -> set[str]:
    """Project modules named by any import statement in `file` (`from pkg import mod` names pkg.mod too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in PROJECT_PACKAGES:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] in PROJECT_PACKAGES)
    return found


def closure(module: str, root: Path = Path(".")) -> set[str]:
    """Repository-relative paths of every project file `module` runs."""
    seen: set[str] = set()
    files: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        file = module_file(name, root)
        if file is None:  # a name imported from a module (a function, a class), not a module itself
            continue
        files.add(file.relative_to(root).as_posix())
        todo.extend(imported_modules(file))
    return files


def stage_module(cmd: str) -> str | None:
    parts = cmd.split()
    return parts[parts.index("-m") + 1] if "-m" in parts else None


def differences(root: Path = Path(".")) -> dict[str, tuple[set[str], set[str]]]:
    """stage -> (missing from dvc.yaml, listed but not imported), for every stage that differs."""
    stages = yaml.safe_load((root / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    out = {}
    for name, stage in stages.items():
        module = stage_module(stage["cmd"])
        if module is None:
            continue
        listed = {d for d in stage.get("deps", []) if isinstance(d, str) and d.endswith(".py")}
        needed = closure(module, root)
        if listed != needed:
            out[name] = (needed - listed, listed - needed)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="stage code deps from the imports (see the module docstring)")
    ap.add_argument("--check", action="store_true", help="exit 1 when dvc.yaml differs from the imports")
    args = ap.parse_args(argv)
    diff = differences()
    for stage, (missing, extra) in diff.items():
        print(f"dvc.yaml stage '{stage}': add {sorted(missing) or '-'}; remove {sorted(extra) or '-'}")
    if not diff:
        print("dvc.yaml: every stage lists exactly the modules it imports")
    return 1 if diff and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
