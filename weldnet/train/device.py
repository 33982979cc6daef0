"""Where a model runs and how it computes there: the device, deterministic kernels, precision and memory layout.

On CUDA the model runs in mixed precision (bf16 autocast, or fp16 with a gradient
scaler where bf16 is missing) with channels-last memory (:func:`precision_for`;
``model.mixed_precision: false`` turns both off); the CPU always computes in
float32.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from weldnet.core.config import ParamError
from weldnet.core.params import DEVICES


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
    """Same params and seed, same numbers: deterministic kernels (warn-only on CUDA, where some have none).

    This is ``torch.use_deterministic_algorithms`` without its one other effect, a
    setting of torch.compile's inductor, which nothing here uses: importing it
    pulls in torch._dynamo, seconds of start-up for every stage.
    """
    torch._C._set_deterministic_algorithms(True, warn_only=device.type == "cuda")
    torch.backends.cudnn.benchmark = False


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
