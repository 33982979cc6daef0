"""The audit's cheap model: a tiny multi-label CNN on small thumbnails.

One model per rig predicts every flag common enough on that rig (one sigmoid per
flag), so a single k-fold cross-validation per rig yields out-of-fold flag
probabilities for every task at once (weldnet.audit.estimate.task_class_probs turns them
into class probabilities). The k fold models, averaged, also stand for "a model
trained on the rig" in the cross-rig check.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from torch import nn
from torch.utils.data import Sampler

from weldnet.core.pool import ordered_map
from weldnet.core.progress import Progress
from weldnet.photos.dataset import PhotoDataset, photo_loader
from weldnet.train.device import FP32, Precision
from weldnet.train.loop import StepSettings, train_one_epoch
from weldnet.train.optim import Optimiser, build_lr_schedule, build_optimizer


class _MaxAvgHead(nn.Module):
    """Global max and average pooling side by side, then a linear layer.

    Max pooling answers "is the element anywhere in the photo" (a clamp band, a
    droplet), which average pooling dilutes.
    """

    def __init__(self, channels: int, n_outputs: int):
        super().__init__()
        self.linear = nn.Linear(2 * channels, n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(torch.cat([x.amax(dim=(2, 3)), x.mean(dim=(2, 3))], dim=1))


def _block(c_in: int, c_out: int, stride: int = 1, pool: bool = False) -> list[nn.Module]:
    """conv-BN-ReLU, or with ``pool`` conv-BN-maxpool-ReLU: pooling before the ReLU gives the same numbers
    (the ReLU commutes with the max) and the ReLU touches a quarter of the elements."""
    return [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_out),
            *([nn.MaxPool2d(2)] if pool else []), nn.ReLU(inplace=True)]


def tiny_cnn(n_outputs: int, width: int, size: int) -> nn.Module:
    """A stride-2 stem of ``width`` channels, then conv + 2x2 max-pool blocks doubling the channels
    down to an 8x8 map, one more doubling conv there, and a max+avg head.

    Max pooling after full-resolution convolutions keeps thin elements (clamp bands,
    marker lines) that strided convolutions skip over; it beat an all-strided net of
    half the cost on generated Redbox clamps (AUC 0.94 against 0.91).
    """
    layers, channels, side = _block(3, width, stride=2), width, size // 2
    while side > 8:
        layers += _block(channels, 2 * channels, pool=True)
        channels, side = 2 * channels, side // 2
    layers += _block(channels, 2 * channels)
    return nn.Sequential(*layers, _MaxAvgHead(2 * channels, n_outputs))


@dataclass(frozen=True)
class FitSettings:
    epochs: int
    batch_size: int
    learning_rate: float
    weight_decay: float
    warmup: float
    width: int


# NHWC layout: the convolutions of this small net run about 30% faster on a CPU in it.
CHANNELS_LAST = torch.channels_last
CPU = torch.device("cpu")


def centred(images: torch.Tensor) -> torch.Tensor:
    """uint8 (n, S, S, 3) -> float (n, 3, S, S) centred on 0: the audit model's own input scale."""
    return images.permute(0, 3, 1, 2).float().div_(255.0).sub_(0.5)


class Shuffle(Sampler[int]):
    """Every row once per pass, in the order ``torch.randperm(n, generator)`` draws when the pass starts."""

    def __init__(self, n: int, generator: torch.Generator):
        self.n, self.generator = n, generator

    def __iter__(self):
        return iter(torch.randperm(self.n, generator=self.generator).tolist())

    def __len__(self) -> int:
        return self.n


def audit_input(images: torch.Tensor, generator: torch.Generator, device: torch.device = CPU) -> torch.Tensor:
    """uint8 NHWC batch -> centred float NCHW (channels-last) on ``device``, randomly flipped and transposed
    (``_augment``; its draws come from the CPU ``generator``, so every device sees the same flips)."""
    x = centred(images.to(device, non_blocking=True))
    return _augment(x, generator).contiguous(memory_format=CHANNELS_LAST)


