"""Where a model runs and how it computes there: the device, deterministic kernels, precision and memory layout.

With ``model.mixed_precision`` (:func:`precision_for`) the model keeps channels-last
memory and computes under autocast where the hardware does low precision natively:
bf16 on CUDA (fp16 with a gradient scaler where bf16 is missing) and on a CPU with
AMX tiles; other CPUs compute in float32. ``model.mixed_precision: false``: float32,
contiguous, everywhere. Recorded scores are computed in float32 (:meth:`Precision.scoring`).
"""
from __future__ import annotations

import contextlib
import os
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

    def scoring(self) -> Precision:
        """Float32 in this layout: the arithmetic of scores a stage records (evaluate's predictions, a bundle's offsets).

        The exported triage bundles compute in float32, so the probabilities that
        evaluate and inspect publish are computed so too: the bundle reproduces them
        to 1e-6 whatever the training precision. Training, and the validation that
        selects its epoch, keep the autocast dtype.
        """
        return Precision(channels_last=self.channels_last)

    def scaler(self) -> torch.amp.GradScaler | None:
        """fp16 gradients need loss scaling to stay representable; bf16 and float32 do not."""
        return torch.amp.GradScaler("cuda") if self.dtype == torch.float16 else None


FP32 = Precision()


CPU_CHANNELS_LAST = Precision(channels_last=True)


CPU_BF16 = Precision(torch.bfloat16, channels_last=True)


def cpu_has_amx() -> bool:
    """Whether this CPU has AMX tiles (Intel Sapphire Rapids and later), where oneDNN runs bf16 convolutions natively.

    ``ONEDNN_MAX_CPU_ISA`` set below ``AVX512_CORE_AMX`` hides the tiles from oneDNN:
    the answer is then False, as the convolutions would not use them.
    """
    capped = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper()
    if capped and capped != "ALL" and "AMX" not in capped:
        return False
    return bool(torch.cpu._is_amx_tile_supported())


def precision_for(device: torch.device, mixed_precision: bool) -> Precision:
    """With ``mixed_precision``: channels-last memory, and bf16 autocast where the device computes it natively.

    - CUDA: bf16 autocast (fp16 with a gradient scaler where the GPU lacks bf16).
    - A CPU with AMX: bf16 autocast. A training step of small_cnn at 64 px, batch 64,
      2 threads: 27.9 steps/s against 18.4 in float32; the audit's model on one thread:
      23.7 against 13.2 (benchmarks/train_speed.py prints the ratio of the machine it runs on).
    - Any other CPU: float32. With AVX512-BF16 but no AMX, bf16 was slower than float32
      (17.1 against 19.0 steps/s), and without AVX512-BF16 twice as slow.

    channels-last alone makes the CPU's convolutions about 30% faster. Without
    ``mixed_precision``: float32, contiguous, on every device.
    """
    if not mixed_precision:
        return FP32
    if device.type == "cuda":
        return Precision(torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16, channels_last=True)
    return CPU_BF16 if cpu_has_amx() else CPU_CHANNELS_LAST
