"""Every figure the docs quote, rendered from the newest committed record of its kind in bench/results.

python bench/figures.py            # rewrite each `<!-- figures:NAME -->` block (BLOCKS) of README.md and docs
python bench/figures.py --check    # exit 1 naming every block whose text differs from its record
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import re
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

from benchlib import RESULTS, ROOT, host_kind, mean_std, spread

DOCS = ("README.md", "bench/README.md", "docs/*.md")
BLOCK = re.compile(r"<!-- figures:(?P<name>[\w-]+) -->(?P<body>.*?)<!-- /figures:(?P=name) -->", re.S)
STAMP = re.compile(r"-(\d{8}T\d{6})\.json$")
ACCURACY_BAR = 0.80  # both sides of the stock-recipe bench must clear the majority class (0.25) by this much
EQUAL_POINTS = 0.5  # ... and be within this many points of each other


class FigureError(Exception):
    """A record a block needs is missing or lacks what the block quotes."""


def newest(kind: str, accepts: Callable[[dict], bool] = lambda record: True) -> tuple[Path, dict]:
    """The newest bench/results/<kind>-<stamp>.json that `accepts`, by its stamp."""
    found = records(kind, accepts)
    if not found:
        raise FigureError(f"no bench/results/{kind}-<stamp>.json with what the block needs")
    return found[0]


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def minutes(seconds: float) -> str:
    whole = round(seconds)
    return f"{whole // 60} min {whole % 60} s"


def host_line(host: dict) -> str:
    """'AMD EPYC (AVX512-BF16, no AMX), 2 cores, torch 2.13.0+cpu': the host kind a figure holds for."""
    return f"{host['cpu']} ({host_kind(host)}), {host['cores']} cores, torch {host['torch']}"


def mmm(s: dict | None, digits: int = 1, suffix: str = "") -> str:
    """min / median / max of a benchlib.spread."""
    if not s:
        return "n/a"
    return " / ".join(f"{s[k]:,.{digits}f}{suffix}" for k in ("min", "median", "max"))


def ratio_cell(s: dict | None) -> str:
    """'**1.83x** (1.79-1.90x)': the median ratio, and its range over the repeats."""
    if not s:
        return "n/a"
    return f"**{s['median']:.2f}x** ({s['min']:.2f}-{s['max']:.2f}x)"


def verdict(s: dict) -> str:
    if s["min"] > 1.0:
        return "faster in every repeat"
    if s["max"] < 1.0:
        return "slower in every repeat"
    return "not told apart (the repeats straddle 1.00x)"


def load_line(runs: list[dict]) -> str:
    """What else ran during the timed runs: cores other processes used and the 1-minute load average."""
    others = [r["other_cores"] for r in runs if r.get("other_cores") is not None]
    loads = [r["load1_before"] for r in runs if r.get("load1_before") is not None]
    if not others:
        return "load not recorded"
    return (
        f"other processes used {mmm(spread(others), 2)} cores (min / median / max over the runs), "
        f"1-minute load average {mmm(spread(loads), 2)} at their starts"
    )


# ---- the default study (bench/default_study.py) ----


def default_study() -> tuple[Path, dict]:
    return newest("default-study", lambda r: len(r.get("runs", [])) >= 3)


def study_time(r: dict) -> str:  # the median from-scratch time and its range
    t = r["total_seconds"]
    return f"{minutes(t['median'])} ({minutes(t['min'])} to {minutes(t['max'])} over {len(r['runs'])} runs)"


def default_study_first() -> str:
    path, r = default_study()
    h = r["host"]
    return (
        f"measured on this host ({h['cpu']}, {h['cores']} cores, {host_kind(h)}): {study_time(r)} from scratch, "
        f"test accuracy {r['test']['accuracy']:.4f}, macro-F1 {r['test']['macro_f1']:.4f}"
    )


def default_study_sentence() -> str:
    path, r = default_study()
    stages = ", ".join(f"{stage} {seconds:g} s" for stage, seconds in r["stage_seconds"].items())
    return (
        f"The default study (`{r['command']}`: `dvc repro -f -s STAGE` for each stage in order, DVC's start "
        f"included; {host_line(r['host'])}; tree {r['host']['tree']}; {r['date'][:16].replace('T', ' ')}; "
        f"`{rel(path)}`): **{study_time(r)}** from scratch (median per stage: {stages}; the last run's train stage "
        f"{r['fit']['samples_per_second']:g} samples/s), test accuracy {r['test']['accuracy']:.4f}, macro-F1 "
        f"{r['test']['macro_f1']:.4f}. During the runs {load_line(r['runs'])}."
    )


def default_study_accuracy() -> str:
    path, r = default_study()
    return f"test accuracy {r['test']['accuracy']:.4f} (`{rel(path)}`)"


# ---- ours against the stock Trainer recipe (bench/run.py) ----

ROW_LABELS = {  # equal precision first; our default against the stock default below, where they differ
    "fp32": "fp32 both",
    "bf16": "bf16 both",
    "default": "pipeline default ({ours}) vs stock default ({peer}), unequal precision",
}


def records(kind: str, accepts: Callable[[dict], bool] = lambda record: True) -> list[tuple[Path, dict]]:
    """Every bench/results/<kind>-<stamp>.json that `accepts`, newest first."""
    stamped = [(STAMP.search(p.name), p) for p in RESULTS.glob(f"{kind}-*.json")]
    paths = sorted(((m.group(1), p) for m, p in stamped if m and p.name == f"{kind}-{m.group(1)}.json"), reverse=True)
    found = [(path, json.loads(path.read_text(encoding="utf-8"))) for _, path in paths]
    return [(path, record) for path, record in found if accepts(record)]


def newest_per_host_kind(kind: str, accepts: Callable[[dict], bool]) -> list[tuple[Path, dict]]:
    """The newest accepted record of `kind` for each host kind (a speed figure holds only for its kind)."""
    kinds: dict[str, tuple[Path, dict]] = {}
    for path, r in records(kind, accepts):
        kinds.setdefault(host_kind(r["host"]), (path, r))
    if not kinds:
        raise FigureError(f"no bench/results/{kind}-<stamp>.json with what the block needs")
    return list(kinds.values())


def stock_recipes() -> list[tuple[Path, dict]]:
    return newest_per_host_kind("stock-recipe", lambda r: r["args"]["repeats"] >= 3)


def stock_setup(path: Path, r: dict) -> str:
    rows, steps = r["rows"], r["accuracy"]["fp32"]["steps"][0]
    wall = f", {minutes(r['bench_wall_s'])} for the whole bench" if r.get("bench_wall_s") else ""
    return (
        f"`{r['command']}`: {rows['train']:,} AG News training rows, {steps} optimizer steps, "
        f"{rows['val']:,} val and {rows['test']:,} test rows; {r['args']['repeats']} repeats, the configurations "
        f"alternating within each repeat and the order rotating between repeats (benchlib.run_order); "
        f"{host_line(r['host'])}; tree {r['host']['tree']}; {r['date'][:16].replace('T', ' ')}{wall}; "
        f"raw figures in `{rel(path)}`. During the timed runs {load_line(r['runs'])}."
    )


def achieved(r: dict, side: str, precision: str) -> str:
    got = r["flops"]["achieved"].get(f"{side}/{precision}")
    return f"{got['flops_per_s'] / 1e9:,.1f} ({100 * got['share_of_peak']:.0f}%)" if got else "n/a"


def stock_recipe_table() -> str:
    """bench/README's and README's tables: one per host kind, its newest record."""
    return "\n\n".join(stock_recipe_one(path, r) for path, r in stock_recipes())


def stock_recipe_one(path: Path, r: dict) -> str:
    lines = [
        f"**{host_kind(r['host'])}.** {stock_setup(path, r)}",
        "",
        "| measure | ours | stock Trainer (dynamic padding, length-grouped) | ours vs stock, per repeat |",
        "|---|---|---|---|",
    ]
    for row in (row for row in ROW_LABELS if row in r["speed"]):
        s = r["speed"][row]
        label = ROW_LABELS[row].format(ours=s["ours_precision"], peer=s["peer_precision"])
        lines.append(
            f"| train, {label}, s (min / median / max) | {mmm(s['ours_s'])} | {mmm(s['stock_s'])} | "
            f"{ratio_cell(s['vs_stock'])} |"
        )
    for precision, a in r["accuracy"].items():
        lines.append(
            f"| {precision}: optimizer steps; val accuracy | {a['steps'][0]}; {a['ours_val']:.4f} | "
            f"{a['steps'][1]}; {a['stock_val']:.4f} | |"
        )
        lines.append(
            f"| {precision}: test accuracy (majority class {a['majority']:.4f}) | {a['ours_test']:.4f} | "
            f"{a['stock_test']:.4f} | {a['delta_points']:+.2f} points |"
        )
    f, peak, rss = r["flops"], r["peak"]["flops_per_s"], r["peak_rss_mb"]
    lines.append(
        f"| model FLOPs per trained token (fwd + bwd to inputs and adapters) | {f['per_train_token'] / 1e6:,.1f} M "
        "| same | |"
    )
    for precision in r["accuracy"]:
        lines.append(
            f"| achieved GFLOP/s in the loop, {precision} (share of {peak[precision] / 1e9:,.0f} GFLOP/s matmul "
            f"peak) | {achieved(r, 'ours', precision)} | {achieved(r, 'stock', precision)} | |"
        )
    memory = " / ".join(f"{rss[p]:,.0f}" for p in r["accuracy"])
    lines += [
        f"| no-op `dvc repro`, s (median of 3) | {r['noop_repro_s']:.2f} | | |",
        f"| peak RSS of the train stage, MB, {' / '.join(r['accuracy'])} | {memory} | | |",
    ]
    return "\n".join([*lines, "", goals(r)])


GOALS = {"default": 2.0, "bf16": 1.3}  # issue 12: ours vs stock, medians


def goals(r: dict) -> str:
    parts = []
    for row, goal in GOALS.items():
        if row not in r["speed"]:
            continue  # not measured on this host kind (no native bf16)
        got = r["speed"][row]["vs_stock"]["median"]
        label = ROW_LABELS[row].format(ours=r["speed"][row]["ours_precision"], peer=r["speed"][row]["peer_precision"])
        parts.append(f"{label} >= {goal}x: {'met' if got >= goal else 'not met'} ({got:.2f}x)")
    accurate = all(
        min(a["ours_test"], a["stock_test"]) >= ACCURACY_BAR and abs(a["delta_points"]) <= EQUAL_POINTS
        for a in r["accuracy"].values()
    )
    parts.append(
        f"test accuracy >= {ACCURACY_BAR} on both sides and within {EQUAL_POINTS} points in each precision: "
        f"{'met' if accurate else 'not met'}"
    )
    return f"Goals, on the medians: {'; '.join(parts)}."


# ---- the per-step levers (bench/step_levers.py) ----

# (lever, the lever it changes one thing against, what it is, kept?)
LEVER_ROWS = (
    ("base", None, "base: bf16 autocast, torch's dropout", ""),
    ("fast_dropout", "base", "fast dropout masks (`lora_dvc/dropout.py`, `train.fast_dropout: true`)", "yes (CPU)"),
    (
        "ready_bf16",
        "fast_dropout",
        "fast dropout + every frozen tensor stored in bf16 (`modeling.ready_for_bf16_autocast`)",
        "yes (bf16 on CPU, CUDA)",
    ),
    ("fp32", "base", "fp32, torch's dropout (the stock Trainer default)", "bf16 where native"),
    ("fp32_fast", "fp32", "fp32 with fast dropout masks", "yes (CPU)"),
)


def step_levers() -> list[tuple[Path, dict]]:
    """The newest step-levers record of each host kind with 3 repeats and a lever to compare, newest first."""

    def accepts(r: dict) -> bool:
        return r.get("repeats", 1) >= 3 and any(row[1] for row in lever_rows(r))

    return newest_per_host_kind("step-levers", accepts)


def per_repeat(r: dict, lever: str, against: str) -> dict:
    """Per repeat, `against`'s seconds per step over `lever`'s: above 1, the lever is faster."""
    runs = r["runs"]
    ratios = [
        a["s_per_step"] / b["s_per_step"]
        for b in runs
        if b["lever"] == lever
        for a in runs
        if a["lever"] == against and a["repeat"] == b["repeat"]
    ]
    return spread(ratios)


def lever_rows(r: dict) -> list[tuple]:
    """LEVER_ROWS measured in the record; a row's `against` kept only where that lever was measured too."""
    measured = {run["lever"] for run in r["runs"]}
    return [
        (lever, against if against in measured else None, what, kept)
        for lever, against, what, kept in LEVER_ROWS
        if lever in measured
    ]


