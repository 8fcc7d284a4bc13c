"""The library stays readable: no function in lora_dvc/ or stages/ over a screen (50 lines), no module
docstring over 10 lines (history belongs in bench/README.md and the records)."""

from __future__ import annotations

import ast

from helpers import ROOT

MAX_FUNCTION_LINES = 50
MAX_DOCSTRING_LINES = 10


def sources() -> list:
    return sorted([*(ROOT / "lora_dvc").rglob("*.py"), *(ROOT / "stages").glob("*.py")])


def test_functions_fit_a_screen():
    long = []
    for path in sources():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {lines} lines")
    assert not long, "\n".join(long)


def test_module_docstrings_are_short():
    long = []
    for path in sources():
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")), clean=False)
        if doc and doc.count("\n") + 1 > MAX_DOCSTRING_LINES:
            long.append(f"{path.relative_to(ROOT)}: {doc.count(chr(10)) + 1} lines")
    assert not long, "\n".join(long)
