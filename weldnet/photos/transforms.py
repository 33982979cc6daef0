"""The one owner of how a stored photo becomes a network input.

``resize_uint8`` scales uint8 NHWC photos (antialiased bilinear, rounded back to
uint8) in chunks, ``resize_batch`` one batch: the inputs stage, evaluation and
the triage bundle's exported network all resize with them.
``to_input`` scales uint8 to [0, 1] and normalises with ImageNet statistics, so
that torchvision's pretrained weights see what they were trained on.
"""
from __future__ import annotations

import torch
from torch import nn

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def to_input(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 NHWC images -> float NCHW at ``size`` x ``size``, normalised like ImageNet inputs."""
    x = images.permute(0, 3, 1, 2).float().div_(255.0)
    if x.shape[-1] != size or x.shape[-2] != size:
        x = nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    # built on the CPU and sent without waiting: torch.tensor(..., device=cuda) would wait for the GPU
    mean = torch.tensor(MEAN, dtype=x.dtype).view(1, 3, 1, 1).to(x.device, non_blocking=True)
    std = torch.tensor(STD, dtype=x.dtype).view(1, 3, 1, 1).to(x.device, non_blocking=True)
    return x.sub_(mean).div_(std)


def resize_batch(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 NHWC images -> uint8 NHWC at ``size`` x ``size``: antialiased bilinear, rounded back to uint8.

    One batch in one graph, so the triage bundle exports it with its network.
    """
    x = images.permute(0, 3, 1, 2).float()
    x = nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)


def resize_uint8(images: torch.Tensor, size: int, chunk: int = 256) -> torch.Tensor:
    """:func:`resize_batch` of any number of images, on their device, in chunks to bound memory."""
    if images.shape[1] == size and images.shape[2] == size:
        return images.contiguous()
    out = torch.empty((images.shape[0], size, size, 3), dtype=torch.uint8, device=images.device)
    for start in range(0, images.shape[0], chunk):
        out[start:start + chunk] = resize_batch(images[start:start + chunk], size)
    return out
