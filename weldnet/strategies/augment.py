"""The augmentation axis of the training strategies: batches mixed on the training device.

Every training batch is first mirrored (``train.flip``: each photo with probability
1/2, ``weldnet.train.loop.task_input``); ``augment`` then chooses what else
happens to it, inside the one training loop, on the model's input tensors:

- ``flip``: nothing more (the behaviour before this axis existed, bit for bit);
- ``mixup`` (Zhang et al. 2018): ``x = lam x + (1 - lam) x[perm]``, lam ~ Beta(alpha, alpha);
- ``cutmix`` (Yun et al. 2019): a box of area share about ``1 - lam`` pasted from
  ``x[perm]``, lam then recomputed as the share of the photo left unpasted;
- ``remix`` (Chou et al. 2020): mixup's photos, labels tilted to the smaller class:
  with ``r = n_a / n_b`` the training counts of the two photos' classes,
  ``lam_y = 0`` when ``r >= kappa`` and ``lam < tau``, ``lam_y = 1`` when
  ``r <= 1 / kappa`` and ``1 - lam < tau``, else ``lam_y = lam``.

A mixer returns the mixed batch and its :class:`MixedTargets` ``(a, b, lam)``, which
every loss takes as ``loss.mixed(logits, a, b, lam)`` (weldnet.strategies.losses).
Every draw (the permutation, lam, the box) comes from the epoch's generator, so a
run is as deterministic, and as resumable, as before. Mixers are frozen dataclasses:
their ``repr`` says everything that decides them (the fit memo keys on it).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from weldnet.core.config import check_choice
from weldnet.core.params import AugmentationParams


@dataclass(frozen=True)
class MixedTargets:
    """The labels of a mixed batch: photo i is ``lam_i`` of class ``a_i`` and ``1 - lam_i`` of class ``b_i``."""

    a: torch.Tensor
    b: torch.Tensor
    lam: torch.Tensor        # (n,) float, on the batch's device


Mix = Callable[[torch.Tensor, torch.Tensor, torch.Generator], tuple[torch.Tensor, MixedTargets]]


def beta_draw(alpha: float, generator: torch.Generator) -> float:
    """One draw from Beta(alpha, alpha), seeded from ``generator`` (torch's Beta sampler takes no generator)."""
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    return float(np.random.default_rng(seed).beta(alpha, alpha))


def partners(n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """The photo each photo is mixed with: a permutation drawn on the CPU, moved to the batch's device."""
    return torch.randperm(n, generator=generator).to(device, non_blocking=True)


def mix_photos(x: torch.Tensor, perm: torch.Tensor, lam: float) -> torch.Tensor:
    """``lam x + (1 - lam) x[perm]``."""
    return x * lam + x[perm] * (1.0 - lam)


def cut_box(height: int, width: int, lam: float, generator: torch.Generator) -> tuple[int, int, int, int]:
    """Yun et al.'s box (top, bottom, left, right): sides ``sqrt(1 - lam)`` of the photo's, a uniform centre, clipped."""
    ratio = float(np.sqrt(1.0 - lam))
    cut_h, cut_w = int(height * ratio), int(width * ratio)
    cy = int(torch.randint(0, height, (1,), generator=generator))
    cx = int(torch.randint(0, width, (1,), generator=generator))
    return (max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height),
            max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width))


def remix_lambda(lam: float, count_a: torch.Tensor, count_b: torch.Tensor, kappa: float, tau: float) -> torch.Tensor:
    """Remix's label share of class a for each photo (see the module doc); counts are the classes' training counts."""
    ratio = count_a.double() / count_b.double()
    out = torch.full(ratio.shape, lam, dtype=torch.float32, device=ratio.device)
    out = torch.where((ratio >= kappa) & (lam < tau), torch.zeros_like(out), out)
    return torch.where((ratio <= 1.0 / kappa) & (1.0 - lam < tau), torch.ones_like(out), out)


@dataclass(frozen=True)
class Mixup:
    alpha: float

    def __call__(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator):
        lam = beta_draw(self.alpha, generator)
        perm = partners(len(x), generator, x.device)
        return mix_photos(x, perm, lam), MixedTargets(y, y[perm], torch.full((len(x),), lam, device=x.device))


@dataclass(frozen=True)
class CutMix:
    alpha: float

    def __call__(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator):
        drawn = beta_draw(self.alpha, generator)
        perm = partners(len(x), generator, x.device)
        top, bottom, left, right = cut_box(x.shape[-2], x.shape[-1], drawn, generator)
        mixed = x.clone()
        mixed[..., top:bottom, left:right] = x[perm][..., top:bottom, left:right]
        lam = 1.0 - (bottom - top) * (right - left) / (x.shape[-2] * x.shape[-1])
        return mixed, MixedTargets(y, y[perm], torch.full((len(x),), lam, device=x.device))


@dataclass(frozen=True)
class Remix:
    alpha: float
    kappa: float
    tau: float
    counts: tuple[int, ...]          # training photos per class of the rows this fit trains on

    def __call__(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator):
        lam = beta_draw(self.alpha, generator)
        perm = partners(len(x), generator, x.device)
        counts = torch.tensor(self.counts, device=x.device).clamp(min=1)
        lam_y = remix_lambda(lam, counts[y], counts[y[perm]], self.kappa, self.tau)
        return mix_photos(x, perm, lam), MixedTargets(y, y[perm], lam_y)


AUGMENTS: dict[str, Callable[[AugmentationParams, Sequence[int]], Mix | None]] = {
    "flip": lambda p, counts: None,
    "mixup": lambda p, counts: Mixup(p.mixup.alpha),
    "cutmix": lambda p, counts: CutMix(p.cutmix.alpha),
    "remix": lambda p, counts: Remix(p.remix.alpha, p.remix.kappa, p.remix.tau, tuple(int(n) for n in counts)),
}


def build_mix(name: str, params: AugmentationParams, counts: Sequence[int], where: str = "augment") -> Mix | None:
    """The mixer registered as ``name`` for a fit on rows with these class counts (None: the batch is not mixed)."""
    check_choice(name, AUGMENTS, where)
    return AUGMENTS[name](params, counts)
