"""The architecture axis: a registry of image classifiers.

``small_cnn`` is the CPU default, trained at a reduced input size. ``alexnet`` is
torchvision's AlexNet, the report's architecture, meant for GPU runs at 224x224.
Every model exposes ``features`` (the conv trunk, a ``nn.Sequential``) and
``classifier`` (the head) so that transfer learning can copy and freeze layers
by position.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from weldnet.core.config import check_choice
from weldnet.core.params import ModelParams


class NormedLinear(nn.Linear):
    """Cosine logits: ``z_c = <x / |x|, w_c / |w_c|>``, in [-1, 1], no bias.

    The head LDAM was designed for (Cao et al. 2019): its loss multiplies the
    margin-adjusted cosines by ``losses.ldam.scale``. At prediction the model's
    softmax is over the cosines themselves, so its probabilities are softer than a
    linear head's; argmax, ranking and per-class accuracy do not depend on that.
    """

    def __init__(self, in_features: int, out_features: int):
        super().__init__(in_features, out_features, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(nn.functional.normalize(x, dim=1), nn.functional.normalize(self.weight, dim=1))


HEADS: dict[str, Callable[[int, int], nn.Linear]] = {"linear": nn.Linear, "normed": NormedLinear}


def output_layer(head: str, in_features: int, out_features: int) -> nn.Linear:
    return HEADS[head](in_features, out_features)        # ModelParams.head has been validated


class SmallCNN(nn.Module):
    """Four conv blocks (conv-BN-maxpool-ReLU), doubling width each block, then global pooling.

    Max-pooling before the ReLU gives the same outputs and gradients, bit for bit, as
    after it (the ReLU is monotone, so it commutes with the max), and the ReLU then
    touches a quarter of the elements: on one CPU thread a training step is about 1.2x
    faster (tests/test_training.py checks the equality).
    """

    def __init__(self, num_classes: int, width: int = 16, dropout: float = 0.3, head: str = "linear"):
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for block in range(4):
            out = width * 2**block
            layers += [nn.Conv2d(channels, out, 3, padding=1, bias=False), nn.BatchNorm2d(out),
                       nn.MaxPool2d(2), nn.ReLU(inplace=True)]
            channels = out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), output_layer(head, channels, num_classes))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.pool(self.features(x)), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)))


class AlexNet(nn.Module):
    """torchvision's AlexNet with a ``num_classes`` head and an ``embed`` for feature-space methods."""

    def __init__(self, num_classes: int, width: int = 16, dropout: float = 0.5, head: str = "linear"):
        super().__init__()
        from torchvision.models import alexnet

        net = alexnet(weights=None, num_classes=num_classes, dropout=dropout)
        self.features, self.avgpool, self.classifier = net.features, net.avgpool, net.classifier
        last = self.classifier[-1]
        self.classifier[-1] = output_layer(head, last.in_features, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.avgpool(self.features(x)), 1)
        return self.classifier[:-1](x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


MODELS: dict[str, Callable[..., nn.Module]] = {"small_cnn": SmallCNN, "alexnet": AlexNet}


def build_model(params: ModelParams, num_classes: int) -> nn.Module:
    check_choice(params.arch, MODELS, "model.arch")
    return MODELS[params.arch](num_classes, width=params.width, dropout=params.dropout, head=params.head)


def output_layer_of(model: nn.Module) -> tuple[str, nn.Linear]:
    """The name (under ``classifier``) and module of the last linear layer of ``model.classifier``."""
    names = [name for name, module in model.classifier.named_modules() if isinstance(module, nn.Linear)]
    if not names:
        raise ValueError("the model's classifier does not end in a linear layer")
    return names[-1], model.classifier.get_submodule(names[-1])


@torch.no_grad()
def cap_class_norms(weight: torch.Tensor, max_norm: float) -> None:
    """MaxNorm (Alshammari et al. 2022): each class's weight row rescaled to norm at most ``max_norm``, in place.

    ``w_c <- w_c * min(1, max_norm / ||w_c||)``: the projection onto the norm ball, applied
    after every optimiser step; rows already inside it are left exactly as they are.
    """
    norms = weight.norm(dim=1, keepdim=True)
    weight.mul_(torch.where(norms > max_norm, max_norm / norms, torch.ones_like(norms)))
