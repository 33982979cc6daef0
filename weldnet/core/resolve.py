"""Resolving a strategy: everything its training reads, and nothing else.

``resolve_strategy(params, name, pretrained_sha256)`` is the JSON form of a
:class:`weldnet.core.params.StrategyConfig`: the strategy's axes, its resolved loss
(the top-level ``loss`` when it sets none) with that loss's hyperparameters only,
its class weighting's settings only when that weighting has any, the model (with
the strategy's head), the training settings, the device, the sampling settings
only when a sampler or schedule of the strategy uses them, its schedule's settings
only when it has one, and, for ``init: redbox``, the digest of the pretrained
weights. Each train stage depends on its own file, so:

- ``-S loss=bayesian`` changes the files of the strategies without a loss of their own;
- ``-S losses.focal.gamma=1`` changes the strategies whose loss is focal;
- ``-S weightings.drw.start=0.5`` changes the strategies whose weighting is drw;
- new pretrained weights (``-S audit.drop_suspects=true``) change the ``init: redbox`` ones;
- ``-S sampling.target_ratio=0.9`` changes over-, under- and selective under-sampling;
- ``-S augmentations.mixup.alpha=0.4`` changes the strategies whose augment is mixup.

A strategy's own ``weight_decay`` replaces ``train.weight_decay`` in its ``train``;
with ``schedule: crt`` its re-training phase's loss, weighting and label smoothing
(``strategy.crt``) bring their settings too.
"""
from __future__ import annotations

from dataclasses import asdict
from typing import Any

from weldnet.core.params import Params, ScheduleParams, Strategy

# samplers whose draw depends on the `sampling` section
RESAMPLERS: tuple[str, ...] = ("oversample", "undersample")


def uses_sampling(strategy: Strategy, schedules: ScheduleParams) -> bool:
    """Whether any phase of the strategy reads ``sampling`` (target ratio, redraw)."""
    samplers = {strategy.sampler}
    if strategy.schedule == "crt":
        samplers.add(strategy.crt.sampler or schedules.crt.sampler)
    return strategy.schedule == "selective_undersample" or bool(samplers & set(RESAMPLERS))


def resolve_strategy(params: Params, name: str, pretrained: str, pretrained_sha256: str | None) -> dict[str, Any]:
    """The resolved configuration of strategy ``name`` (see the module doc), as plain JSON-able values.

    ``pretrained`` is the path of the Redbox-pretrained weights and ``pretrained_sha256``
    their digest (None when the file does not exist; only ``init: redbox`` reads it).
    """
    strategy = params.strategies[name]
    out: dict[str, Any] = {"name": name, "strategy": asdict(strategy)}
    if strategy.reuse is not None:
        return out
    loss = params.resolved_loss(name)
    model = asdict(params.model)
    if strategy.head is not None:
        model["head"] = strategy.head
    train = asdict(params.train)
    if strategy.weight_decay is not None:
        train["weight_decay"] = strategy.weight_decay
    out.update({"loss": loss, "model": model, "train": train, "device": params.device})
    second = strategy.crt if strategy.schedule == "crt" else None
    losses = [loss] + ([second.loss] if second is not None and second.loss is not None else [])
    losses += ["label_smoothing"] if second is not None and second.label_smoothing else []
    loss_settings = {name: asdict(getattr(params.losses, name)) for name in losses
                     if getattr(params.losses, name, None) is not None}
    if loss_settings:
        out["losses"] = loss_settings
    weightings = [strategy.weighting] + ([second.weighting] if second is not None and second.weighting else [])
    weighting_settings = {name: asdict(getattr(params.weightings, name)) for name in weightings
                          if getattr(params.weightings, name, None) is not None}
    if weighting_settings:
        out["weightings"] = weighting_settings
    augment_params = getattr(params.augmentations, strategy.augment, None)
    if augment_params is not None:
        out["augmentations"] = {strategy.augment: asdict(augment_params)}
    if uses_sampling(strategy, params.schedules):
        out["sampling"] = asdict(params.sampling)
    if strategy.schedule != "standard":
        out["schedules"] = {strategy.schedule: asdict(getattr(params.schedules, strategy.schedule))}
    if strategy.init == "redbox":
        if pretrained_sha256 is None:
            raise FileNotFoundError(pretrained)
        out["pretrained"] = {"path": pretrained, "sha256": pretrained_sha256}
    return out
