"""Scoring strategies on the test split: the report's metrics, the inspector's automation, and their summary.

Metrics are means over the training seeds (with their standard deviation when
there are several). Decision rules that fit a number fit it on validation, never on test.
Every metric is a scalar (or a dict of scalars), so ``dvc metrics diff`` and
``dvc exp show`` show each one; the curves and confusion counts behind them are
tables for the plots (:func:`automation_curve`, :func:`confusion_counts`).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from weldnet.core.metrics import accuracy, class_recall, cross_entropy, is_collapsed, per_class_accuracy
from weldnet.strategies.decisions import automation, automation_threshold, flaw_score

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
    """Clear photos whose flaw score 1 - p(default class) is below a threshold set on validation."""
    threshold = automation_threshold(flaw_score(val_probs), val_y != 0, target_recall)
    cleared, recall = automation(flaw_score(test_probs), test_y != 0, threshold)
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


def by_seed(values: list, seed_names: list[str]) -> dict:
    """``{seed name: value}``: per-seed figures as scalars that ``dvc metrics diff`` shows (it drops lists)."""
    if len(values) != len(seed_names):
        raise ValueError(f"{len(values)} values for {len(seed_names)} seeds")
    return dict(zip(seed_names, values))


def automation_curve(flaw_score: np.ndarray, flawed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The trade-off behind ``automation``: (recall r_k, share cleared) for r_k = k/n, k = 1..n flawed photos.

    For each r_k the threshold is :func:`weldnet.strategies.decisions.automation_threshold` set on
    these photos themselves, so the curve is the best trade-off the scores allow (the
    stage's own ``automation`` sets it on validation instead). Share cleared is
    non-increasing in r; tied scores can give the same threshold, hence the same
    share, to several r_k.
    """
    flaw_score, flawed = np.asarray(flaw_score, dtype=np.float64), np.asarray(flawed, dtype=bool)
    n = int(flawed.sum())
    if n == 0:
        return np.empty(0), np.empty(0)
    thresholds = np.sort(flaw_score[flawed])[::-1]           # the k-th is automation_threshold at r = k/n
    cleared = np.searchsorted(np.sort(flaw_score), thresholds, side="left") / len(flaw_score)
    return np.arange(1, n + 1) / n, cleared


def confusion_counts(pred: np.ndarray, target: np.ndarray, num_classes: int) -> np.ndarray:
    """(K, K) counts, row = actual class, column = predicted class."""
    counts = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(counts, (np.asarray(target, dtype=np.int64), np.asarray(pred, dtype=np.int64)), 1)
    return counts


def automation_table(strategy: str, curves: list[tuple[np.ndarray, np.ndarray]], operating: list[tuple[float, float]],
                     target_recall: float, max_points: int = 200) -> pd.DataFrame:
    """One strategy's automation curve, mean over seeds with their range, and its validation-threshold point.

    ``curves`` holds each seed's :func:`automation_curve` on the same test photos (so
    the same recall grid); ``operating`` each seed's (recall, cleared) at the threshold
    chosen on validation, i.e. ``automation_recall`` and ``automation``. Rows of kind
    ``curve`` (at most ``max_points``, evenly spread over the grid) and one row of kind
    ``validation threshold``; columns strategy, kind, recall, cleared, cleared_low,
    cleared_high, target_recall.
    """
    recall = curves[0][0]
    if any(len(r) != len(recall) or not np.allclose(r, recall) for r, _ in curves):
        raise ValueError("automation curves of one strategy must share the test photos")
    cleared = np.stack([c for _, c in curves])
    keep = np.unique(np.linspace(0, len(recall) - 1, min(max_points, len(recall))).round().astype(int))
    curve = pd.DataFrame({"strategy": strategy, "kind": "curve", "recall": recall[keep],
                          "cleared": cleared.mean(axis=0)[keep], "cleared_low": cleared.min(axis=0)[keep],
                          "cleared_high": cleared.max(axis=0)[keep]})
    points = np.asarray(operating, dtype=np.float64)
    point = pd.DataFrame({"strategy": [strategy], "kind": ["validation threshold"], "recall": [points[:, 0].mean()],
                          "cleared": [points[:, 1].mean()], "cleared_low": [points[:, 1].min()],
                          "cleared_high": [points[:, 1].max()]})
    table = pd.concat([curve, point], ignore_index=True)
    table["target_recall"] = target_recall
    return table


def confusion_table(strategy: str, counts: np.ndarray, class_names: list[str]) -> pd.DataFrame:
    """Tidy confusion counts of one strategy: strategy, actual, predicted, count, share (of the actual class)."""
    totals = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    rows = [(strategy, actual, predicted, int(counts[i, j]), float(share[i, j]))
            for i, actual in enumerate(class_names) for j, predicted in enumerate(class_names)]
    return pd.DataFrame(rows, columns=["strategy", "actual", "predicted", "count", "share"])


def summary_table(results: dict, target_recall: float) -> str:
    """One Markdown table, strategy by metric, for a pull request."""
    header = ["strategy", *(title for _, title in SUMMARY_COLUMNS), "95% interval", "collapsed", "epoch"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, r in results.items():
        cells = [name]
        for key, _ in SUMMARY_COLUMNS:
            std = r.get(f"{key}_std")
            cells.append(f"{r[key]:.3f}" + (f" ± {std:.3f}" if std is not None else ""))
        epochs = list(r["best_epoch"].values())
        cells += [f"[{r['per_class_accuracy_ci_low']:.3f}, {r['per_class_accuracy_ci_high']:.3f}]",
                  f"{r['collapsed_seeds']}/{len(epochs)}", ", ".join(str(e) for e in epochs)]
        lines.append("| " + " | ".join(cells) + " |")
    note = (f"\nPer-class accuracy and accuracy on the test split, mean ± std over seeds; 95% bootstrap interval of "
            f"per-class accuracy; automation: share of test photos cleared while keeping {target_recall:.0%} recall "
            "on flawed photos (threshold set on validation), with the recall reached; epoch: selected checkpoint.\n")
    return "\n".join(lines) + "\n" + note
