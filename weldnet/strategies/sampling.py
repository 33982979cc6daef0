"""The sampler axis of the training strategies: which training examples one epoch visits, in which order.

``epoch_indices(name, labels, batch_size, rng, params)`` returns the example order
of ONE epoch; the loader cuts it into consecutive batches of ``batch_size``.
``EpochSampler`` wraps it for ``torch.utils.data.DataLoader(sampler=...)``. Class 0
is the default (majority) class.

Over- and under-sampling pick which examples to duplicate or keep with
``draw_rng``. The report drew them once and trained on the resulting set
(sections 6.4.4 and 6.4.5); ``EpochSampler`` does the same unless
``sampling.redraw_each_epoch`` is true, in which case every epoch draws afresh.

Under torch.distributed every rank draws the same epoch order from the same
seeds, so the over- and under-sampled sets are the same on every rank;
``RankBatches`` cuts that order into the global batches a single process would
train on and gives each rank its part of each, so a stratified global batch
keeps the training shares however many processes share it.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch.utils.data
from torch.utils.data import DataLoader

from weldnet.core.class_stats import largest_remainder, majority_quota, minority_quota
from weldnet.core.config import check_choice
from weldnet.core.params import SamplingParams
from weldnet.photos.dataset import PhotoDataset, photo_loader

# seeds the draw of the over/under-sampled set apart from the per-epoch shuffles
_DRAW_STREAM = 0x5A3D


def _class_rows(labels: np.ndarray) -> dict[int, np.ndarray]:
    return {int(c): np.flatnonzero(labels == c) for c in np.unique(labels)}


def _plain(labels, batch_size, rng, draw_rng, params) -> np.ndarray:
    """Each example once, shuffled."""
    return rng.permutation(len(labels))


def _oversample(labels, batch_size, rng, draw_rng, params) -> np.ndarray:
    """Every example once, plus non-default examples drawn with replacement until class 0 is target_ratio.

    The non-default classes grow to ``minority_quota(n_0, r)`` examples in all, shared
    in proportion to their sizes. If class 0 is already at most r of the data (or there
    is no non-default example) this is a plain shuffle.
    """
    r = params.target_ratio
    rows = _class_rows(labels)
    n_default = len(rows.get(0, ()))
    minority = {c: idx for c, idx in rows.items() if c != 0}
    sizes = np.array([len(idx) for idx in minority.values()])
    wanted = minority_quota(n_default, r)
    if not minority or wanted <= sizes.sum():
        return rng.permutation(len(labels))
    targets = largest_remainder(sizes / sizes.sum() * wanted)
    extra = [draw_rng.choice(idx, size=t - len(idx), replace=True) for idx, t in zip(minority.values(), targets)]
    return rng.permutation(np.concatenate([np.arange(len(labels)), *extra]))


def undersampled_rows(labels: np.ndarray, target_ratio: float,
                      draw_rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(kept class-0 rows, set-aside class-0 rows) of random under-sampling to ``target_ratio``.

    ``majority_quota(m, r)`` class-0 rows are drawn without replacement (m: the number
    of non-default rows), in draw order; the others are set aside, ascending. With no
    non-default row, or class 0 already at most r of the data, every class-0 row is kept.
    This is the ``undersample`` sampler's set and selective under-sampling's round 0.
    """
    labels = np.asarray(labels)
    default = np.flatnonzero(labels == 0)
    n_minority = int(np.sum(labels != 0))
    keep = majority_quota(n_minority, target_ratio)
    if n_minority == 0 or keep >= len(default):
        return default, np.zeros(0, dtype=np.int64)
    kept = draw_rng.choice(default, size=keep, replace=False)
    return kept, np.setdiff1d(default, kept)


def _undersample(labels, batch_size, rng, draw_rng, params) -> np.ndarray:
    """Every non-default example once, and ``undersampled_rows``' class-0 examples; each epoch shuffled.

    If class 0 is already at most r of the data (or there is no non-default example)
    this is a plain shuffle.
    """
    kept, set_aside = undersampled_rows(labels, params.target_ratio, draw_rng)
    if not len(set_aside):
        return rng.permutation(len(labels))
    return rng.permutation(np.concatenate([kept, np.flatnonzero(labels != 0)]))


