"""A training strategy is a named choice on each axis: loss, sampler, initialisation, schedule, decision rule.

Strategies live in ``params.yaml`` under ``strategies``; a new combination needs
no code. A strategy that sets no ``loss`` uses the top-level ``loss`` key, so
``dvc exp run -S loss=bayesian`` changes every such strategy at once. A strategy
with ``reuse: <other>`` trains nothing: it applies its decision rule to the other
strategy's trained model (the report's threshold-moving on the baseline model).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from weldnet.config import ParamError, build, check_choice, check_range
from weldnet.decisions import DECISIONS
from weldnet.losses import LOSSES
from weldnet.sampling import SAMPLERS
from weldnet.schedules import SCHEDULES


@dataclass(frozen=True)
class Strategy:
    loss: str | None = None                                   # null: the top-level `loss`
    sampler: str = "none"
    init: Literal["scratch", "redbox", "imagenet"] = "scratch"
    transfer: Literal["conv", "full"] = "full"                # pretrained layers copied when init is not scratch
    freeze: int = 0                                           # lowest conv layers kept fixed
    schedule: str = "standard"                                # standard | selective_undersample | crt
    head: Literal["linear", "normed"] | None = None           # null: model.head
    decision: str = "argmax"
    reuse: str | None = None                                  # apply `decision` to this strategy's model

    def validate(self, where: str) -> None:
        if self.loss is not None:
            check_choice(self.loss, LOSSES, f"{where}.loss")
        check_choice(self.sampler, SAMPLERS, f"{where}.sampler")
        check_choice(self.decision, DECISIONS, f"{where}.decision")
        check_choice(self.schedule, SCHEDULES, f"{where}.schedule")
        if self.schedule == "selective_undersample" and self.sampler != "none":
            raise ParamError(f"{where}: schedule selective_undersample chooses its own training rows; "
                             f"drop sampler: {self.sampler} (or set sampler: none)")
        if self.reuse is not None and self.schedule != "standard":
            raise ParamError(f"{where}: reuse trains nothing, so schedule: {self.schedule} has no effect; drop it")
        check_range(self.freeze, f"{where}.freeze", 0)
        if self.freeze and self.init == "scratch":
            raise ParamError(f"{where}.freeze = {self.freeze} freezes random weights; set init: redbox or imagenet")


def load_strategy(params: dict, name: str) -> Strategy:
    strategies = params.get("strategies")
    if not isinstance(strategies, dict) or not strategies:
        raise ParamError("strategies must map strategy names to their axes; see README, Strategies")
    check_choice(name, strategies, "strategy")
    strategy = build(Strategy, strategies[name], f"strategies.{name}")
    if strategy.reuse is not None:
        check_choice(strategy.reuse, strategies, f"strategies.{name}.reuse")
        source = build(Strategy, strategies[strategy.reuse], f"strategies.{strategy.reuse}")
        if source.reuse is not None:
            raise ParamError(f"strategies.{name}.reuse names '{strategy.reuse}', which reuses another; "
                             "reuse a strategy that trains")
    return strategy


def resolved_loss(strategy: Strategy, default_loss: object) -> str:
    """The strategy's own loss, or the top-level ``loss`` when it sets none."""
    if strategy.loss is not None:
        return strategy.loss
    if not isinstance(default_loss, str):
        raise ParamError(f"loss = {default_loss!r} must be a loss name; valid: {', '.join(LOSSES)}")
    return check_choice(default_loss, LOSSES, "loss")


def validate_study(params: dict) -> list[str]:
    """The strategy names run by default (``study``), each checked against ``strategies``."""
    study = params.get("study")
    if not isinstance(study, list) or not study or not all(isinstance(s, str) for s in study):
        raise ParamError("study must be a non-empty list of strategy names, e.g. [baseline, bayesian]")
    for name in study:
        strategy = load_strategy(params, name)
        if strategy.reuse is not None and strategy.reuse not in study:
            raise ParamError(f"study lists '{name}', which reuses '{strategy.reuse}'; add '{strategy.reuse}' to study")
    if len(set(study)) != len(study):
        raise ParamError("study lists a strategy twice; list each once")
    return study
