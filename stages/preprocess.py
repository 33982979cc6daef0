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
import hashlib
import io
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd

from stages.validate import load_checked_params
from weldnet.config import DataError, ParamError, build, check_range, run_stage, section
from weldnet.images import ImageRejected, load_resized
from weldnet.shards import INDEX, plan_shards, write_order, write_shards

MANIFEST_NEEDS: tuple[str, ...] = ("image", "rig", "width", "height", "sha256")


@dataclass(frozen=True)
class PreprocessParams:
    size: int = 256
    shard_size: int = 1000
    workers: int = 2

    def validate(self, where: str) -> None:
        check_range(self.size, f"{where}.size", low=8, high=4096)
        check_range(self.shard_size, f"{where}.shard_size", low=1)
        if self.workers < 0:
            raise ParamError(f"{where}.workers = {self.workers} must be >= 1, or 0 for one per CPU")


def load_photo(task: tuple[str, str, int, int]) -> np.ndarray | str:
    """(path, sha256, pixels, size) -> uint8 (size, size, 3), or the reason the photo cannot be used."""
    path, sha256, pixels, size = task
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        return f"cannot read the file ({exc.strerror or exc}); re-run the ingest stage"
    if hashlib.sha256(data).hexdigest() != sha256:
        return "the file changed since ingest (SHA-256 differs); re-run the ingest stage"
    try:
        return load_resized(io.BytesIO(data), size, max_pixels=pixels)
    except ImageRejected as exc:
        return f"{exc}; re-run the ingest stage"


def read_manifest(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"{path} not found; run the ingest stage first (dvc repro ingest)")
    manifest = pd.read_csv(path, dtype={"image": str, "rig": str, "sha256": str}, keep_default_na=False)
    missing = [c for c in MANIFEST_NEEDS if c not in manifest.columns]
    if missing:
        raise DataError(f"{path} lacks column(s) {', '.join(missing)}; re-run the ingest stage")
    if manifest.empty:
        raise DataError(f"{path} lists no photo; see the ingest stage's rejected.csv")
    if manifest["image"].duplicated().any():
        raise DataError(f"{path} lists '{manifest['image'][manifest['image'].duplicated()].iloc[0]}' twice; "
                        "re-run the ingest stage")
    return manifest


def empty_output_dir(out: Path) -> None:
    """Remove what an earlier run wrote; refuse to touch a folder holding anything else."""
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out} is a file; give a folder")
    out.mkdir(parents=True, exist_ok=True)
    ours = [p for p in out.iterdir() if p.is_file() and (p.suffix == ".npy" or p.name == INDEX)]
    others = sorted(set(out.iterdir()) - set(ours))
    if others:
        raise DataError(f"refusing to empty --out {out}: it holds {others[0].name}, which preprocess "
                        "did not write; move it away or choose another folder")
    for path in ours:
        path.unlink()


def checked(results: Iterable[np.ndarray | str], images: Sequence[str], export: Path) -> Iterator[np.ndarray]:
    for image, result in zip(images, results):
        if isinstance(result, str):
            raise DataError(f"{export / image}: {result}")
        yield result


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--export", required=True, type=Path, help="folder holding the photos")
    parser.add_argument("--manifest", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path, help="folder for the shards and index.csv")
    args = parser.parse_args(argv)
    params = build(PreprocessParams, section(load_checked_params(), "preprocess"), "preprocess")

    manifest = read_manifest(args.manifest)
    index = plan_shards(manifest["image"].tolist(), manifest["rig"].tolist(), params.shard_size)
    ordered = write_order(index)
    rows = manifest.set_index("image").loc[ordered["image"]]
    tasks = [(str(args.export / image), sha, int(w) * int(h), params.size)
             for image, sha, w, h in zip(ordered["image"], rows["sha256"], rows["width"], rows["height"])]

    empty_output_dir(args.out)
    workers = params.workers or os.cpu_count() or 1
    images = ordered["image"].tolist()
    if workers <= 1:
        write_shards(args.out, ordered, checked(map(load_photo, tasks), images, args.export), params.size)
    else:
        chunksize = max(1, min(16, len(tasks) // (workers * 8)))
        with get_context().Pool(workers) as pool:
            results = pool.imap(load_photo, tasks, chunksize=chunksize)
            write_shards(args.out, ordered, checked(results, images, args.export), params.size)
    index.to_csv(args.out / INDEX, index=False)
    shards = ordered["shard"].nunique()
    print(f"preprocess: {len(index)} photos -> {shards} shard(s) of {params.size}x{params.size} in {args.out}")


if __name__ == "__main__":
    run_stage(main)
