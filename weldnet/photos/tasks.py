"""Classification tasks built from inspection flags, and the splits they train on.

A task names the rigs whose photos it uses, a default class (the photo raises
none of the task's flags) and its other classes, each a set of flags. A photo
belongs to the first listed class whose flags it carries, so overlapping classes
are resolved by their order in ``params.yaml``. Class 0 is always the default.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from weldnet.core.class_stats import largest_remainder, minority_quota
from weldnet.core.config import ParamError
from weldnet.core.params import SPLITS, ImbalanceParams, TaskSpec

REMOVED = "removed"


def assign_classes(flags: pd.DataFrame, task: TaskSpec) -> np.ndarray:
    """Class index of every row of a 0/1 flag table (one column per Table 1 flag)."""
    labels = np.zeros(len(flags), dtype=np.int64)
    unassigned = np.ones(len(flags), dtype=bool)
    for index, class_flags in enumerate(task.class_flags(), start=1):
        present = [f for f in class_flags if f in flags.columns]
        if not present:
            continue
        hit = flags[present].to_numpy().astype(bool).any(axis=1) & unassigned
        labels[hit] = index
        unassigned &= ~hit
    return labels


def stratified_split(labels: np.ndarray, fractions: Sequence[float], rng: np.random.Generator) -> np.ndarray:
    """Assign each row to train/val/test so that every class is split in the given proportions."""
    fractions = np.asarray(fractions, dtype=float) / np.sum(fractions)
    split = np.empty(len(labels), dtype=object)
    for cls in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == cls))
        counts = largest_remainder(fractions * len(rows))
        bounds = np.cumsum(counts)[:-1]
        for name, part in zip(SPLITS, np.split(rows, bounds)):
            split[part] = name
    return split


def impose_imbalance(labels: np.ndarray, split: np.ndarray, ratio: float | None,
                     rng: np.random.Generator) -> np.ndarray:
    """Remove non-default training cases until the default class makes up ``ratio`` of the training split.

    This is how the report's section 6 turned the 88% clamp task into a 98% one. The
    kept count of non-default cases is ``minority_quota(n_default, ratio)``, shared
    between the non-default classes in proportion to their sizes. Validation and test
    rows are never touched. Returns the split with removed rows marked ``"removed"``.
    """
    split = split.copy()
    if ratio is None:
        return split
    train = np.flatnonzero(split == "train")
    train_labels = labels[train]
    n_default = int(np.sum(train_labels == 0))
    minority = train[train_labels != 0]
    keep_total = minority_quota(n_default, ratio)
    if keep_total >= len(minority):
        return split
    classes, sizes = np.unique(labels[minority], return_counts=True)
    keep = largest_remainder(sizes / sizes.sum() * keep_total)
    for cls, n_keep in zip(classes, keep):
        rows = rng.permutation(minority[labels[minority] == cls])
        split[rows[n_keep:]] = REMOVED
    return split


def split_table(manifest: pd.DataFrame, task: TaskSpec, spec: ImbalanceParams) -> pd.DataFrame:
    """The task's photos with their class and split (image, rig, label, class, split); see the module doc."""
    rows = manifest[manifest["rig"].isin(task.rigs)].reset_index(drop=True)
    labels = assign_classes(rows, task)
    rng = np.random.default_rng(spec.seed)
    split = stratified_split(labels, [spec.split[s] for s in SPLITS], rng)
    split = impose_imbalance(labels, split, spec.ratio, rng)
    names = np.asarray(task.class_names, dtype=object)
    return pd.DataFrame({"image": rows["image"], "rig": rows["rig"], "label": labels,
                         "class": names[labels], "split": split})


def class_counts(table: pd.DataFrame, class_names: list[str]) -> dict[str, dict[str, int]]:
    """Photos of each class in each split (and among the removed training rows)."""
    counts = {}
    for split in (*SPLITS, REMOVED):
        part = table[table["split"] == split]
        counts[split] = {name: int((part["class"] == name).sum()) for name in class_names}
    return counts


def check_every_class_present(counts: dict[str, dict[str, int]], task_name: str, ratio: float | None) -> None:
    for split in SPLITS:
        empty = [name for name, n in counts[split].items() if n == 0]
        if empty:
            hint = "raise imbalance.ratio, " if split == "train" and ratio is not None else ""
            raise ParamError(f"task '{task_name}': class '{empty[0]}' has no {split} case after the split; "
                             f"{hint}grow the data set or merge classes in tasks.{task_name}")
