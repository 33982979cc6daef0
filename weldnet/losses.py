"""The loss axis of the training strategies: one small ``nn.Module`` per ``params.yaml`` name.

Every loss is built as ``Loss(class_counts, **hyperparameters)`` from the training
class counts (class 0 the default class), keeps what it derives from them as
buffers (so ``.to(device)`` moves them) and is called as ``loss(logits, target)``
on raw logits of shape (n, K) and integer targets of shape (n,). The trainer
calls ``loss.on_epoch(epoch, total_epochs)`` (0-based epoch) at the start of
every epoch; only LDAM with deferred re-weighting does anything there.

Weighted cross entropies follow torch's convention:
``sum_i w_{y_i} CE_i / sum_i w_{y_i}`` over the mini-batch.

Their test-time counterparts (threshold-moving, post-hoc logit adjustment) are
decision rules, in ``weldnet.decisions``.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from weldnet import class_stats
from weldnet.config import check_choice
from weldnet.distributed import global_sum, world_size
from weldnet.params import LOSS_NAMES, LossParams


# --------------------------------------------------------------------------- losses
class ClassCountLoss(nn.Module):
    """Base: remembers the number of classes K and checks the logits against it."""

    def __init__(self, class_counts: Sequence[int]):
        super().__init__()
        self.class_counts = tuple(int(n) for n in class_counts)
        class_stats.priors(self.class_counts)  # rejects empty or negative counts
        self.num_classes = len(self.class_counts)

    def on_epoch(self, epoch: int, total_epochs: int) -> None:
        """Called by the trainer at the start of every (0-based) epoch; no-op by default."""

    def _check(self, logits: torch.Tensor) -> None:
        if logits.ndim != 2 or logits.shape[1] != self.num_classes:
            raise ValueError(f"logits of shape {tuple(logits.shape)} do not match the {self.num_classes} "
                             "classes the loss was built for; expected (batch, K)")

    def _buffer(self, name: str, values: np.ndarray) -> None:
        self.register_buffer(name, torch.as_tensor(values, dtype=torch.float32))


class CrossEntropy(ClassCountLoss):
    """Equation 16 of the report: ``-(1/n) sum_i log f(x_i, l_i)``, f the softmax."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self._check(logits)
        return F.cross_entropy(logits, target)


class BayesianCrossEntropy(ClassCountLoss):
    """Equation 17 of the report: ``-(1/(K n)) sum_i log f(x_i, l_i) / p(class(x_i))``.

    ``p(c) = n_c / n`` is the prior of class c WITHIN the mini-batch, K the number of
    classes of the task, so the loss is ``(1/K) sum_{c in batch} mean_{i: l_i = c} CE_i``:
    the per-class mean cross entropies summed over the classes present, over K. A class
    absent from the batch has no term; its prior is never looked up, so neither the
    value nor the gradient divides by zero.

    Under torch.distributed the mini-batch is the GLOBAL batch, which the ranks
    share: ``n_c`` is the all-reduced class count of every rank's part, so the prior
    is the one a single process would compute. Like every loss here, the value is
    then a mean over this rank's ``m`` photos, ``(n / m) * (1/K) sum_{i on this rank}
    CE_i / n_{c_i}``, so that the ranks' values weighted by ``m / n`` (what the trainer
    does) sum to equation 17 over the global batch.
    """

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self._check(logits)
        ce = F.cross_entropy(logits, target, reduction="none")
        in_batch = torch.bincount(target, minlength=self.num_classes).to(ce.dtype)
        if world_size() > 1:
            counts = global_sum(in_batch)
            return (ce / counts[target]).sum() / self.num_classes * (counts.sum() / len(target))
        # log f / (n_c / n) summed and divided by K n  ==  sum log f / n_c over K
        return (ce / in_batch[target]).sum() / self.num_classes


class WeightedCrossEntropy(ClassCountLoss):
    """Cross entropy with global inverse-frequency class weights ``w_c ∝ 1/n_c`` (mean 1 over classes)."""

    def __init__(self, class_counts: Sequence[int]):
        super().__init__(class_counts)
        self._buffer("weight", class_stats.inverse_frequency_weights(self.class_counts))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self._check(logits)
        return F.cross_entropy(logits, target, weight=self.weight.to(logits.dtype))


class ClassBalancedCrossEntropy(ClassCountLoss):
    """Cross entropy weighted by effective-number weights ``(1 - beta)/(1 - beta**n_c)`` (Cui et al. 2019)."""

    def __init__(self, class_counts: Sequence[int], beta: float = 0.9999):
        super().__init__(class_counts)
        self.beta = beta
        self._buffer("weight", class_stats.effective_number_weights(self.class_counts, beta))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self._check(logits)
        return F.cross_entropy(logits, target, weight=self.weight.to(logits.dtype))


