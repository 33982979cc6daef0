"""The pull-request report: this revision's metrics, params and plots against a base revision, in Markdown.

    python -m weldnet.scoring.report --base main --out report.md

Run it from the repository root after ``dvc repro``. It writes ``report.md`` and,
beside it, ``report_images/`` (the PNG plots that dvc.yaml declares, and a chart of
per-class accuracy at the base and now). The sections:

* headline: per strategy, per-class accuracy with its 95% interval, automation and
  collapse, base -> now (from ``dvc metrics diff --json --all``);
* ``dvc params diff --md`` and the summary tables the stages write (``*.md`` outs);
* the plots;
* the full ``dvc metrics diff --md``, folded.

The CML workflow (.github/workflows/cml.yaml) runs this same command and posts the
file as a pull-request comment, so the local report and the comment cannot drift.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from weldnet.core.config import DataError, run_stage
from weldnet.core.files import write_text

HEADLINE = (("per_class_accuracy", "per-class acc."), ("automation", "automation"),
            ("val_per_class_accuracy", "validation per-class acc."))
CI_LOW, CI_HIGH = "per_class_accuracy_ci_low", "per_class_accuracy_ci_high"
COMMENT_LIMIT = 60_000      # GitHub refuses comments over 65,536 characters


def run(command: Sequence[str], cwd: Path) -> str:
    """stdout of a git or dvc command; DataError with its last error line when it fails."""
    full = [sys.executable, "-m", "dvc", *command[1:]] if command[0] == "dvc" else list(command)
    done = subprocess.run(full, cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    if done.returncode != 0:
        lines = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()
        raise DataError(f"`{' '.join(command)}` failed: {lines[-1]}")
    return done.stdout


def strategy_metrics(diff: dict) -> dict[str, dict[str, tuple[object, object]]]:
    """{strategy: {metric: (old, new)}} from ``dvc metrics diff --json --all``, for every file whose keys
    look like ``<strategy>.per_class_accuracy``; strategies by validation per-class accuracy now, best first."""
    out: dict[str, dict[str, tuple[object, object]]] = {}
    for entries in diff.values():
        strategies = {key.rsplit(".", 1)[0] for key in entries if key.endswith(".per_class_accuracy")}
        for key, change in entries.items():
            name, _, metric = key.partition(".")
            if name in strategies and "." not in metric:
                out.setdefault(name, {})[metric] = (change.get("old"), change.get("new"))

    def rank(name: str) -> tuple[float, str]:
        value = _number(out[name].get("val_per_class_accuracy", (None, None))[1])
        return (-value if value is not None else math.inf, name)

    return {name: out[name] for name in sorted(out, key=rank)}


def table_or(markdown: str, empty: str) -> str:
    """A Markdown table from dvc, or ``empty`` when it has a header only."""
    rows = [line for line in markdown.strip().splitlines() if line.startswith("|")]
    return markdown.strip() if len(rows) > 2 else empty


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _change(old: object, new: object, digits: int = 3) -> str:
    """``0.500 → 0.575 (+0.075)``; one side missing: ``— → 0.575``; unchanged: ``0.575``."""
    a, b = _number(old), _number(new)
    show = (lambda v: "—" if v is None else f"{v:.{digits}f}")
    if a is not None and b is not None and math.isclose(a, b, abs_tol=0.5 * 10 ** -digits):
        return show(b)
    if a is not None and b is not None:
        return f"{show(a)} → {show(b)} ({b - a:+.{digits}f})"
    return f"{show(a)} → {show(b)}"


def _interval(low: object, high: object) -> str:
    a, b = _number(low), _number(high)
    return "—" if a is None or b is None else f"[{a:.3f}, {b:.3f}]"


def headline_table(metrics: dict[str, dict[str, tuple[object, object]]]) -> str:
    """Markdown table, one row per strategy: base -> now of the headline figures, with the intervals."""
    header = ["strategy", "per-class acc.", "95% interval (base)", "95% interval (now)", "automation",
              "collapsed seeds", "validation per-class acc."]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, m in metrics.items():
        missing = (None, None)
        old_ci = _interval(m.get(CI_LOW, missing)[0], m.get(CI_HIGH, missing)[0])
        new_ci = _interval(m.get(CI_LOW, missing)[1], m.get(CI_HIGH, missing)[1])
        collapsed = m.get("collapsed_seeds", missing)
        cells = [name, _change(*m.get("per_class_accuracy", missing)), old_ci, new_ci,
                 _change(*m.get("automation", missing)),
                 " → ".join(dict.fromkeys("—" if v is None else str(v) for v in collapsed)),
                 _change(*m.get("val_per_class_accuracy", missing))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def declared_images(pipeline: dict) -> list[str]:
    """The PNG files among dvc.yaml's top-level plots, in their order."""
    images = []
    for entry in pipeline.get("plots") or []:
        for path in ([entry] if isinstance(entry, str) else list(entry)):
            if str(path).lower().endswith(".png"):
                images.append(str(path))
    return images


