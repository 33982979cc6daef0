"""Stage preprocess: resize every manifest photo to size x size RGB and store them as uint8 shards.

Photos are squashed to a square (no crop, no padding), as AlexNet's inputs
were; JPEGs are decoded in draft mode, in worker processes (preprocess.workers),
and the results are streamed in order into memory-mapped shards
``<rig>-<KKK>.npy`` of at most preprocess.shard_size photos, with
``index.csv`` (image,rig,shard,row). Memory stays at about one shard whatever
the number of photos. Each photo is checked against the SHA-256 ingest recorded.
Before any work the shards' size (photos x size x size x 3 bytes) is checked
against the free disk; over 1 GB it is printed.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from weldnet.core.config import run_stage
from weldnet.core.files import check_disk, human_bytes, write_csv
from weldnet.core.params import load_checked_params
from weldnet.core.progress import Progress
from weldnet.photos.decode import decode_resized
from weldnet.photos.manifest import read_manifest
from weldnet.photos.shards import INDEX, empty_output_dir, plan_shards, shard_bytes, write_order, write_shards

LARGE_OUTPUT = 10 ** 9       # bytes of shards from which the stage says how much it writes


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--export", required=True, type=Path, help="folder holding the photos")
    parser.add_argument("--manifest", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path, help="folder for the shards and index.csv")
    args = parser.parse_args(argv)
    params = load_checked_params().preprocess

    manifest = read_manifest(args.manifest)
    index = plan_shards(manifest["image"].tolist(), manifest["rig"].tolist(), params.shard_size)
    ordered = write_order(index)
    rows = manifest.set_index("image").loc[ordered["image"]].reset_index()

    need = shard_bytes(rows["rig"].value_counts().tolist(), params.shard_size, params.size)
    old = sum(f.stat().st_size for f in args.out.glob("*.npy")) if args.out.is_dir() else 0
    check_disk(args.out, need, f"preprocess of {len(rows)} photos at {params.size}x{params.size}",
               "lower preprocess.size or free disk space", reclaimed=old)
    if need > LARGE_OUTPUT:
        print(f"preprocess: {len(rows)} photos at {params.size}x{params.size} make {human_bytes(need)} of shards")
    empty_output_dir(args.out)
    with Progress(len(rows), "preprocess", unit="photo", stream=sys.stdout) as bar:
        write_shards(args.out, ordered, decode_resized(args.export, rows, params.size, params.workers, bar=bar),
                     params.size)
    write_csv(args.out / INDEX, index)
    shards = ordered["shard"].nunique()
    print(f"preprocess: {len(index)} photos -> {shards} shard(s) of {params.size}x{params.size} in {args.out}")


if __name__ == "__main__":
    run_stage(main)
