"""Preprocessed photos stored as a few uint8 array shards per rig.

A shard ``<rig>-<KKK>.npy`` holds up to ``shard_size`` photos of one rig as an
array of shape (n, S, S, 3); ``index.csv`` maps each photo to its shard and row.
The k-th photo of a rig (in manifest order) is row ``k % shard_size`` of shard
``k // shard_size``. Shards are written by streaming into memory-mapped files
and read with ``mmap_mode="r"``, so neither side holds the whole data set.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.lib.format import open_memmap

from weldnet.config import DataError
from weldnet.paths import remove_output

INDEX = "index.csv"
INDEX_COLUMNS: tuple[str, ...] = ("image", "rig", "shard", "row")


def shard_name(rig: str, number: int) -> str:
    return f"{rig}-{number:03d}.npy"


def plan_shards(images: Sequence[str], rigs: Sequence[str], shard_size: int) -> pd.DataFrame:
    """The index (image, rig, shard, row) of photos in the given order, ``shard_size`` photos per shard and rig."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    seen: dict[str, int] = {}
    shards, rows = [], []
    for rig in rigs:
        k = seen.get(rig, 0)
        seen[rig] = k + 1
        shards.append(shard_name(rig, k // shard_size))
        rows.append(k % shard_size)
    return pd.DataFrame({"image": list(images), "rig": list(rigs), "shard": shards,
                         "row": np.asarray(rows, dtype=np.int64)}, columns=list(INDEX_COLUMNS))


def write_order(index: pd.DataFrame) -> pd.DataFrame:
    """The index rows sorted so that each shard is written start to end, one shard at a time."""
    return index.sort_values(["shard", "row"], kind="stable")


def write_shards(out_dir: Path, ordered: pd.DataFrame, images: Iterable[np.ndarray], size: int) -> None:
    """Stream ``images`` (uint8 (size, size, 3), in the order of ``ordered``) into memory-mapped shards.

    ``ordered`` is an index in :func:`write_order`; only one shard is open at a
    time, so memory stays at one shard however many photos there are.
    """
    lengths = ordered.groupby("shard")["row"].max() + 1
    current, shard = None, None
    count = 0
    for (name, row), image in zip(ordered[["shard", "row"]].itertuples(index=False, name=None), images):
        if name != current:
            if shard is not None:
                shard.flush()
                del shard
            shard = open_memmap(out_dir / name, mode="w+", dtype=np.uint8, shape=(int(lengths[name]), size, size, 3))
            current = name
        shard[row] = image
        count += 1
    if shard is not None:
        shard.flush()
        del shard
    if count != len(ordered):
        raise ValueError(f"write_shards got {count} images for an index of {len(ordered)} rows")


def empty_output_dir(out: Path) -> None:
    """Remove the shards and index an earlier run wrote; refuse to touch a folder holding anything else."""
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out} is a file; give a folder")
    out.mkdir(parents=True, exist_ok=True)
    ours = [p for p in out.iterdir() if p.is_file() and (p.suffix == ".npy" or p.name == INDEX)]
    others = sorted(set(out.iterdir()) - set(ours))
    if others:
        raise DataError(f"refusing to empty --out {out}: it holds {others[0].name}, which preprocess "
                        "did not write; move it away or choose another folder")
    for path in ours:
        remove_output(path, within=out)


def read_index(path: Path) -> pd.DataFrame:
    """index.csv as written by preprocess (image ids kept as text, even 'NA' or 'null')."""
    if not path.is_file():
        raise DataError(f"{path} not found; run the preprocess stage (dvc repro preprocess)")
    return pd.read_csv(path, dtype={"image": str, "rig": str, "shard": str, "row": np.int64},
                       keep_default_na=False)


def load_images(index: pd.DataFrame, shard_dir: Path, images: Sequence[str]) -> np.ndarray:
    """uint8 array (n, S, S, 3) of the given photos, in the order of ``images`` (repeats allowed)."""
    by_image = index.set_index("image")
    missing = pd.Index(images).difference(by_image.index)
    if len(missing):
        raise DataError(f"{len(missing)} photo(s) not in {Path(shard_dir) / INDEX}, e.g. '{missing[0]}'; "
                        "re-run the preprocess stage (dvc repro preprocess)")
    wanted = by_image.loc[list(images), ["shard", "row"]].reset_index(drop=True)
    if wanted.empty:
        if index.empty:
            raise DataError(f"{Path(shard_dir) / INDEX} lists no photo; re-run the preprocess stage")
        shape = np.load(Path(shard_dir) / index["shard"].iloc[0], mmap_mode="r").shape[1:]
        return np.empty((0, *shape), dtype=np.uint8)
    out = None
    for name, group in wanted.groupby("shard", sort=True):
        shard = np.load(Path(shard_dir) / name, mmap_mode="r")
        if out is None:
            out = np.empty((len(wanted), *shard.shape[1:]), dtype=np.uint8)
        elif shard.shape[1:] != out.shape[1:]:
            raise DataError(f"shard {name} holds {shard.shape[1:]} images, others {out.shape[1:]}; "
                            "re-run the preprocess stage")
        rows = group["row"].to_numpy()
        order = np.argsort(rows, kind="stable")  # read each shard front to back
        out[group.index.to_numpy()[order]] = shard[rows[order]]
    return out


def load_rig(index: pd.DataFrame, shard_dir: Path, rig: str) -> tuple[list[str], np.ndarray]:
    """All photos of one rig, in index order: (image ids, uint8 (n, S, S, 3))."""
    images = index.loc[index["rig"] == rig, "image"].tolist()
    if not images:
        raise DataError(f"no '{rig}' photo in the preprocessed shards; check the rigs in labels.csv")
    return images, load_images(index, shard_dir, images)
