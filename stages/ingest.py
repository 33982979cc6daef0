"""Stage ingest: check a photo export and write the manifest, the rejected rows and per-rig counts.

Reads <export>/labels.csv (image,rig,flags), decodes every photo it names in
worker processes (ingest.workers) and writes:

* the manifest: accepted photos, in labels.csv order, with upright size,
  SHA-256 and one 0/1 column per Table 1 flag;
* rejected.csv: every bad row or file with the reason and how to fix it;
* metrics: photos and flag counts per rig (Table 1 for this data) and the
  rejection counts by category.

With ingest.strict: true any rejection fails the stage (after rejected.csv is written).
Both CSV files are written spreadsheet-safe (weldnet.photos.manifest.spreadsheet_safe).
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from weldnet.core.config import DataError, run_stage
from weldnet.core.files import write_csv, write_json
from weldnet.core.params import load_checked_params
from weldnet.core.paths import remove_output
from weldnet.photos.files import file_identities, photos_on_disk, read_photos
from weldnet.photos.images import PhotoInfo
from weldnet.photos.ingest import (
    Rejection,
    build_manifest,
    check_rows,
    decode_labels,
    ingest_metrics,
    listed_paths,
    parse_label_table,
    photo_name,
    rejection_summary,
    rejection_table,
    spacing_hints,
    unlisted_photos,
)
from weldnet.photos.manifest import spreadsheet_safe, write_manifest

LABELS = "labels.csv"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--export", required=True, type=Path, help="folder holding labels.csv and the photos")
    parser.add_argument("--manifest", required=True, type=Path)
    parser.add_argument("--rejected", required=True, type=Path)
    parser.add_argument("--metrics", required=True, type=Path)
    args = parser.parse_args(argv)
    params = load_checked_params().ingest
    strict = params.strict          # read up front: it decides whether any rejection fails the stage

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

    # a symlink or hard link beside its target is the same photo: rows are grouped by the file they open
    same_file = file_identities(args.export, {name for row in rows if (name := photo_name(row)) is not None})
    entries, rejections = check_rows(rows, same_file)
    results = read_photos(args.export, entries, params.max_pixels, params.workers)
    photos = {e.image: r for e, r in zip(entries, results) if isinstance(r, PhotoInfo)}
    rejections += [Rejection(r.image, r.reason, r.category, e.line)
                   for e, r in zip(entries, results) if isinstance(r, Rejection)]
    on_disk = photos_on_disk(args.export)
    rejections = spacing_hints(rejections + unlisted_photos(on_disk, listed_paths(rows)), on_disk)
    manifest = build_manifest(entries, photos)

    for path in (args.manifest, args.rejected, args.metrics):
        path.parent.mkdir(parents=True, exist_ok=True)
    write_csv(args.rejected, spreadsheet_safe(rejection_table(rejections)))
    write_json(args.metrics, ingest_metrics(manifest, rejections))
    if rejections and strict:
        remove_output(args.manifest)
        raise DataError(f"ingest.strict is on and {rejection_summary(rejections)}; see {args.rejected}, "
                        "fix them or set ingest.strict: false")
    if manifest.empty:
        remove_output(args.manifest)
        raise DataError(f"no photo accepted from {labels} ({len(rejections)} rejected); see {args.rejected}")
    write_manifest(manifest, args.manifest)
    summary = rejection_summary(rejections) if rejections else "0 rejected"
    print(f"ingest: {len(manifest)} photos accepted, {summary} (see {args.rejected})")
    copies = manifest[manifest["sha256"].duplicated(keep=False)]
    if len(copies):
        pair = copies.loc[copies["sha256"] == copies["sha256"].iloc[0], "image"].tolist()[:2]
        print(f"ingest: note: {len(copies)} accepted photos have the same content (SHA-256) as another, "
              f"e.g. {pair[0]} and {pair[1]}; such copies can land in different splits")


if __name__ == "__main__":
    run_stage(main)
