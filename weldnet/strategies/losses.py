"""The loss and class-weighting axes of the training strategies: one small ``nn.Module`` per loss name.

Every loss is built as ``Loss(class_counts, weighting=..., **hyperparameters)``
from the training class counts (class 0 the default class), keeps what it derives
from them as buffers (so ``.to(device)`` moves them) and is called as
``loss(logits, target)`` on raw logits of shape (n, K) and integer targets of shape
(n,). The trainer calls ``loss.on_epoch(epoch, total_epochs)`` at the start of
every epoch, with the 0-based epoch and the total counted over the whole schedule
(every phase of it), so deferred re-weighting switches at a fraction of the
schedule, not of each phase.

**Weighting** (the ``weighting`` axis, ``WEIGHTINGS``): any loss takes any of
``none``, ``inverse_frequency``, ``effective_number`` and ``drw`` as per-class
weights ``w_c`` (from ``weldnet.core.class_stats``, averaging 1 over the K classes):

- cross entropy, logit adjustment, LDAM: torch's weighted mean
  ``sum_i w_{y_i} l_i / sum_i w_{y_i}`` over the mini-batch (``F.cross_entropy(weight=...)``);
- focal loss and the hinge loss: the same weighted mean of their per-photo terms,
  the focal ``alpha`` applied on top (Cui et al.'s class-balanced focal loss);
- Bayesian cross entropy, which already averages per class within the batch:
  class c's term is multiplied by ``w_c``, ``(1/K) sum_{c in batch} w_c mean_{i: y_i = c} CE_i``,
  so a weighting re-weights classes on top of the batch-prior correction.

With ``none`` every loss is exactly its unweighted formula (LDAM, as in Cao et al.'s
code, passes weights of one). ``drw`` is ones before
``class_stats.drw_switch_epoch(total_epochs, start)`` and effective-number weights
from then on: LDAM-DRW is ``loss: ldam`` with ``weighting: drw``, as Cao et al.'s
``loss_type`` x ``train_rule``.

**Mixed targets** (the ``augment`` axis: mixup, CutMix, Remix): every loss takes
``loss.mixed(logits, a, b, lam)``, the two losses of the mixed photos' labels mixed
photo by photo, ``reduce(lam_i t(z_i, a_i)) + reduce((1 - lam_i) t(z_i, b_i))``,
``t`` the loss's per-photo term and ``reduce`` its own batch reduction (the weighted
mean, or Bayesian cross entropy's per-class mean). With one ``lam`` for the batch
(mixup, CutMix) that is exactly ``lam L(z, a) + (1 - lam) L(z, b)``; with ``lam = 1``
it is ``L(z, a)``. Bayesian cross entropy's batch prior in a mixed batch is each
class's number of photos drawn into the batch: ``b`` is a permutation of ``a``, so
both label sets count the same ``n_c`` (docs/strategies.md).

**Label smoothing** (``smoothing``: one ``eps_c`` per class, label-aware smoothing
of MiSLAS): the target ``(1 - eps_y) e_y + eps_y / K`` by the same linearity,
``(1 - eps_y) t(z, y) + (eps_y / K) sum_c t(z, c)``, reduced by the true label;
for cross entropy this is MiSLAS's label-aware smoothing loss.

Their test-time counterparts (threshold-moving, post-hoc logit adjustment) are
decision rules, in ``weldnet.strategies.decisions``.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from weldnet.core import class_stats
from weldnet.core.config import check_choice
from weldnet.core.distributed import global_sum, world_size
from weldnet.core.params import LossParams, WeightingParams


# --------------------------------------------------------------------------- weightings
class ClassWeighting:
    """``none``: no class weights. Subclasses return the weights ``w_c`` in force at an epoch."""

    name = "none"
    depends_on_epoch = False        # True when the weights change during training (DRW)

    def weights(self, counts: Sequence[int], epoch: int | None, total_epochs: int | None) -> np.ndarray | None:
        """Per-class weights at 0-based ``epoch`` of ``total_epochs`` (``None``: before training starts)."""
        return None


class InverseFrequency(ClassWeighting):
    name = "inverse_frequency"

    def weights(self, counts, epoch, total_epochs):
        return class_stats.inverse_frequency_weights(counts)


class EffectiveNumber(ClassWeighting):
    """Class-balanced weights of Cui et al. (2019): one over the effective number of examples."""

    name = "effective_number"

    def __init__(self, beta: float):
        self.beta = beta

    def weights(self, counts, epoch, total_epochs):
        return class_stats.effective_number_weights(counts, self.beta)


class DeferredReweighting(ClassWeighting):
    """DRW (Cao et al. 2019): ones, then effective-number weights from ``start`` of the schedule's epochs."""

    name = "drw"
    depends_on_epoch = True

    def __init__(self, start: float, beta: float):
        self.start, self.beta = start, beta

    def weights(self, counts, epoch, total_epochs):
        if epoch is None or total_epochs is None:
            return np.ones(len(counts))
        return class_stats.drw_weights(epoch, total_epochs, counts, self.start, self.beta)


