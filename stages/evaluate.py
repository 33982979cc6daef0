"""Stage evaluate: score every strategy of the study on the test split.

For each strategy: mean per-class accuracy (with a bootstrap 95% interval),
accuracy, cross entropy, per-class recall, whether the model collapsed to a
constant prediction, and the inspector's automation: the share of test photos that
can be cleared automatically while recall on flawed photos stays at the target,
with the threshold chosen on validation. Metrics are means over the training
seeds (with their standard deviation when there are several). Decision rules that
fit a number (post-hoc tau) fit it on validation, never on test.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from stages.validate import load_checked_params
from weldnet.config import DataError, build, check_range, run_stage
from weldnet.decisions import DecisionParams, apply_decision, automation, automation_threshold
from weldnet.metrics import accuracy, bootstrap_interval, class_recall, cross_entropy, is_collapsed, per_class_accuracy
from weldnet.models import ModelParams, build_model
from weldnet.strategy import validate_study
from weldnet.training import predict_logits, resolve_device

from stages.train import load_split_images

SUMMARY_COLUMNS = (("per_class_accuracy", "per-class acc."), ("accuracy", "accuracy"),
                   ("cross_entropy", "cross entropy"), ("automation", "automation"),
                   ("automation_recall", "flawed recall"))


@dataclass(frozen=True)
class EvaluateParams:
    bootstrap: int = 1000
    seed: int = 0
    target_recall: float = 0.95
    tau_grid: list[float] = field(default_factory=lambda: DecisionParams().tau_grid)

    def validate(self, where: str) -> None:
        check_range(self.bootstrap, f"{where}.bootstrap", 10)
        check_range(self.target_recall, f"{where}.target_recall", 0.0, 1.0, low_open=True)
        DecisionParams(self.tau_grid).validate(where)


def score(probs: np.ndarray, target: np.ndarray, class_names: list[str]) -> dict:
    pred = probs.argmax(axis=1)
    recall = class_recall(pred, target, len(class_names))
    return {"per_class_accuracy": per_class_accuracy(pred, target, len(class_names)),
            "accuracy": accuracy(pred, target),
            "cross_entropy": cross_entropy(probs, target),
            "collapsed": is_collapsed(pred),
            "recall": {name: float(r) for name, r in zip(class_names, recall)}}


def automation_scores(val_probs: np.ndarray, val_y: np.ndarray, test_probs: np.ndarray, test_y: np.ndarray,
                      target_recall: float) -> dict:
    """Clear photos whose flaw probability 1 - p(default class) is below a threshold set on validation."""
    threshold = automation_threshold(1.0 - val_probs[:, 0], val_y != 0, target_recall)
    cleared, recall = automation(1.0 - test_probs[:, 0], test_y != 0, threshold)
    return {"automation": cleared, "automation_recall": recall, "automation_threshold": threshold}


def aggregate(per_seed: list[dict], class_names: list[str]) -> dict:
    """Mean over seeds of each metric, with its standard deviation when there are several seeds."""
    out: dict = {}
    for key in ("per_class_accuracy", "accuracy", "cross_entropy", "automation", "automation_recall",
                "val_per_class_accuracy"):
        values = np.array([s[key] for s in per_seed], dtype=float)
        out[key] = float(values.mean())
        if len(values) > 1:
            out[f"{key}_std"] = float(values.std(ddof=1))
    collapsed = sum(s["collapsed"] for s in per_seed)
    out["collapsed"] = collapsed * 2 >= len(per_seed)
    out["collapsed_seeds"] = int(collapsed)
    out["recall"] = {name: float(np.mean([s["recall"][name] for s in per_seed])) for name in class_names}
    return out


def summary_table(results: dict, target_recall: float) -> str:
    """One Markdown table, strategy by metric, for a pull request."""
    header = ["strategy", *(title for _, title in SUMMARY_COLUMNS), "95% interval", "collapsed", "epoch"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, r in results.items():
        cells = [name]
        for key, _ in SUMMARY_COLUMNS:
            std = r.get(f"{key}_std")
            cells.append(f"{r[key]:.3f}" + (f" ± {std:.3f}" if std is not None else ""))
        low, high = r["per_class_accuracy_ci"]
        cells += [f"[{low:.3f}, {high:.3f}]", f"{r['collapsed_seeds']}/{len(r['best_epoch'])}",
                  ", ".join(str(e) for e in r["best_epoch"])]
        lines.append("| " + " | ".join(cells) + " |")
    note = (f"\nPer-class accuracy and accuracy on the test split, mean ± std over seeds; 95% bootstrap interval of "
            f"per-class accuracy; automation: share of test photos cleared while keeping {target_recall:.0%} recall "
            "on flawed photos (threshold set on validation), with the recall reached; epoch: selected checkpoint.\n")
    return "\n".join(lines) + "\n" + note


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--split", required=True, type=Path)
    parser.add_argument("--shards", required=True, type=Path)
    parser.add_argument("--models", required=True, type=Path, help="folder holding one model folder per strategy")
    parser.add_argument("--metrics", required=True, type=Path)
    parser.add_argument("--summary", required=True, type=Path, help="Markdown table of the metrics")
    parser.add_argument("--predictions", required=True, type=Path, help="test-set probabilities (CSV)")
    args = parser.parse_args()

    params = load_checked_params()
    study = validate_study(params)
    spec = build(EvaluateParams, params.get("evaluate"), "evaluate")
    decision_params = DecisionParams(spec.tau_grid)
    device = resolve_device(params.get("device", "auto"))

    split = pd.read_csv(args.split)
    test_images = split.loc[split["split"] == "test", "image"].to_numpy()
    val_y = split.loc[split["split"] == "val", "label"].to_numpy()
    test_y = split.loc[split["split"] == "test", "label"].to_numpy()
    images: dict[tuple[str, int], tuple[torch.Tensor, np.ndarray]] = {}
    logits_cache: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}

    def data(part: str, size: int) -> tuple[torch.Tensor, np.ndarray]:
        if (part, size) not in images:
            images[(part, size)] = load_split_images(split, args.shards, part, size)
        return images[(part, size)]

    def read_config(name: str) -> dict:
        path = args.models / name / "config.json"
        if not path.exists():
            raise DataError(f"no trained model for strategy '{name}' at {path}; run dvc repro")
        return json.loads(path.read_text())

    def model_logits(name: str, seed_name: str, config: dict) -> tuple[np.ndarray, np.ndarray]:
        if (name, seed_name) not in logits_cache:
            model_params = build(ModelParams, config["model"], f"models/{name}/config.json: model")
            model = build_model(model_params, len(config["classes"]))
            state = torch.load(args.models / name / seed_name / "model.pt", map_location="cpu", weights_only=True)
            model.load_state_dict(state)
            model.to(device)
            size = model_params.input_size
            logits_cache[(name, seed_name)] = tuple(
                predict_logits(model, data(part, size)[0], device, size).astype(np.float64)
                for part in ("val", "test"))
        return logits_cache[(name, seed_name)]

    results: dict = {}
    predictions = []
    for name in study:
        config = read_config(name)
        decision = config["decision"]
        if config.get("reuse"):
            config = {**read_config(config["reuse"]), "decision": decision}
        class_names = config["classes"]
        priors = np.asarray(config["train_counts"], dtype=float) / sum(config["train_counts"])
        per_seed, pooled_pred, fitted = [], [], []
        for seed_name in config["seeds"]:
            val_logits, test_logits = model_logits(config["strategy"], seed_name, config)
            # one fit on validation, applied to validation (for the automation threshold) and test alike
            both, info = apply_decision(decision, val_logits, val_y, np.vstack([val_logits, test_logits]), priors,
                                        decision_params)
            val_probs, probs = both[:len(val_logits)], both[len(val_logits):]
            scores = score(probs, test_y, class_names)
            scores.update(automation_scores(val_probs, val_y, probs, test_y, spec.target_recall))
            # what a sweep should choose by: the same decision, scored on validation
            scores["val_per_class_accuracy"] = per_class_accuracy(val_probs.argmax(axis=1), val_y, len(class_names))
            per_seed.append(scores)
            pooled_pred.append(probs.argmax(axis=1))
            fitted.append(info)
            frame = pd.DataFrame(probs, columns=[f"p_{c}" for c in class_names])
            frame.insert(0, "label", test_y)
            frame.insert(0, "image", test_images)
            frame.insert(0, "seed", seed_name)
            frame.insert(0, "strategy", name)
            predictions.append(frame)
        result = aggregate(per_seed, class_names)
        rng = np.random.default_rng(spec.seed)
        low, high = bootstrap_interval(np.stack(pooled_pred), test_y, len(class_names), rng, spec.bootstrap)
        result["per_class_accuracy_ci"] = [low, high]
        result["best_epoch"] = [config["seeds"][s]["best_epoch"] for s in config["seeds"]]
        if any(fitted):
            result["decision_fit"] = fitted
        results[name] = result
        print(f"{name:>22}: per-class accuracy {result['per_class_accuracy']:.3f} [{low:.3f}, {high:.3f}], "
              f"accuracy {result['accuracy']:.3f}, automation {result['automation']:.3f}"
              + (", COLLAPSED to a constant" if result["collapsed"] else ""))

    args.metrics.parent.mkdir(parents=True, exist_ok=True)
    args.metrics.write_text(json.dumps(results, indent=2) + "\n")
    args.summary.write_text(summary_table(results, spec.target_recall))
    args.predictions.parent.mkdir(parents=True, exist_ok=True)
    pd.concat(predictions).to_csv(args.predictions, index=False)


if __name__ == "__main__":
    run_stage(main)
