"""Triage new photos with a bundle: clear what the certified threshold allows, send the rest to review.

    python -m weldnet.triage PHOTOS... --bundle triage --out triage.csv

PHOTOS are files, folders (searched recursively; hidden files skipped) or exports
(a folder with a ``labels.csv``, in the layout of the README). Every file found is
a row of the output, with its flaw score, its decision (``clear`` or ``review``)
and the reason. A file that cannot be read as a photo (missing, empty,
truncated, corrupt, not JPEG or PNG, too large) goes to review with its reason:
unreadable input is never cleared. With an export, photos of a rig the bundle was
not calibrated on go to review as well, and the achieved recall and automation
against ``labels.csv`` are reported.

Photos are decoded and normalised exactly as the pipeline's ingest and
preprocess stages do (weldnet.photos.images), in worker processes (weldnet.core.pool), in
blocks of ``--block`` photos: memory stays flat however many photos there are.
Besides the CSV it writes a small HTML page (``--sheet``) of the photos sent to
review, the most suspicious first, and prints a summary with the photos per second.
"""
from __future__ import annotations

import argparse
import base64
import heapq
import html
import io
import os
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import numpy as np
import pandas as pd
import torch

from weldnet.core.config import DataError, run_stage
from weldnet.core.files import csv_rows, is_printable, printable, write_text
from weldnet.core.flags import FLAGS, parse_flags
from weldnet.core.pool import ordered_map
from weldnet.core.progress import Progress
from weldnet.photos.images import ImageRejected, load_resized, open_normalised
from weldnet.photos.ingest import check_rows, decode_labels, normalise_image_path, parse_label_table, rejection_summary
from weldnet.photos.tasks import assign_classes
from weldnet.triage.bundle import Bundle, network_logits, read_bundle
from weldnet.triage.certify import clopper_pearson_interval
from weldnet.triage.inspect import NO_FLAG, InspectRule, is_inspection, photo_decision

LABELS = "labels.csv"
COLUMNS: tuple[str, ...] = ("image", "score", "decision", "reason", "class", "label")
CLEAR, REVIEW = "clear", "review"
OTHER_RIG = "other_rig"
UNREADABLE_NAME = "unreadable_name"
SHEET_THUMB = 160
SHOWN_REJECTED = 10


@dataclass
class Item:
    """One input file: what the CSV calls it, where to read it, and what labels.csv says of it."""

    image: str
    path: str | None
    problem: str | None = None       # known before decoding: goes to review with this reason
    category: str | None = None      # the problem's short key, counted in the summary
    label: int | None = None         # the task's class from labels.csv
    rig: str | None = None
    flags: tuple[str, ...] | None = None   # the flags labels.csv gives it (inspection bundles)
    named: tuple[str, ...] = ()      # every flag name its labels.csv row writes, known or not (inspection bundles)


@dataclass
class Row:
    image: str
    score: float | None
    decision: str
    reason: str
    klass: str = ""
    label: str = ""
    category: str | None = None      # set when the photo could not be triaged
    path: str | None = None