def declared_summaries(pipeline: dict) -> list[str]:
    """The Markdown files that stages write (e.g. metrics/summary.md)."""
    found = []
    for stage in (pipeline.get("stages") or {}).values():
        for out in (stage.get("outs") or []) + (stage.get("metrics") or []):
            path = out if isinstance(out, str) else next(iter(out))
            if str(path).endswith(".md"):
                found.append(str(path))
    return found


def build_report(root: Path, base: str, out: Path) -> str:
    """Write ``out`` and its images folder; return the Markdown."""
    from weldnet.scoring.plotting import comparison_chart  # matplotlib only when a report is written

    base_sha = run(["git", "rev-parse", "--verify", "--quiet", f"{base}^{{commit}}"], root).strip()[:8]
    head_sha = run(["git", "rev-parse", "--short=8", "HEAD"], root).strip()
    pipeline = yaml.safe_load((root / "dvc.yaml").read_text(encoding="utf-8"))
    diff = json.loads(run(["dvc", "metrics", "diff", base, "--json", "--all"], root) or "{}")
    metrics_md = run(["dvc", "metrics", "diff", base, "--md"], root).strip()
    params_md = run(["dvc", "params", "diff", base, "--md"], root).strip()
    metrics = strategy_metrics(diff)

    images = out.parent / f"{out.stem}_images"
    shutil.rmtree(images, ignore_errors=True)
    images.mkdir(parents=True)
    link = (lambda name: f"{images.name}/{name}")
    parts = [f"## weldnet: this revision ({head_sha} + workspace) against `{base}` ({base_sha})\n"]
    if metrics:
        parts += ["### Per strategy\n", headline_table(metrics),
                  "\nBase → now. Per-class accuracy and automation on the test split, mean over seeds; the interval "
                  "is the 95% bootstrap interval of per-class accuracy; compare strategies and settings by the "
                  "validation column, not the test one.\n"]
        comparison_chart(metrics, base, images / "per_class_accuracy_vs_base.png")
        parts.append(f"\n![per-class accuracy at {base} and now]({link('per_class_accuracy_vs_base.png')})\n")
    parts += ["### Params changed\n", table_or(params_md, "No parameter changed.") + "\n"]
    for summary in declared_summaries(pipeline):
        if (root / summary).is_file():
            parts += [f"### `{summary}` (now)\n", (root / summary).read_text(encoding="utf-8").strip() + "\n"]
    plots = [p for p in declared_images(pipeline) if (root / p).is_file()]
    if plots:
        parts.append("### Plots (now)\n")
        for plot in plots:
            name = plot.replace("/", "_")
            shutil.copyfile(root / plot, images / name)
            parts.append(f"![{plot}]({link(name)})\n")
    full = ["<details><summary>All changed metrics (<code>dvc metrics diff --md</code>)</summary>\n",
            table_or(metrics_md, "No metric changed.") + "\n", "</details>\n"]
    text = "\n".join(parts + full)
    if len(text) > COMMENT_LIMIT:
        text = "\n".join(parts + [f"The full metrics diff is too long for a comment: run `dvc metrics diff {base}`.\n"])
    write_text(out, text)
    return text


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="main", help="git revision to compare against (default: main)")
    parser.add_argument("--out", default=Path("report.md"), type=Path, help="Markdown file to write")
    args = parser.parse_args(argv)
    root = Path.cwd()
    if not (root / "dvc.yaml").is_file():
        raise DataError("no dvc.yaml here; run the report from the repository root")
    try:
        run(["git", "rev-parse", "--verify", "--quiet", f"{args.base}^{{commit}}"], root)
    except DataError:
        raise DataError(f"base revision '{args.base}' not found; fetch it (git fetch origin {args.base}) "
                        "or pass --base <revision>") from None
    build_report(root, args.base, args.out)
    print(f"report: {args.out} and {args.out.parent / (args.out.stem + '_images')}/ against {args.base}")


if __name__ == "__main__":
    run_stage(main)
