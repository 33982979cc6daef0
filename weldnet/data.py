"""Training and evaluation inputs: a split's photos from the shards, at the model's input size."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from weldnet.models import resize_uint8
from weldnet.shards import load_images, read_index


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
