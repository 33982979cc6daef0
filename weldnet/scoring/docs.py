"""Every results table in README.md and docs/*.md, generated from the committed metrics and docs JSON.

    python -m weldnet.scoring.docs            # rewrite every generated region
    python -m weldnet.scoring.docs --check    # exit 1, naming each stale region and the fix

A page holds a generated table between two marker comments::

    <!-- generated:NAME -->
    ...written by this module; edit the source file, never the table...
    <!-- /generated:NAME -->

``REGIONS`` maps each NAME to its source files, the function that turns them into
Markdown, and the command that produces the sources. A region whose source is not
committed yet reads "Not measured yet: run <command>", never a made-up number. The
same region may appear on several pages. To add one: write its formatter (pure: parsed
sources in, Markdown out, in the module that owns the numbers), add a ``Region`` here,
and put the two markers on a page.

Sources and the shapes expected (JSON unless said):

- ``metrics/summary.md`` (Markdown, the evaluate stage's): the study table, then
  ``## Paired comparisons`` and the paired table (regions ``summary`` and ``paired``);
- ``docs/recipes_summary.md`` (Markdown): an evaluate stage's ``metrics/summary.md`` from the
  experiment with the newer recipes (regions ``recipes_summary`` and ``recipes_paired``);
- ``docs/digits_summary.md`` (Markdown): the ``metrics/summary.md`` of the study on handwritten
  digits (``benchmarks/digits_study.py --out``; regions ``digits_summary`` and ``digits_paired``);
- ``metrics/inspect.md`` (Markdown, the inspect stage's): the whole-photo certificate and its per-flag table
  (region ``inspect``);
- ``docs/imbalance_sweep.json``: ``[row]``, rows of ``weldnet.scoring.studies.sweep_rows``;
- ``docs/all_tasks.json``: ``[row]``, rows of ``weldnet.scoring.studies.task_rows``;
- ``docs/scale.json``: ``{"reference"|"scaled": {"sizes": {rig: photos}, "stages": [stage entry]}}``
  (``benchmarks/scale.py --json``), a stage entry being ``{"stage", "wall_s", "cpu_s",
  "peak_rss_mib", "peak_pss_mib", "load_start", "load_end", ...}`` as stage_times.py logs it;
- ``docs/audit_accuracy.json``: ``[{"data", "noise", "task", "truth", "estimate", "ci_low",
  "ci_high", "covered": "yes"|"no", "within": "yes"|"no", "issues", "auc", ...}]``, shares of
  the photos (``benchmarks/audit_accuracy.py --json``);
- ``docs/stage_times.json``: ``{"command", "total_s", "cpus", "cpu", "load_start": [1, 5, 15 min],
  "load_end": [...], "stages": [stage entry]}`` (``benchmarks/stage_times.py --json``), and
  ``docs/stage_times_avx2.json``, the same run on a CPU without AVX-512 or AMX;
- ``docs/contention.json``: ``{"cpus", "seconds", "load_before", "load_after", "target_ratio",
  "wait_policy", "workloads": {name: {"alone_steps_per_s", "beside_steps_per_s", "ratio"}}}``
  (``benchmarks/contention.py --json``);
- ``docs/train_speed.json``: ``{"cpus", "load_average_start", "load_average_end", "training": null or
  {"arch", "input_size", "device", "precision", "photos", "epochs", "batch_size", "val", "loop"|"bare":
  {"wall_s", "cpu_s"}, "ratio_wall", "ratio_cpu"}, "preprocess": null or {"photos", "size",
  "preprocess"|"pillow"|"startup": {"wall_s", "cpu_s"}, "ratio_wall", "ratio_cpu"}}``
  (``benchmarks/train_speed.py --json``);
- ``docs/gpu_check.json``: ``{"device", "steps": [{"name", "rc", "wall_s", "gpu_util_mean",
  "gpu_util_zero_share", "gpu_mem_max_mib"}], "default_study" and "tenth_scale": null or
  {"photos", "wall_s", "extrapolated_full_s" (tenth_scale only), "stages": [{"stage", "wall_s",
  "cpu_s", "peak_rss_mib"}]}}`` (``benchmarks/gpu_summary.py``'s, copied from its OUTDIR).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from weldnet.scoring.bench import (
    audit_accuracy_table,
    contention_markdown,
    gpu_check_markdown,
    scale_markdown,
    speed_ratios_markdown,
    stage_times_compare_markdown,
    stage_times_markdown,
)
from weldnet.scoring.studies import sweep_markdown, task_markdown

COMMAND = "python -m weldnet.scoring.docs"
PAIRED_HEADING = "## Paired comparisons"
MARKER = re.compile(r"<!-- generated:(?P<name>[A-Za-z0-9_-]+) -->\n(?P<body>.*?)<!-- /generated:(?P=name) -->",
                    re.DOTALL)
OPENING = re.compile(r"<!-- (/?)generated:([A-Za-z0-9_-]+) -->")


@dataclass(frozen=True)
class Region:
    """A generated table: its source files (relative to the repository), their formatter, and how to make them."""

    sources: tuple[str, ...]
    render: Callable[..., str]          # the parsed sources, in order, -> Markdown
    command: str                        # what produces the sources, for "Not measured yet"


def _summary_parts(summary: str) -> tuple[str, str]:
    study, sep, paired = summary.partition(PAIRED_HEADING)
    if not sep:
        raise ValueError(f"metrics/summary.md has no '{PAIRED_HEADING}' section; run dvc repro evaluate")
    return study.strip() + "\n", paired.strip() + "\n"


def _in_order(names: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(names))


def _sweep(rows: Sequence[Mapping]) -> str:
    # rows are sorted by share, then by the strategy order the study was collected with
    return sweep_markdown(rows, _in_order(r["strategy"] for r in rows))


def _tasks(rows: Sequence[Mapping]) -> str:
    return task_markdown(rows, _in_order(name for row in rows for name in row["results"]))


SWEEP = ("python -m benchmarks.experiments queue sweep && dvc queue start --jobs 1 && "
         "python -m benchmarks.experiments collect sweep")
TASKS = ("python -m benchmarks.experiments queue tasks && dvc queue start --jobs 1 && "
         "python -m benchmarks.experiments collect tasks")
RECIPES = ("dvc exp run -S 'study=[<the full study>,mixup,cutmix,remix,mislas,logit_adjusted_crt,weight_balancing]' "
           "&& cp metrics/summary.md docs/recipes_summary.md (docs/results.md#the-newer-recipes)")

DIGITS = "python benchmarks/digits_study.py --work /tmp/digits --out docs/digits_summary.md"

REGIONS: dict[str, Region] = {
    "summary": Region(("metrics/summary.md",), lambda s: _summary_parts(s)[0], "dvc repro"),
    "paired": Region(("metrics/summary.md",), lambda s: _summary_parts(s)[1], "dvc repro"),
    "inspect": Region(("metrics/inspect.md",), lambda s: s.strip() + "\n", "dvc repro inspect"),
    "recipes_summary": Region(("docs/recipes_summary.md",), lambda s: _summary_parts(s)[0], RECIPES),
    "recipes_paired": Region(("docs/recipes_summary.md",), lambda s: _summary_parts(s)[1], RECIPES),
    "digits_summary": Region(("docs/digits_summary.md",), lambda s: _summary_parts(s)[0], DIGITS),
    "digits_paired": Region(("docs/digits_summary.md",), lambda s: _summary_parts(s)[1], DIGITS),
    "imbalance_sweep": Region(("docs/imbalance_sweep.json",), _sweep, SWEEP),
    "all_tasks": Region(("docs/all_tasks.json",), _tasks, TASKS),
    "scale": Region(("docs/scale.json",), scale_markdown,
                    "python benchmarks/scale.py --work /path/with/40GB/free --json docs/scale.json"),
    "audit_accuracy": Region(("docs/audit_accuracy.json",), audit_accuracy_table,
                             "python -m benchmarks.audit_accuracy --json docs/audit_accuracy.json"),
    "stage_times": Region(("docs/stage_times.json",), stage_times_markdown,
                          "python benchmarks/stage_times.py --log times.jsonl --json docs/stage_times.json "
                          "-- dvc repro -f"),
    "stage_times_cpus": Region(("docs/stage_times.json", "docs/stage_times_avx2.json"), stage_times_compare_markdown,
                               "python benchmarks/stage_times.py --log times.jsonl --json "
                               "docs/stage_times_avx2.json -- dvc repro -f (on a CPU without AVX-512 or AMX)"),
    "contention": Region(("docs/contention.json",), contention_markdown,
                         "python benchmarks/contention.py --json docs/contention.json"),
    "train_speed": Region(("docs/train_speed.json",), speed_ratios_markdown,
                          "python benchmarks/train_speed.py --json docs/train_speed.json"),
    "gpu_check": Region(("docs/gpu_check.json",), gpu_check_markdown,
                        "bash benchmarks/gpu_check.sh gpu_check_out && cp gpu_check_out/gpu_check.json docs/ "
                        "(on a machine with a CUDA GPU)"),
}


class DocsError(ValueError):
    """A page or a source that cannot be read as expected; the message names the file and the fix."""


def _load(path: Path) -> object:
    text = path.read_text(encoding="utf-8")
    if path.suffix != ".json":
        return text
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise DocsError(f"{path}: not valid JSON ({err}); rerun the command that writes it") from err


def render(name: str, root: Path, regions: Mapping[str, Region] = REGIONS) -> str:
    """The Markdown of one region, from the sources under ``root``."""
    region = regions[name]
    paths = [root / source for source in region.sources]
    missing = [str(source) for source, path in zip(region.sources, paths) if not path.is_file()]
    if missing:
        return f"Not measured yet: run `{region.command}` (it writes {', '.join(missing)}).\n"
    return region.render(*(_load(path) for path in paths))


def _check_markers(text: str, page: str, regions: Mapping[str, Region]) -> None:
    opened: list[str] = []
    for match in OPENING.finditer(text):
        closing, name = match.group(1) == "/", match.group(2)
        if name not in regions:
            raise DocsError(f"{page}: unknown generated region '{name}'; valid: {', '.join(regions)}")
        if closing:
            if opened[-1:] != [name]:
                raise DocsError(f"{page}: '<!-- /generated:{name} -->' closes no open region")
            opened.pop()
        elif opened:
            raise DocsError(f"{page}: region '{name}' opens inside region '{opened[-1]}'; close that one first")
        else:
            opened.append(name)
    if opened:
        raise DocsError(f"{page}: region '{opened[0]}' is never closed; add '<!-- /generated:{opened[0]} -->'")


def regenerate(text: str, page: str, tables: Callable[[str], str],
               regions: Mapping[str, Region] = REGIONS) -> tuple[str, list[str]]:
    """``text`` with every generated region rewritten by ``tables(name)``, and the names of those that changed."""
    _check_markers(text, page, regions)
    stale: list[str] = []

    def replace(match: re.Match) -> str:
        name = match.group("name")
        body = "\n" + tables(name).strip("\n") + "\n\n"
        if match.group("body") != body:
            stale.append(name)
        return f"<!-- generated:{name} -->\n{body}<!-- /generated:{name} -->"

    return MARKER.sub(replace, text), stale


def pages(root: Path) -> list[Path]:
    """README.md and every page of docs/."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def run(root: Path, check: bool, regions: Mapping[str, Region] = REGIONS) -> list[tuple[str, str]]:
    """Rewrite (or, with ``check``, only compare) every page; returns (page, region) for each stale region."""
    cache: dict[str, str] = {}

    def tables(name: str) -> str:
        if name not in cache:
            cache[name] = render(name, root, regions)
        return cache[name]

    problems = []
    for path in pages(root):
        page = str(path.relative_to(root))
        text = path.read_text(encoding="utf-8")
        new, stale = regenerate(text, page, tables, regions)
        problems += [(page, name) for name in stale]
        if stale and not check:
            path.write_text(new, encoding="utf-8")
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if any region is stale")
    parser.add_argument("--root", type=Path, default=Path("."), help="the repository root (default: here)")
    args = parser.parse_args(argv)
    try:
        problems = run(args.root, args.check)
    except DocsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for page, name in problems:
        sources = ", ".join(REGIONS[name].sources)
        if args.check:
            print(f"{page}: generated region '{name}' differs from {sources}; run `{COMMAND}` "
                  "(edit the source, not the table)", file=sys.stderr)
        else:
            print(f"{page}: rewrote region '{name}' from {sources}")
    if not problems:
        print(f"every generated region is up to date ({len(pages(args.root))} pages)")
    return 1 if problems and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