def step_levers_setup(path: Path, r: dict) -> str:
    return (
        f"`{r['command']}` ({r['repeats']} repeats, the lever order reversed every other repeat; each lever its "
        f"own process, {r['steps']} timed steps after one warm-up pass; {host_line(r['host'])}; tree "
        f"{r['host']['tree']}; {r['date'][:16].replace('T', ' ')}; raw figures in `{rel(path)}`; "
        f"{load_line(r['runs'])})"
    )


def step_levers_table() -> str:
    """One table per host kind, its newest record."""
    return "\n\n".join(step_levers_one(path, r) for path, r in step_levers())


def step_levers_one(path: Path, r: dict) -> str:
    lines = [
        f"**{host_kind(r['host'])}.** Per training step of the default recipe's model, {step_levers_setup(path, r)}:",
        "",
        "| lever | s/step, min / median / max | vs base, per repeat: median (range) | "
        "vs the lever it changes, per repeat | kept? |",
        "|---|---|---|---|---|",
    ]
    stats = {row["lever"]: row for row in r["results"]}
    has_base = any(run["lever"] == "base" for run in r["runs"])
    for lever, against, what, kept in lever_rows(r):
        base = per_repeat(r, lever, "base") if has_base and lever != "base" else None
        versus = ""
        if against:
            change = per_repeat(r, lever, against)
            versus = verdict(change)  # against base, the ratio is the column before
            if against != "base":
                versus = f"{change['median']:.2f}x over {against} ({change['min']:.2f}-{change['max']:.2f}x): {versus}"
        base_cell = ratio_cell(base) if base else ("1.00x" if lever == "base" else "–")
        lines.append(f"| {what} | {mmm(stats[lever]['s_per_step_spread'], 3)} | {base_cell} | {versus} | {kept} |")
    not_wins = [
        lever
        for lever, against, _, kept in lever_rows(r)
        if against and kept.startswith("yes") and per_repeat(r, lever, against)["min"] <= 1.0
    ]
    if not_wins:
        lines += [
            "",
            "Kept levers that do not measure as a win in every repeat on this host (against the lever they "
            f"change): {', '.join(f'`{lever}`' for lever in not_wins)}.",
        ]
    return "\n".join(lines)


