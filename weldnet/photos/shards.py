"""Preprocessed photos stored as a few uint8 array shards per rig.

A shard ``<rig>-<KKK>.npy`` holds up to ``shard_size`` photos of one rig as an
array of shape (n, S, S, 3); ``index.csv`` maps each photo to its shard and row.
The k-th photo of a rig (in manifest order) is row ``k % shard_size`` of shard
``k // shard_size``. Shards are written by streaming photos into each file
and read with ``mmap_mode="r"``, so neither side holds the whole data set:
:class:`ShardPhotos` reads the rows a batch needs, in any process (a DataLoader
worker opens its own maps), keeping only a few shards mapped at a time and
releasing the pages each read touched, so a process's RSS holds the photos it
copied, not the shards it read them from.
"""
from __future__ import annotations

import itertools
import mmap
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.lib.format import write_array_header_1_0

from weldnet.core.config import DataError
from weldnet.core.files import atomic_path, is_partial
from weldnet.core.paths import remove_output

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


def shard_bytes(photos_per_rig: Sequence[int], shard_size: int, size: int) -> int:
    """Bytes of the shards of ``photos_per_rig`` photos at ``size`` x ``size`` RGB (each .npy header included)."""
    shards = sum(-(-n // shard_size) for n in photos_per_rig)
    return sum(photos_per_rig) * size * size * 3 + shards * 128


def write_order(index: pd.DataFrame) -> pd.DataFrame:
    """The index rows sorted so that each shard is written start to end, one shard at a time."""
    return index.sort_values(["shard", "row"], kind="stable")


def write_shards(out_dir: Path, ordered: pd.DataFrame, images: Iterable[np.ndarray], size: int) -> None:
    """Stream ``images`` (uint8 (size, size, 3), in the order of ``ordered``) into ``.npy`` shards.

    ``ordered`` is an index in :func:`write_order`; only one shard is open at a
    time and each photo goes straight to the file, so memory stays at one photo
    however many there are. Each shard is written to a temporary name and renamed
    when complete (weldnet.core.files), and written with plain writes, not a
    memory map, so a full disk is an error naming the shard (a write into a
    mapped file on a full disk would kill the process with SIGBUS).
    """
    count = 0
    images = iter(images)
    pairs = ordered[["shard", "row"]].itertuples(index=False, name=None)
    for name, group in itertools.groupby(pairs, key=lambda pair: pair[0]):
        rows = [row for _, row in group]
        if rows != list(range(len(rows))):
            raise ValueError(f"write_shards needs each shard's rows in order 0..n-1 (write_order); {name} is not")
        with atomic_path(out_dir / name) as tmp, open(tmp, "wb") as fh:
            write_array_header_1_0(fh, {"descr": "|u1", "fortran_order": False, "shape": (len(rows), size, size, 3)})
            for _ in rows:
                image = next(images, None)
                if image is None:
                    raise ValueError(f"write_shards got {count} images for an index of {len(ordered)} rows")
                fh.write(np.ascontiguousarray(image, dtype=np.uint8).reshape(size, size, 3).tobytes())
                count += 1
    if next(images, None) is not None:
        raise ValueError(f"write_shards got more images than the {len(ordered)} rows of its index")


def empty_output_dir(out: Path) -> None:
    """Remove the shards and index an earlier run wrote; refuse to touch a folder holding anything else."""
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out} is a file; give a folder")
    out.mkdir(parents=True, exist_ok=True)
    ours = [p for p in out.iterdir() if p.is_file() and (p.suffix == ".npy" or p.name == INDEX or is_partial(p))]
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


class ShardPhotos:
    """Photos of the preprocess shards, read on demand: ``fetch(positions)`` -> uint8 (n, S, S, 3).

    Photo k is row ``rows[k]`` of shard ``names[codes[k]]`` (:func:`shard_photos`
    builds one from the index). Each fetch reads every shard's rows in ascending
    order; at most ``open_limit`` shards stay mapped per process (the least recently
    used is closed), so the pages a long run touches are not all held at once.
    Pickling drops the maps: a DataLoader worker, forked or spawned, opens its own.
    """

    def __init__(self, shard_dir: Path, names: Sequence[str], codes: np.ndarray, rows: np.ndarray,
                 open_limit: int = 2):
        if not names:
            raise DataError(f"{Path(shard_dir) / INDEX} lists no shard; re-run the preprocess stage")
        self.shard_dir = Path(shard_dir)
        self.names = [str(n) for n in names]
        self.codes = np.asarray(codes, dtype=np.int32).reshape(-1)
        self.rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        self.open_limit = max(1, open_limit)
        self._maps: OrderedDict[int, np.ndarray] = OrderedDict()
        shape = None
        for code, name in enumerate(self.names):
            shard = self._map(code)
            if shape is None:
                shape = shard.shape[1:]
            elif shard.shape[1:] != shape:
                raise DataError(f"shard {name} holds {shard.shape[1:]} images, others {shape}; "
                                "re-run the preprocess stage")
            mine = self.rows[self.codes == code]
            if len(mine) and (mine.max() >= len(shard) or mine.min() < 0):
                raise DataError(f"{self.shard_dir / INDEX} points past the end of {name}; "
                                "re-run the preprocess stage")
        self._maps.clear()
        self.shape: tuple[int, ...] = tuple(shape)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def photo_bytes(self) -> int:
        """Bytes of one stored photo."""
        return int(np.prod(self.shape))

    def _map(self, code: int) -> np.ndarray:
        shard = self._maps.get(code)
        if shard is not None:
            self._maps.move_to_end(code)
            return shard
        path = self.shard_dir / self.names[code]
        try:
            shard = np.load(path, mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read shard {path} ({exc}); re-run the preprocess stage") from None
        while len(self._maps) >= self.open_limit:
            self._maps.popitem(last=False)
        self._maps[code] = shard
        return shard

    def fetch(self, positions: np.ndarray) -> np.ndarray:
        """uint8 (len(positions), S, S, 3) of the photos at ``positions`` (repeats allowed), in that order."""
        positions = np.asarray(positions, dtype=np.int64).reshape(-1)
        out = np.empty((len(positions), *self.shape), dtype=np.uint8)
        if not len(positions):
            return out
        codes, rows = self.codes[positions], self.rows[positions]
        order = np.lexsort((rows, codes))             # shard by shard, each front to back
        for group in np.split(order, np.flatnonzero(np.diff(codes[order])) + 1):
            shard = self._map(int(codes[group[0]]))
            out[group] = shard[rows[group]]
            _release(shard)
        return out

    def read_order(self) -> np.ndarray:
        """All positions, sorted by shard and row: the order that reads the shards front to back."""
        return np.lexsort((self.rows, self.codes))

    def close(self) -> None:
        self._maps.clear()

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_maps": OrderedDict()}


def _release(shard: np.ndarray) -> None:
    """Drop the shard's pages from this process (the page cache keeps them): its RSS holds what it copied, no more."""
    mapping = getattr(shard, "_mmap", None)
    if mapping is not None and hasattr(mapping, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
        mapping.madvise(mmap.MADV_DONTNEED)


def shard_photos(index: pd.DataFrame, shard_dir: Path, images: Sequence[str]) -> ShardPhotos:
    """The given photos (repeats allowed), in the order of ``images``, read on demand from the shards."""
    if index.empty:
        raise DataError(f"{Path(shard_dir) / INDEX} lists no photo; re-run the preprocess stage")
    by_image = index.set_index("image")
    missing = pd.Index(images).difference(by_image.index)
    if len(missing):
        raise DataError(f"{len(missing)} photo(s) not in {Path(shard_dir) / INDEX}, e.g. '{missing[0]}'; "
                        "re-run the preprocess stage (dvc repro preprocess)")
    wanted = by_image.loc[list(images), ["shard", "row"]]
    if wanted.empty:
        return ShardPhotos(shard_dir, [index["shard"].iloc[0]], np.zeros(0), np.zeros(0))
    names, codes = np.unique(wanted["shard"].to_numpy(dtype=str), return_inverse=True)
    return ShardPhotos(shard_dir, list(names), codes, wanted["row"].to_numpy())
