"""Training loop: one epoch, evaluation, and a resumable fit with model selection.

Randomness is re-seeded at the start of every epoch from (seed, epoch), and the
sampler draws its epoch order from the same pair, so a run resumed from an
end-of-epoch checkpoint replays exactly what an uninterrupted run would have done.

On CUDA the model runs in mixed precision (bf16 autocast, or fp16 with a gradient
scaler where bf16 is missing) with channels-last memory (:func:`precision_for`;
``model.mixed_precision: false`` turns both off); the CPU always computes in
float32. Under torch.distributed (weldnet.core.distributed) the same loop trains every
rank's part of each global batch, with gradients averaged by
DistributedDataParallel.
"""
from __future__ import annotations

import contextlib
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from weldnet.core.config import ParamError, TrainingError
from weldnet.core.distributed import Group, current, gather_rows, global_sum
from weldnet.core.metrics import class_recall, cross_entropy, per_class_accuracy, softmax
from weldnet.core.params import DEVICES, OptimParams
from weldnet.core.progress import Progress
from weldnet.photos.dataset import PhotoDataset, loader_processes, own_generator, set_loader_epoch
from weldnet.photos.transforms import resize_uint8, to_input


class Logger(Protocol):
    def __call__(self, step: int, name: str, value: float) -> None: ...


def lr_at(step: int, total_steps: int, base_lr: float, schedule: str) -> float:
    """Learning rate at an optimiser step: constant, or cosine decay from base_lr to 0 over the run."""
    if schedule == "constant":
        return base_lr
    if schedule == "cosine":
        return 0.5 * base_lr * (1.0 + math.cos(math.pi * min(step, total_steps) / max(total_steps, 1)))
    raise ParamError(f"train.lr_schedule: unknown schedule '{schedule}'; valid: constant, cosine")


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """The seed of an epoch's randomness (augmentation, dropout); each extra rank of a process group has its own."""
    return seed * 100_003 + epoch + rank * 2**40


