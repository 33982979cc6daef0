"""A trained model's outputs on photos, and the validation scores a fit selects by.

Evaluation and the triage bundle import this module, and not the training loop,
so a change to how models train (the loop, the optimiser, the learning-rate
schedule) does not re-run them.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from weldnet.core.distributed import current, gather_rows
from weldnet.core.metrics import class_recall, cross_entropy, per_class_accuracy, softmax
from weldnet.photos.dataset import PhotoDataset, loader_processes, own_generator
from weldnet.photos.transforms import resize_uint8, to_input
from weldnet.train.device import FP32, Precision


def model_input(images: torch.Tensor, input_size: int) -> torch.Tensor:
    """uint8 NHWC batch (any size, on the model's device) -> normalised float NCHW at ``input_size``.

    Photos are stored at the model's size by the inputs stage; a batch at another
    size is resized here, on its device, with the formula that stage uses
    (``resize_uint8``: antialiased bilinear, rounded to uint8).
    """
    if images.shape[1] != input_size or images.shape[2] != input_size:
        images = resize_uint8(images, input_size)
    return to_input(images, input_size)


def predict_logits(model: nn.Module, images: torch.Tensor | PhotoDataset, device: torch.device, input_size: int,
                   batch_size: int = 64, *, workers: int = 1, precision: Precision = FP32) -> np.ndarray:
    """Logits for uint8 NHWC photos (a tensor or a :class:`PhotoDataset`), in order, in eval mode.

    Under torch.distributed every rank must call it: each predicts every world-th
    photo and all of them get every row.
    """
    return _predict(model, model, images, device, input_size, batch_size, workers, precision)


def predict_features(model: nn.Module, images: torch.Tensor | PhotoDataset, device: torch.device, input_size: int,
                     batch_size: int = 64, *, workers: int = 1, precision: Precision = FP32) -> np.ndarray:
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
            out.append(forward(x).float())
    logits = torch.cat(out).cpu().numpy() if out else np.zeros((0, 0), dtype=np.float32)   # one wait for the device
    return gather_rows(logits, len(data), group)


def validation_scores(logits: np.ndarray, target: np.ndarray, class_names: Sequence[str]) -> dict[str, float]:
    pred = logits.argmax(axis=1)
    scores = {"val/per_class_accuracy": per_class_accuracy(pred, target, len(class_names)),
              "val/cross_entropy": cross_entropy(softmax(logits), target)}
    for name, recall in zip(class_names, class_recall(pred, target, len(class_names))):
        scores[f"val/recall/{name}"] = float(recall)
    return scores
