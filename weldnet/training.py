"""Training loop: one epoch, evaluation, and a resumable fit with model selection.

Randomness is re-seeded at the start of every epoch from (seed, epoch), and the
sampler draws its epoch order from the same pair, so a run resumed from an
end-of-epoch checkpoint replays exactly what an uninterrupted run would have done.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from weldnet.config import ParamError, TrainingError
from weldnet.metrics import class_recall, cross_entropy, per_class_accuracy, softmax
from weldnet.models import to_input
from weldnet.params import DEVICES, OptimParams
from weldnet.progress import Progress


class Logger(Protocol):
    def __call__(self, step: int, name: str, value: float) -> None: ...


def lr_at(step: int, total_steps: int, base_lr: float, schedule: str) -> float:
    """Learning rate at an optimiser step: constant, or cosine decay from base_lr to 0 over the run."""
    if schedule == "constant":
        return base_lr
    if schedule == "cosine":
        return 0.5 * base_lr * (1.0 + math.cos(math.pi * min(step, total_steps) / max(total_steps, 1)))
    raise ParamError(f"train.lr_schedule: unknown schedule '{schedule}'; valid: constant, cosine")


def epoch_seed(seed: int, epoch: int) -> int:
    return seed * 100_003 + epoch


def build_optimizer(model: nn.Module, params: OptimParams) -> torch.optim.Optimizer:
    trainable = [p for p in model.parameters() if p.requires_grad]
    if params.optimizer == "sgd":
        return torch.optim.SGD(trainable, lr=params.lr, momentum=params.momentum, weight_decay=params.weight_decay)
    return torch.optim.Adam(trainable, lr=params.lr, weight_decay=params.weight_decay)


Prepare = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def task_input(input_size: int, flip: bool) -> Prepare:
    """uint8 NHWC batch -> normalised float NCHW at ``input_size``, each photo mirrored with probability 1/2."""
    def prepare(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        x = to_input(images, input_size)
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
                    name: str = "model", min_batch: int = 1, bar: Progress | None = None) -> int:
    """One pass over the loader's (images, targets) batches; returns the next global step.

    The one training loop of the project: task training, pretraining and the audit's
    cheap model all run it. ``prepare`` turns a uint8 batch into the model's input
    (augmentation drawn from ``generator``); ``before_step(step)`` sets the learning
    rate (and returns it, for the log). Batches smaller than ``min_batch`` are
    skipped. Stops with TrainingError on a NaN or inf loss.
    """
    set_train_mode(model)
    step = first_step
    for images, targets in loader:
        if len(images) < min_batch:
            continue
        x = prepare(images.to(device), generator)
        y = targets.to(device)
        lr = before_step(step)
        loss = loss_fn(model(x), y)
        if not torch.isfinite(loss):
            raise TrainingError(f"strategy '{name}': the loss became {loss.item()} at step {step}; "
                                "lower train.lr or check the inputs")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if log is not None:
            log(step, "train/loss", float(loss.item()))
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


def predict_logits(model: nn.Module, images: torch.Tensor, device: torch.device, input_size: int,
                   batch_size: int = 256) -> np.ndarray:
    """Logits for uint8 NHWC images, in order, in eval mode."""
    return _predict(model, model, images, device, input_size, batch_size)


def predict_features(model: nn.Module, images: torch.Tensor, device: torch.device, input_size: int,
                     batch_size: int = 256) -> np.ndarray:
    """The features the output layer sees (``model.embed``) for uint8 NHWC images, in order, in eval mode."""
    return _predict(model, model.embed, images, device, input_size, batch_size)


@torch.no_grad()
def _predict(model: nn.Module, forward: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor,
             device: torch.device, input_size: int, batch_size: int) -> np.ndarray:
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        x = to_input(images[start:start + batch_size].to(device), input_size)
        out.append(forward(x).float().cpu())
    if not out:
        return np.zeros((0, 0), dtype=np.float32)
    return torch.cat(out).numpy()


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
        step_offset: int = 0, epoch_offset: int = 0, total_epochs: int | None = None) -> FitResult:
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
    """
    model.to(device)
    loss_fn.to(device)
    optimizer = build_optimizer(model, params)
    steps_per_epoch = len(loader)
    total_steps = steps_per_epoch * params.epochs
    before_step = set_lr(optimizer, lambda s: lr_at(s, total_steps, params.lr, params.lr_schedule))
    schedule_epochs = epoch_offset + params.epochs if total_epochs is None else total_epochs
    history: list[list] = []
    best: dict | None = None
    start_epoch, step = 0, 0

    def record(step_: int, key: str, value: float) -> None:
        history.append([step_, key, value])
        log(step_, key, value)

    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        start_epoch, step, best = checkpoint["epoch"], checkpoint["step"], checkpoint["best"]
        for step_, key, value in checkpoint["history"]:
            record(step_, key, value)

    def shifted(step_: int, key: str, value: float) -> None:
        record(step_ + step_offset, key, value)

    with Progress(total_steps, f"{name} (seed {seed})", unit="step") as bar:
        bar.update(step)
        for epoch in range(start_epoch, params.epochs):
            torch.manual_seed(epoch_seed(seed, epoch_offset + epoch))
            generator = torch.Generator().manual_seed(epoch_seed(seed, epoch_offset + epoch))
            loader.sampler.set_epoch(epoch_offset + epoch)
            on_epoch = getattr(loss_fn, "on_epoch", None)
            if callable(on_epoch):
                on_epoch(epoch_offset + epoch, schedule_epochs)
            step = train_one_epoch(model, loss_fn, optimizer, loader, device, prepare=prepare, generator=generator,
                                   before_step=before_step, first_step=step, log=shifted, name=name, bar=bar)
            scores = validate(model)
            for key, value in scores.items():
                shifted(step - 1, key, value)
            shifted(step - 1, "epoch", epoch_offset + epoch + 1)
            key = list(rank(scores)) if params.select == "best_val" else []
            if params.select == "last" or best is None or tuple(key) > tuple(best["key"]):
                best = {"epoch": epoch_offset + epoch + 1, "key": key, "scores": scores,
                        "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}}
            if save_checkpoint is not None:
                save_checkpoint({"epoch": epoch + 1, "step": step, "best": best, "history": history,
                                 "model": model.state_dict(), "optimizer": optimizer.state_dict()})
    assert best is not None
    return FitResult(state=best["model"], best_epoch=best["epoch"], epochs_run=params.epochs, history=history,
                     steps=step, best_score=tuple(best["key"]), scores=dict(best["scores"]))


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