@dataclass(frozen=True)
class Precision:
    """How the model computes on its device: the autocast dtype (None: float32) and the memory layout."""

    dtype: torch.dtype | None = None
    channels_last: bool = False

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=self.dtype)

    def layout(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def scaler(self) -> torch.amp.GradScaler | None:
        """fp16 gradients need loss scaling to stay representable; bf16 and float32 do not."""
        return torch.amp.GradScaler("cuda") if self.dtype == torch.float16 else None


FP32 = Precision()


CPU_CHANNELS_LAST = Precision(channels_last=True)


def precision_for(device: torch.device, mixed_precision: bool) -> Precision:
    """With ``mixed_precision``: channels-last memory, and on CUDA bf16 autocast (fp16 where the GPU lacks bf16).

    The CPU stays in float32; channels-last alone makes its convolutions about 30%
    faster (benchmarks/train_speed.py). Without ``mixed_precision``: float32, contiguous.
    """
    if not mixed_precision:
        return FP32
    if device.type != "cuda":
        return CPU_CHANNELS_LAST
    return Precision(torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16, channels_last=True)


def build_optimizer(model: nn.Module, params: OptimParams) -> torch.optim.Optimizer:
    trainable = [p for p in model.parameters() if p.requires_grad]
    if params.optimizer == "sgd":
        return torch.optim.SGD(trainable, lr=params.lr, momentum=params.momentum, weight_decay=params.weight_decay)
    return torch.optim.Adam(trainable, lr=params.lr, weight_decay=params.weight_decay)


Prepare = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def model_input(images: torch.Tensor, input_size: int) -> torch.Tensor:
    """uint8 NHWC batch (any size, on the model's device) -> normalised float NCHW at ``input_size``.

    A batch at another size is resized here, on its device, with the formula that
    resizes photos as they are read on the CPU (``resize_uint8``: antialiased
    bilinear, rounded to uint8), so both paths give the model the same inputs.
    """
    if images.shape[1] != input_size or images.shape[2] != input_size:
        images = resize_uint8(images, input_size)
    return to_input(images, input_size)


def task_input(input_size: int, flip: bool) -> Prepare:
    """uint8 NHWC batch -> normalised float NCHW at ``input_size``, each photo mirrored with probability 1/2."""
    def prepare(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        x = model_input(images, input_size)
        if flip:
            mirror = (torch.rand(len(x), generator=generator) < 0.5).to(x.device)
            x[mirror] = x[mirror].flip(-1)
        return x
    return prepare


def set_lr(optimizer: torch.optim.Optimizer, lr_for_step: Callable[[int], float]) -> Callable[[int], float]:
    """A step hook that sets every parameter group's learning rate to ``lr_for_step(step)`` and returns it."""
    def hook(step: int) -> float:
        lr = lr_for_step(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr
    return hook


def train_one_epoch(model: nn.Module, loss_fn: nn.Module, optimizer: torch.optim.Optimizer, loader: DataLoader,
                    device: torch.device, *, prepare: Prepare, generator: torch.Generator,
                    before_step: Callable[[int], float], first_step: int = 0, log: Logger | None = None,
                    name: str = "model", min_batch: int = 1, bar: Progress | None = None,
                    precision: Precision = FP32, scaler: torch.amp.GradScaler | None = None) -> int:
    """One pass over the loader's (images, targets) batches; returns the next global step.

    The one training loop of the project: task training, pretraining and the audit's
    cheap model all run it. ``prepare`` turns a uint8 batch into the model's input
    (augmentation drawn from ``generator``); ``before_step(step)`` sets the learning
    rate (and returns it, for the log). Batches smaller than ``min_batch`` are
    skipped. Stops with TrainingError on a NaN or inf loss.

    Under torch.distributed ``model`` is the DistributedDataParallel wrapper and each
    batch is this rank's part of a global batch of n photos: the loss (a mean over
    this rank's m photos) is weighted by m / n, so the averaged gradient is the
    global batch's; the logged loss is the global batch's, the same on every rank.
    """
    set_train_mode(model)
    group = current()
    step = first_step
    # torch's DataLoader once drew its workers' base seed from the global generator here, at the start of
    # every epoch; the loaders now draw it from their own (weldnet.photos.dataset.own_generator), and this one draw keeps
    # every run's dropout masks what they were, however the photos are read
    torch.empty((), dtype=torch.int64).random_()
    for images, targets in loader:
        local = len(images)
        total = local if group.world == 1 else int(global_sum(torch.tensor([local], device=device)).item())
        if total < min_batch:
            continue
        x = precision.layout(prepare(images.to(device, non_blocking=True), generator))
        y = targets.to(device, non_blocking=True)
        lr = before_step(step)
        with precision.autocast(device):
            out = model(x)
        loss = loss_fn(out.float() if precision.dtype is not None else out, y)
        if group.world > 1:
            share = local / total
            value = global_sum((loss.detach() * share).reshape(1))[0]
            loss = loss * (share * group.world)          # DDP divides the summed gradients by the world size
        else:
            value = loss
        if not torch.isfinite(value):
            raise TrainingError(f"strategy '{name}': the loss became {value.item()} at step {step}; "
                                "lower train.lr or check the inputs")
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        if log is not None:
            log(step, "train/loss", float(value.item()))
            log(step, "train/lr", lr)
        if bar is not None:
            bar.update(1)
        step += 1
    return step


def set_train_mode(model: nn.Module) -> None:
    """Train mode, except for batch norms whose parameters are frozen: they keep their running statistics."""
    model.train()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            params = list(module.parameters())
            if params and not any(p.requires_grad for p in params):
                module.eval()


def predict_logits(model: nn.Module, images: torch.Tensor | PhotoDataset, device: torch.device, input_size: int,
                   batch_size: int = 256, *, workers: int = 1, precision: Precision = FP32) -> np.ndarray:
    """Logits for uint8 NHWC photos (a tensor or a :class:`PhotoDataset`), in order, in eval mode.

    Under torch.distributed every rank must call it: each predicts every world-th
    photo and all of them get every row.
    """
    return _predict(model, model, images, device, input_size, batch_size, workers, precision)


def predict_features(model: nn.Module, images: torch.Tensor | PhotoDataset, device: torch.device, input_size: int,
                     batch_size: int = 256, *, workers: int = 1, precision: Precision = FP32) -> np.ndarray:
    """The features the output layer sees (``model.embed``) for uint8 NHWC photos, in order, in eval mode."""
    return _predict(model, model.embed, images, device, input_size, batch_size, workers, precision)


def _as_is(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    return batch


@torch.no_grad()
def _predict(model: nn.Module, forward: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor | PhotoDataset,
             device: torch.device, input_size: int, batch_size: int, workers: int, precision: Precision) -> np.ndarray:
    from torch.utils.data import BatchSampler, SequentialSampler

    model.eval()
    if precision.channels_last:
        model.to(memory_format=torch.channels_last)
    data = images if isinstance(images, PhotoDataset) else PhotoDataset(images, torch.zeros(len(images)))
    group = current()
    mine = data if group.world == 1 else data.subset(np.arange(group.rank, len(data), group.world))
    processes = 0 if mine.in_memory else loader_processes(workers)
    loader = DataLoader(mine, batch_sampler=BatchSampler(SequentialSampler(mine), batch_size, drop_last=False),
                        collate_fn=_as_is, num_workers=processes, generator=own_generator(),
                        pin_memory=device.type == "cuda" and not mine.in_memory)
    out = []
    for batch, _ in loader:
        x = precision.layout(model_input(batch.to(device, non_blocking=True), input_size))
        with precision.autocast(device):
            out.append(forward(x).float().cpu())
    logits = torch.cat(out).numpy() if out else np.zeros((0, 0), dtype=np.float32)
    return gather_rows(logits, len(data), group)


def validation_scores(logits: np.ndarray, target: np.ndarray, class_names: Sequence[str]) -> dict[str, float]:
    pred = logits.argmax(axis=1)
    scores = {"val/per_class_accuracy": per_class_accuracy(pred, target, len(class_names)),
              "val/cross_entropy": cross_entropy(softmax(logits), target)}
    for name, recall in zip(class_names, class_recall(pred, target, len(class_names))):
        scores[f"val/recall/{name}"] = float(recall)
    return scores


def selection_key(scores: dict[str, float]) -> tuple[float, ...]:
    """How checkpoints are ranked (``select: best_val``): validation per-class accuracy, then lower cross entropy."""
    return scores["val/per_class_accuracy"], -scores["val/cross_entropy"]


@dataclass
class FitResult:
    state: dict[str, torch.Tensor]
    best_epoch: int                        # counted from the schedule's start (epoch_offset included)
    epochs_run: int
    history: list[list]
    steps: int = 0                         # optimiser steps this fit ran
    best_score: tuple[float, ...] = ()     # the rank of the selected state
    scores: dict[str, float] = field(default_factory=dict)   # its validation scores
    details: dict = field(default_factory=dict)    # what a multi-phase schedule wants recorded


def fit(model: nn.Module, loss_fn: nn.Module, loader: DataLoader, validate: Callable[[nn.Module], dict[str, float]],
        *, params: OptimParams, seed: int, prepare: Prepare, device: torch.device, name: str, log: Logger,
        rank: Callable[[dict[str, float]], tuple[float, ...]] = selection_key,
        save_checkpoint: Callable[[dict], None] | None = None, checkpoint: dict | None = None,
        step_offset: int = 0, epoch_offset: int = 0, total_epochs: int | None = None,
        precision: Precision = FP32) -> FitResult:
    """Train for params.epochs, scoring ``validate(model)`` after each epoch and keeping the selected weights.

    The loader's sampler must be an ``EpochSampler``: every epoch re-seeds torch and
    the augmentation generator from (seed, epoch) and sets the sampler's epoch, so a
    run resumed from an end-of-epoch checkpoint replays exactly what an uninterrupted
    run would have done. ``params.select``: ``best_val`` keeps the epoch with the
    highest ``rank(scores)``, ``last`` the last one.

    ``checkpoint`` is the dict last given to ``save_checkpoint`` by an interrupted run
    with the same configuration; training continues after its epoch, and the logged
    history is replayed through ``log`` first so the run's logs are complete. A
    schedule that calls ``fit`` several times passes the steps and epochs already run
    as offsets, so logs and the selected epoch count from the schedule's start; the
    learning-rate schedule restarts with each call. The loss's ``on_epoch`` gets the
    schedule's epoch and ``total_epochs``, its length over every phase (default
    ``epoch_offset + params.epochs``), so deferred re-weighting switches at a fraction
    of the whole schedule.

    Under torch.distributed every rank calls ``fit`` with its own loader
    (``RankBatches``); the model is wrapped in DistributedDataParallel (batch norm
    synchronised on CUDA), ``validate`` must be collective (``predict_logits`` is),
    and only rank 0 logs and saves checkpoints. Every rank resumes from the same one.
    """
    group = current()
    model.to(device)
    if precision.channels_last:
        model.to(memory_format=torch.channels_last)
    loss_fn.to(device)
    optimizer = build_optimizer(model, params)
    scaler = precision.scaler()
    steps_per_epoch = len(loader)
    total_steps = steps_per_epoch * params.epochs
    before_step = set_lr(optimizer, lambda s: lr_at(s, total_steps, params.lr, params.lr_schedule))
    schedule_epochs = epoch_offset + params.epochs if total_epochs is None else total_epochs
    history: list[list] = []
    best: dict | None = None
    start_epoch, step = 0, 0

    def record(step_: int, key: str, value: float) -> None:
        history.append([step_, key, value])
        if group.main:
            log(step_, key, value)

    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        if scaler is not None and checkpoint.get("scaler"):
            scaler.load_state_dict(checkpoint["scaler"])
        start_epoch, step, best = checkpoint["epoch"], checkpoint["step"], checkpoint["best"]
        for step_, key, value in checkpoint["history"]:
            record(step_, key, value)
    trained = distributed_model(model, device, group)

    def shifted(step_: int, key: str, value: float) -> None:
        record(step_ + step_offset, key, value)

    shown = (Progress(total_steps, f"{name} (seed {seed})", unit="step", stream=sys.stdout) if group.main
             else contextlib.nullcontext())
    with shown as bar:
        if bar is not None:
            bar.update(step)
        for epoch in range(start_epoch, params.epochs):
            torch.manual_seed(epoch_seed(seed, epoch_offset + epoch, group.rank))
            generator = torch.Generator().manual_seed(epoch_seed(seed, epoch_offset + epoch, group.rank))
            set_loader_epoch(loader, epoch_offset + epoch)
            on_epoch = getattr(loss_fn, "on_epoch", None)
            if callable(on_epoch):
                on_epoch(epoch_offset + epoch, schedule_epochs)
            step = train_one_epoch(trained, loss_fn, optimizer, loader, device, prepare=prepare, generator=generator,
                                   before_step=before_step, first_step=step, log=shifted, name=name, bar=bar,
                                   precision=precision, scaler=scaler)
            scores = validate(model)
            for key, value in scores.items():
                shifted(step - 1, key, value)
            shifted(step - 1, "epoch", epoch_offset + epoch + 1)
            key = list(rank(scores)) if params.select == "best_val" else []
            if params.select == "last" or best is None or tuple(key) > tuple(best["key"]):
                best = {"epoch": epoch_offset + epoch + 1, "key": key, "scores": scores,
                        "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}}
            if save_checkpoint is not None and group.main:
                save_checkpoint({"epoch": epoch + 1, "step": step, "best": best, "history": history,
                                 "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                 **({"scaler": scaler.state_dict()} if scaler is not None else {})})
    assert best is not None
    return FitResult(state=best["model"], best_epoch=best["epoch"], epochs_run=params.epochs, history=history,
                     steps=step, best_score=tuple(best["key"]), scores=dict(best["scores"]))


def distributed_model(model: nn.Module, device: torch.device, group: Group) -> nn.Module:
    """The model itself when alone; under torch.distributed, wrapped in DistributedDataParallel.

    On CUDA its batch norms become SyncBatchNorm first (statistics over the global
    batch). torch synchronises batch norm on GPUs only, so on the CPU (gloo) each
    rank normalises its part of the batch by that part's statistics, and the running
    statistics kept are rank 0's (README, Distributed).
    """
    if group.world == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    if device.type == "cuda" and any(type(m) in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
                                     for m in model.modules()):
        nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def resolve_device(name: object) -> torch.device:
    """``auto`` picks CUDA when a GPU is present, otherwise the CPU; ``cpu`` and ``cuda`` force one."""
    if name not in DEVICES:
        raise ParamError(f"device = {name!r} is unknown; valid: {', '.join(DEVICES)}")
    if name == "cuda" and not torch.cuda.is_available():
        raise ParamError("device = cuda but no CUDA GPU is visible; set device: auto or cpu")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def make_deterministic(device: torch.device) -> None:
    """Same params and seed, same numbers: deterministic kernels (warn-only on CUDA, where some have none)."""
    torch.use_deterministic_algorithms(True, warn_only=device.type == "cuda")
    torch.backends.cudnn.benchmark = False
