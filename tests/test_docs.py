"""Docs that cannot drift: README.md and docs/*.md, checked against the code they describe.

Each checker reads one kind of mention and reports `file:line: what is wrong`:

- param keys: `-S key=value` overrides, and inline code that is a key (`lora.r`, `train.method: full`),
  must be keys of the schema (lora_dvc.params.all_keys). Metric names that share a params section
  (`train.loss`, the records' train-split scores) are not params; a removed key that older
  experiments still carry (`lora.enabled`) may be named only on a line that says it is old.
- repository paths: paths under the repository's top-level folders, the top-level config files, and
  relative links (with their #anchors) must exist, or be a pipeline output that dvc.yaml declares,
  lora_dvc/artifacts.py names or scripts/fetch_data.py writes. Placeholders (`<dataset>`), globs and
  `{train,val,test}` are expanded. Paths of other repositories are written as links to them.
- `lora-dvc SUB --flag` and `python -m our.module --flag`: the command (lora_dvc.cli.COMMANDS) and
  every flag must exist in the command's argparse parser.
- `python -m module`: the module must be importable (importlib.util.find_spec; nothing is run).
- internal issue numbers ("issue-12", "issue 12", "#12") have no place in user docs.

test_each_checker_catches_a_planted_mistake keeps the checkers honest: a text with one mistake of
each kind must be reported by each.
"""

from __future__ import annotations

import argparse
import functools
import glob
import importlib
import importlib.util
import re
import shlex
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

PARAM_SECTIONS = ("data", "model", "lora", "train", "evaluate")
# folders only the pipeline and the commands write: a path there must be a declared output, not
# merely a file some earlier run left behind
OUTPUT_ROOTS = ("metrics", "records", "models", "plots", "reports")
TOP_FILES = r"(?:params|dvc)\.(?:yaml|lock)|pyproject\.toml|pytest\.ini|requirements[\w-]*\.txt"
FILE_SUFFIXES = {"py", "csv", "tsv", "txt", "json", "jsonl", "npz", "yaml", "yml", "md", "png", "html", "safetensors"}
HISTORY_WORDS = re.compile(r"\b(old|older|earlier|before|replaced|removed)\b", re.IGNORECASE)

# mentions that are wrong on purpose, and why
DELIBERATE = {
    "lora.rank": "docs/reliability.md shows the error a mistyped key gives",
    ".dvc/config.local": "each machine writes its own with `dvc ... --local`; git ignores it",
}


# -- reading a markdown file ------------------------------------------------------------------


@dataclass(frozen=True)
class Snippet:
    line: int  # 1-based, where the snippet starts
    text: str


@dataclass
class Doc:
    name: str  # relative to the repository root
    prose: list[Snippet] = field(default_factory=list)  # the lines outside fenced code blocks
    blocks: list[Snippet] = field(default_factory=list)  # fenced code blocks' lines, `\`-continued ones joined
    spans: list[Snippet] = field(default_factory=list)  # inline `code` (a span may cross a line end)
    links: list[Snippet] = field(default_factory=list)  # link and image targets, `path#anchor`

    @property
    def folder(self) -> Path:  # relative links resolve from here
        return (ROOT / self.name).parent

    @property
    def lines(self) -> list[Snippet]:
        return sorted(self.prose + self.blocks, key=lambda s: s.line)

    @property
    def code(self) -> list[Snippet]:
        return sorted(self.blocks + self.spans, key=lambda s: s.line)


INLINE_CODE = re.compile(r"(`+)((?:(?!\1)[^\n]|\n(?!\s*\n))+?)\1")  # never across a blank line
LINK = re.compile(r"!?\[((?:[^\]\[]|\[[^\]]*\])*)\]\(([^)\s]+)\)")
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)
FENCE = re.compile(r"\s*(```|~~~)")


def parse_doc(text: str, name: str) -> Doc:
    doc = Doc(name)
    fence, continued = None, None
    for number, line in enumerate(text.splitlines(), 1):
        if fence is None and (marker := FENCE.match(line)):
            fence = marker.group(1)
        elif fence is not None and line.strip().startswith(fence):
            fence = None
        elif fence is not None:
            start, joined = continued or (number, "")
            if line.endswith("\\"):
                continued = (start, joined + line[:-1] + " ")
            else:
                continued = None
                doc.blocks.append(Snippet(start, joined + line))
        else:
            doc.prose.append(Snippet(number, line))
            doc.links += [Snippet(number, m.group(2)) for m in LINK.finditer(line)]
    # inline code, paragraph by paragraph: join the prose lines, find the spans, map them back to lines
    numbers = [s.line for s in doc.prose]
    joined = "\n".join(s.text for s in doc.prose)
    for m in INLINE_CODE.finditer(joined):
        doc.spans.append(Snippet(numbers[joined.count("\n", 0, m.start())], " ".join(m.group(2).split())))
    return doc


