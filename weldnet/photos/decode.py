"""Decoding the photos ingest accepted, each checked against the SHA-256 ingest recorded.

A photo that changed between ingest and a later stage (other bytes, or replaced
by a folder, FIFO or device) is caught and named, not used; each is decoded
under the pixel limit of its recorded size. Preprocess and the audit (its
thumbnails and contact sheets) read photos only through here. Decoding runs in
worker processes (weldnet.core.pool), in manifest order.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.lib.format import open_memmap

from weldnet.core.config import DataError
from weldnet.core.paths import NotRegularFile, read_regular_file
from weldnet.core.pool import ordered_map
from weldnet.core.progress import Progress
from weldnet.photos.images import ImageRejected, load_resized, open_normalised


def _read_checked(path: str, sha256: str) -> bytes | str:
    """The file's bytes, or the reason they are not the ones ingest accepted (a FIFO is never waited on)."""
    try:
        data = read_regular_file(path)
    except NotRegularFile as exc:
        return f"{exc}, but ingest accepted a photo there; re-run the ingest stage"
    except OSError as exc:
        return f"cannot read the file ({exc.strerror or exc}); re-run the ingest stage"
    if hashlib.sha256(data).hexdigest() != sha256:
        return "the file changed since ingest (SHA-256 differs); re-run the ingest stage"
    return data


def load_checked(task: tuple[str, str, int, int]) -> np.ndarray | str:
    """(path, sha256, pixels, size) -> uint8 (size, size, 3), or the reason the photo cannot be used."""
    path, sha256, pixels, size = task
    data = _read_checked(path, sha256)
    if isinstance(data, str):
        return data
    try:
        return load_resized(io.BytesIO(data), size, max_pixels=pixels)
    except ImageRejected as exc:
        return f"{exc}; re-run the ingest stage"


def load_sheet_thumbnail(task: tuple[str, str, int, int]) -> np.ndarray | str:
    """(path, sha256, pixels, longest) -> the photo shrunk (aspect kept) to ``longest`` px, for a contact sheet."""
    path, sha256, pixels, longest = task
    data = _read_checked(path, sha256)
    if isinstance(data, str):
        return data
    try:
        im = open_normalised(io.BytesIO(data), max_pixels=pixels, draft_size=(longest, longest))
    except ImageRejected as exc:
        return f"{exc}; re-run the ingest stage"
    im.thumbnail((longest, longest))
    return np.asarray(im, dtype=np.uint8)


def resize_tasks(export: Path, rows: pd.DataFrame, size: int) -> list[tuple[str, str, int, int]]:
    """load_checked jobs for manifest rows: the pixel limit is each photo's own recorded size."""
    return [(str(export / image), sha, int(w) * int(h), size)
            for image, sha, w, h in zip(rows["image"], rows["sha256"], rows["width"], rows["height"])]


def decode_resized(export: Path, rows: pd.DataFrame, size: int, workers: int,
                   chunksize: int | None = None, bar: Progress | None = None) -> Iterator[np.ndarray]:
    """uint8 (size, size, 3) photos of the manifest rows, in order, lazily; DataError names a bad photo.

    ``bar`` counts each photo as it arrives from the workers (weldnet.core.progress).
    """
    results = ordered_map(load_checked, resize_tasks(export, rows, size), workers, chunksize=chunksize,
                          max_chunk=16)
    return _raise_on_reason(export, rows["image"], results, bar)


def sheet_thumbnails(export: Path, rows: pd.DataFrame, longest: int) -> list[np.ndarray]:
    """The manifest rows' photos shrunk for a contact sheet, each checked against its SHA-256 and pixel limit."""
    results = map(load_sheet_thumbnail, resize_tasks(export, rows, longest))
    return list(_raise_on_reason(export, rows["image"], results))


def _raise_on_reason(export: Path, images: Iterable[str], results: Iterable[np.ndarray | str],
                     bar: Progress | None = None) -> Iterator[np.ndarray]:
    for image, result in zip(images, results):
        if bar is not None:
            bar.update(1)
        if isinstance(result, str):
            raise DataError(f"{export / image}: {result}")
        yield result


def load_thumbnails(export: Path, rows: pd.DataFrame, size: int, workers: int,
                    spill: Path | None = None, desc: str | None = None) -> np.ndarray:
    """uint8 (n, size, size, 3) thumbnails of the manifest rows, decoded in ``workers`` processes.

    Each thumbnail goes straight into its place in one array: in RAM, or, with
    ``spill`` (a file path), in a memory-mapped ``.npy`` file there, for exports
    whose thumbnails do not fit in memory. With ``desc``, progress is shown under
    that name (on stdout, with the stage's other lines).
    """
    shape = (len(rows), size, size, 3)
    out = np.empty(shape, dtype=np.uint8) if spill is None else open_memmap(spill, mode="w+", dtype=np.uint8,
                                                                           shape=shape)
    bar = Progress(len(rows), desc, unit="photo", stream=sys.stdout) if desc and len(rows) else None
    with bar if bar is not None else contextlib.nullcontext():
        for k, image in enumerate(decode_resized(export, rows, size, workers, chunksize=64, bar=bar)):
            out[k] = image
    return out

