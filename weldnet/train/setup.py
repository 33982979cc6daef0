"""What a training stage sets up before it trains: process group, device, precision, photo cache, validation, log.

The train and pretrain stages both start with :func:`stage_setup`; under torchrun
only rank 0 prints and logs, and every rank still reports its errors.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from weldnet.core.distributed import Group, start
from weldnet.core.params import LoaderParams
from weldnet.photos.dataset import PhotoCache, PhotoDataset
from weldnet.train.device import Precision, make_deterministic, precision_for, resolve_device
from weldnet.train.loop import Logger
from weldnet.train.predict import predict_logits


@dataclass(frozen=True)
class StageSetup:
    """Where this process trains and how it reads photos."""

    group: Group
    device: torch.device
    precision: Precision
    cache: PhotoCache          # keeps photos where the model runs while they fit loader.cache_mb
    workers: int               # loader processes reading photos not held in memory

    def validator(self, photos: PhotoDataset, input_size: int, batch_size: int,
                  score: Callable[[np.ndarray], dict[str, float]]) -> Callable[[nn.Module], dict[str, float]]:
        """model -> ``score(logits of photos)``: the validation a fit runs after each epoch (collective)."""
        def validate(model: nn.Module) -> dict[str, float]:
            return score(predict_logits(model, photos, self.device, input_size, batch_size, workers=self.workers,
                                        precision=self.precision))
        return validate

    def live_log(self, folder: Path) -> Logger:
        """The run log in ``folder`` (dvclive's format, emptied first) on rank 0; other ranks log nothing."""
        if not self.group.main:
            return _silent
        from weldnet.train.live import DvcLiveLog

        return DvcLiveLog(folder)


def _silent(step: int, name: str, value: float) -> None:
    return None


def stage_setup(device: str, mixed_precision: bool, loader: LoaderParams) -> StageSetup:
    """Join the process group (if any), pick the device, make kernels deterministic and choose the precision."""
    group, resolved = start(resolve_device(device))
    if not group.main:                       # one voice: rank 0 prints, every rank still reports errors
        sys.stdout = open(os.devnull, "w")
    make_deterministic(resolved)
    return StageSetup(group, resolved, precision_for(resolved, mixed_precision),
                      PhotoCache(loader.cache_mb, resolved, loader.workers), loader.workers)


def close_log(log: Logger) -> None:
    """Write out the run log (rank 0's); a silent log has nothing to write."""
    close = getattr(log, "close", None)
    if callable(close):
        close()