def read_doc(path: Path) -> Doc:
    return parse_doc(path.read_text(encoding="utf-8"), path.relative_to(ROOT).as_posix())


def report(doc: Doc, snippet: Snippet, what: str) -> str:
    return f"{doc.name}:{snippet.line}: {what}"


# -- 1. param keys -----------------------------------------------------------------------------

SECTION = "|".join(PARAM_SECTIONS)
OVERRIDE = re.compile(r"(?:^|\s)(?:-S|--set-param)\s+['\"]?([\w.]+)=")  # -S key=value: a param, whatever its name
KEY_SPAN = re.compile(rf"^((?:{SECTION})\.\w+(?:\.\w+)*)\s*(?:[:=].*)?$")  # `lora.r`, `train.method: full`
KEY_SET = re.compile(rf"(?<![\w.$/-])((?:{SECTION})\.\w+)(?:=|:\s)")  # in a code block: key=value, key: value


@functools.cache
def schema_keys() -> frozenset[str]:
    from lora_dvc.params import all_keys

    return frozenset(all_keys())


@functools.cache
def metric_names() -> frozenset[str]:
    """Dotted metric and record names (`train.loss`, `test.accuracy`): not params."""
    from lora_dvc.comparison import runs

    return frozenset(runs.METRIC_SOURCES) | frozenset(runs.METRICS)


@functools.cache
def legacy_keys() -> frozenset[str]:
    from lora_dvc.comparison import runs

    return frozenset(runs.LEGACY_PARAM_KEYS)


def param_mentions(doc: Doc) -> Iterator[tuple[Snippet, str, bool]]:
    """(where, key, whether it is set with -S) for every param key a doc's code mentions."""

    def mentions(snippet: Snippet, keys: list[str]):
        overrides = OVERRIDE.findall(snippet.text)
        yield from ((snippet, key, True) for key in overrides)
        for key in dict.fromkeys(keys):
            if key not in overrides and key.split(".", 1)[1] not in FILE_SUFFIXES:  # not `model.safetensors`
                yield snippet, key, False

    for snippet in doc.blocks:
        yield from mentions(snippet, KEY_SET.findall(snippet.text))
    for snippet in doc.spans:
        whole = KEY_SPAN.match(snippet.text)
        yield from mentions(snippet, [whole.group(1)] if whole else [])


@functools.cache
def trainer_arg_keys() -> frozenset[str]:
    """`train.trainer_args.<field>` for every field of the installed TrainingArguments."""
    from transformers import TrainingArguments

    return frozenset(f"train.trainer_args.{name}" for name in TrainingArguments.__dataclass_fields__)


def check_param_keys(doc: Doc) -> list[str]:
    problems = []
    history = {s.line for s in doc.lines if HISTORY_WORDS.search(s.text)}
    for snippet, key, override in sorted(param_mentions(doc), key=lambda m: m[0].line):
        if key in schema_keys() or key in DELIBERATE or not key.startswith(tuple(s + "." for s in PARAM_SECTIONS)):
            continue
        if key.startswith("train.trainer_args.") and key in trainer_arg_keys():
            continue  # a TrainingArguments field under train.trainer_args
        if not override and key in metric_names():
            continue  # `train.loss` in the records, not a param
        if key in legacy_keys() and snippet.line in history:
            continue  # "in older experiments, `lora.enabled: false` counts as full"
        problems.append(report(doc, snippet, f"`{key}` is not a param (lora_dvc/params.py)"))
    return problems


# -- 2. repository paths -----------------------------------------------------------------------


@functools.cache
def repo_roots() -> tuple[str, ...]:
    """The repository's top-level folders: those git tracks files in, and the output folders."""
    git = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if git.returncode == 0:
        folders = {path.split("/", 1)[0] for path in git.stdout.splitlines() if "/" in path}
    else:  # not a git checkout (an unpacked archive): every folder but the usual caches
        folders = {p.name for p in ROOT.iterdir() if p.is_dir() and p.name not in {".git", ".venv", "__pycache__"}}
    return tuple(sorted(folders | set(OUTPUT_ROOTS)))


@functools.cache
def path_pattern() -> re.Pattern:
    roots = "|".join(re.escape(r) for r in repo_roots())
    part = r"(?:\{[^}\s]*\}|<[^>\s]*>|[\w.*+-]|/)"
    return re.compile(rf"(?<![\w.~$/@:-])((?:{roots})/{part}*|(?:{TOP_FILES})(?![\w-]))")


