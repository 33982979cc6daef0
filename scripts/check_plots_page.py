"""Check the page `dvc plots show` writes: local scripts only, and every chart drawn by a real browser, offline.

    python scripts/check_plots_page.py                    # dvc plots show -o dvc_plots, then check it
    python scripts/check_plots_page.py --page dvc_plots/index.html --screenshot shot.png

Steps, each one a reason to fail (exit code 1, one line):

1. the page loads no script, style or image from the network (no ``http(s)://``
   or protocol-relative ``src``/``href``);
2. headless Chromium (Debian's ``chromium`` package), with every host name made
   unresolvable, runs the page; each vega chart must end up drawn (a
   ``<canvas class="marks">`` or ``<svg class="marks">`` in its div), with no
   JavaScript error on the console;
3. a full-page screenshot is written, and must not be blank.

Without Chromium, ``--static`` runs step 1 alone (what CI does when the browser is
missing); otherwise a missing browser is an error, exit code 3.
"""
from __future__ import annotations

import argparse
import html.parser
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
REMOTE = re.compile(r"^(?:[a-z][a-z0-9+.-]*:)?//", re.IGNORECASE)
LOCAL_SCHEMES = ("data:", "blob:", "file:")


class _Refs(html.parser.HTMLParser):
    """Collects src/href of scripts, links and images, and the ids of the divs vegaEmbed fills."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[tuple[str, str]] = []
        self.images = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        for key in ("src", "href"):
            if values.get(key) and tag in ("script", "link", "img", "iframe", "source", "embed"):
                self.refs.append((tag, values[key] or ""))
        if tag == "img":
            self.images += 1


def static_check(page: str) -> tuple[int, int]:
    """(vega charts, images) of the page; SystemExit naming the first reference to the network."""
    refs = _Refs()
    refs.feed(page)
    for tag, ref in refs.refs:
        if REMOTE.match(ref) and not ref.lower().startswith(LOCAL_SCHEMES):
            sys.exit(f"FAIL: <{tag}> loads {ref} from the network; the page must work offline")
    charts = len(re.findall(r"vegaEmbed\('#", page))
    if charts and "vega-embed" not in page:
        sys.exit("FAIL: the page calls vegaEmbed but carries no vega-embed script; "
                 "set plots.html_template (see .dvc/config)")
    return charts, refs.images


def find_browser() -> str | None:
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


def browser(binary: str, page: Path, extra: list[str], profile: str, timeout: int) -> subprocess.CompletedProcess:
    args = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--no-first-run", "--disable-sync", f"--user-data-dir={profile}",
            "--host-resolver-rules=MAP * ~NOTFOUND", "--enable-logging=stderr", "--v=0",
            "--virtual-time-budget=20000", *extra, page.resolve().as_uri()]
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout)


def browser_check(binary: str, page: Path, charts: int, screenshot: Path, width: int, timeout: int) -> str:
    with tempfile.TemporaryDirectory() as profile:
        dom = browser(binary, page, ["--dump-dom"], profile, timeout)
    errors = [line for line in dom.stderr.splitlines()
              if "CONSOLE" in line and re.search(r"error|uncaught|failed", line, re.IGNORECASE)]
    if errors:
        sys.exit(f"FAIL: JavaScript error in {page}: {errors[0].strip()[:300]}")
    drawn = len(re.findall(r'<(?:canvas|svg)[^>]*class="marks"', dom.stdout))
    if drawn < charts:
        sys.exit(f"FAIL: {drawn} of {charts} vega charts drawn in {page}; open it in a browser to see why")
    height = page_height(page, charts)
    with tempfile.TemporaryDirectory() as profile:
        shot = browser(binary, page, [f"--screenshot={screenshot.resolve()}", f"--window-size={width},{height}",
                                      "--hide-scrollbars"], profile, timeout)
    if not screenshot.is_file():
        sys.exit(f"FAIL: no screenshot written: {shot.stderr.strip().splitlines()[-1:]}")
    from PIL import Image, ImageChops

    with Image.open(screenshot) as image:
        grey = image.convert("L")
        inked = sum(grey.histogram()[:240]) / (grey.width * grey.height)
        box = ImageChops.invert(grey).point(lambda v: 255 if v > 15 else 0).getbbox()
        if box is not None:                  # the window was sized generously: cut the blank page end
            image.crop((0, 0, grey.width, min(grey.height, box[3] + 24))).save(screenshot)
            height = min(grey.height, box[3] + 24)
    if inked < 0.01:
        sys.exit(f"FAIL: the screenshot {screenshot} is blank ({inked:.2%} of pixels not white)")
    return f"{drawn} vega charts drawn, screenshot {screenshot} ({width}x{height}, {inked:.1%} of pixels inked)"


def page_height(page: Path, charts: int) -> int:
    """A window height that holds the whole page: about 700 px per vega chart, each image's own height."""
    from PIL import Image

    text = page.read_text(encoding="utf-8")
    height = 200 + 700 * charts
    for src in re.findall(r'<img[^>]*src="([^"]+)"', text):
        path = page.parent / src
        height += 160 + (Image.open(path).height if path.is_file() else 800)
    return height


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--page", type=Path, help="an existing page; default: run `dvc plots show -o dvc_plots`")
    parser.add_argument("--screenshot", type=Path, help="default: screenshot.png beside the page")
    parser.add_argument("--static", action="store_true", help="only check the page's references (no browser)")
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--timeout", type=int, default=180)
    args = parser.parse_args()
    page = args.page
    if page is None:
        subprocess.run([sys.executable, "-m", "dvc", "plots", "show", "-o", "dvc_plots"], check=True)
        page = Path("dvc_plots/index.html")
    if not page.is_file():
        sys.exit(f"FAIL: {page} not found")
    charts, images = static_check(page.read_text(encoding="utf-8"))
    summary = f"{page}: {charts} vega charts and {images} images, no network reference"
    if args.static:
        print(summary)
        return
    binary = find_browser()
    if binary is None:
        print(f"{summary}; no Chromium found (apt-get install chromium), browser check not run", file=sys.stderr)
        sys.exit(3)
    screenshot = args.screenshot or page.with_name("screenshot.png")
    print(f"{summary}; {browser_check(binary, page, charts, screenshot, args.width, args.timeout)}")


if __name__ == "__main__":
    main()
