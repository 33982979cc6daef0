"""The trained-model folder of one strategy: the one place its layout is written out.

    models/strategies/<strategy>/
      config.json        what the train stage ran: strategy, decision, axes, model, classes,
                         train_counts, seeds {seed-N: {best_epoch, ...}}; for a strategy that
                         reuses another's model, only the pointer {strategy, reuse, decision}
      seed-N/model.pt    the selected weights of seed N (a state dict)

The train stage writes it (:func:`write_pointer`, :func:`save_weights`,
:func:`write_record`); evaluate, the bundle and the plots read it with
:func:`read_trained`, which resolves ``reuse`` once: a strategy that reuses
another's model gets that model's record with its own decision. A ceiling
entry ``<strategy>@natural`` that reuses resolves to ``<reused>@natural``.

torch is imported only to read or write weights, so writing a pointer never imports it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from weldnet.core.config import DataError, build
from weldnet.core.files import atomic_path, write_json
from weldnet.core.params import ModelParams

CONFIG = "config.json"
WEIGHTS = "model.pt"


def seed_name(seed: int) -> str:
    """The folder (and key in config.json) of one training seed: ``seed-N``."""
    return f"seed-{seed}"


# ------------------------------------------------------------------ writing (the train stage)
def write_pointer(folder: Path, strategy: str, reuse: str, decision: str) -> None:
    """config.json of a strategy that trains nothing and applies ``decision`` to ``reuse``'s model."""
    write_json(folder / CONFIG, {"strategy": strategy, "reuse": reuse, "decision": decision})


def save_weights(folder: Path, seed: int, state: dict) -> Path:
    """``seed-N/model.pt``: the selected weights of one seed (the seed folder must not exist yet)."""
    import torch

    seed_dir = folder / seed_name(seed)
    seed_dir.mkdir()
    with atomic_path(seed_dir / WEIGHTS) as tmp:   # a write error never leaves a half-written model
        torch.save(state, tmp)
    return seed_dir / WEIGHTS


def write_record(folder: Path, record: dict) -> None:
    """config.json of a trained strategy: its resolved configuration, with ``seeds`` keyed by :func:`seed_name`."""
    write_json(folder / CONFIG, record)


# ------------------------------------------------------------------ reading (evaluate, bundle, plots)
def _read_config(models: Path, name: str) -> dict:
    path = models / name / CONFIG
    if not path.is_file():
        raise DataError(f"no trained model for strategy '{name}' at {path}; run dvc repro")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path} is not a train stage's record ({exc}); re-run dvc repro") from None


@dataclass(frozen=True)
class Trained:
    """One strategy's trained model as evaluate, the bundle and the plots see it, ``reuse`` resolved."""

    name: str            # the strategy asked for
    folder: Path         # the folder holding the weights: the reused strategy's when it reuses one
    record: dict         # that folder's config.json, with the decision of ``name``
    reuse: str | None    # the strategy whose model this one applies its decision to, or None

    @property
    def source(self) -> str:
        """The strategy that trained the weights (``name`` itself unless it reuses another's)."""
        return self.folder.name

    @property
    def decision(self) -> str:
        return self.record["decision"]

    @property
    def classes(self) -> list[str]:
        return list(self.record["classes"])

    @property
    def train_counts(self) -> list[int]:
        return list(self.record["train_counts"])

    @property
    def seeds(self) -> list[str]:
        """The seed names (``seed-N``) in training order."""
        return list(self.record["seeds"])

    def best_epoch(self, seed: str) -> int:
        return self.record["seeds"][seed]["best_epoch"]

    @property
    def model_params(self) -> ModelParams:
        return build(ModelParams, self.record["model"], f"{self.folder / CONFIG}: model")

    def weights(self, seed: str) -> Path:
        return self.folder / seed / WEIGHTS

    def load_state(self, seed: str) -> dict:
        """The state dict of one seed, on the CPU."""
        import torch

        path = self.weights(seed)
        if not path.is_file():
            raise DataError(f"{path} not found: strategy '{self.name}' lists {seed} but has no weights; run dvc repro")
        return torch.load(path, map_location="cpu", weights_only=True)

    def load_model(self, seed: str):
        """The network of one seed with its weights, on the CPU, in eval mode."""
        from weldnet.strategies.models import build_model

        model = build_model(self.model_params, len(self.classes))
        model.load_state_dict(self.load_state(seed))
        return model.eval()


def read_trained(models: Path, name: str) -> Trained:
    """``models/<name>``, with ``reuse`` resolved (``<name>@variant`` reusing r resolves to ``r@variant``)."""
    record = _read_config(models, name)
    reuse = record.get("reuse") or None
    if reuse is None:
        return Trained(name, models / name, record, None)
    _, at, variant = name.partition("@")
    source = reuse + at + variant
    return Trained(name, models / source, {**_read_config(models, source), "decision": record["decision"]}, reuse)