# ---- long texts (bench/long_texts.py) ----


def long_texts() -> str:
    path, r = newest("long-texts")
    return "\n".join([*long_text_table(path, r), "", truncation_verdict(r)])


def long_text_table(path: Path, r: dict) -> list[str]:
    """A bench/long_texts.py record: its data, shared overrides and one row per config (over its seeds)."""
    d, lengths = r["data"], r["data"]["token_lengths"]["dev.tsv"]
    runs = {name: [x for x in r["runs"] if x["config"] == name] for name in r["configs"]}
    runs = {name: mine for name, mine in runs.items() if mine}
    lines = [
        f"`{r['command'].strip()}` ({host_line(r['host'])}; `{rel(path)}`): {d['pool_rows']:,} pool rows "
        f"({d['val_rows']} val), {d['test_rows']} test rows, each {d['rule']}; MiniLM tokens per pool text: "
        f"median {lengths['p50']}, p95 {lengths['p95']}, {100 * lengths['over_128']:.0f}% over 128. "
        f"Every run: {', '.join(f'`{o}`' for o in r['shared_overrides'] if not o.startswith('data.'))}. "
        f"Runs per config: {', '.join(f'{k} {len(v)}' for k, v in runs.items())} (seeds asked: "
        f"{', '.join(map(str, r['seeds']))}).",
        "",
        "| config | overrides | test accuracy | test macro-F1 | train s | `dvc repro` s |",
        "|---|---|---|---|---|---|",
    ]
    for name, mine in runs.items():
        acc, f1 = (_pm(*mean_std(x[key] for x in mine)) for key in ("test_accuracy", "test_macro_f1"))
        overrides = ", ".join(f"`{o}`" for o in r["configs"][name]) or "(params.yaml)"
        train = statistics.mean(x["train_seconds"] for x in mine)
        process = statistics.median(x["process_seconds"] for x in mine)
        lines.append(f"| {name} | {overrides} | {acc} | {f1} | {train:,.1f} | {process:,.0f} |")
    return lines


