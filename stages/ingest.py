"""Stage ingest: check a photo export and write the manifest, the rejected rows and per-rig counts.

Reads <export>/labels.csv (image,rig,flags), decodes every photo it names in
worker processes (ingest.workers) and writes:

* the manifest: accepted photos, in labels.csv order, with upright size,
  SHA-256 and one 0/1 column per Table 1 flag;
* rejected.csv: every bad row or file with the reason and how to fix it;
* metrics: photos and flag counts per rig (Table 1 for this data) and the
  rejection counts by category.

With ingest.strict: true any rejection fails the stage (after rejected.csv is written).
"""
from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

from stages.validate import load_checked_params
from weldnet.config import DataError, ParamError, build, check_range, run_stage, section
from weldnet.images import ImageRejected, PhotoInfo, inspect_photo
from weldnet.ingest import (Entry, Rejection, build_manifest, check_rows, decode_labels, ingest_metrics,
                            listed_paths, parse_label_table, rejection_summary, rejection_table, unlisted_photos)

LABELS = "labels.csv"


@dataclass(frozen=True)
class IngestParams:
    max_pixels: int = 89_478_485  # Pillow's own decompression-bomb default
    strict: bool = False
    workers: int = 2

    def validate(self, where: str) -> None:
        check_range(self.max_pixels, f"{where}.max_pixels", low=1)
        if self.workers < 0:
            raise ParamError(f"{where}.workers = {self.workers} must be >= 1, or 0 for one per CPU")


def read_photo(root: str, image: str, max_pixels: int) -> PhotoInfo | Rejection:
    """Locate ``image`` inside the export (no escape through symlinks), read and decode it."""
    path = os.path.join(root, image)
    real = os.path.realpath(path)
    if os.path.commonpath([real, os.path.realpath(root)]) != os.path.realpath(root):
        return Rejection(image, "symlink points outside the export folder; copy the photo into the export",
                         "unsafe_path")
    if not os.path.exists(real):
        return Rejection(image, "file not found in the export; fix the path or remove the row", "missing_file")
    if not os.path.isfile(real):
        return Rejection(image, "not a file (a folder or device); fix the path or remove the row", "missing_file")
    try:
        with open(real, "rb") as fh:
            data = fh.read()
        return inspect_photo(data, max_pixels)
    except ImageRejected as exc:
        return Rejection(image, str(exc), exc.category)
    except OSError as exc:
        return Rejection(image, f"cannot read the file ({exc.strerror or exc})", "unreadable_image")


def _read_photo_task(task: tuple[str, str, int]) -> PhotoInfo | Rejection:
    return read_photo(*task)


def read_photos(root: Path, entries: Sequence[Entry], max_pixels: int,
                workers: int) -> list[PhotoInfo | Rejection]:
    """read_photo for every entry, in order, spread over ``workers`` processes (1 = in this process)."""
    tasks = [(str(root), entry.image, max_pixels) for entry in entries]
    if workers <= 1 or len(tasks) < 2:
        return [_read_photo_task(t) for t in tasks]
    chunksize = max(1, min(64, len(tasks) // (workers * 8)))
    with get_context().Pool(workers) as pool:
        return list(pool.imap(_read_photo_task, tasks, chunksize=chunksize))


def photos_on_disk(root: Path) -> list[str]:
    """Export-relative POSIX paths of every file under the export (symlinked folders not followed)."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        rel = Path(folder).relative_to(root)
        found.extend((rel / name).as_posix() for name in files)
    return found


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--export", required=True, type=Path, help="folder holding labels.csv and the photos")
    parser.add_argument("--manifest", required=True, type=Path)
    parser.add_argument("--rejected", required=True, type=Path)
    parser.add_argument("--metrics", required=True, type=Path)
    args = parser.parse_args(argv)
    params = build(IngestParams, section(load_checked_params(), "ingest"), "ingest")

    labels = args.export / LABELS
    if not args.export.is_dir():
        raise DataError(f"export folder {args.export} not found; set data.export in params.yaml "
                        f"to the folder holding {LABELS} and the photos")
    if not labels.is_file():
        raise DataError(f"{labels} not found; the export needs a {LABELS} with columns image,rig,flags")
    try:
        data = labels.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {labels} ({exc.strerror}); check its permissions") from None
    rows = parse_label_table(decode_labels(data))

    entries, rejections = check_rows(rows)
    results = read_photos(args.export, entries, params.max_pixels, params.workers or os.cpu_count() or 1)
    photos = {e.image: r for e, r in zip(entries, results) if isinstance(r, PhotoInfo)}
    rejections += [Rejection(r.image, r.reason, r.category, e.line)
                   for e, r in zip(entries, results) if isinstance(r, Rejection)]
    rejections += unlisted_photos(photos_on_disk(args.export), listed_paths(rows))
    manifest = build_manifest(entries, photos)

    for path in (args.manifest, args.rejected, args.metrics):
        path.parent.mkdir(parents=True, exist_ok=True)
    rejection_table(rejections).to_csv(args.rejected, index=False)
    args.metrics.write_text(json.dumps(ingest_metrics(manifest, rejections), indent=2) + "\n")
    if rejections and params.strict:
        args.manifest.unlink(missing_ok=True)
        raise DataError(f"ingest.strict is on and {rejection_summary(rejections)}; see {args.rejected}, "
                        "fix them or set ingest.strict: false")
    if manifest.empty:
        args.manifest.unlink(missing_ok=True)
        raise DataError(f"no photo accepted from {labels} ({len(rejections)} rejected); see {args.rejected}")
    manifest.to_csv(args.manifest, index=False)
    summary = rejection_summary(rejections) if rejections else "0 rejected"
    print(f"ingest: {len(manifest)} photos accepted, {summary} (see {args.rejected})")
    copies = manifest[manifest["sha256"].duplicated(keep=False)]
    if len(copies):
        pair = copies.loc[copies["sha256"] == copies["sha256"].iloc[0], "image"].tolist()[:2]
        print(f"ingest: note: {len(copies)} accepted photos have the same content (SHA-256) as another, "
              f"e.g. {pair[0]} and {pair[1]}; such copies can land in different splits")


if __name__ == "__main__":
    run_stage(main)