def _dvc_yaml_paths(node, key: str | None = None):
    """Every output, metric and plot path dvc.yaml declares."""
    if isinstance(node, dict):
        for k, v in node.items():
            if key in ("outs", "metrics", "y") or (key == "plots" and isinstance(k, str) and "/" in k):
                yield k
            if k == "path" and key is None:
                yield v
            yield from _dvc_yaml_paths(v, k if k in ("outs", "metrics", "plots", "y") else None)
    elif isinstance(node, list):
        for item in node:
            if isinstance(item, str) and key in ("outs", "metrics", "plots"):
                yield item
            else:
                yield from _dvc_yaml_paths(item, key)


@functools.cache
def declared_outputs() -> frozenset[str]:
    """Paths that exist once the pipeline or a command has run: dvc.yaml's outs, metrics, plots and
    artifacts, lora_dvc/artifacts.py's paths (and the PNG `lora-dvc compare` writes beside its
    report), the folders scripts/fetch_data.py imports into."""
    from lora_dvc import artifacts

    paths = {str(p) for p in _dvc_yaml_paths(yaml.safe_load((ROOT / "dvc.yaml").read_text()))}
    paths |= {p.as_posix() for p in vars(artifacts).values() if isinstance(p, Path)}
    paths.add(artifacts.COMPARISON.with_suffix(".png").as_posix())
    spec = importlib.util.spec_from_file_location("fetch_data", ROOT / "scripts/fetch_data.py")
    fetch_data = importlib.util.module_from_spec(spec)
    with mock.patch.dict(sys.modules, {"fetch_data": fetch_data}):  # its dataclass looks itself up there
        spec.loader.exec_module(fetch_data)
    paths |= {dataset.folder for dataset in fetch_data.DATASETS.values()}
    return frozenset(p.rstrip("/") for p in paths)


def is_declared(path: str) -> bool:
    path = path.rstrip("/")
    return any(path == d or path.startswith(d + "/") or d.startswith(path + "/") for d in declared_outputs())


def expand_braces(path: str) -> list[str]:
    m = re.search(r"\{([^{}]*)\}", path)
    if not m:
        return [path]
    return [x for alt in m.group(1).split(",") for x in expand_braces(path[: m.start()] + alt + path[m.end() :])]


def path_exists(path: str) -> bool:
    path = re.sub(r"<[^>]*>", "*", path)
    if path.rstrip("/") in DELIBERATE:
        return True
    wild = any(c in path for c in "*?[")
    if path.split("/", 1)[0] in OUTPUT_ROOTS:
        literal = re.split(r"/[^/]*[*?[]", path, maxsplit=1)[0] if wild else path
        return is_declared(literal)
    if wild:
        literal = re.split(r"/[^/]*[*?[]", path, maxsplit=1)[0]
        return bool(glob.glob(path, root_dir=ROOT)) or is_declared(literal)
    return (ROOT / path).exists() or is_declared(path)


def check_paths(doc: Doc) -> list[str]:
    problems = []
    for snippet in doc.lines:
        # the text of a link to another site names that site's files, not ours
        text = LINK.sub(lambda m: "" if EXTERNAL.match(m.group(2)) else m.group(0), snippet.text)
        for m in path_pattern().finditer(text):
            mention = re.sub(r"(/?(\.\.\.|…))$", "", m.group(1)).rstrip(".")
            missing = [p for p in expand_braces(mention) if not path_exists(p)]
            if missing:
                problems.append(report(doc, snippet, f"`{mention}`: not in the repository, nor an output it declares"))
    return problems


def heading_anchors(path: Path) -> set[str]:
    """GitHub's anchors: lower case, punctuation but `-` and `_` dropped, spaces to `-`, -1, -2... for repeats."""
    anchors: set[str] = set()
    for snippet in parse_doc(path.read_text(encoding="utf-8"), path.name).prose:
        m = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", snippet.text)
        if not m or snippet.text.startswith(" "):
            continue
        slug = re.sub(r"[^\w\- ]", "", m.group(1).lower()).replace(" ", "-")
        anchor, n = slug, 0
        while anchor in anchors:
            n += 1
            anchor = f"{slug}-{n}"
        anchors.add(anchor)
    return anchors