def paired(r: dict, a: str, b: str) -> dict:
    """Config `a` against `b` over the seeds both ran: per-seed test accuracy gaps (points, a minus b), their
    mean, epochs run and the median `dvc repro` seconds per config."""
    by = {(x["config"], x["seed"]): x for x in r["runs"]}
    seeds = sorted(seed for config, seed in by if config == a and (b, seed) in by)
    if not seeds:
        raise FigureError(f"no seed with both {a} and {b} in the record")
    gaps = [100 * (by[a, s]["test_accuracy"] - by[b, s]["test_accuracy"]) for s in seeds]
    return {
        "seeds": seeds,
        "gaps": gaps,
        "mean_gap": sum(gaps) / len(gaps),
        "epochs": {c: [by[c, s].get("epochs_run") for s in seeds] for c in (a, b)},
        "seconds": {c: statistics.median(by[c, s]["process_seconds"] for s in seeds) for c in (a, b)},
    }


def per_seed(gaps: list[float]) -> str:
    return " / ".join(f"{g:+.2f}" for g in gaps)


def truncation_winner(r: dict) -> tuple[str, list[float]]:
    """The truncation that scored higher test accuracy at equal max_length over the seeds both ran, and the
    per-seed gaps (head minus head_tail, points)."""
    gaps = paired(r, "head-128", "head_tail-128")["gaps"]
    return ("head" if sum(gaps) > 0 else "head_tail"), gaps


