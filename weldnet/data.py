"""Training and evaluation inputs: photos as a ``Dataset`` of (uint8 image, target), and the loaders over them.

A split's photos come from the preprocess shards, resized once to the model's
input size. :class:`PhotoDataset` yields ``(uint8 HWC image, target)`` and fetches
a whole batch at once (``__getitems__``), so a ``DataLoader`` over it costs one
indexing per batch. The strategy's sampler decides which rows an epoch visits and
in which order (``weldnet.sampling.EpochSampler``).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from weldnet.models import resize_uint8
from weldnet.params import SamplingParams
from weldnet.sampling import EpochSampler
from weldnet.shards import load_images, read_index


class PhotoDataset(Dataset):
    """uint8 NHWC photos and their targets (class indices, or 0/1 flag rows for multi-label training)."""

    def __init__(self, images: torch.Tensor, targets: torch.Tensor):
        if len(images) != len(targets):
            raise ValueError(f"{len(images)} photos but {len(targets)} targets")
        self.images, self.targets = images, targets

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.targets[index]

    def __getitems__(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        rows = torch.as_tensor(indices, dtype=torch.long)
        return self.images[rows], self.targets[rows]

    def subset(self, rows: np.ndarray) -> PhotoDataset:
        rows_ = torch.from_numpy(np.asarray(rows, dtype=np.int64))
        return PhotoDataset(self.images[rows_], self.targets[rows_])


def _batch(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    return batch  # PhotoDataset.__getitems__ already returns the stacked batch


def photo_loader(dataset: PhotoDataset, batch_size: int, sampler: Sampler[int]) -> DataLoader:
    """Batches of ``batch_size`` (images, targets) in the order ``sampler`` draws rows."""
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=False, collate_fn=_batch)


def build_loader(dataset: PhotoDataset, labels: np.ndarray, batch_size: int, sampler: str, seed: int,
                 params: SamplingParams) -> DataLoader:
    """The strategy's loader: rows in the order its sampler draws them from the class ``labels``."""
    return photo_loader(dataset, batch_size, EpochSampler(labels, sampler, batch_size, seed, params))


def load_split_images(split: pd.DataFrame, shards: Path, name: str, size: int) -> tuple[torch.Tensor, np.ndarray]:
    """uint8 NHWC images of split ``name`` resized to ``size``, and their class labels, in split-table order."""
    rows = split[split["split"] == name]
    index = read_index(shards / "index.csv")
    images = load_images(index, shards, rows["image"].tolist())
    return resize_uint8(torch.from_numpy(np.ascontiguousarray(images)), size), rows["label"].to_numpy()


def read_split(path: Path) -> pd.DataFrame:
    """data/split.csv as the imbalance stage wrote it (image ids kept as text)."""
    return pd.read_csv(path, dtype={"image": str, "rig": str, "class": str, "split": str}, keep_default_na=False)


def class_names(split: pd.DataFrame) -> list[str]:
    """The task's class names, by label (class 0 first)."""
    return list(split.drop_duplicates("label").sort_values("label")["class"])
