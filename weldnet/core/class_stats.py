"""Class-count maths shared by the losses, the samplers and the decision rules.

Every function takes the per-class training counts ``counts`` (``n_c`` for class
``c = 0..K-1``, class 0 the default class) and returns a float64 array of length K;
``scaled_log_priors`` takes the priors themselves.

Absent classes: a class with ``n_c = 0`` is counted as if it had one example
(``max(n_c, 1)``) by every function here, so no result is ever inf or NaN. That
only changes anything for such a class: it gets the smallest prior, the largest
inverse-frequency and effective-number weight and the largest LDAM margin. A
loss never applies the weight of a class that has no training example, so the
floor only keeps the numbers finite; a task whose training split lacks a class
is better rejected by the caller before training.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

Counts = Sequence[int] | np.ndarray


def _floored(counts: Counts) -> np.ndarray:
    n = np.asarray(counts)
    if n.ndim != 1 or n.size == 0:
        raise ValueError(f"class counts must be a non-empty 1-D sequence, got shape {n.shape}")
    if np.any(n < 0) or not np.all(np.isfinite(n)):
        raise ValueError(f"class counts must be finite and non-negative, got {n.tolist()}")
    return np.maximum(n.astype(np.float64), 1.0)


def priors(counts: Counts) -> np.ndarray:
    """Training prior of each class: ``p_c = n_c / sum_k n_k`` (absent classes counted as 1)."""
    n = _floored(counts)
    return n / n.sum()


def inverse_frequency_weights(counts: Counts) -> np.ndarray:
    """Inverse-frequency class weights ``w_c = K * (1/n_c) / sum_k (1/n_k)``, so they average 1."""
    inv = 1.0 / _floored(counts)
    return inv * (len(inv) / inv.sum())


def effective_number_weights(counts: Counts, beta: float) -> np.ndarray:
    """Class-balanced weights of Cui et al. (2019), normalised to sum to K.

    ``w_c ∝ (1 - beta) / (1 - beta**n_c)``: one over the effective number of
    examples ``(1 - beta**n_c) / (1 - beta)``. ``beta = 0`` gives all ones;
    ``beta -> 1`` tends to inverse frequency. ``1 - beta**n`` is computed as
    ``-expm1(n * log1p(beta - 1))`` so that beta close to 1 keeps its precision.
    """
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"beta = {beta!r} must lie in [0, 1)")
    n = _floored(counts)
    if beta == 0.0:
        return np.ones_like(n)
    effective = -np.expm1(n * math.log1p(beta - 1.0)) / (1.0 - beta)
    w = 1.0 / effective
    return w * (len(w) / w.sum())


def ldam_margins(counts: Counts, max_margin: float) -> np.ndarray:
    """LDAM margins of Cao et al. (2019): ``Delta_c = C / n_c**(1/4)``, C chosen so max_c Delta_c = max_margin."""
    m = _floored(counts) ** -0.25
    return m * (max_margin / m.max())


def logit_offsets(counts: Counts, tau: float) -> np.ndarray:
    """Logit adjustment of Menon et al. (2021): ``tau * log p_c`` with p_c = priors(counts)."""
    return scaled_log_priors(priors(counts), tau)


def scaled_log_priors(train_priors: Sequence[float] | np.ndarray, tau: float) -> np.ndarray:
    """``tau * log p_c`` of the priors themselves (a bundle keeps priors, not counts).

    The logit-adjusted loss adds it to the logits while training; the post-hoc
    decision rules subtract it (``weldnet.strategies.decisions.logit_offset``).
    """
    return tau * np.log(np.asarray(train_priors, dtype=np.float64))


def label_aware_smoothing(counts: Counts, head: float, tail: float) -> np.ndarray:
    """Per-class smoothing ``eps_c = tail + (head - tail) sin(pi/2 (n_c - n_min) / (n_max - n_min))``.

    Label-aware smoothing (Zhong et al. 2021, MiSLAS's concave rule): the largest
    class gets ``head``, the smallest ``tail``. Equal counts (or ``head == tail``):
    every class gets ``head``, plain label smoothing.
    """
    n = _floored(counts)
    spread = n.max() - n.min()
    if spread == 0:
        return np.full(len(n), float(head))
    return tail + (head - tail) * np.sin(np.pi / 2 * (n - n.min()) / spread)


def drw_switch_epoch(total_epochs: int, start: float) -> int:
    """First (0-based) epoch of re-weighting: ``floor(start * total_epochs + 1/2)``.

    LDAM-DRW trains 200 epochs and re-weights from epoch 160, i.e. start = 0.8.
    start = 0 re-weights from the first epoch, start = 1 never does.
    """
    if not 0.0 <= start <= 1.0:
        raise ValueError(f"drw start = {start!r} must lie in [0, 1] (a fraction of the epochs)")
    return int(math.floor(start * total_epochs + 0.5))


def drw_weights(epoch: int, total_epochs: int, counts: Counts, start: float = 0.8,
                beta: float = 0.9999) -> np.ndarray:
    """Deferred re-weighting (Cao et al. 2019) at 0-based ``epoch``.

    All ones before ``drw_switch_epoch(total_epochs, start)``, then
    ``effective_number_weights(counts, beta)`` from that epoch on.
    """
    if epoch < drw_switch_epoch(total_epochs, start):
        return np.ones(len(_floored(counts)))
    return effective_number_weights(counts, beta)


def minority_quota(n_default: int, ratio: float) -> int:
    """Non-default examples that sit beside ``n_default`` class-0 ones at class-0 share ``ratio``.

    ``round(n_0 (1 - r) / r)``: how the imbalance stage thins the training split and
    how far over-sampling grows the other classes.
    """
    return int(round(n_default * (1.0 - ratio) / ratio))


def majority_quota(minority: int, ratio: float) -> int:
    """Class-0 examples that sit beside ``minority`` others at class-0 share ``ratio``: ``round(m r / (1 - r))``.

    How many class-0 examples under-sampling (and selective under-sampling's start) keep.
    """
    return int(round(minority * ratio / (1.0 - ratio)))


def largest_remainder(quotas: np.ndarray) -> np.ndarray:
    """Round non-negative quotas to integers (each the floor or the ceiling) summing to round(sum(quotas)).

    The largest fractional parts are rounded up; ties go to the lower index.
    """
    quotas = np.asarray(quotas, dtype=np.float64)
    floors = np.floor(quotas).astype(np.int64)
    short = int(round(float(quotas.sum()))) - int(floors.sum())
    order = np.argsort(-(quotas - floors), kind="stable")
    floors[order[:short]] += 1
    return floors
