"""The multi-label loss axis of the inspection model: one output per flag, each flag's imbalance handled.

Every loss is built as ``Loss(positives, photos, params)``: ``positives[j]`` of
the ``photos`` training photos carry flag j. It is called as ``loss(logits,
targets)`` on raw logits ``z`` of shape (n, J) and 0/1 targets of the same shape,
and returns the sum over flags of the mean over photos: each flag's gradient is
that of a binary task of its own, however many flags there are, so the
learning rate of the task stages carries over (the mean over flags too would
divide it by J). ``pi_j = positives[j] / photos`` is
flag j's prior and ``b_j = tau * log(pi_j / (1 - pi_j))`` its prior log-odds
(:func:`prior_log_odds`; a flag on no photo or on every photo is clamped to one
photo in from either end).

- ``bce``: binary cross entropy on ``z``, the plain multi-label loss (the pretrain
  stage's): a rare flag's logits are pulled down by its many negatives.
- ``logit_adjusted``: prior-corrected binary cross entropy, ``BCE(z + b, y)``
  (Menon et al. 2021's logit-adjusted loss, one binary output per flag): the prior
  is supplied during training, so ``z`` learns what separates the flag, not how rare it is.
- ``asymmetric``: the asymmetric loss of Ridnik et al. (2021), with ``p = sigmoid(z)``
  and the shifted probability ``p_m = max(p - m, 0)``:
  ``-y (1 - p)^g+ log p - (1 - y) p_m^g- log(1 - p_m)``; easy negatives are
  down-weighted (``g- > g+``) and those below ``m`` discarded (Ridnik et al.'s clamp
  of 1e-8 inside the logarithms).

Whatever the loss, the whole-photo rule recalibrates each flag's logit on
validation before combining flags (weldnet.triage.inspect), so the losses are
compared on what they rank, by validation.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from weldnet.core.config import check_choice
from weldnet.core.params import InspectParams

EPS = 1e-8          # Ridnik et al.'s clamp inside the logarithms


def prior_log_odds(positives: Sequence[int], photos: int, tau: float) -> np.ndarray:
    """``tau * log(pi / (1 - pi))`` per flag, ``pi = positives / photos`` kept within [1/photos, 1 - 1/photos]."""
    counts = np.asarray(positives, dtype=np.float64)
    if photos < 2 or np.any(counts < 0) or np.any(counts > photos):
        raise ValueError(f"need 0 <= positives <= photos and photos >= 2, got {list(positives)} of {photos}")
    counts = np.clip(counts, 1, photos - 1)
    return tau * np.log(counts / (photos - counts))


class MultiLabelLoss(nn.Module):
    """Base: the prior log-odds of each flag, a buffer (so ``.to(device)`` moves it)."""

    def __init__(self, positives: Sequence[int], photos: int, tau: float):
        super().__init__()
        self.register_buffer("log_odds", torch.tensor(prior_log_odds(positives, photos, tau), dtype=torch.float32))

    def _check(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        if logits.shape != targets.shape or logits.ndim != 2 or logits.shape[1] != len(self.log_odds):
            raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} must both be "
                             f"(n, {len(self.log_odds)})")


class BinaryCrossEntropy(MultiLabelLoss):
    """``BCE(z, y)``."""

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        self._check(logits, targets)
        return F.binary_cross_entropy_with_logits(logits, targets.float(), reduction="sum") / len(logits)


class LogitAdjustedBCE(MultiLabelLoss):
    """``BCE(z + b, y)``: the prior enters the training logits."""

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        self._check(logits, targets)
        return F.binary_cross_entropy_with_logits(logits + self.log_odds, targets.float(), reduction="sum") / len(logits)


class AsymmetricLoss(MultiLabelLoss):
    """Ridnik et al. (2021): ``-y (1-p)^g+ log p - (1-y) p_m^g- log(1 - p_m)``, ``p_m = max(p - m, 0)``."""

    def __init__(self, positives: Sequence[int], photos: int, tau: float, gamma_pos: float, gamma_neg: float,
                 clip: float):
        super().__init__(positives, photos, tau)
        self.gamma_pos, self.gamma_neg, self.clip = gamma_pos, gamma_neg, clip

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        self._check(logits, targets)
        y = targets.float()
        p = torch.sigmoid(logits)
        p_m = (p - self.clip).clamp(min=0.0)
        positive = y * (1 - p).pow(self.gamma_pos) * torch.log(p.clamp(min=EPS))
        negative = (1 - y) * p_m.pow(self.gamma_neg) * torch.log((1 - p_m).clamp(min=EPS))
        return -(positive + negative).sum() / len(logits)


MULTILABEL_LOSSES: dict[str, Callable[[Sequence[int], int, InspectParams], MultiLabelLoss]] = {
    "bce": lambda pos, n, p: BinaryCrossEntropy(pos, n, p.tau),
    "logit_adjusted": lambda pos, n, p: LogitAdjustedBCE(pos, n, p.tau),
    "asymmetric": lambda pos, n, p: AsymmetricLoss(pos, n, p.tau, p.asymmetric.gamma_pos, p.asymmetric.gamma_neg,
                                                   p.asymmetric.clip),
}


def build_multilabel_loss(name: str, positives: Sequence[int], photos: int, params: InspectParams) -> MultiLabelLoss:
    check_choice(name, MULTILABEL_LOSSES, "inspect.losses")
    return MULTILABEL_LOSSES[name](positives, photos, params)
