"""Stage plots: overlay every strategy's training curves and compare their per-class accuracy."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from weldnet.config import DataError, run_stage
from weldnet.plotting import per_class_accuracy_chart, training_curves


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--evaluate", required=True, type=Path)
    parser.add_argument("--live", required=True, type=Path, help="folder of per-strategy dvclive folders")
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args()
    if not args.evaluate.exists():
        raise DataError(f"{args.evaluate} not found; run the evaluate stage first")
    results = json.loads(args.evaluate.read_text())
    args.out.mkdir(parents=True, exist_ok=True)
    training_curves(args.live, list(results), args.out / "training_curves.png")
    per_class_accuracy_chart(results, args.out / "per_class_accuracy.png", args.out / "per_class_accuracy.csv")


if __name__ == "__main__":
    run_stage(main)
