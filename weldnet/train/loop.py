"""The one training loop: an epoch of steps, and a resumable fit with model selection.

Randomness is re-seeded at the start of every epoch from (seed, epoch), and the
sampler draws its epoch order from the same pair, so a run resumed from an
end-of-epoch checkpoint replays exactly what an uninterrupted run would have done.

Between two logging points (the end of each epoch) a step never waits for the
device: each step's loss stays on it, and the losses are read, checked for NaN or
inf and logged once the epoch is done. Under torch.distributed
(weldnet.core.distributed) the same loop trains every rank's part of each global
batch, with gradients averaged by DistributedDataParallel.
"""
from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import nn
from torch.utils.data import DataLoader

from weldnet.core.config import TrainingError
from weldnet.core.distributed import Group, current, global_sum
from weldnet.core.params import OptimParams
from weldnet.core.progress import Progress
from weldnet.photos.dataset import set_loader_epoch
from weldnet.strategies.augment import Mix, MixedTargets
from weldnet.strategies.models import cap_class_norms, output_layer_of
from weldnet.train.device import FP32, Precision
from weldnet.train.optim import Optimiser, build_lr_schedule, build_optimizer
from weldnet.train.predict import model_input

# A fit checkpoints after its first epoch, then when this many seconds have passed since the last
# checkpoint, and after its last epoch: a killed run loses at most this much work, and a short run
# does not spend its time writing checkpoints
CHECKPOINT_EVERY_S = 30.0


class Logger(Protocol):
    def __call__(self, step: int, name: str, value: float) -> None: ...


Prepare = Callable[[torch.Tensor, torch.Generator], torch.Tensor]

# (save, load) of one fit's checkpoint: load returns None when there is none to resume from
CheckpointIO = tuple[Callable[[dict], None], Callable[[], dict | None]]


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """The seed of an epoch's randomness (augmentation, dropout); each extra rank of a process group has its own."""
    return seed * 100_003 + epoch + rank * 2**40


