"""Stage preprocess: resize every manifest photo to size x size RGB and store them as uint8 shards.

Photos are squashed to a square (no crop, no padding), as AlexNet's inputs
were; JPEGs are decoded in draft mode, in worker processes (preprocess.workers),
and the results are streamed in order into memory-mapped shards
``<rig>-<KKK>.npy`` of at most preprocess.shard_size photos, with
``index.csv`` (image,rig,shard,row). Memory stays at about one shard whatever
the number of photos. Each photo is checked against the SHA-256 ingest recorded.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from weldnet.core.config import run_stage
from weldnet.core.files import write_csv
from weldnet.core.params import load_checked_params
from weldnet.core.progress import Progress
from weldnet.photos.decode import decode_resized
from weldnet.photos.manifest import read_manifest
from weldnet.photos.shards import INDEX, empty_output_dir, plan_shards, write_order, write_shards


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

    empty_output_dir(args.out)
    with Progress(len(rows), "preprocess", unit="photo", stream=sys.stdout) as bar:
        write_shards(args.out, ordered, decode_resized(args.export, rows, params.size, params.workers, bar=bar),
                     params.size)
    write_csv(args.out / INDEX, index)
    shards = ordered["shard"].nunique()
    print(f"preprocess: {len(index)} photos -> {shards} shard(s) of {params.size}x{params.size} in {args.out}")


if __name__ == "__main__":
    run_stage(main)
