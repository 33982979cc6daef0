"""Check all of params.yaml at once: every stage does this before any work.

    python -m stages.validate      # prints "params.yaml is valid" or the first problem, in one line

A stage fails on a bad key anywhere in params.yaml, not only in its own sections,
so a typo in `train` stops `dvc repro` at its first stage instead of after the
data has been generated and preprocessed.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from weldnet.config import ParamError, build, check_choice, load_params, run_stage, section

TOP_LEVEL = ("data", "generate", "ingest", "audit", "preprocess", "task", "tasks", "imbalance", "device", "loss",
             "model", "train", "losses", "sampling", "schedules", "pretrain", "strategies", "study", "evaluate")


@dataclass(frozen=True)
class DataParams:
    export: str = "data/export"


def check_params(params: dict[str, Any]) -> None:
    """Raise ParamError on the first unknown key, wrong type, unknown name or out-of-range value."""
    from stages.evaluate import EvaluateParams
    from stages.generate import GenerateSpec
    from stages.imbalance import ImbalanceParams, selected_task
    from stages.ingest import IngestParams
    from stages.preprocess import PreprocessParams
    from stages.pretrain import PretrainParams
    from weldnet.audit import AuditParams
    from weldnet.losses import LossParams
    from weldnet.models import ModelParams
    from weldnet.sampling import SamplingParams
    from weldnet.schedules import ScheduleParams
    from weldnet.strategy import load_strategy, resolved_loss, Strategy, validate_study
    from weldnet.tasks import TaskSpec
    from weldnet.training import TrainParams

    for key in params:
        check_choice(key, TOP_LEVEL, "params.yaml top-level key")
    sections = {"data": DataParams, "generate": GenerateSpec, "ingest": IngestParams, "audit": AuditParams,
                "preprocess": PreprocessParams, "imbalance": ImbalanceParams, "model": ModelParams,
                "train": TrainParams, "losses": LossParams, "sampling": SamplingParams, "schedules": ScheduleParams,
                "pretrain": PretrainParams, "evaluate": EvaluateParams}
    for key, cls in sections.items():
        build(cls, params.get(key), key)
    for name, spec in section(params, "tasks").items():
        build(TaskSpec, spec, f"tasks.{name}")
    selected_task(params)
    check_choice(params.get("device", "auto"), ("auto", "cpu", "cuda"), "device")
    default_loss = section(params, "loss")
    for name in section(params, "strategies"):
        strategy: Strategy = load_strategy(params, name)
        resolved_loss(strategy, default_loss)
    validate_study(params)


def load_checked_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    params = load_params(path)
    check_params(params)
    return params


def main() -> None:
    load_checked_params()
    print("params.yaml is valid")


if __name__ == "__main__":
    run_stage(main)
