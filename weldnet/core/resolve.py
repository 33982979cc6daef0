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
- ``-S sampling.target_ratio=0.9`` changes over-, under- and selective under-sampling.
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
        samplers.add(schedules.crt.sampler)
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
    out.update({"loss": loss, "model": model, "train": asdict(params.train), "device": params.device})
    loss_params = getattr(params.losses, loss, None)
    if loss_params is not None:
        out["losses"] = {loss: asdict(loss_params)}
    weighting_params = getattr(params.weightings, strategy.weighting, None)
    if weighting_params is not None:
        out["weightings"] = {strategy.weighting: asdict(weighting_params)}
    if uses_sampling(strategy, params.schedules):
        out["sampling"] = asdict(params.sampling)
    if strategy.schedule != "standard":
        out["schedules"] = {strategy.schedule: asdict(getattr(params.schedules, strategy.schedule))}
    if strategy.init == "redbox":
        if pretrained_sha256 is None:
            raise FileNotFoundError(pretrained)
        out["pretrained"] = {"path": pretrained, "sha256": pretrained_sha256}
    return out