class FocalLoss(ClassCountLoss):
    """Focal loss (Lin et al. 2017): ``(1/n) sum_i -alpha_{l_i} (1 - p_i)**gamma log p_i``, p_i = f(x_i, l_i).

    ``alpha = None``: every alpha_c = 1. A number ``a``: alpha_0 = 1 - a for the default
    class 0 and alpha_c = a for every other class (Lin et al. used a = 0.25 with
    gamma = 2 for the rare foreground class). gamma = 0 and alpha = None is cross entropy.
    """

    def __init__(self, class_counts: Sequence[int], gamma: float = 2.0, alpha: float | None = None):
        super().__init__(class_counts)
        self.gamma = gamma
        alphas = np.ones(self.num_classes) if alpha is None else np.full(self.num_classes, alpha)
        if alpha is not None:
            alphas[0] = 1.0 - alpha
        self._buffer("alpha", alphas)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self._check(logits)
        log_p = F.log_softmax(logits, dim=1).gather(1, target[:, None]).squeeze(1)
        # 1 - p = -expm1(log p) keeps its precision near p = 1; the clamp keeps the
        # gradient of x**gamma finite for gamma < 1 when p rounds to exactly 1
        modulating = (-torch.expm1(log_p)).clamp(min=1e-12) ** self.gamma
        return -(self.alpha.to(logits.dtype)[target] * modulating * log_p).mean()


class LdamLoss(ClassCountLoss):
    """LDAM (Cao et al. 2019): ``CE(s * (z - Delta_y e_y), y)``, optionally with deferred re-weighting.

    ``Delta_c = ldam_margins(counts, max_margin)`` is subtracted from the true-class
    logit only; ``s = scale``. With ``drw`` the cross entropy is weighted by
    ``drw_weights(epoch, total_epochs, counts, drw_start, drw_beta)``, updated in
    ``on_epoch``: ones before the switch epoch, effective-number weights after.
    Without DRW the weights stay ones. Cao et al.'s s = 30 assumes cosine logits
    (a strategy's ``head: normed``); with a plain linear head a smaller s is safer.
    """

    def __init__(self, class_counts: Sequence[int], max_margin: float = 0.5, scale: float = 30.0,
                 drw: bool = True, drw_start: float = 0.8, drw_beta: float = 0.9999):
        super().__init__(class_counts)
        self.scale, self.drw, self.drw_start, self.drw_beta = scale, drw, drw_start, drw_beta
        self._buffer("margins", class_stats.ldam_margins(self.class_counts, max_margin))
        self._buffer("weight", np.ones(self.num_classes))

    def on_epoch(self, epoch: int, total_epochs: int) -> None:
        if self.drw:
            w = class_stats.drw_weights(epoch, total_epochs, self.class_counts, self.drw_start, self.drw_beta)
            self.weight.copy_(torch.as_tensor(w, dtype=self.weight.dtype))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self._check(logits)
        true_class = F.one_hot(target, self.num_classes).to(logits.dtype)
        adjusted = logits - true_class * self.margins.to(logits.dtype)[target][:, None]
        return F.cross_entropy(self.scale * adjusted, target, weight=self.weight.to(logits.dtype))


class LogitAdjustedLoss(ClassCountLoss):
    """Logit-adjusted loss (Menon et al. 2021): ``CE(z + tau * log p, y)``, p the training priors.

    tau = 1 is the balanced softmax: ``-log(p_y e^{z_y} / sum_c p_c e^{z_c})``.
    """

    def __init__(self, class_counts: Sequence[int], tau: float = 1.0):
        super().__init__(class_counts)
        self.tau = tau
        self._buffer("offsets", class_stats.logit_offsets(self.class_counts, tau))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self._check(logits)
        return F.cross_entropy(logits + self.offsets.to(logits.dtype), target)


class HingeLoss(ClassCountLoss):
    """Multi-class hinge loss of a linear SVM (report section 3.10), torch's ``multi_margin_loss``:

    ``(1/n) sum_i (1/K) sum_{c != y_i} max(0, margin - z_{y_i} + z_c)``.
    """

    def __init__(self, class_counts: Sequence[int], margin: float = 1.0):
        super().__init__(class_counts)
        self.margin = margin

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self._check(logits)
        return F.multi_margin_loss(logits, target, margin=self.margin)


LossBuilder = Callable[[Sequence[int], LossParams], nn.Module]

LOSSES: dict[str, LossBuilder] = {
    "cross_entropy": lambda counts, p: CrossEntropy(counts),
    "bayesian": lambda counts, p: BayesianCrossEntropy(counts),
    "weighted": lambda counts, p: WeightedCrossEntropy(counts),
    "class_balanced": lambda counts, p: ClassBalancedCrossEntropy(counts, beta=p.class_balanced.beta),
    "focal": lambda counts, p: FocalLoss(counts, gamma=p.focal.gamma, alpha=p.focal.alpha),
    "ldam": lambda counts, p: LdamLoss(counts, max_margin=p.ldam.max_margin, scale=p.ldam.scale,
                                       drw=p.ldam.drw, drw_start=p.ldam.drw_start, drw_beta=p.ldam.drw_beta),
    "logit_adjusted": lambda counts, p: LogitAdjustedLoss(counts, tau=p.logit_adjusted.tau),
    "hinge": lambda counts, p: HingeLoss(counts, margin=p.hinge.margin),
}


def build_loss(name: str, class_counts: Sequence[int], params: LossParams, where: str = "loss") -> nn.Module:
    """The loss registered as ``name``; an unknown name raises ParamError listing the valid ones."""
    check_choice(name, LOSSES, where)
    return LOSSES[name](class_counts, params)