def _stratified(labels, batch_size, rng, draw_rng, params) -> np.ndarray:
    """Each example once, ordered so every batch holds the training proportions.

    A batch of size B holds floor(B n_c / n) or ceil(B n_c / n) examples of class c.
    Full batches round the same fractions, so which classes get the ceiling is spread
    over them: class c gets it in k_c batches, where k_c makes its epoch total exactly
    n_c once the last, partial batch has taken its largest-remainder share. The k_c
    ceilings are dealt round-robin to the (shuffled) full batches, at most one per batch
    and class. Each class's examples are shuffled and handed out in batch order.
    """
    n = len(labels)
    rows = _class_rows(labels)
    classes = list(rows)
    n_c = np.array([len(rows[c]) for c in classes], dtype=np.int64)
    n_full, last = divmod(n, batch_size)
    floors = batch_size * n_c // n
    last_counts = largest_remainder(last * n_c / n) if last else np.zeros_like(n_c)
    ceilings = n_c - n_full * floors - last_counts          # k_c, each in [0, n_full]
    per_batch = np.tile(floors, (n_full, 1))
    if n_full:
        # k_c <= n_full consecutive slots of a round-robin land in k_c different batches
        ceiling_class = np.repeat(np.arange(len(classes)), ceilings)
        ceiling_batch = rng.permutation(n_full)[np.arange(len(ceiling_class)) % n_full]
        np.add.at(per_batch, (ceiling_batch, ceiling_class), 1)
    if last:
        per_batch = np.vstack([per_batch, last_counts])
    starts = np.vstack([np.zeros(len(classes), dtype=np.int64), np.cumsum(per_batch, axis=0)[:-1]])
    pools = [rng.permutation(rows[c]) for c in classes]
    batches = []
    for start, counts in zip(starts, per_batch):
        batch = np.concatenate([pool[s:s + k] for pool, s, k in zip(pools, start, counts)])
        batches.append(rng.permutation(batch))
    return np.concatenate(batches) if batches else np.zeros(0, dtype=np.int64)


def _class_balanced(labels, batch_size, rng, draw_rng, params) -> np.ndarray:
    """n draws with replacement, each picking a class uniformly, then an example of it uniformly.

    Class-balanced sampling as in cRT (Kang et al. 2020); only classes present in labels are drawn.
    """
    rows = _class_rows(labels)
    pools = list(rows.values())
    picks = rng.integers(len(pools), size=len(labels))
    out = np.empty(len(labels), dtype=np.int64)
    for k, pool in enumerate(pools):
        slots = np.flatnonzero(picks == k)
        out[slots] = pool[rng.integers(len(pool), size=len(slots))]
    return out


SamplerFn = Callable[[np.ndarray, int, np.random.Generator, np.random.Generator, SamplingParams], np.ndarray]

SAMPLERS: dict[str, SamplerFn] = {
    "none": _plain,
    "oversample": _oversample,
    "undersample": _undersample,
    "stratified": _stratified,
    "class_balanced": _class_balanced,
}


def draw_generator(seed: int) -> np.random.Generator:
    """The generator that draws a run's fixed over- or under-sampled set, apart from the epoch shuffles."""
    return np.random.default_rng([seed, _DRAW_STREAM])


def epoch_indices(name: str, labels: np.ndarray, batch_size: int, rng: np.random.Generator,
                  params: SamplingParams, draw_rng: np.random.Generator | None = None,
                  where: str = "sampler") -> np.ndarray:
    """Example indices of one epoch for sampler ``name``, to be cut into consecutive batches of batch_size.

    ``rng`` shuffles; ``draw_rng`` (default: ``rng``) picks the examples that over- and
    under-sampling duplicate or keep; give it the same seed every epoch to keep one
    fixed resampled set, as the report did. An unknown name raises ParamError.
    """
    check_choice(name, SAMPLERS, where)
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.size == 0 or not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
        raise ValueError("labels must be a non-empty 1-D array of non-negative integer class indices")
    if batch_size < 1:
        raise ValueError(f"batch_size = {batch_size} must be at least 1")
    order = SAMPLERS[name](labels, batch_size, rng, rng if draw_rng is None else draw_rng, params)
    return order.astype(np.int64, copy=False)


class EpochSampler(torch.utils.data.Sampler[int]):
    """``DataLoader(dataset, batch_size=batch_size, sampler=EpochSampler(...))``.

    Every iteration yields a fresh ``epoch_indices`` order drawn from ``(seed, epoch)``
    and then advances ``epoch``; ``set_epoch`` sets it (resuming a run reproduces its
    orders). The over/under-sampled set is drawn from ``seed`` alone unless
    ``params.redraw_each_epoch``. ``len`` is the epoch length, which for over- and
    under-sampling differs from ``len(labels)``.
    """

    def __init__(self, labels: np.ndarray, name: str, batch_size: int, seed: int, params: SamplingParams):
        self.labels = np.asarray(labels)
        self.name, self.batch_size, self.seed, self.params = name, batch_size, seed, params
        self.epoch = 0
        self._length = len(self._order(0))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _order(self, epoch: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, epoch])
        draw_rng = None if self.params.redraw_each_epoch else draw_generator(self.seed)
        return epoch_indices(self.name, self.labels, self.batch_size, rng, self.params, draw_rng)

    def __iter__(self) -> Iterator[int]:
        order = self._order(self.epoch)
        self.epoch += 1
        return iter(order.tolist())

    def __len__(self) -> int:
        return self._length


def build_loader(dataset: PhotoDataset, labels: np.ndarray, batch_size: int, sampler: str, seed: int,
                 params: SamplingParams, *, workers: int = 1, pin_memory: bool = False, rank: int = 0,
                 world: int = 1) -> DataLoader:
    """The strategy's loader: rows in the order its sampler draws them from the class ``labels``."""
    return photo_loader(dataset, batch_size, EpochSampler(labels, sampler, batch_size, seed, params),
                        workers=workers, pin_memory=pin_memory, rank=rank, world=world)
