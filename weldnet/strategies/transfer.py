"""The initialisation axis: start from scratch, from the Redbox-pretrained network, or from ImageNet.

Transferring ``conv`` copies the convolutional trunk (``features``) only;
``full`` also copies every head layer whose shape matches, which leaves the
task's own output layer freshly initialised. ``freeze`` then fixes the lowest
conv layers (with their batch norm), as in the report's section 6.4.2, where
freezing the first four of AlexNet's five conv layers worked best.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from weldnet.core.config import DataError, ParamError
from weldnet.core.params import Strategy
from weldnet.strategies.models import output_layer_of

IMAGENET_ALEXNET = "alexnet-owt-7be5be79.pth"


def transfer_state(model: nn.Module, source: dict[str, torch.Tensor], transfer: str) -> list[str]:
    """Copy the pretrained tensors that ``transfer`` selects into ``model``; returns the copied names."""
    if transfer not in ("conv", "full"):
        raise ParamError(f"transfer: unknown value '{transfer}'; valid: conv, full")
    own = model.state_dict()
    copied = []
    for name, tensor in source.items():
        if name not in own or own[name].shape != tensor.shape:
            continue
        if transfer == "conv" and not name.startswith("features."):
            continue
        own[name] = tensor.clone()
        copied.append(name)
    if not any(name.startswith("features.") for name in copied):
        raise DataError("the pretrained weights share no conv layer with model.arch; pretrain with the same model")
    model.load_state_dict(own)
    return copied


def conv_layer_count(model: nn.Module) -> int:
    return sum(isinstance(m, nn.Conv2d) for m in model.features)


def freeze_lower_layers(model: nn.Module, layers: int) -> list[str]:
    """Stop gradients in the first ``layers`` conv layers and the modules between them; returns frozen names.

    Frozen batch-norm layers also keep their running statistics: the training loop
    puts any batch norm without trainable parameters in eval mode.
    """
    total = conv_layer_count(model)
    if not 0 <= layers <= total:
        raise ParamError(f"freeze = {layers} but model has {total} conv layers; use 0..{total}")
    frozen, convs = [], 0
    for index, module in enumerate(model.features):
        if isinstance(module, nn.Conv2d):
            convs += 1
            if convs > layers:
                break
        for name, param in module.named_parameters():
            param.requires_grad_(False)
            frozen.append(f"features.{index}.{name}")
    return frozen


def initialise(model: nn.Module, strategy: Strategy, source: dict[str, torch.Tensor] | None) -> str:
    """Copy ``source``'s layers into ``model`` and freeze the lowest ones, as the strategy's init axis says.

    ``source`` is the pretrained state (None for ``init: scratch``); returns what was done, for the log.
    """
    if strategy.init == "scratch":
        return "init scratch"
    if source is None:
        raise ValueError(f"init {strategy.init} needs pretrained weights")
    copied = transfer_state(model, source, strategy.transfer)
    frozen = freeze_lower_layers(model, strategy.freeze)
    return (f"init {strategy.init}: {len(copied)} tensors copied ({strategy.transfer}), "
            f"{strategy.freeze} conv layer(s) frozen ({len(frozen)} tensors)")


def imagenet_alexnet_file() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / IMAGENET_ALEXNET


def load_imagenet_alexnet() -> dict[str, torch.Tensor]:
    """torchvision's ImageNet AlexNet weights from the local torch hub cache; nothing is downloaded."""
    path = imagenet_alexnet_file()
    if not path.exists():
        raise DataError(f"init: imagenet needs torchvision's AlexNet weights at {path}; place "
                        f"{IMAGENET_ALEXNET} there (or set TORCH_HOME), nothing is downloaded at run time")
    return torch.load(path, map_location="cpu", weights_only=True)


def retrain_output_layer(model: nn.Module) -> str:
    """Re-initialise the last linear layer of ``model.classifier`` and freeze every other parameter.

    Classifier re-training (Kang et al. 2020): the representation stays as learned,
    batch norms included (the training loop keeps frozen ones in eval mode), and only
    the output layer learns again. Returns the re-initialised layer's name.
    """
    try:
        name, output = output_layer_of(model)
    except ValueError:
        raise ParamError("schedule crt needs a model whose classifier ends in a linear layer") from None
    for param in model.parameters():
        param.requires_grad_(False)
    output.reset_parameters()
    for param in output.parameters():
        param.requires_grad_(True)
    return f"classifier.{name}"