def truncation_verdict(r: dict) -> str:
    winner, gaps = truncation_winner(r)
    return (
        f"At equal length, `head` minus `head_tail` test accuracy: {sum(gaps) / len(gaps):+.2f} points on average "
        f"over {len(gaps)} seeds (per seed {per_seed(gaps)}), so `model.truncation: {winner}` is the default."
    )


def truncation_sentence() -> str:
    """README's inline figure: the two truncations' mean test accuracy at equal length, and TF-IDF's."""
    path, r = newest("long-texts")
    winner, gaps = truncation_winner(r)
    acc = {name: mean_std(x["test_accuracy"] for x in r["runs"] if x["config"] == name)[0] for name in r["configs"]}
    return (
        f"head {acc['head-128']:.4f}, head_tail {acc['head_tail-128']:.4f}, TF-IDF {acc['tfidf']:.4f} mean test "
        f"accuracy, so `{winner}` is the default, by {abs(sum(gaps) / len(gaps)):.2f} points (`{rel(path)}`)"
    )


# ---- small files: a faster recipe against today's (bench/long_texts.py --study small-files | min-steps) ----

SMALL_FILE_TOLERANCE = 0.5  # points of mean test accuracy (2 of the 400 test rows) within which a recipe is as good
# record kind -> (the faster config, today's config, the param they differ in, its value in each)
FASTER = {
    "small-files": ("patience-auto", "patience-null", "train.patience", "auto", None),
    "min-steps": ("min-steps-64", "min-steps-250", "train.min_steps", 64, 250),
}


def faster_verdict(kind: str, r: dict) -> dict:
    """The faster config against today's (`paired`), and the param value the record backs: the faster one's
    where it is as accurate (within SMALL_FILE_TOLERANCE) and faster, else today's."""
    fast, today, _, fast_value, today_value = FASTER[kind]
    v = paired(r, fast, today)
    backed = v["mean_gap"] >= -SMALL_FILE_TOLERANCE and v["seconds"][fast] < v["seconds"][today]
    return {**v, "backed": backed, "value": fast_value if backed else today_value}


def faster_block(kind: str) -> str:
    path, r = newest(kind)
    fast, today, param, fast_value, _ = FASTER[kind]
    v = faster_verdict(kind, r)
    epochs = {c: " / ".join(f"{e:g}" for e in runs) for c, runs in v["epochs"].items()}
    seconds = v["seconds"]
    verdict = (
        f"Over {len(v['seeds'])} seeds, `{fast}` minus `{today}` test accuracy: {v['mean_gap']:+.2f} points on "
        f"average (per seed {per_seed(v['gaps'])}); epochs run {epochs[fast]} against {epochs[today]}; "
        f"`dvc repro` to metrics {minutes(seconds[fast])} against {minutes(seconds[today])} (median), "
        f"{seconds[today] / seconds[fast]:.2f}x faster. "
        + (
            f"So `{param}: {fast_value}` is the default."
            if v["backed"]
            else f"So `{param}: {fast_value}` costs over {SMALL_FILE_TOLERANCE} points here: not the default."
        )
    )
    return "\n".join([*long_text_table(path, r), "", verdict])


def faster_sentence(kind: str) -> str:
    """README's inline figure: what the faster recipe does to a small file of long texts, and the verdict."""
    path, r = newest(kind)
    fast, today = FASTER[kind][:2]
    v = faster_verdict(kind, r)
    return (
        f"{minutes(v['seconds'][fast])} instead of {minutes(v['seconds'][today])} from `dvc repro` to metrics "
        f"(median of {len(v['seeds'])} seeds, {r['host']['cpu']}, {r['host']['cores']} cores), test accuracy "
        f"{v['mean_gap']:+.2f} points (`{rel(path)}`), so it is "
        f"{'the default' if v['backed'] else 'an option, not the default'}"
    )


