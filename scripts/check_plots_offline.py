#!/usr/bin/env python3
"""Check that a `dvc plots show/diff` page renders with no network, in headless Chromium.

    dvc plots diff -o plots_html && python scripts/check_plots_offline.py plots_html/index.html --screenshot shot.png

Fails (exit 1) if the page has a <script>/<link>/<img> with a remote src/href, or if fewer vega
views render than the page embeds. Chromium runs with every host name resolving to nothing, so
a page that needs a CDN renders no view. Needs Chromium (Debian: apt-get install chromium).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REMOTE = re.compile(r"""<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)\s*=\s*["']?(?:https?:)?//[^"'\s>]*""", re.I)
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--virtual-time-budget=15000",
]


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    print("error: Chromium not found; install it (Debian/Ubuntu: apt-get install chromium)", file=sys.stderr)
    sys.exit(2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("html", type=Path, help="the page, e.g. dvc_plots/index.html")
    parser.add_argument("--screenshot", type=Path, help="also write a PNG of the page here")
    args = parser.parse_args()
    if not args.html.is_file():
        print(f"error: {args.html} not found", file=sys.stderr)
        return 2
    page = args.html.read_text(encoding="utf-8")
    remote = REMOTE.findall(page)
    if remote:
        print(f"FAIL: {args.html} loads remote resources: {remote[:3]}")
        return 1
    expected = len(re.findall(r"vegaEmbed\('#", page))
    browser = chromium()
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        flags = [*FLAGS, f"--user-data-dir={profile}"]
        dom = subprocess.run(
            [browser, *flags, "--dump-dom", args.html.resolve().as_uri()], capture_output=True, text=True, timeout=300
        ).stdout
        if args.screenshot:
            subprocess.run(
                [
                    browser,
                    *flags,
                    "--window-size=1300,2400",
                    f"--screenshot={args.screenshot.resolve()}",
                    args.html.resolve().as_uri(),
                ],
                capture_output=True,
                timeout=300,
            )
    rendered = len(re.findall(r'<(?:canvas|svg)[^>]*class="marks"', dom))
    print(f"{args.html}: {rendered} of {expected} vega views rendered offline, no remote script/link/img")
    if args.screenshot:
        print(f"screenshot: {args.screenshot}")
    return 0 if rendered >= expected else 1


if __name__ == "__main__":
    sys.exit(main())
