"""Optimisers and learning-rate schedules, one registry each, keyed by the names params.yaml uses.

A schedule is a standard torch ``LRScheduler``, stepped once after every optimiser
step, so step ``s`` (counted from 0) trains at the rate the schedule gives for ``s``:

- ``constant``: ``lr``.
- ``cosine``: ``lr * cosine_factor(s, T)``, a cosine decay from ``lr`` to 0 over the
  run's ``T`` steps (``train.lr_schedule``, ``pretrain.lr_schedule``).
- ``one_cycle``: torch's ``OneCycleLR`` with peak ``lr``: the rate rises over the
  first ``warmup`` share of the steps, then anneals (cosine) to about 0 (the
  audit's model).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, OneCycleLR

from weldnet.core.config import ParamError

Parameters = Iterable[nn.Parameter]


def _sgd(params: Parameters, lr: float, momentum: float, weight_decay: float) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


def _adam(params: Parameters, lr: float, momentum: float, weight_decay: float) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


def _adamw(params: Parameters, lr: float, momentum: float, weight_decay: float) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


OPTIMIZERS: dict[str, Callable[[Parameters, float, float, float], torch.optim.Optimizer]] = {
    "sgd": _sgd,
    "adam": _adam,
    "adamw": _adamw,
}


def build_optimizer(model: nn.Module, name: str, lr: float, *, momentum: float = 0.0,
                    weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """The optimiser ``name`` over the parameters the model trains (``requires_grad``); momentum is SGD's alone."""
    if name not in OPTIMIZERS:
        raise ParamError(f"unknown optimizer '{name}'; valid: {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[name]([p for p in model.parameters() if p.requires_grad], lr, momentum, weight_decay)


def cosine_factor(step: int, total_steps: int) -> float:
    """0.5 (1 + cos(pi min(step, T) / T)): 1 at step 0, 0.5 halfway, 0 from step T on."""
    return 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / max(total_steps, 1)))


def _constant(step: int) -> float:
    return 1.0


def _constant_schedule(optimizer: torch.optim.Optimizer, total_steps: int, warmup: float) -> LRScheduler:
    return LambdaLR(optimizer, _constant)


def _cosine_schedule(optimizer: torch.optim.Optimizer, total_steps: int, warmup: float) -> LRScheduler:
    return LambdaLR(optimizer, partial(cosine_factor, total_steps=total_steps))


def _one_cycle_schedule(optimizer: torch.optim.Optimizer, total_steps: int, warmup: float) -> LRScheduler:
    return OneCycleLR(optimizer, optimizer.param_groups[0]["lr"], total_steps=max(total_steps, 1), pct_start=warmup)


LR_SCHEDULES: dict[str, Callable[[torch.optim.Optimizer, int, float], LRScheduler]] = {
    "constant": _constant_schedule,
    "cosine": _cosine_schedule,
    "one_cycle": _one_cycle_schedule,
}


def build_lr_schedule(name: str, optimizer: torch.optim.Optimizer, total_steps: int,
                      warmup: float = 0.0) -> LRScheduler:
    """Schedule ``name`` of the optimiser's rate over ``total_steps`` steps (``warmup``: one_cycle's rising share)."""
    if name not in LR_SCHEDULES:
        raise ParamError(f"unknown learning-rate schedule '{name}'; valid: {', '.join(LR_SCHEDULES)}")
    return LR_SCHEDULES[name](optimizer, total_steps, warmup)


@dataclass
class Optimiser:
    """An optimiser, its learning-rate schedule and, for fp16 autocast, its gradient scaler: one update per step."""

    optimizer: torch.optim.Optimizer
    schedule: LRScheduler
    scaler: torch.amp.GradScaler | None = None

    @property
    def lr(self) -> float:
        """The rate the next step trains at."""
        return self.optimizer.param_groups[0]["lr"]

    def step(self, loss: torch.Tensor) -> None:
        """Gradients of ``loss``, one optimiser step, and the schedule moved on to the next step's rate."""
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        self.schedule.step()

    def sam_step(self, loss: torch.Tensor, again: Callable[[], torch.Tensor], rho: float) -> None:
        """One sharpness-aware step (Foret et al. 2021), two forward-backward passes, then the schedule moved on.

        The gradient ``g`` of ``loss`` at the weights ``w`` gives the ascent
        ``e = rho g / ||g||`` (``||g||``: the 2-norm over every trained parameter, on the
        device: no host sync); ``again()`` recomputes the loss at ``w + e``, and the
        optimiser steps from ``w`` with that gradient, weight decay and momentum as in
        a plain step. With a gradient scaler (fp16) the ascent gradient is taken
        unscaled; only the descent gradient is scaled.
        """
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        with torch.no_grad():
            grads = [p.grad for p in params if p.grad is not None]
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads]))
            scale = rho / (norm + 1e-12)
            ascent = [None if p.grad is None else p.grad * scale.to(p.grad.dtype) for p in params]
            for p, e in zip(params, ascent):
                if e is not None:
                    p.add_(e)
        self.optimizer.zero_grad(set_to_none=True)
        perturbed = again()
        (perturbed if self.scaler is None else self.scaler.scale(perturbed)).backward()
        with torch.no_grad():
            for p, e in zip(params, ascent):
                if e is not None:
                    p.sub_(e)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.schedule.step()

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "schedule": self.schedule.state_dict(),
                **({"scaler": self.scaler.state_dict()} if self.scaler is not None else {})}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