def _pm(mean: float, std: float | None) -> str:
    return f"{mean:.4f} ± {std:.4f}" if std is not None else f"{mean:.4f} (one run)"


# ---- the blocks ----


BLOCKS: dict[str, Callable[[], str]] = {
    "default-study-first": default_study_first,
    "default-study": default_study_sentence,
    "default-study-accuracy": default_study_accuracy,
    "stock-recipe-table": stock_recipe_table,
    "step-levers": step_levers_table,
    "long-texts": long_texts,
    "truncation": truncation_sentence,
    **{kind: functools.partial(faster_block, kind) for kind in FASTER},
    **{f"{kind}-sentence": functools.partial(faster_sentence, kind) for kind in FASTER},
}
# inside a sentence: no line breaks around the text
INLINE = {"default-study-first", "default-study-accuracy", "truncation", *(f"{kind}-sentence" for kind in FASTER)}


# the records the blocks quote: every one must carry its evidence (tests/test_figures.py), and no other is kept
QUOTED: dict[str, Callable[[], list[tuple[Path, dict]]]] = {
    "default-study": lambda: [default_study()],
    "stock-recipe": stock_recipes,
    "step-levers": step_levers,
    "long-texts": lambda: [newest("long-texts")],
    **{kind: functools.partial(lambda kind: [newest(kind)], kind) for kind in FASTER},
}


def quoted_records() -> list[tuple[Path, dict]]:
    return [found for records_of in QUOTED.values() for found in records_of()]


def doc_paths() -> list[Path]:
    paths = []
    for pattern in DOCS:
        paths += sorted(ROOT.glob(pattern))
    return paths


def rendered(name: str, cache: dict) -> str:
    if name not in cache:
        text = BLOCKS[name]()
        cache[name] = text if name in INLINE else f"\n{text}\n"
    return cache[name]


def rewrite(text: str, where: str, cache: dict, problems: list[str]) -> str:
    """`text` with every block's body replaced by its rendering; what is wrong goes to `problems`."""

    def replace(match: re.Match) -> str:
        name = match.group("name")
        if name not in BLOCKS:
            problems.append(f"{where}: unknown figures block {name!r} (known: {', '.join(BLOCKS)})")
            return match.group(0)
        try:
            body = rendered(name, cache)
        except (FigureError, KeyError, TypeError) as err:
            problems.append(f"{where}: figures block {name!r} cannot be rendered: {err!r}")
            return match.group(0)
        return f"<!-- figures:{name} -->{body}<!-- /figures:{name} -->"

    return BLOCK.sub(replace, text)


def first_difference(old: str, new: str) -> str:
    for a, b in itertools.zip_longest(old.strip("\n").splitlines(), new.strip("\n").splitlines(), fillvalue=""):
        if a != b:
            return f"quotes {a.strip()[:160]!r}, its record gives {b.strip()[:160]!r}"
    return "the text around the figures differs (line breaks)"


def check_text(text: str, where: str, cache: dict | None = None) -> list[str]:
    """One line per block of `text` whose body differs from its record's rendering (empty: all current)."""
    cache = {} if cache is None else cache
    problems: list[str] = []
    new = rewrite(text, where, cache, problems)
    old_blocks = {m.start(): m for m in BLOCK.finditer(text)}
    for old, fresh in zip(old_blocks.values(), BLOCK.finditer(new), strict=True):
        if old.group("body") != fresh.group("body"):
            name = old.group("name")
            problems.append(
                f"{where}: figures block {name!r} differs from its record: "
                f"{first_difference(old.group('body'), fresh.group('body'))}"
            )
    return problems


def run(check: bool) -> list[str]:
    cache: dict = {}
    problems: list[str] = []
    seen: set[str] = set()
    for path in doc_paths():
        text = path.read_text(encoding="utf-8")
        seen.update(m.group("name") for m in BLOCK.finditer(text))
        if check:
            problems += check_text(text, rel(path), cache)
            continue
        new = rewrite(text, rel(path), cache, problems)
        if new != text:
            path.write_text(new, encoding="utf-8")
            print(f"rewrote {rel(path)}")
    problems += [
        f"figures block {name!r} appears in no doc ({', '.join(DOCS)})" for name in BLOCKS if name not in seen
    ]
    return problems


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 if a block differs from its record")
    args = ap.parse_args()
    problems = run(args.check)
    for line in problems:
        print(f"error: {line}", file=sys.stderr)
    if problems:
        sys.exit(1)


if __name__ == "__main__":
    main()
