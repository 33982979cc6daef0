"""The photos at the model's input size, stored once by the inputs stage, in the preprocess shards' format.

Train, pretrain and evaluate read these instead of resizing the stored 256 px
photos in every stage: the same bytes, since a photo is resized alone
(``resize_uint8``: antialiased bilinear, rounded to uint8) whichever photos share
its batch.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from weldnet.core.progress import Progress
from weldnet.photos.transforms import resize_uint8

CHUNK = 64    # photos resized at a time: a 64 x 256 px float copy is 50 MB


def resized_photos(ordered: pd.DataFrame, shard_dir: Path, size: int,
                   bar: Progress | None = None) -> Iterator[np.ndarray]:
    """Each photo of the index ``ordered`` (in weldnet.photos.shards.write_order), resized to ``size`` x ``size``."""
    for name, rows in ordered.groupby("shard", sort=False)["row"]:
        shard = np.load(Path(shard_dir) / name, mmap_mode="r")
        rows = rows.to_numpy()
        for start in range(0, len(rows), CHUNK):
            chunk = torch.from_numpy(np.ascontiguousarray(shard[rows[start:start + CHUNK]]))
            yield from resize_uint8(chunk, size).numpy()
            if bar is not None:
                bar.update(len(chunk))
