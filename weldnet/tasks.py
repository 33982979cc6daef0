"""Classification tasks built from inspection flags, and the splits they train on.

A task names the rigs whose photos it uses, a default class (the photo raises
none of the task's flags) and its other classes, each a set of flags. A photo
belongs to the first listed class whose flags it carries, so overlapping classes
are resolved by their order in ``params.yaml``. Class 0 is always the default.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from weldnet.class_stats import largest_remainder
from weldnet.config import ParamError
from weldnet.flags import RIGS, canonical_flag

SPLITS: tuple[str, ...] = ("train", "val", "test")
REMOVED = "removed"


@dataclass(frozen=True)
class TaskSpec:
    default: str
    classes: dict[str, list[str]]
    rigs: list[str] = field(default_factory=lambda: ["bluebox"])

    def validate(self, where: str) -> None:
        if not self.classes:
            raise ParamError(f"{where}.classes is empty; a task needs at least one class besides '{self.default}'")
        if self.default in self.classes:
            raise ParamError(f"{where}: class '{self.default}' is both the default and a flag class; rename one")
        for rig in self.rigs:
            if rig not in RIGS:
                raise ParamError(f"{where}.rigs: unknown rig '{rig}'; valid: {', '.join(RIGS)}")
        for name, flags in self.classes.items():
            if not flags:
                raise ParamError(f"{where}.classes.{name} lists no flag; give it at least one Table 1 flag")
            for flag in flags:
                if canonical_flag(flag) is None:
                    raise ParamError(f"{where}.classes.{name}: unknown flag '{flag}'; see the Table 1 names in the README")

    @property
    def class_names(self) -> list[str]:
        return [self.default, *self.classes]

    def class_flags(self) -> list[list[str]]:
        """Canonical flag names of each non-default class, in class order."""
        return [[canonical_flag(f) for f in flags] for flags in self.classes.values()]


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
    kept count of non-default cases is round(n_default * (1 - ratio) / ratio), shared
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
    keep_total = int(round(n_default * (1.0 - ratio) / ratio))
    if keep_total >= len(minority):
        return split
    classes, sizes = np.unique(labels[minority], return_counts=True)
    keep = largest_remainder(sizes / sizes.sum() * keep_total)
    for cls, n_keep in zip(classes, keep):
        rows = rng.permutation(minority[labels[minority] == cls])
        split[rows[n_keep:]] = REMOVED
    return split
