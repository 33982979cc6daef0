"""Multi-label pretraining on the Redbox flags: which flags to learn, and how well each was learned."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from weldnet.core.flags import FLAGS


def common_flags(manifest: pd.DataFrame, min_count: int) -> list[str]:
    """The Table 1 flags that at least ``min_count`` photos of the manifest carry, in Table 1 order."""
    return [f for f in FLAGS if f in manifest.columns and int(manifest[f].sum()) >= min_count]


def validation_rows(n: int, share: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(validation rows, training rows): a random ``share`` of n photos (at least one) held out."""
    order = rng.permutation(n)
    n_val = max(1, int(round(share * n)))
    return order[:n_val], order[n_val:]


def balanced_accuracy_per_flag(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Mean of the recall on flagged and unflagged photos, per flag, at probability 0.5."""
    pred = logits > 0
    positive = targets > 0.5
    recall_pos = np.array([pred[positive[:, j], j].mean() if positive[:, j].any() else np.nan
                           for j in range(targets.shape[1])])
    recall_neg = np.array([(~pred[~positive[:, j], j]).mean() if (~positive[:, j]).any() else np.nan
                           for j in range(targets.shape[1])])
    return (recall_pos + recall_neg) / 2


def drop_suspects(manifest: pd.DataFrame, suspects: pd.DataFrame,
                  tasks: Sequence[str] | None = None, rigs: Sequence[str] | None = None) -> pd.DataFrame:
    """The manifest without the photos the audit suspects of being mislabelled.

    ``suspects`` is the audit's suspects table (columns task, rig, image, ...); a photo
    suspected for any of ``tasks`` (all when None) on any of ``rigs`` (all when None)
    is dropped. Row order is kept.
    """
    chosen = suspects
    if tasks is not None:
        chosen = chosen[chosen["task"].isin(list(tasks))]
    if rigs is not None:
        chosen = chosen[chosen["rig"].isin(list(rigs))]
    keep = ~manifest["image"].isin(set(chosen["image"]))
    return manifest.loc[keep].reset_index(drop=True)
