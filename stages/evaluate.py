"""Stage evaluate: score every strategy of the study on the test split.

For each strategy: mean per-class accuracy (with a bootstrap 95% interval),
accuracy, cross entropy, per-class recall, whether the model collapsed to a
constant prediction, and the inspector's automation: the share of test photos that
can be cleared automatically while recall on flawed photos stays at the target,
with the threshold chosen on validation. Metrics are means over the training
seeds (with their standard deviation when there are several). Decision rules that
fit a number (post-hoc tau) fit it on validation, never on test.

Besides the metrics it writes the tables the plots draw, into ``--plots``:
``automation.csv`` (each strategy's share cleared against recall on flawed test
photos, and its validation-threshold point) and ``confusion.csv`` (test confusion
counts per strategy, summed over seeds).

It also records, in ``--validation``, what was chosen on validation for the
triage bundle to use as it is: each strategy's validation per-class accuracy
(mean over seeds and per seed) and each seed's fitted decision rule.

Each strategy of ``ceiling`` is also scored as ``<strategy>@natural``: the same
configuration trained at the task's natural imbalance, on the same test photos.
Then every strategy is compared, paired on those photos, with the baseline and
with the best strategy on validation (weldnet.scoring.paired), and closes a share of the
gap between the baseline and its ceiling.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from weldnet.core.class_stats import priors as class_priors
from weldnet.core.config import run_stage
from weldnet.core.files import write_csv, write_json, write_text
from weldnet.core.metrics import bootstrap_interval, per_class_accuracy
from weldnet.core.params import load_checked_params
from weldnet.photos.dataset import PhotoCache, PhotoDataset, host_size, read_split, split_dataset
from weldnet.photos.shards import INDEX, read_index
from weldnet.scoring.evaluation import (
    aggregate,
    automation_curve,
    automation_scores,
    automation_table,
    by_seed,
    confusion_counts,
    confusion_table,
    score,
    summary_table,
)
from weldnet.scoring.paired import noise_floor, paired_results, paired_table
from weldnet.strategies.decisions import fit_decision, flaw_score
from weldnet.train.device import precision_for, resolve_device
from weldnet.train.predict import predict_logits
from weldnet.train.store import Trained, read_trained


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--split", required=True, type=Path)
    parser.add_argument("--shards", required=True, type=Path)
    parser.add_argument("--models", required=True, type=Path, help="folder holding one model folder per strategy")
    parser.add_argument("--metrics", required=True, type=Path)
    parser.add_argument("--summary", required=True, type=Path, help="Markdown table of the metrics")
    parser.add_argument("--predictions", required=True, type=Path, help="test-set probabilities (CSV)")
    parser.add_argument("--plots", required=True, type=Path, help="folder for automation.csv and confusion.csv")
    parser.add_argument("--validation", required=True, type=Path,
                        help="JSON of what was chosen on validation (per-seed scores, fitted decision rules)")
    args = parser.parse_args()

    params = load_checked_params()
    study, spec = params.study, params.evaluate
    decision_params = spec.decisions
    device = resolve_device(params.device)
    loader = params.loader     # how photos are read: never changes a result, so not a dep

    split = read_split(args.split)
    test_images = split.loc[split["split"] == "test", "image"].to_numpy()
    val_y = split.loc[split["split"] == "val", "label"].to_numpy()
    test_y = split.loc[split["split"] == "test", "label"].to_numpy()
    images: dict[tuple[str, int], tuple[PhotoDataset, np.ndarray]] = {}
    index = read_index(args.shards / INDEX)
    cache = PhotoCache(loader.cache_mb, device, loader.workers)
    logits_cache: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}

    def data(part: str, size: int) -> tuple[PhotoDataset, np.ndarray]:
        if (part, size) not in images:
            images[(part, size)] = split_dataset(split, index, args.shards, part, host_size(device, size), cache)
        return images[(part, size)]

    def model_logits(trained: Trained, seed_name: str) -> tuple[np.ndarray, np.ndarray]:
        key = (trained.source, seed_name)
        if key not in logits_cache:
            model = trained.load_model(seed_name).to(device)
            model_params = trained.model_params
            size = model_params.input_size
            precision = precision_for(device, model_params.mixed_precision).scoring()
            logits_cache[key] = tuple(
                predict_logits(model, data(part, size)[0], device, size, workers=loader.workers,
                               precision=precision).astype(np.float64)
                for part in ("val", "test"))
        return logits_cache[key]

    results: dict = {}
    predictions, automation_rows, confusion_rows = [], [], []
    correct: dict[str, np.ndarray] = {}
    chosen: dict[str, dict] = {}
    ceilings = {f"{name}@natural": name for name in params.ceiling}
    models = {name: read_trained(args.models, name) for name in [*study, *ceilings]}
    for name, trained in models.items():
        class_names = trained.classes
        priors = class_priors(trained.train_counts)
        per_seed, pooled_pred, fitted, curves = [], [], [], []
        seed_names = trained.seeds
        seed_record: dict[str, dict] = {}
        for seed_name in seed_names:
            val_logits, test_logits = model_logits(trained, seed_name)
            # one fit on validation, applied to validation (for the automation threshold) and test alike
            rule = fit_decision(trained.decision, val_logits, val_y, priors, decision_params)
            both = rule.probs(np.vstack([val_logits, test_logits]))
            val_probs, probs = both[:len(val_logits)], both[len(val_logits):]
            scores = score(probs, test_y, class_names)
            scores.update(automation_scores(val_probs, val_y, probs, test_y, spec.target_recall))
            # what a sweep should choose by: the same decision, scored on validation
            scores["val_per_class_accuracy"] = per_class_accuracy(val_probs.argmax(axis=1), val_y, len(class_names))
            per_seed.append(scores)
            pooled_pred.append(probs.argmax(axis=1))
            fitted.append(rule.fitted)
            seed_record[seed_name] = {"val_per_class_accuracy": scores["val_per_class_accuracy"],
                                     "decision": rule.as_dict()}
            curves.append(automation_curve(flaw_score(probs), test_y != 0))
            frame = pd.DataFrame(probs, columns=[f"p_{c}" for c in class_names])
            frame.insert(0, "label", test_y)
            frame.insert(0, "image", test_images)
            frame.insert(0, "seed", seed_name)
            frame.insert(0, "strategy", name)
            predictions.append(frame)
        result = aggregate(per_seed, class_names)
        rng = np.random.default_rng(spec.seed)
        low, high = bootstrap_interval(np.stack(pooled_pred), test_y, len(class_names), rng, spec.bootstrap)
        result["per_class_accuracy_ci_low"], result["per_class_accuracy_ci_high"] = low, high
        correct[name] = np.stack(pooled_pred) == test_y[None, :]
        result["best_epoch"] = by_seed([trained.best_epoch(s) for s in seed_names], seed_names)
        if any(fitted):
            result["decision_fit"] = by_seed(fitted, seed_names)
        results[name] = result
        chosen[name] = {"val_per_class_accuracy": result["val_per_class_accuracy"], "seeds": seed_record}
        automation_rows.append(automation_table(
            name, curves, [(s["automation_recall"], s["automation"]) for s in per_seed], spec.target_recall))
        counts = sum(confusion_counts(pred, test_y, len(class_names)) for pred in pooled_pred)
        confusion_rows.append(confusion_table(name, counts, class_names))
        print(f"{name:>22}: per-class accuracy {result['per_class_accuracy']:.3f} [{low:.3f}, {high:.3f}], "
              f"accuracy {result['accuracy']:.3f}, automation {result['automation']:.3f}"
              + (", COLLAPSED to a constant" if result["collapsed"] else ""))

    paired, facts = paired_results(correct, test_y, len(class_names),
                                   {n: results[n]["val_per_class_accuracy"] for n in study},
                                   baseline=spec.baseline, ceilings=ceilings, resamples=spec.paired_bootstrap,
                                   alpha=spec.alpha, rng=np.random.default_rng([spec.seed, 1]))
    for name, columns in paired.items():
        results[name].update(columns)
    learners = [n for n in study if models[n].reuse is None
                and results[n]["collapsed_seeds"] < len(results[n]["best_epoch"])]
    floor = noise_floor(paired, learners, spec.alpha)
    print(f"paired: best on validation {facts['best']}"
          + (f"; seeds of one strategy land {floor['mean_seed_gap']:.3f} apart on average" if floor else ""))

    args.metrics.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.metrics, results)
    write_text(args.summary, summary_table(results, spec.target_recall) + "\n## Paired comparisons\n\n"
               + paired_table(results, facts, floor, ceilings))
    args.predictions.parent.mkdir(parents=True, exist_ok=True)
    write_csv(args.predictions, pd.concat(predictions))
    write_json(args.validation, chosen)
    args.plots.mkdir(parents=True, exist_ok=True)
    write_csv(args.plots / "automation.csv", pd.concat(automation_rows), float_format="%.5g")
    write_csv(args.plots / "confusion.csv", pd.concat(confusion_rows), float_format="%.5g")


if __name__ == "__main__":
    run_stage(main)
