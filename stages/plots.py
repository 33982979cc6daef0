"""Stage plots: the tables `dvc plots show` overlays, and the summary PNGs.

Writes into --out (plots/summary):

* ``val_per_class_accuracy.csv`` and ``train_loss.csv``: every trained strategy's and
  seed's dvclive series (strategy, seed, step, ...), the loss as means over blocks of
  steps (a strategy that reuses another's model has no curves of its own);
* ``per_class_accuracy.csv``: test per-class accuracy with its interval, per strategy;
* ``training_curves.png``, ``train_loss.png``, ``per_class_accuracy.png``,
  ``automation.png`` (from evaluate's automation.csv), ``confusion.png`` (from its
  confusion.csv) and ``filters.png``, the first-layer filters of every trained model.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
import torch

from weldnet.core.config import DataError, run_stage
from weldnet.core.files import write_csv
from weldnet.scoring.plotting import (
    accuracy_table,
    automation_chart,
    confusion_chart,
    filter_grid,
    first_layer_filters,
    per_class_accuracy_chart,
    read_series,
    strategy_order,
    tidy_curves,
    training_loss_chart,
    validation_curves_chart,
    window_mean,
)
from weldnet.train.store import Trained, read_trained

LOSS_WINDOW = 10       # training steps per point of train_loss.csv


def model_filters(trained: Trained) -> tuple[list[str], list]:
    """Seed names and first-layer filters of every seed of a strategy's trained model."""
    return trained.seeds, [first_layer_filters(trained.load_state(seed)) for seed in trained.seeds]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evaluate", required=True, type=Path, help="metrics/evaluate.json")
    parser.add_argument("--evaluate-plots", required=True, type=Path, help="the evaluate stage's plot tables")
    parser.add_argument("--live", required=True, type=Path, help="folder of per-strategy dvclive folders")
    parser.add_argument("--models", required=True, type=Path, help="folder of per-strategy trained models")
    parser.add_argument("--pretrained", type=Path, help="the Redbox-pretrained weights, shown beside them")
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args()
    for path in (args.evaluate, args.evaluate_plots / "automation.csv", args.evaluate_plots / "confusion.csv"):
        if not path.exists():
            raise DataError(f"{path} not found; run the evaluate stage first (dvc repro evaluate)")
    results = json.loads(args.evaluate.read_text())
    args.out.mkdir(parents=True, exist_ok=True)

    models = {name: read_trained(args.models, name) for name in results}
    trained: dict[str, list[str]] = {}
    for name, model in models.items():
        trained.setdefault(model.source, []).append(name)

    # a strategy that reuses another's model trained nothing: its curves are the other's
    val = tidy_curves({name: read_series(args.live, name, "val/per_class_accuracy") for name in trained},
                      "per_class_accuracy")
    loss = tidy_curves({name: window_mean(read_series(args.live, name, "train/loss"), LOSS_WINDOW)
                        for name in trained}, "loss")
    if val.empty:
        raise DataError(f"no validation series under {args.live}; run the train stages (dvc repro)")
    write_csv(args.out / "val_per_class_accuracy.csv", val, float_format="%.5g")
    write_csv(args.out / "train_loss.csv", loss, float_format="%.5g")
    table = accuracy_table(results)
    write_csv(args.out / "per_class_accuracy.csv", table, float_format="%.5g")

    validation_curves_chart(val, results, args.out / "training_curves.png")
    training_loss_chart(loss, results, args.out / "train_loss.png")
    per_class_accuracy_chart(table, results, args.out / "per_class_accuracy.png")
    automation_chart(pd.read_csv(args.evaluate_plots / "automation.csv"), results, args.out / "automation.png")
    confusion_chart(pd.read_csv(args.evaluate_plots / "confusion.csv"), results, args.out / "confusion.png")

    rows, seed_names = [], []
    for name in strategy_order(results):
        if name not in trained:
            continue
        seeds, filters = model_filters(models[name])
        seed_names = seed_names if len(seed_names) >= len(seeds) else seeds
        reused = [n for n in trained[name] if n != name]
        rows.append((name + (f" (= {', '.join(reused)})" if reused else ""), filters))
    if args.pretrained is not None and args.pretrained.is_file():
        state = torch.load(args.pretrained, map_location="cpu", weights_only=True)
        rows.append(("Redbox pretraining", [first_layer_filters(state)]))
    filter_grid(rows, args.out / "filters.png", seed_names,
                "First-layer filters of every trained model (grey = 0, each filter scaled to its largest weight); "
                "best validation first")
    print(f"plots: {len(results)} strategies -> {args.out}")


if __name__ == "__main__":
    run_stage(main)
