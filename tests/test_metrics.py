import numpy as np
import pytest

from weldnet.core.config import DataError
from weldnet.core.metrics import (
    accuracy,
    best_by_validation,
    bootstrap_interval,
    class_recall,
    cross_entropy,
    is_collapsed,
    per_class_accuracy,
)


def test_constant_classifier_scores_high_accuracy_but_half_per_class_accuracy():
    target = np.array([0] * 98 + [1] * 2)
    pred = np.zeros(100, dtype=int)
    assert accuracy(pred, target) == 0.98
    assert per_class_accuracy(pred, target, 2) == 0.5
    assert is_collapsed(pred)


def test_per_class_accuracy_by_hand():
    target = np.array([0, 0, 0, 0, 1, 1, 2])
    pred = np.array([0, 0, 0, 1, 1, 0, 2])
    assert np.allclose(class_recall(pred, target, 3), [0.75, 0.5, 1.0])
    assert np.isclose(per_class_accuracy(pred, target, 3), (0.75 + 0.5 + 1.0) / 3)
    assert not is_collapsed(pred)


def test_cross_entropy_by_hand():
    probs = np.array([[0.9, 0.1], [0.2, 0.8]])
    assert np.isclose(cross_entropy(probs, np.array([0, 0])), -(np.log(0.9) + np.log(0.2)) / 2)


def test_bootstrap_interval_brackets_the_estimate_and_narrows_with_data():
    rng = np.random.default_rng(0)
    target = np.array([0] * 400 + [1] * 40)
    pred = target.copy()
    pred[:40] = 1  # recall 0.9 on class 0
    pred[400:410] = 0  # recall 0.75 on class 1
    low, high = bootstrap_interval(pred, target, 2, rng, resamples=500)
    assert low < per_class_accuracy(pred, target, 2) < high
    assert high - low < 0.2
    perfect_low, perfect_high = bootstrap_interval(target, target, 2, rng, resamples=100)
    assert perfect_low == perfect_high == 1.0


NAN = float("nan")


def test_best_by_validation_never_picks_nan_and_breaks_ties_by_order():
    assert best_by_validation({"a": NAN, "b": 0.5, "c": 0.7}) == "c"           # NaN first does not win
    assert best_by_validation({"a": 0.5, "b": 0.7, "c": NAN}) == "b"           # nor NaN last
    assert best_by_validation({"a": 0.6, "b": 0.7, "c": 0.7}) == "b"           # a tie: the first listed
    assert best_by_validation({"a": 0.6, "b": 0.7, "c": 0.7}, ["c", "b", "a"]) == "c"   # ... in the order given
    assert best_by_validation({"b": 0.5}, ["a", "b"]) == "b"                    # a name without a score never wins
    with pytest.raises(DataError, match="no validation score to choose by: a, b have none"):
        best_by_validation({"a": NAN, "b": NAN})