def fit_flag_model(images: np.ndarray, targets: np.ndarray, settings: FitSettings, seed: int,
                   rows: np.ndarray | None = None, device: torch.device = CPU,
                   precision: Precision = FP32) -> nn.Module:
    """Train a tiny CNN with binary cross-entropy on 0/1 flag targets (n, F), with the shared training loop.

    ``rows`` (default: all) are the photos trained on: the loader reads them from
    ``images`` (in RAM or memory-mapped) a batch at a time, without a copy of the set.
    ``precision``: the autocast dtype (weldnet.train.device.precision_for); the weights stay float32.

    Augmentation: random flips of either axis and transposition (a weld photo has no
    preferred orientation). AdamW with a one-cycle schedule: the learning rate rises
    to ``learning_rate`` over the first ``warmup`` share of the steps, then anneals
    (cosine) to about 0. One generator draws the epoch orders and the augmentation.
    """
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    data = PhotoDataset(torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(targets.astype(np.float32)))
    if rows is not None:
        data = data.subset(rows)
    model = tiny_cnn(targets.shape[1], settings.width, images.shape[1]).to(device, memory_format=CHANNELS_LAST)
    optimizer = build_optimizer(model, "adamw", settings.learning_rate, weight_decay=settings.weight_decay)
    steps = settings.epochs * max(1, -(-len(data) // settings.batch_size))
    optimiser = Optimiser(optimizer, build_lr_schedule("one_cycle", optimizer, steps, settings.warmup))
    loader = photo_loader(data, settings.batch_size, Shuffle(len(data), generator))
    loss_fn = nn.BCEWithLogitsLoss()
    steps_settings = StepSettings(device, partial(audit_input, device=device), precision, name="audit model",
                                  min_batch=2)   # batch norm needs two samples
    step = 0
    for _ in range(settings.epochs):
        step = train_one_epoch(model, loss_fn, optimiser, loader, steps_settings, generator, step)
    model.eval()
    return model


def _augment(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random flips per photo along each axis; the whole batch transposed half the time.

    The draws are made on the CPU generator and sent to the batch's device without waiting for it."""
    for axis in (-1, -2):
        flip = (torch.rand(len(batch), generator=generator) < 0.5).view(-1, 1, 1, 1)
        batch = torch.where(flip.to(batch.device, non_blocking=True), batch.flip(axis), batch)
    if torch.rand(1, generator=generator).item() < 0.5:
        batch = batch.transpose(-1, -2)
    return batch


def _dihedral(x: torch.Tensor, index: int) -> torch.Tensor:
    """The index-th (0..7) of the eight flips/transpositions of a batch of square images."""
    if index & 1:
        x = x.flip(-1)
    if index & 2:
        x = x.flip(-2)
    if index & 4:
        x = x.transpose(-1, -2)
    return x


@torch.no_grad()
def predict_flags(models: list[nn.Module], images: np.ndarray, views: int = 8, batch_size: int = 256,
                  rows: np.ndarray | None = None, device: torch.device = CPU,
                  precision: Precision = FP32) -> np.ndarray:
    """Sigmoid flag probabilities, shape (n, F), averaged over ``models`` and ``views`` flips/transpositions
    of each photo (test-time augmentation: smoother, better ranked probabilities).

    ``rows`` (default: all) picks the photos of ``images`` to predict, read a batch at a time."""
    rows = np.arange(len(images)) if rows is None else np.asarray(rows, dtype=np.int64)
    total = np.zeros((len(rows), 0))
    for start in range(0, len(rows), batch_size):
        x = centred(torch.from_numpy(np.ascontiguousarray(images[rows[start:start + batch_size]])).to(device))
        with precision.autocast(device):
            out = sum(torch.sigmoid(model.eval()(_dihedral(x, v).contiguous(memory_format=CHANNELS_LAST)).float())
                      for model in models for v in range(views)).cpu().numpy()
        if start == 0:
            total = np.empty((len(rows), out.shape[1]), dtype=out.dtype)
        total[start:start + len(out)] = out
    return total.astype(np.float64) / (len(models) * views)


def fold_ids(n: int, folds: int, rng: np.random.Generator) -> np.ndarray:
    """Fold number 0..folds-1 of each row: a random permutation cut into near-equal parts."""
    ids = np.empty(n, dtype=np.int64)
    ids[rng.permutation(n)] = np.arange(n) % folds
    return ids


@dataclass(frozen=True)
class CrossValidation:
    """What k-fold cross-validation on one data set gives."""

    oof_probs: np.ndarray               # (n, F): each photo predicted by the fold model not trained on it
    transfer_probs: np.ndarray | None   # (m, F): the other data set, averaged over the k fold models


@dataclass(frozen=True)
class _FoldJob:
    name: str
    train: np.ndarray
    held: np.ndarray
    seed: int
    transfer_to: str | None


# Set by cross_validate just before forking its workers, which inherit it copy-on-write:
# name -> (uint8 images, 0/1 targets).
_SHARED: dict[str, tuple[np.ndarray, np.ndarray]] = {}


def _fit_fold(job: _FoldJob, settings: FitSettings, device: torch.device = CPU,
              precision: Precision = FP32) -> tuple[np.ndarray, np.ndarray | None]:
    """Train on the ``train`` rows, predict the ``held`` rows (and the transfer set). On the CPU with
    one thread, so the result depends on the seed only, not on how many processes share the work."""
    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)
    try:
        images, targets = _SHARED[job.name]
        model = fit_flag_model(images, targets, settings, job.seed, rows=job.train, device=device, precision=precision)
        held = predict_flags([model], images, rows=job.held, device=device, precision=precision)
        transfer = None if job.transfer_to is None else predict_flags([model], _SHARED[job.transfer_to][0], views=2,
                                                                      device=device, precision=precision)
        return held, transfer
    finally:
        torch.set_num_threads(threads)


def cross_validate(data: dict[str, tuple[np.ndarray, np.ndarray]], folds: int, settings: FitSettings,
                   rng: np.random.Generator, workers: int = 1, transfer: dict[str, str] | None = None,
                   transfer_images: dict[str, np.ndarray] | None = None,
                   device: torch.device | None = None, precision: Precision = FP32) -> dict[str, CrossValidation]:
    """k-fold cross-validation of a tiny CNN on each data set of ``data`` (name -> (images, targets)).

    ``transfer`` maps a data set to another (e.g. {"bluebox": "redbox"}) that its fold
    models also predict, averaged over the folds: a model trained on the first,
    applied to the second. All folds of all data sets train in ``workers`` processes of
    one thread each: on a small CPU this is faster than one multi-threaded process, and
    far faster when other jobs share the CPU. On a GPU (``device`` cuda) the folds train one after
    another in this process, each on the whole card.
    """
    transfer, device = transfer or {}, device or CPU
    jobs = []
    for name, (images, _) in data.items():
        ids = fold_ids(len(images), folds, rng)
        for fold, seed in enumerate(rng.integers(2**31, size=folds)):
            jobs.append(_FoldJob(name, np.flatnonzero(ids != fold), np.flatnonzero(ids == fold), int(seed),
                                 transfer.get(name)))
    _SHARED.update(data)
    # a transfer target need not be modelled itself (too few photos): only its images are shared
    _SHARED.update({name: (images, None) for name, images in (transfer_images or {}).items() if name not in data})
    results = []
    # progress in training photos (photos x epochs), counted as each fold's model is done
    with Progress(sum(len(job.train) for job in jobs) * settings.epochs, "audit folds", unit="photo",
                  stream=sys.stdout) as bar:
        try:
            fit = partial(_fit_fold, settings=settings, device=device, precision=precision)
            done = (map(fit, jobs) if device.type != "cpu" else ordered_map(fit, jobs, workers, chunksize=1))
            for job, result in zip(jobs, done):
                results.append(result)
                bar.update(len(job.train) * settings.epochs)
        finally:
            _SHARED.clear()
    out = {}
    for name, (images, targets) in data.items():
        probs = np.zeros(targets.shape, dtype=np.float64)
        moved = []
        for job, (held, moved_probs) in zip(jobs, results):
            if job.name == name:
                probs[job.held] = held
                if moved_probs is not None:
                    moved.append(moved_probs)
        out[name] = CrossValidation(probs, np.mean(moved, axis=0) if moved else None)
    return out