def task_input(input_size: int, flip: bool) -> Prepare:
    """uint8 NHWC batch -> normalised float NCHW at ``input_size``, each photo mirrored with probability 1/2."""
    def prepare(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        x = model_input(images, input_size)
        if flip:
            # drawn on the CPU, so finding the mirrored rows never waits for the GPU
            mirror = torch.nonzero(torch.rand(len(x), generator=generator) < 0.5).squeeze(1)
            if len(mirror):
                mirror = mirror.to(x.device, non_blocking=True)
                x[mirror] = x[mirror].flip(-1)
        return x
    return prepare


@dataclass(frozen=True)
class StepSettings:
    """What every step of an epoch needs besides the model, the loss, the optimiser and the batches."""

    device: torch.device
    prepare: Prepare                  # uint8 batch -> model input, augmentation drawn from the epoch's generator
    precision: Precision = FP32
    name: str = "model"               # named in errors
    min_batch: int = 1                # smaller batches are skipped (batch norm needs two photos)
    log: Logger | None = None         # gets every step's train/loss and train/lr at the end of the epoch
    bar: Progress | None = None       # moved on once per step
    mix: Mix | None = None            # the augment axis: mixes the prepared batch (loss.mixed takes its targets)
    after_step: Callable[[], None] | None = None   # run after every optimiser step (MaxNorm's projection)
    sam: float | None = None          # SAM's radius rho: two forward-backward passes per step; None: one


def train_one_epoch(model: nn.Module, loss_fn: nn.Module, optimiser: Optimiser, loader: DataLoader,
                    settings: StepSettings, generator: torch.Generator, first_step: int = 0) -> int:
    """One pass over the loader's (images, targets) batches; returns the next global step.

    The one training loop of the project: task training, pretraining and the audit's
    cheap model all run it. Each step's loss stays on the device; at the end of the
    epoch the losses are read at once, and the epoch stops with TrainingError at the
    first NaN or inf, after logging the steps before it.

    Under torch.distributed ``model`` is the DistributedDataParallel wrapper and each
    batch is this rank's part of a global batch of n photos: the loss (a mean over
    this rank's m photos) is weighted by m / n, so the averaged gradient is the
    global batch's; the logged loss is the global batch's, the same on every rank.
    """
    set_train_mode(model)
    group, device, precision = current(), settings.device, settings.precision
    values: list[torch.Tensor] = []
    rates: list[float] = []
    # torch's DataLoader once drew its workers' base seed from the global generator here, at the start of
    # every epoch; the loaders now draw it from their own (weldnet.photos.dataset.own_generator), and this one draw keeps
    # every run's dropout masks what they were, however the photos are read
    torch.empty((), dtype=torch.int64).random_()
    for images, targets in loader:
        local = len(images)
        total = local if group.world == 1 else int(global_sum(torch.tensor([local], device=device)).item())
        if total < settings.min_batch:
            continue
        x = settings.prepare(images.to(device, non_blocking=True), generator)
        y = targets.to(device, non_blocking=True)
        mixed = None
        if settings.mix is not None:
            x, mixed = settings.mix(x, y, generator)
        x = precision.layout(x)
        rates.append(optimiser.lr)
        share = local / total
        loss = _batch_loss(model, loss_fn, x, y, mixed, precision, device)
        if group.world > 1:
            values.append(global_sum((loss.detach() * share).reshape(1))[0])
            loss = loss * (share * group.world)          # DDP divides the summed gradients by the world size
        else:
            values.append(loss.detach())
        if settings.sam is None:
            optimiser.step(loss)
        else:
            def again(x=x, y=y, mixed=mixed, share=share) -> torch.Tensor:
                with running_stats_kept(model):
                    perturbed = _batch_loss(model, loss_fn, x, y, mixed, precision, device)
                return perturbed * (share * group.world) if group.world > 1 else perturbed
            optimiser.sam_step(loss, again, settings.sam)
        if settings.after_step is not None:
            settings.after_step()
        if settings.bar is not None:
            settings.bar.update(1)
    _log_steps(values, rates, first_step, settings)
    return first_step + len(values)


def _batch_loss(model: nn.Module, loss_fn: nn.Module, x: torch.Tensor, y: torch.Tensor, mixed: MixedTargets | None,
                precision: Precision, device: torch.device) -> torch.Tensor:
    """The batch's loss: the forward pass under the precision's autocast, the loss in float32."""
    with precision.autocast(device):
        out = model(x)
    out = out.float() if precision.dtype is not None else out
    return loss_fn(out, y) if mixed is None else loss_fn.mixed(out, mixed.a, mixed.b, mixed.lam)


@contextlib.contextmanager
def running_stats_kept(model: nn.Module) -> Iterator[None]:
    """Batch norm still normalises with the batch's statistics but leaves its running statistics as they are
    (SAM's second pass, at perturbed weights, must not count the batch twice)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    saved = [(m.momentum, m.num_batches_tracked.clone()) for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, (momentum, tracked) in zip(norms, saved):
            m.momentum = momentum
            m.num_batches_tracked.copy_(tracked)


def _log_steps(values: list[torch.Tensor], rates: list[float], first_step: int, settings: StepSettings) -> None:
    """The epoch's losses read from the device at once, logged step by step up to the first NaN or inf, which stops."""
    losses = torch.cat([value.reshape(1) for value in values]).cpu().tolist() if values else []
    for offset, (value, lr) in enumerate(zip(losses, rates)):
        step = first_step + offset
        if not math.isfinite(value):
            raise TrainingError(f"strategy '{settings.name}': the loss became {value} at step {step}; "
                                "lower train.lr or check the inputs")
        if settings.log is not None:
            settings.log(step, "train/loss", value)
            settings.log(step, "train/lr", lr)


def set_train_mode(model: nn.Module) -> None:
    """Train mode, except for batch norms whose parameters are frozen: they keep their running statistics."""
    model.train()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            params = list(module.parameters())
            if params and not any(p.requires_grad for p in params):
                module.eval()


def selection_key(scores: dict[str, float]) -> tuple[float, ...]:
    """How checkpoints are ranked (``select: best_val``): validation per-class accuracy, then lower cross entropy."""
    return scores["val/per_class_accuracy"], -scores["val/cross_entropy"]


@dataclass(frozen=True)
class FitSettings:
    """What every fit of one training run shares: where and how it computes, how it is scored and logged."""

    device: torch.device
    prepare: Prepare                                       # uint8 batch -> model input (:func:`task_input`)
    validate: Callable[[nn.Module], dict[str, float]]      # collective under torch.distributed
    log: Logger
    seed: int
    name: str = "model"
    precision: Precision = FP32
    rank: Callable[[dict[str, float]], tuple[float, ...]] = selection_key
    checkpoint_every_s: float = CHECKPOINT_EVERY_S
    mix: Mix | None = None                                 # the augment axis (weldnet.strategies.augment)
    max_norm: float | None = None                          # MaxNorm cap of the output layer's class weights
    sam: float | None = None                               # SAM's radius rho (two passes per step); None: plain steps


@dataclass(frozen=True)
class Phase:
    """Where a fit sits in a schedule of several: the steps and epochs run before it, and the schedule's length."""

    steps_before: int = 0
    epochs_before: int = 0
    total_epochs: int | None = None       # default: this phase's end


WHOLE = Phase()


@dataclass
class FitResult:
    state: dict[str, torch.Tensor]
    best_epoch: int                        # counted from the schedule's start (phase.epochs_before included)
    epochs_run: int
    history: list[list]
    steps: int = 0                         # optimiser steps this fit ran
    best_score: tuple[float, ...] = ()     # the rank of the selected state
    scores: dict[str, float] = field(default_factory=dict)   # its validation scores
    details: dict = field(default_factory=dict)    # what a multi-phase schedule wants recorded


def fit(model: nn.Module, loss_fn: nn.Module, loader: DataLoader, run: FitSettings, params: OptimParams,
        checkpoints: CheckpointIO | None = None, phase: Phase = WHOLE) -> FitResult:
    """Train for params.epochs, scoring ``run.validate(model)`` after each epoch and keeping the selected weights.

    The loader's sampler must be an ``EpochSampler``: every epoch re-seeds torch and
    the augmentation generator from (seed, epoch) and sets the sampler's epoch, so a
    run resumed from an end-of-epoch checkpoint replays exactly what an uninterrupted
    run would have done. ``params.select``: ``best_val`` keeps the epoch with the
    highest ``run.rank(scores)``, ``last`` the last one.

    ``checkpoints`` is a (save, load) pair: the fit saves after its first epoch, then
    at most every ``run.checkpoint_every_s`` seconds, and after its last epoch. When
    ``load()`` returns the checkpoint of an interrupted run with the same
    configuration, training continues after its epoch, and the logged history is
    replayed through ``run.log`` first so the run's logs are complete. A schedule that
    calls ``fit`` several times passes the steps and epochs already run as its
    ``phase``, so logs and the selected epoch count from the schedule's start; the
    learning-rate schedule restarts with each call. The loss's ``on_epoch`` gets the
    schedule's epoch and its length over every phase (``phase.total_epochs``), so
    deferred re-weighting switches at a fraction of the whole schedule.

    ``run.mix`` (the augment axis) mixes each prepared batch with draws from the
    epoch's generator, and the loss gets the mixed targets (``loss.mixed``);
    ``run.max_norm`` projects the output layer's per-class weight rows onto that norm
    after every optimiser step (MaxNorm); ``run.sam`` makes every step sharpness-aware
    (``Optimiser.sam_step``), its second pass leaving batch norm's running statistics alone.

    Under torch.distributed every rank calls ``fit`` with its own loader
    (``RankBatches``); the model is wrapped in DistributedDataParallel (batch norm
    synchronised on CUDA), ``run.validate`` must be collective (``predict_logits``
    is), and only rank 0 logs and saves checkpoints. Every rank resumes from the same one.
    """
    group = current()
    model.to(run.device)
    if run.precision.channels_last:
        model.to(memory_format=torch.channels_last)
    loss_fn.to(run.device)
    total_steps = len(loader) * params.epochs
    optimizer = build_optimizer(model, params.optimizer, params.lr, momentum=params.momentum,
                                weight_decay=params.weight_decay)
    optimiser = Optimiser(optimizer, build_lr_schedule(params.lr_schedule, optimizer, total_steps),
                          run.precision.scaler())
    epochs_before = phase.epochs_before
    schedule_epochs = epochs_before + params.epochs if phase.total_epochs is None else phase.total_epochs
    history: list[list] = []
    best: dict | None = None
    start_epoch, step = 0, 0

    def record(step_: int, key: str, value: float) -> None:
        history.append([step_, key, value])
        if group.main:
            run.log(step_, key, value)

    def shifted(step_: int, key: str, value: float) -> None:
        record(step_ + phase.steps_before, key, value)

    save, load = checkpoints if checkpoints is not None else (None, lambda: None)
    checkpoint = load()
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimiser.load_state_dict(checkpoint["optimiser"])
        start_epoch, step, best = checkpoint["epoch"], checkpoint["step"], checkpoint["best"]
        for step_, key, value in checkpoint["history"]:
            record(step_, key, value)
    trained = distributed_model(model, run.device, group)
    saved_at = None

    shown = (Progress(total_steps, f"{run.name} (seed {run.seed})", unit="step", stream=sys.stdout) if group.main
             else contextlib.nullcontext())
    with shown as bar:
        if bar is not None:
            bar.update(step)
        steps = StepSettings(run.device, run.prepare, run.precision, run.name, log=shifted, bar=bar, mix=run.mix,
                             after_step=None if run.max_norm is None else max_norm_step(model, run.max_norm),
                             sam=run.sam)
        for epoch in range(start_epoch, params.epochs):
            torch.manual_seed(epoch_seed(run.seed, epochs_before + epoch, group.rank))
            generator = torch.Generator().manual_seed(epoch_seed(run.seed, epochs_before + epoch, group.rank))
            set_loader_epoch(loader, epochs_before + epoch)
            on_epoch = getattr(loss_fn, "on_epoch", None)
            if callable(on_epoch):
                on_epoch(epochs_before + epoch, schedule_epochs)
            step = train_one_epoch(trained, loss_fn, optimiser, loader, steps, generator, step)
            scores = run.validate(model)
            for key, value in scores.items():
                shifted(step - 1, key, value)
            shifted(step - 1, "epoch", epochs_before + epoch + 1)
            key = list(run.rank(scores)) if params.select == "best_val" else []
            if params.select == "last" or best is None or tuple(key) > tuple(best["key"]):
                best = {"epoch": epochs_before + epoch + 1, "key": key, "scores": scores,
                        "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}}
            due = (saved_at is None or epoch + 1 == params.epochs
                   or time.monotonic() - saved_at >= run.checkpoint_every_s)
            if save is not None and group.main and due:
                save({"epoch": epoch + 1, "step": step, "best": best, "history": history,
                      "model": model.state_dict(), "optimiser": optimiser.state_dict()})
                saved_at = time.monotonic()
    assert best is not None
    return FitResult(state=best["model"], best_epoch=best["epoch"], epochs_run=params.epochs, history=history,
                     steps=step, best_score=tuple(best["key"]), scores=dict(best["scores"]))


def max_norm_step(model: nn.Module, max_norm: float) -> Callable[[], None]:
    """After each step: the output layer's per-class weight rows projected to norm <= ``max_norm`` (MaxNorm)."""
    _, output = output_layer_of(model)

    def project() -> None:
        cap_class_norms(output.weight, max_norm)
    return project


def distributed_model(model: nn.Module, device: torch.device, group: Group) -> nn.Module:
    """The model itself when alone; under torch.distributed, wrapped in DistributedDataParallel.

    On CUDA its batch norms become SyncBatchNorm first (statistics over the global
    batch). torch synchronises batch norm on GPUs only, so on the CPU (gloo) each
    rank normalises its part of the batch by that part's statistics, and the running
    statistics kept are rank 0's (docs/training.md).
    """
    if group.world == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    if device.type == "cuda" and any(type(m) in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
                                     for m in model.modules()):
        nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