def check_links(doc: Doc) -> list[str]:
    problems = []
    for snippet in doc.links:
        if EXTERNAL.match(snippet.text):
            continue
        target, _, anchor = snippet.text.partition("#")
        path = (doc.folder / target).resolve() if target else ROOT / doc.name
        if not path.exists():
            problems.append(report(doc, snippet, f"link `{snippet.text}`: no such file"))
        elif anchor and path.suffix == ".md" and anchor not in heading_anchors(path):
            problems.append(report(doc, snippet, f"link `{snippet.text}`: no heading #{anchor} in {path.name}"))
    return problems


# -- 3. lora-dvc commands and their flags, 4. python -m modules --------------------------------


class _Parsed(Exception):
    def __init__(self, parser: argparse.ArgumentParser):
        self.parser = parser


@functools.cache
def command_parser(module_name: str) -> argparse.ArgumentParser | None:
    """The argparse parser a command module builds: its parse_args (or main) is called with parsing
    stopped at the parser, so nothing runs."""
    module = importlib.import_module(module_name)
    entry = getattr(module, "parse_args", None)
    if entry is None and hasattr(module, "main"):
        entry = getattr(importlib.import_module(module.main.__module__), "parse_args", module.main)
    if entry is None:
        return None

    def stop(self, *args, **kwargs):
        raise _Parsed(self)

    with mock.patch.object(argparse.ArgumentParser, "parse_known_args", stop):  # parse_args calls it
        try:
            entry(["--help"])
        except _Parsed as parsed:
            return parsed.parser
    return None


def argument_tokens(rest: str) -> list[str]:
    rest = re.split(r"\s(?:\||&&|;|#|>|2>)", " " + rest, maxsplit=1)[0]
    try:
        tokens = shlex.split(rest)
    except ValueError:
        tokens = rest.split()
    return tokens[: tokens.index("--")] if "--" in tokens else tokens


def unknown_flags(parser: argparse.ArgumentParser, tokens: list[str], command: str) -> list[str]:
    """What is wrong with `tokens` for `parser`: an unknown subcommand or flag (exact names only)."""
    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    flags = {s for a in parser._actions for s in a.option_strings}
    if subparsers and tokens:  # `lora-dvc sky` alone names the command; with arguments it needs its action
        positionals = [t for t in tokens if not t.startswith("-")]
        choices = subparsers[0].choices
        if not positionals or positionals[0] not in choices:
            got = positionals[0] if positionals else "nothing"
            return [f"`{command}` takes one of {', '.join(choices)} first, not {got}"]
        flags |= {s for a in choices[positionals[0]]._actions for s in a.option_strings}
    options = [t.split("=", 1)[0] for t in tokens if t.startswith("-") and t != "-" and not re.match(r"-\d", t)]
    return [f"`{command}` has no option {o}" for o in options if o not in flags]


LORA_DVC = re.compile(r"(?<![\w/.-])lora-dvc\s+([a-z][\w-]*)(.*)")
PYTHON_M = re.compile(r"(?<![\w-])python[\d.]*\s+(?:-[A-Za-z]+\s+)*-m\s+([\w.]+)(.*)")


def check_commands(doc: Doc) -> list[str]:
    from lora_dvc.cli import COMMANDS

    problems = []
    for snippet in doc.code:
        for m in LORA_DVC.finditer(snippet.text):
            name, tokens = m.group(1), argument_tokens(m.group(2))
            if name not in COMMANDS:
                problems.append(report(doc, snippet, f"`lora-dvc {name}`: no such command ({', '.join(COMMANDS)})"))
                continue
            parser = command_parser(COMMANDS[name][0])
            for what in unknown_flags(parser, tokens, f"lora-dvc {name}") if parser else []:
                problems.append(report(doc, snippet, what))
    return problems


def check_python_modules(doc: Doc) -> list[str]:
    problems = []
    for snippet in doc.code:
        for m in PYTHON_M.finditer(snippet.text):
            module, tokens = m.group(1).rstrip("."), argument_tokens(m.group(2))
            try:
                found = importlib.util.find_spec(module) is not None
            except ModuleNotFoundError:
                found = False
            if not found:
                problems.append(report(doc, snippet, f"`python -m {module}`: no such module"))
                continue
            ours = module.split(".")[0] in ("lora_dvc", "stages")
            if ours and any(t.startswith("--") for t in tokens) and (parser := command_parser(module)):
                problems += [
                    report(doc, snippet, what) for what in unknown_flags(parser, tokens, f"python -m {module}")
                ]
    return problems


# -- 5. internal issue numbers -----------------------------------------------------------------

ISSUE = re.compile(r"\bissues?[ -]?#?\d+\b|(?<![\w/#])#\d+\b", re.IGNORECASE)


