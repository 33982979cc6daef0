"""The evaluate stage's tables and metrics shape: automation curve, confusion counts, summary table."""
import numpy as np
import pytest

from weldnet.scoring.evaluation import (
    automation_curve,
    automation_table,
    by_seed,
    confusion_counts,
    confusion_table,
    summary_table,
)
from weldnet.strategies.decisions import automation, automation_threshold


def test_automation_curve_by_hand():
    score = np.array([0.9, 0.8, 0.7, 0.4, 0.3, 0.2])
    flawed = np.array([1, 0, 1, 0, 1, 0], dtype=bool)
    recall, cleared = automation_curve(score, flawed)
    # flawed scores 0.9, 0.7, 0.3: flag from each, clear what scores below it
    assert recall.tolist() == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert cleared.tolist() == pytest.approx([5 / 6, 3 / 6, 1 / 6])
    # the same figure the automation metric gives for that target recall
    assert automation(score, flawed, automation_threshold(score, flawed, 2 / 3))[0] == pytest.approx(cleared[1])


def test_automation_curve_of_a_constant_model_clears_nothing():
    recall, cleared = automation_curve(np.full(4, 0.2), np.array([1, 1, 0, 0], dtype=bool))
    assert recall.tolist() == [0.5, 1.0] and cleared.tolist() == [0.0, 0.0]
    assert [len(a) for a in automation_curve(np.ones(3), np.zeros(3, dtype=bool))] == [0, 0]


def test_automation_table_means_seeds_and_keeps_the_validation_point():
    curves = [(np.array([0.5, 1.0]), np.array([0.8, 0.4])), (np.array([0.5, 1.0]), np.array([0.6, 0.2]))]
    table = automation_table("bayesian", curves, [(0.9, 0.3), (1.0, 0.1)], 0.95)
    curve = table[table["kind"] == "curve"]
    assert curve["cleared"].tolist() == pytest.approx([0.7, 0.3])
    assert curve["cleared_low"].tolist() == pytest.approx([0.6, 0.2])
    assert curve["cleared_high"].tolist() == pytest.approx([0.8, 0.4])
    point = table[table["kind"] == "validation threshold"].iloc[0]
    assert (point["recall"], point["cleared"]) == pytest.approx((0.95, 0.2))
    assert set(table["target_recall"]) == {0.95} and set(table["strategy"]) == {"bayesian"}
    with pytest.raises(ValueError, match="share the test photos"):
        automation_table("x", [curves[0], (np.array([1.0]), np.array([0.1]))], [(1, 0), (1, 0)], 0.95)


def test_automation_table_thins_a_long_curve_but_keeps_both_ends():
    recall = np.arange(1, 1001) / 1000
    table = automation_table("a", [(recall, 1 - recall)], [(1.0, 0.0)], 0.95, max_points=50)
    curve = table[table["kind"] == "curve"]
    assert len(curve) == 50 and curve["recall"].iloc[0] == 0.001 and curve["recall"].iloc[-1] == 1.0


def test_confusion_counts_and_shares_by_hand():
    counts = confusion_counts(np.array([0, 1, 1, 0, 0]), np.array([0, 0, 1, 1, 1]), 2)
    assert counts.tolist() == [[1, 1], [2, 1]]       # row: actual, column: predicted
    table = confusion_table("s", counts, ["ok", "flawed"]).set_index(["actual", "predicted"])
    assert table.loc[("flawed", "ok"), "count"] == 2
    assert table.loc[("flawed", "ok"), "share"] == pytest.approx(2 / 3)


def test_per_seed_scalars_and_the_summary_table():
    assert by_seed([12, 10], ["seed-0", "seed-1"]) == {"seed-0": 12, "seed-1": 10}
    with pytest.raises(ValueError):
        by_seed([1], ["seed-0", "seed-1"])
    result = {"per_class_accuracy": 0.6, "per_class_accuracy_std": 0.01, "accuracy": 0.8, "cross_entropy": 0.4,
              "automation": 0.2, "automation_recall": 0.95, "per_class_accuracy_ci_low": 0.55,
              "per_class_accuracy_ci_high": 0.65, "collapsed_seeds": 1, "best_epoch": {"seed-0": 12, "seed-1": 10}}
    table = summary_table({"bayesian": result}, 0.95)
    assert "| bayesian | 0.600 ± 0.010 | 0.800 |" in table
    assert "| [0.550, 0.650] | 1/2 | 12, 10 |" in table
