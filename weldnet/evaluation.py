"""Scoring strategies on the test split: the report's metrics, the inspector's automation, and their summary.

Metrics are means over the training seeds (with their standard deviation when
there are several). Decision rules that fit a number fit it on validation, never on test.
"""
from __future__ import annotations

import numpy as np

from weldnet.decisions import automation, automation_threshold
from weldnet.metrics import accuracy, class_recall, cross_entropy, is_collapsed, per_class_accuracy

SUMMARY_COLUMNS = (("per_class_accuracy", "per-class acc."), ("accuracy", "accuracy"),
                   ("cross_entropy", "cross entropy"), ("automation", "automation"),
                   ("automation_recall", "flawed recall"))


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