# ------------------------------------------------------------------ finding the photos
def _files_under(root: Path) -> list[str]:
    """Root-relative POSIX paths of every non-hidden file under ``root``, sorted (symlinked folders not followed)."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        rel = Path(folder).relative_to(root)
        found.extend((rel / name).as_posix() for name in sorted(files) if not name.startswith("."))
    return found


def _label_classes(entries: Sequence, bundle: Bundle) -> list[int]:
    flags = pd.DataFrame([[int(f in e.flags) for f in FLAGS] for e in entries], columns=list(FLAGS), dtype=np.int8)
    return assign_classes(flags, bundle.task).tolist() if len(entries) else []


def export_items(root: Path, bundle: Bundle, notes: list[str]) -> list[Item]:
    """The files of an export, labelled from its labels.csv where a usable row names them."""
    try:
        rows = parse_label_table(decode_labels((root / LABELS).read_bytes()))
    except (DataError, OSError) as exc:
        notes.append(f"{root / LABELS}: {exc}; its photos are triaged without labels")
        return [Item(str(root / rel), str(root / rel)) for rel in _files_under(root) if rel != LABELS]
    entries, rejections = check_rows(rows)
    if rejections:
        notes.append(f"{root / LABELS}: {rejection_summary(rejections)} (rows unusable as labels; their photos are "
                     "still triaged), e.g. line " + f"{rejections[0].line}: {rejections[0].reason}")
    labels = {e.image: (e, c) for e, c in zip(entries, _label_classes(entries, bundle))}
    named = _named_flags(rows) if is_inspection(bundle.info) else {}
    items = []
    for rel in _files_under(root):
        if rel == LABELS:
            continue
        entry, label = labels.pop(rel, (None, None))
        items.append(Item(str(root / rel), str(root / rel), label=label, rig=entry.rig if entry else None,
                          flags=entry.flags if entry else None, named=named.get(rel, ())))
    for rel, (entry, label) in labels.items():       # rows naming a file that is not there
        items.append(Item(str(root / rel), None, f"file not found (named by {LABELS} line {entry.line})",
                          "missing_file", label, entry.rig))
    return items


def _named_flags(rows: Sequence) -> dict[str, tuple[str, ...]]:
    """Every flag name each labels.csv row writes (canonical, or as written when unknown), by photo path."""
    named: dict[str, tuple[str, ...]] = {}
    for row in rows:
        try:
            image = normalise_image_path(row.image)
        except ValueError:
            continue
        known, unknown = parse_flags(row.flags)
        named[image] = tuple(dict.fromkeys(named.get(image, ()) + tuple(known) + tuple(unknown)))
    return named


def collect(photos: Sequence[str], bundle: Bundle, notes: list[str]) -> list[Item]:
    """Every input file once, in argument order; a missing argument is an item with its problem."""
    items, seen = [], set()
    for arg in photos:
        path = Path(arg)
        if path.is_dir():
            found = export_items(path, bundle, notes) if (path / LABELS).is_file() else \
                [Item(str(path / rel), str(path / rel)) for rel in _files_under(path)]
        elif path.exists():
            found = [Item(arg, arg)]
        else:
            found = [Item(arg, None, "file not found", "missing_file")]
        for item in found:
            if not is_printable(item.image):
                item = unreadable_name(item)
            key = os.path.realpath(item.path or item.image)
            if key not in seen:
                seen.add(key)
                items.append(item)
    return items


def unreadable_name(item: Item) -> Item:
    """An item whose file name is not UTF-8: reviewed by hand, shown with ``\\xNN`` for the bytes that are not."""
    return Item(printable(item.image), item.path, "file name is not UTF-8 (shown with \\xNN for its bytes); "
                "rename it to UTF-8 (e.g. convmv -f latin1 -t utf8 --notest) to triage it", UNREADABLE_NAME,
                item.label, item.rig)


# ------------------------------------------------------------------ decoding and scoring
def decode(job: tuple[str, int, int]) -> np.ndarray | tuple[str, str]:
    """(path, size, max_pixels) -> uint8 (size, size, 3) as preprocess makes it, or (reason, category)."""
    path, size, max_pixels = job
    try:
        if os.path.isfile(path) and os.path.getsize(path) == 0:
            return "empty file (0 bytes)", "unreadable_image"
        return load_resized(path, size, max_pixels)
    except ImageRejected as exc:
        return str(exc), exc.category
    except Exception as exc:  # noqa: BLE001 - a photo that fails in any way is reviewed, never a crash
        return f"cannot read the photo ({exc or type(exc).__name__})", "unreadable_image"


def blocks(items: Iterable[Item], size: int) -> Iterator[list[Item]]:
    """``items`` in lists of at most ``size``, pulled lazily: only one block is held at a time."""
    block: list[Item] = []
    for item in items:
        block.append(item)
        if len(block) == size:
            yield block
            block = []
    if block:
        yield block


def triage(items: Iterable[Item], bundle: Bundle, *, workers: int, block: int = 256,
           batch: int = 64) -> Iterator[Row]:
    """One row per item, in order: decoded in ``workers`` processes, scored, decided against the threshold."""
    classes, threshold, rigs = bundle.classes, bundle.threshold, set(bundle.rigs)
    rule = InspectRule.of(bundle.info, bundle.certificate) if is_inspection(bundle.info) else None
    for chunk in blocks(items, block):
        jobs = [(item.path, bundle.photo_size, bundle.max_pixels) for item in chunk if item.problem is None]
        decoded = iter(list(ordered_map(decode, jobs, workers, max_chunk=16)))
        results = [None if item.problem is not None else next(decoded) for item in chunk]
        readable = [r for r in results if isinstance(r, np.ndarray)]
        if rule is not None:            # whole-photo triage: the any-flaw score, and the flags over the threshold
            scores, over = rule.decide(network_logits(bundle.network, np.stack(readable), batch, bundle.device)
                                       if readable else np.zeros((0, len(rule.flags))))
        else:
            scores, probs = bundle.scores(np.stack(readable), batch) if readable else (np.zeros(0), np.zeros((0, 0)))
        k = 0
        for item, result in zip(chunk, results):
            label = classes[item.label] if item.label is not None else ""
            if rule is not None:
                label = "" if item.flags is None else ";".join(item.flags) or NO_FLAG
            if item.problem is not None or not isinstance(result, np.ndarray):
                reason, category = (item.problem, item.category) if item.problem is not None else result
                yield Row(item.image, None, REVIEW, reason, "", label, category, item.path)
                continue
            score = float(scores[k])
            klass = ";".join(over[k]) if rule is not None else classes[int(probs[k].argmax())]
            k += 1
            if item.rig is not None and item.rig not in rigs:
                yield Row(item.image, score, REVIEW, f"rig {item.rig}: the bundle is calibrated on "
                          f"{', '.join(sorted(rigs))} photos only", klass, label, OTHER_RIG, item.path)
            elif rule is not None:
                cleared, reason, category = photo_decision(score, over[k - 1], rule.unmodelled(item.named), threshold)
                yield Row(item.image, score, CLEAR if cleared else REVIEW, reason, klass, label, category, item.path)
            elif score < threshold:
                yield Row(item.image, score, CLEAR, f"flaw score below the certified threshold {threshold:.6g}",
                          klass, label, None, item.path)
            else:
                why = ("the bundle clears no photo (see its triage.json)" if threshold <= 0 else
                       f"flaw score at or above the certified threshold {threshold:.6g}")
                yield Row(item.image, score, REVIEW, why, klass, label, None, item.path)


# ------------------------------------------------------------------ the summary and the review page
@dataclass
class Tally:
    """What the summary and the review page need, in memory bounded by ``shown``, whatever the photo count."""

    shown: int = 60
    photos: int = 0
    cleared: int = 0
    review: int = 0
    rejected: Counter = field(default_factory=Counter)
    rejected_examples: list[Row] = field(default_factory=list)
    labelled: int = 0                # labelled photos of the bundle's rigs (or of no known rig)
    labelled_cleared: int = 0
    other_rigs: int = 0              # labelled photos of other rigs: left out of the recall
    flawed: int = 0
    flawed_caught: int = 0
    suspicious: list = field(default_factory=list)        # min-heap of (score, order, row)

    def add(self, row: Row, flawed: bool | None) -> None:
        self.photos += 1
        if row.decision == CLEAR:
            self.cleared += 1
        else:
            self.review += 1
        if row.category is not None:
            self.rejected[row.category] += 1
            if len(self.rejected_examples) < self.shown:
                self.rejected_examples.append(row)
        if flawed is not None and row.category == OTHER_RIG:
            self.other_rigs += 1
        elif flawed is not None:
            self.labelled += 1
            self.labelled_cleared += row.decision == CLEAR
            self.flawed += flawed
            self.flawed_caught += flawed and row.decision == REVIEW
        if row.decision == REVIEW and row.score is not None and row.category is None:
            entry = (row.score, -self.photos, row)
            if len(self.suspicious) < self.shown:
                heapq.heappush(self.suspicious, entry)
            elif entry > self.suspicious[0]:
                heapq.heapreplace(self.suspicious, entry)

    @property
    def recall(self) -> float:
        """Share of the labelled flawed photos sent to review (NaN without any)."""
        return self.flawed_caught / self.flawed if self.flawed else float("nan")

    @property
    def automation(self) -> float:
        """Share of the labelled photos cleared (NaN without any)."""
        return self.labelled_cleared / self.labelled if self.labelled else float("nan")

    def most_suspicious(self) -> list[Row]:
        return [row for _, _, row in sorted(self.suspicious, key=lambda e: (-e[0], -e[1]))]


def _thumbnail(row: Row, max_pixels: int) -> str:
    try:
        im = open_normalised(row.path, max_pixels, draft_size=(SHEET_THUMB, SHEET_THUMB))
    except ImageRejected:
        return ""
    im.thumbnail((SHEET_THUMB, SHEET_THUMB))
    buffer = io.BytesIO()
    im.save(buffer, "JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def review_page(tally: Tally, bundle: Bundle, title: str) -> str:
    """A self-contained HTML page: the reviewed photos with the highest flaw scores, then the unreadable ones."""
    cells = []
    for row in tally.most_suspicious():
        src = _thumbnail(row, bundle.max_pixels)
        img = f'<img src="{src}" alt="">' if src else "<div class=missing>(photo changed or gone)</div>"
        label = f"<br>labelled {html.escape(row.label)}" if row.label else ""
        cells.append(f"<figure>{img}<figcaption><b>{row.score:.4f}</b> most likely {html.escape(row.klass)}{label}"
                     f"<br>{html.escape(row.image)}</figcaption></figure>")
    bad = "".join(f"<tr><td>{html.escape(r.image)}</td><td>{html.escape(r.reason)}</td></tr>"
                  for r in tally.rejected_examples)
    more_bad = sum(tally.rejected.values()) - len(tally.rejected_examples)
    scored_review = tally.review - sum(tally.rejected.values())
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:1em}} figure{{display:inline-block;width:{SHEET_THUMB + 20}px;
vertical-align:top;margin:4px}} figcaption{{font-size:11px;word-break:break-all}}
td{{font-size:12px;padding:2px 8px}} .missing{{width:{SHEET_THUMB}px;height:90px;background:#eee}}</style></head>
<body><h1>{html.escape(title)}</h1>
<p>{tally.photos} photos: {tally.cleared} cleared, {tally.review} sent to review. Threshold
{bundle.threshold:.6g} on the flaw score 1 - p({html.escape(bundle.classes[0])}).</p>
<h2>Sent to review, most suspicious first ({len(cells)} of {scored_review} scored)</h2>
{''.join(cells) or '<p>none</p>'}
<h2>Not triaged ({sum(tally.rejected.values())}): reviewed by hand</h2>
<table>{bad or '<tr><td>none</td></tr>'}</table>
{f'<p>and {more_bad} more: see the CSV.</p>' if more_bad > 0 else ''}
</body></html>
"""


