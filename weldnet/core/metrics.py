"""Classification metrics on predictions, as pure numpy functions.

The report's headline metric is the mean per-class accuracy: the average over
classes of the share of that class's cases classified correctly (the mean
recall). Unlike accuracy, a constant classifier scores exactly 1/K on it.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from weldnet.core.config import DataError


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of (n, K) logits, shifted by each row's maximum so it cannot overflow."""
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def class_recall(pred: np.ndarray, target: np.ndarray, num_classes: int) -> np.ndarray:
    """Share of each class's cases predicted as that class; NaN for a class with no case."""
    recall = np.full(num_classes, np.nan)
    for cls in range(num_classes):
        mask = target == cls
        if mask.any():
            recall[cls] = float(np.mean(pred[mask] == cls))
    return recall


def per_class_accuracy(pred: np.ndarray, target: np.ndarray, num_classes: int) -> float:
    """Mean of the per-class recalls over the classes present in ``target``."""
    recall = class_recall(pred, target, num_classes)
    return float(np.nanmean(recall)) if np.isfinite(recall).any() else float("nan")


def accuracy(pred: np.ndarray, target: np.ndarray) -> float:
    return float(np.mean(pred == target)) if len(target) else float("nan")


def cross_entropy(probs: np.ndarray, target: np.ndarray, eps: float = 1e-12) -> float:
    """Mean negative log-probability of the true class (probabilities clipped at eps)."""
    picked = probs[np.arange(len(target)), target]
    return float(-np.mean(np.log(np.clip(picked, eps, 1.0))))


def is_collapsed(pred: np.ndarray) -> bool:
    """True when the classifier gives every case the same class: the report's constant function."""
    return len(np.unique(pred)) <= 1


def bootstrap_interval(pred: np.ndarray, target: np.ndarray, num_classes: int, rng: np.random.Generator,
                       resamples: int = 1000, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of per-class accuracy, resampling test cases within each class.

    ``pred`` is (n,) or (seeds, n); with several seeds each resample scores the
    seed-averaged per-class accuracy, so the interval covers test-set sampling noise
    of the reported mean.
    """
    pred = np.atleast_2d(pred)
    correct = pred == target[None, :]
    by_class = [np.flatnonzero(target == cls) for cls in range(num_classes)]
    by_class = [rows for rows in by_class if len(rows)]
    scores = np.empty(resamples)
    for b in range(resamples):
        recalls = [correct[:, rng.choice(rows, len(rows))].mean() for rows in by_class]
        scores[b] = np.mean(recalls)
    tail = (1.0 - level) / 2.0
    return float(np.quantile(scores, tail)), float(np.quantile(scores, 1.0 - tail))


def best_by_validation(scores: Mapping[str, float], order: Sequence[str] | None = None) -> str:
    """The name with the highest validation score: how anything is chosen, never by test.

    A NaN (or a name of ``order`` missing from ``scores``) never wins; ties go to the
    first name in ``order`` (default: the order of ``scores``). DataError when no
    score is a number.
    """
    names = list(scores if order is None else order)
    best, best_score = None, -math.inf
    for name in names:
        score = float(scores.get(name, math.nan))
        if not math.isnan(score) and (best is None or score > best_score):
            best, best_score = name, score
    if best is None:
        raise DataError(f"no validation score to choose by: {', '.join(names) or 'no name'} "
                         f"{'has' if len(names) == 1 else 'have'} none")
    return best