def check_issue_numbers(doc: Doc) -> list[str]:
    return [
        report(doc, s, f"`{m.group(0)}`: an internal issue number; say what it refers to instead")
        for s in doc.lines
        for m in ISSUE.finditer(s.text)
    ]


# -- the tests ---------------------------------------------------------------------------------

CHECKERS: dict[str, Callable[[Doc], list[str]]] = {
    "param keys": check_param_keys,
    "repository paths": check_paths,
    "relative links": check_links,
    "lora-dvc commands": check_commands,
    "python -m modules": check_python_modules,
    "issue numbers": check_issue_numbers,
}


@pytest.mark.parametrize("kind", CHECKERS)
def test_docs_mention_only_what_exists(kind):
    checker = CHECKERS[kind]
    problems = [problem for path in DOCS for problem in checker(read_doc(path))]
    assert not problems, f"{kind}: {len(problems)} stale mention(s):\n" + "\n".join(problems)


PLANTED = """\
# A page

Full fine-tuning is `lora.enabled: false`, see `stages/nope.py` and [the guide](docs/nope.md).
A [good link](docs/params.md#params-reference) and a [bad anchor](docs/params.md#nope).

```bash
dvc exp run -S train.nope=3 -S lora.r=8         # one bad key
sky jobs launch sky/sweep.yaml --env 'OVERRIDES=lora.size=4 lora.r=8'
lora-dvc export --nope                          # a bad flag
lora-dvc frobnicate                             # a bad command
lora-dvc sky launch --name x --dry-run -- --gpus L4:1
python -m lora_dvc.nope
python -m stages.export --merge --bogus
```

As measured in issue-12 (see #12), test accuracy is in `records/nope.json`.
"""

EXPECTED = {
    "param keys": ["`lora.enabled` is not a param", "`train.nope` is not a param", "`lora.size` is not a param"],
    "repository paths": ["`stages/nope.py`", "`docs/nope.md`", "`records/nope.json`"],
    "relative links": ["link `docs/nope.md`: no such file", "no heading #nope in params.md"],
    "lora-dvc commands": ["`lora-dvc export` has no option --nope", "`lora-dvc frobnicate`: no such command"],
    "python -m modules": [
        "`python -m lora_dvc.nope`: no such module",
        "`python -m stages.export` has no option --bogus",
    ],
    "issue numbers": ["`issue-12`", "`#12`"],
}


@pytest.mark.parametrize("kind", CHECKERS)
def test_each_checker_catches_a_planted_mistake(kind):
    problems = CHECKERS[kind](parse_doc(PLANTED, "README.md"))
    for expected in EXPECTED[kind]:
        assert any(expected in p for p in problems), f"{kind}: expected {expected!r} in {problems}"
    assert len(problems) == len(EXPECTED[kind]), problems  # and nothing that is right
    assert all(re.match(r"README\.md:\d+: ", p) for p in problems)


def test_planted_mistakes_are_reported_at_their_line():
    problems = check_param_keys(parse_doc(PLANTED, "README.md"))
    assert [p.split(": ")[0] for p in problems] == ["README.md:3", "README.md:7", "README.md:8"]


def test_metric_names_and_old_keys_in_their_place_are_not_flagged():
    text = (
        "The records hold `train.loss` and `test.accuracy`; `dvc exp show` lists `val.macro_f1`.\n"
        "Older experiments' `lora.enabled: false` counts as `train.method: full`; `model.safetensors`.\n"
        "`dvc exp run -S train.loss=1` is no param though.\n"
    )
    problems = check_param_keys(parse_doc(text, "README.md"))
    assert problems == ["README.md:3: `train.loss` is not a param (lora_dvc/params.py)"]


def test_paths_may_be_placeholders_globs_and_outputs_but_not_leftovers():
    fine = (
        "`data/raw/<dataset>/`, `data/prepared/{train,val,test}.csv`, `records/train/plots/metrics/...`,\n"
        "`data/external/*/*.dvc`, `models/export/merged/`, `reports/comparison.png`, `my/reviews.csv`,\n"
        "[CharCnn_Keras's `data/ag_news_csv/`](https://github.com/mhjabreel/CharCnn_Keras), `.dvc/config.local`.\n"
    )
    assert check_paths(parse_doc(fine, "docs/x.md")) == []
    stale = "`metrics/evaluate/metrics.json` (the old layout), `data/raw/{ag_news,nope}/`.\n"
    problems = check_paths(parse_doc(stale, "docs/x.md"))
    assert [p.split("`")[1] for p in problems] == ["metrics/evaluate/metrics.json", "data/raw/{ag_news,nope}/"]