def summary(tally: Tally, seconds: float, bundle: Bundle) -> list[str]:
    """The lines printed at the end of a run."""
    def share(n: int) -> str:
        return f"{n / tally.photos:.1%}" if tally.photos else "-"

    rejected = sum(tally.rejected.values())
    lines = [f"triage: {tally.photos} photos in {seconds:.1f} s ({tally.photos / max(seconds, 1e-9):.1f} photos/s)",
             f"  cleared:   {tally.cleared} ({share(tally.cleared)})",
             f"  review:    {tally.review} ({share(tally.review)}), of which {rejected} not triaged"]
    if rejected:
        lines.append("  not triaged: " + ", ".join(f"{n} {c}" for c, n in tally.rejected.most_common()))
        for row in tally.rejected_examples[:SHOWN_REJECTED]:
            lines.append(f"    {row.image}: {row.reason}")
        if rejected > SHOWN_REJECTED:
            lines.append(f"    ... and {rejected - SHOWN_REJECTED} more (see the CSV)")
    if tally.labelled:
        cert = bundle.certificate
        if tally.flawed:
            low, high = clopper_pearson_interval(tally.flawed_caught, tally.flawed, cert["confidence"])
            recall = (f"{tally.flawed_caught} of {tally.flawed} flawed photos sent to review: recall "
                      f"{tally.flawed_caught / tally.flawed:.3f} [{low:.3f}, {high:.3f}]")
        else:
            recall = "no flawed photo among them"
        others = f" ({tally.other_rigs} of other rigs left out)" if tally.other_rigs else ""
        lines.append(f"labels: {tally.labelled} labelled photos{others}; {recall}; automation "
                     f"{tally.automation:.1%} (target recall {cert['target_recall']:.0%} at "
                     f"{cert['confidence']:.0%} confidence)")
    elif tally.other_rigs:
        lines.append(f"labels: all {tally.other_rigs} labelled photos are of rigs the bundle is not calibrated on")
    if bundle.threshold <= 0 or is_inspection(bundle.info):
        lines.append(f"note: {bundle.certificate['note']}")
    lines += [f"note: {bundle.certificate[k]}" for k in ("uncertified_note", "not_modelled_note")
              if bundle.certificate.get(k)]
    return lines