WEIGHTINGS: dict[str, Callable[[WeightingParams], ClassWeighting]] = {
    "none": lambda p: ClassWeighting(),
    "inverse_frequency": lambda p: InverseFrequency(),
    "effective_number": lambda p: EffectiveNumber(p.effective_number.beta),
    "drw": lambda p: DeferredReweighting(p.drw.start, p.drw.beta),
}


# --------------------------------------------------------------------------- losses
class ClassCountLoss(nn.Module):
    """Base: remembers the number of classes K, checks the logits against it, and holds the class weights.

    ``self.weight`` is a buffer of the K weights in force (ones when unweighted);
    ``on_epoch`` updates it for a weighting that changes with the epoch (DRW).
    ``self.weighted`` is False for ``none``, so an unweighted loss runs its plain formula.
    """

    def __init__(self, class_counts: Sequence[int], weighting: ClassWeighting | None = None,
                 smoothing: Sequence[float] | None = None):
        super().__init__()
        self.class_counts = tuple(int(n) for n in class_counts)
        class_stats.priors(self.class_counts)  # rejects empty or negative counts
        self.num_classes = len(self.class_counts)
        self.weighting = weighting or ClassWeighting()
        self.weighted = self.weighting.name != "none"
        initial = self.weighting.weights(self.class_counts, None, None)
        self._buffer("weight", np.ones(self.num_classes) if initial is None else initial)
        self.smoothed = smoothing is not None
        if smoothing is not None:
            if len(smoothing) != self.num_classes:
                raise ValueError(f"{len(smoothing)} smoothing values for {self.num_classes} classes")
            self._buffer("smoothing", np.asarray(smoothing, dtype=np.float64))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The loss of integer targets (n,): the plain formula, or its label-smoothed form."""
        self._check(logits)
        if self.smoothed:
            return self.reduce(self.smoothed_terms(logits, target), target)
        return self.plain(logits, target)

    def mixed(self, logits: torch.Tensor, a: torch.Tensor, b: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
        """The loss of mixed photos: ``reduce(lam t(z, a), a) + reduce((1 - lam) t(z, b), b)``, lam of shape (n,)."""
        self._check(logits)
        terms = self.smoothed_terms if self.smoothed else self.terms
        lam = lam.to(logits.dtype)
        return self.reduce(lam * terms(logits, a), a) + self.reduce((1 - lam) * terms(logits, b), b)

    def plain(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.reduce(self.terms(logits, target), target)

    def terms(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The per-photo terms (n,) that ``reduce`` averages into the loss."""
        raise NotImplementedError

    def reduce(self, terms: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The batch reduction of per-photo terms labelled ``target``: the weighted mean (linear in ``terms``)."""
        return self.weighted_mean(terms, target)

    def smoothed_terms(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``(1 - eps_y) t(z, y) + (eps_y / K) sum_c t(z, c)``: the terms of the smoothed target."""
        eps = self.smoothing.to(logits.dtype)[target]
        every = sum(self.terms(logits, torch.full_like(target, c)) for c in range(self.num_classes))
        return (1 - eps) * self.terms(logits, target) + eps / self.num_classes * every

    def on_epoch(self, epoch: int, total_epochs: int) -> None:
        """Called by the trainer at the start of every (0-based) epoch of the schedule's ``total_epochs``."""
        w = self.weighting.weights(self.class_counts, epoch, total_epochs)
        if w is not None:
            self.weight.copy_(torch.as_tensor(w, dtype=self.weight.dtype))

    def class_weight(self, logits: torch.Tensor) -> torch.Tensor | None:
        """The class weights in the logits' dtype, or None when the loss is unweighted."""
        return self.weight.to(logits.dtype) if self.weighted else None

    def weighted_mean(self, terms: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``sum_i w_{y_i} t_i / sum_i w_{y_i}``: torch's convention for weighted losses; the mean when unweighted."""
        if not self.weighted:
            return terms.mean()
        w = self.weight.to(terms.dtype)[target]
        return (w * terms).sum() / w.sum()

    def _check(self, logits: torch.Tensor) -> None:
        if logits.ndim != 2 or logits.shape[1] != self.num_classes:
            raise ValueError(f"logits of shape {tuple(logits.shape)} do not match the {self.num_classes} "
                             "classes the loss was built for; expected (batch, K)")

    def _buffer(self, name: str, values: np.ndarray) -> None:
        self.register_buffer(name, torch.as_tensor(values, dtype=torch.float32))


class CrossEntropy(ClassCountLoss):
    """Equation 16 of the report: ``-(1/n) sum_i log f(x_i, l_i)``, f the softmax; weighted: torch's weighted mean."""

    def plain(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, target, weight=self.class_weight(logits))

    def terms(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, target, reduction="none")


class BayesianCrossEntropy(ClassCountLoss):
    """Equation 17 of the report: ``-(1/(K n)) sum_i log f(x_i, l_i) / p(class(x_i))``.

    ``p(c) = n_c / n`` is the prior of class c WITHIN the mini-batch, K the number of
    classes of the task, so the loss is ``(1/K) sum_{c in batch} mean_{i: l_i = c} CE_i``:
    the per-class mean cross entropies summed over the classes present, over K. A class
    absent from the batch has no term; its prior is never looked up, so neither the
    value nor the gradient divides by zero. Weighted: class c's term times ``w_c``.

    Under torch.distributed the mini-batch is the GLOBAL batch, which the ranks
    share: ``n_c`` is the all-reduced class count of every rank's part, so the prior
    is the one a single process would compute. Like every loss here, the value is
    then a mean over this rank's ``m`` photos, ``(n / m) * (1/K) sum_{i on this rank}
    CE_i / n_{c_i}``, so that the ranks' values weighted by ``m / n`` (what the trainer
    does) sum to equation 17 over the global batch.
    """

    def terms(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, target, reduction="none")

    def reduce(self, terms: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-class means of the terms, ``n_c`` the photos of class c in the (global) batch, summed over K."""
        in_batch = torch.bincount(target, minlength=self.num_classes).to(terms.dtype)
        if self.weighted:
            terms = terms * self.weight.to(terms.dtype)[target]
        if world_size() > 1:
            counts = global_sum(in_batch)
            return (terms / counts[target]).sum() / self.num_classes * (counts.sum() / len(target))
        # log f / (n_c / n) summed and divided by K n  ==  sum log f / n_c over K
        return (terms / in_batch[target]).sum() / self.num_classes


class FocalLoss(ClassCountLoss):
    """Focal loss (Lin et al. 2017): ``(1/n) sum_i -alpha_{l_i} (1 - p_i)**gamma log p_i``, p_i = f(x_i, l_i).

    ``alpha = None``: every alpha_c = 1. A number ``a``: alpha_0 = 1 - a for the default
    class 0 and alpha_c = a for every other class (Lin et al. used a = 0.25 with
    gamma = 2 for the rare foreground class). gamma = 0 and alpha = None is cross entropy.
    Weighted: the weighted mean of the same terms (class-balanced focal loss, Cui et al. 2019).
    """

    def __init__(self, class_counts: Sequence[int], gamma: float = 2.0, alpha: float | None = None,
                 weighting: ClassWeighting | None = None, smoothing: Sequence[float] | None = None):
        super().__init__(class_counts, weighting, smoothing)
        self.gamma = gamma
        alphas = np.ones(self.num_classes) if alpha is None else np.full(self.num_classes, alpha)
        if alpha is not None:
            alphas[0] = 1.0 - alpha
        self._buffer("alpha", alphas)

    def terms(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(logits, dim=1).gather(1, target[:, None]).squeeze(1)
        # 1 - p = -expm1(log p) keeps its precision near p = 1; the clamp keeps the
        # gradient of x**gamma finite for gamma < 1 when p rounds to exactly 1
        modulating = (-torch.expm1(log_p)).clamp(min=1e-12) ** self.gamma
        return -(self.alpha.to(logits.dtype)[target] * modulating * log_p)


class LdamLoss(ClassCountLoss):
    """LDAM (Cao et al. 2019): ``CE(s * (z - Delta_y e_y), y)``, weighted by the strategy's weighting.

    ``Delta_c = ldam_margins(counts, max_margin)`` is subtracted from the true-class
    logit only; ``s = scale``. The cross entropy always takes ``self.weight`` (ones
    when unweighted, as in Cao et al.'s code); with ``weighting: drw`` that is
    LDAM-DRW. Cao et al.'s s = 30 assumes cosine logits (a strategy's
    ``head: normed``); with a plain linear head a smaller s is safer.
    """

    def __init__(self, class_counts: Sequence[int], max_margin: float = 0.5, scale: float = 30.0,
                 weighting: ClassWeighting | None = None, smoothing: Sequence[float] | None = None):
        super().__init__(class_counts, weighting, smoothing)
        self.scale = scale
        self._buffer("margins", class_stats.ldam_margins(self.class_counts, max_margin))

    def plain(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.scale * self._adjusted(logits, target), target, weight=self.weight.to(logits.dtype))

    def terms(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.scale * self._adjusted(logits, target), target, reduction="none")

    def _adjusted(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        true_class = F.one_hot(target, self.num_classes).to(logits.dtype)
        return logits - true_class * self.margins.to(logits.dtype)[target][:, None]


class LogitAdjustedLoss(ClassCountLoss):
    """Logit-adjusted loss (Menon et al. 2021): ``CE(z + tau * log p, y)``, p the training priors.

    tau = 1 is the balanced softmax: ``-log(p_y e^{z_y} / sum_c p_c e^{z_c})``.
    """

    def __init__(self, class_counts: Sequence[int], tau: float = 1.0, weighting: ClassWeighting | None = None,
                 smoothing: Sequence[float] | None = None):
        super().__init__(class_counts, weighting, smoothing)
        self.tau = tau
        self._buffer("offsets", class_stats.logit_offsets(self.class_counts, tau))

    def plain(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits + self.offsets.to(logits.dtype), target, weight=self.class_weight(logits))

    def terms(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits + self.offsets.to(logits.dtype), target, reduction="none")


class HingeLoss(ClassCountLoss):
    """Multi-class hinge loss of a linear SVM (report section 3.10), torch's ``multi_margin_loss``:

    ``(1/n) sum_i (1/K) sum_{c != y_i} max(0, margin - z_{y_i} + z_c)``. Weighted: the
    weighted mean of the per-photo terms, a class-weighted SVM (C_c proportional to w_c).
    """

    def __init__(self, class_counts: Sequence[int], margin: float = 1.0, weighting: ClassWeighting | None = None,
                 smoothing: Sequence[float] | None = None):
        super().__init__(class_counts, weighting, smoothing)
        self.margin = margin

    def plain(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if not self.weighted:
            return F.multi_margin_loss(logits, target, margin=self.margin)
        return self.weighted_mean(self.terms(logits, target), target)

    def terms(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.multi_margin_loss(logits, target, margin=self.margin, reduction="none")


Smoothing = Sequence[float] | None
LossBuilder = Callable[[Sequence[int], LossParams, ClassWeighting, Smoothing], ClassCountLoss]

LOSSES: dict[str, LossBuilder] = {
    "cross_entropy": lambda counts, p, w, s: CrossEntropy(counts, w, s),
    "bayesian": lambda counts, p, w, s: BayesianCrossEntropy(counts, w, s),
    "focal": lambda counts, p, w, s: FocalLoss(counts, gamma=p.focal.gamma, alpha=p.focal.alpha, weighting=w,
                                               smoothing=s),
    "ldam": lambda counts, p, w, s: LdamLoss(counts, max_margin=p.ldam.max_margin, scale=p.ldam.scale, weighting=w,
                                             smoothing=s),
    "logit_adjusted": lambda counts, p, w, s: LogitAdjustedLoss(counts, tau=p.logit_adjusted.tau, weighting=w,
                                                                smoothing=s),
    "hinge": lambda counts, p, w, s: HingeLoss(counts, margin=p.hinge.margin, weighting=w, smoothing=s),
}


def build_weighting(name: str, params: WeightingParams | None = None, where: str = "weighting") -> ClassWeighting:
    """The weighting registered as ``name``; an unknown name raises ParamError listing the valid ones."""
    check_choice(name, WEIGHTINGS, where)
    return WEIGHTINGS[name](params or WeightingParams())


def build_loss(name: str, class_counts: Sequence[int], params: LossParams, where: str = "loss", *,
               weighting: str = "none", weightings: WeightingParams | None = None,
               label_smoothing: bool = False) -> ClassCountLoss:
    """The loss registered as ``name`` with the class weighting ``weighting``; unknown names raise ParamError.

    ``label_smoothing``: label-aware smoothing of the targets, ``params.label_smoothing``'s head and tail.
    """
    check_choice(name, LOSSES, where)
    smoothing = (class_stats.label_aware_smoothing(class_counts, params.label_smoothing.head,
                                                   params.label_smoothing.tail) if label_smoothing else None)
    return LOSSES[name](class_counts, params, build_weighting(weighting, weightings), smoothing)