# ------------------------------------------------------------------ the command
def _score_text(score: float | None) -> str:
    return "" if score is None else format(score, ".9g")


def run(photos: Sequence[str], bundle_dir: Path, out: Path, *, sheet: Path | None = None, workers: int = 0,
        block: int = 256, shown: int = 60, device: str = "auto", stream: TextIO | None = None) -> Tally:
    """Triage ``photos`` with the bundle at ``bundle_dir``; write the CSV and the review page; return the tally."""
    stream = stream or sys.stdout
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device == "cuda" and not torch.cuda.is_available():
        raise DataError("--device cuda but no CUDA GPU is visible; use --device auto or cpu")
    bundle = read_bundle(bundle_dir, device)
    notes: list[str] = []
    items = collect(photos, bundle, notes)
    if not items:
        raise DataError(f"no file found in {', '.join(photos)}; give photos, folders of photos or an export")
    for line in notes:
        print(f"note: {line}", file=stream)
    tally = Tally(shown=shown)
    started = time.monotonic()
    with csv_rows(out) as writer, Progress(total=len(items), desc="triage", unit="photo") as bar:
        writer.writerow(COLUMNS)
        for row in triage(items, bundle, workers=workers, block=block):
            writer.writerow([row.image, _score_text(row.score), row.decision, row.reason, row.klass, row.label])
            tally.add(row, None if not row.label else row.label != bundle.classes[0])
            bar.update(1)
    seconds = time.monotonic() - started
    sheet = sheet or out.with_suffix(".html")
    write_text(sheet, review_page(tally, bundle, f"Triage with {bundle.info['strategy']}: photos sent to review"))
    for line in summary(tally, seconds, bundle):
        print(line, file=stream)
    print(f"wrote {out} and {sheet}", file=stream)
    return tally


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m weldnet.triage", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("photos", nargs="+", metavar="PHOTOS", help="photo files, folders, or exports with labels.csv")
    parser.add_argument("--bundle", required=True, type=Path, help="bundle folder written by the bundle stage")
    parser.add_argument("--out", required=True, type=Path, help="CSV: image,score,decision,reason,class,label")
    parser.add_argument("--sheet", type=Path, default=None, help="HTML page of the reviewed photos "
                        "(default: the CSV's name with .html)")
    parser.add_argument("--shown", type=int, default=60, help="photos shown on the page (default 60)")
    parser.add_argument("--workers", type=int, default=0, help="decoding processes; 0: one per CPU (default)")
    parser.add_argument("--block", type=int, default=256, help="photos decoded and held at a time (default 256)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where the network runs (default auto: CUDA when present)")
    args = parser.parse_args(argv)
    if args.workers < 0:
        parser.error("--workers must be >= 1, or 0 for one per CPU")
    if args.block < 1 or args.shown < 0:
        parser.error("--block must be >= 1 and --shown >= 0")
    try:
        run(args.photos, args.bundle, args.out, sheet=args.sheet, workers=args.workers, block=args.block,
            shown=args.shown, device=args.device)
    except BrokenPipeError:           # the summary piped into `head`: the CSV and the page are written
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


if __name__ == "__main__":
    run_stage(main)
