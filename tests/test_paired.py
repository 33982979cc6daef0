"""The paired bootstrap against hand computation, and its behaviour on synthetic predictions.

A known difference must be found (power); no difference must be called a difference
at about the nominal rate, over many synthetic test sets (the false-positive rate).
"""
import numpy as np
import pytest

from weldnet.core.metrics import per_class_accuracy
from weldnet.scoring.paired import (
    VERDICTS,
    bootstrap_p_value,
    compare,
    compare_family,
    holm,
    noise_floor,
    paired_results,
    paired_table,
    point_scores,
    resample_counts,
    resampled_scores,
    score_models,
    seed_spread,
    verdict,
)


def test_resample_counts_draw_each_class_as_often_as_it_has_photos():
    target = np.array([0, 1, 0, 0, 1, 0])
    draws = resample_counts(target, 2, 50, np.random.default_rng(0))
    (rows0, counts0), (rows1, counts1) = draws
    np.testing.assert_array_equal(rows0, [0, 2, 3, 5])
    np.testing.assert_array_equal(rows1, [1, 4])
    assert counts0.shape == (50, 4) and counts1.shape == (50, 2)
    assert (counts0.sum(axis=1) == 4).all() and (counts1.sum(axis=1) == 2).all()
    assert len({tuple(c) for c in counts0}) > 10          # resamples differ


def test_resampled_scores_by_hand():
    # photos 0, 1 of class 0 and photo 2 of class 1; the model gets photos 0 and 2 right
    draws = [(np.array([0, 1]), np.array([[2, 0], [0, 2], [1, 1]])), (np.array([2]), np.array([[1], [1], [1]]))]
    scores = resampled_scores(np.array([[1, 0, 1]]), draws)
    # class-0 recall on the resamples: 2/2, 0/2, 1/2; class 1: 1 each; mean of the two
    np.testing.assert_allclose(scores[:, 0], [1.0, 0.5, 0.75])


def test_point_scores_are_per_class_accuracy():
    rng = np.random.default_rng(1)
    target = rng.integers(0, 3, 40)
    pred = rng.integers(0, 3, (2, 40))
    expected = [per_class_accuracy(p, target, 3) for p in pred]
    np.testing.assert_allclose(point_scores(pred == target, target, 3), expected)


def test_bootstrap_p_value_by_hand():
    assert bootstrap_p_value(np.array([0.1, 0.2, -0.1, 0.3])) == pytest.approx(2 * 2 / 5)   # 1 at or below 0
    assert bootstrap_p_value(np.full(9, 0.05)) == pytest.approx(2 / 10)                    # none: the floor
    assert bootstrap_p_value(np.zeros(20)) == 1.0                                          # identical models
    assert bootstrap_p_value(np.array([-0.2, -0.1, 0.0, -0.3])) == pytest.approx(2 * 2 / 5)


def test_holm_by_hand():
    # sorted 0.01, 0.03, 0.04 -> 3 * 0.01, 2 * 0.03, max(0.06, 1 * 0.04): back in input order
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])
    np.testing.assert_allclose(holm([0.5, 0.001]), [0.5, 0.002])
    np.testing.assert_allclose(holm([0.6, 0.7]), [1.0, 1.0])
    assert len(holm([])) == 0


def test_verdict_needs_the_adjusted_p_below_alpha():
    assert verdict(0.1, 0.01, 0.05) == 1 and verdict(-0.1, 0.01, 0.05) == -1
    assert verdict(0.1, 0.05, 0.05) == 0 and verdict(0.0, 0.0, 0.05) == 0
    assert VERDICTS[0] == "no detectable difference"


def test_a_model_against_itself_differs_by_nothing():
    rng = np.random.default_rng(2)
    target = (rng.random(300) < 0.15).astype(int)
    correct = rng.random((2, 300)) < 0.7
    scores = score_models({"a": correct, "b": correct.copy()}, target, 2, 500, rng)
    c = compare(scores.point["a"], scores.point["b"], scores.draws["a"], scores.draws["b"], 0.05)
    assert (c.diff, c.ci_low, c.ci_high, c.p) == (0.0, 0.0, 0.0, 1.0)


def synthetic(rng, n0=450, n1=70, base=(0.8, 0.55), lift=0.0, flip=0.1):
    """Two models' correctness on one synthetic test set, correlated through a shared difficulty.

    Both are right where a shared latent is below the class's accuracy, each with its
    own photos flipped with probability ``flip``; then ``a`` also gets a share ``lift``
    of its minority-class errors right. With lift = 0 the two are exchangeable: no
    difference at all in expectation.
    """
    target = np.r_[np.zeros(n0, int), np.ones(n1, int)]
    right = rng.random(len(target)) < np.where(target == 0, base[0], base[1])
    a = right ^ (rng.random(len(target)) < flip)
    b = right ^ (rng.random(len(target)) < flip)
    if lift:
        a = a | ((target == 1) & (rng.random(len(target)) < lift))
    return target, a, b


def rejects(rng, resamples=400, **kw) -> tuple[bool, float]:
    target, a, b = synthetic(rng, **kw)
    scores = score_models({"a": a[None], "b": b[None]}, target, 2, resamples, rng)
    c = compare(scores.point["a"], scores.point["b"], scores.draws["a"], scores.draws["b"], 0.05)
    return c.p < 0.05, c.diff


def test_power_a_known_difference_is_found():
    rng = np.random.default_rng(3)
    found = [rejects(rng, lift=0.5) for _ in range(40)]      # about +0.11 per-class accuracy
    assert np.mean([f for f, _ in found]) >= 0.8             # about 0.93 expected
    assert all(d > 0 for f, d in found if f)                 # and in the right direction


def test_false_positive_rate_stays_near_the_level():
    """300 synthetic test sets with no true difference: the 5% test rejects about 5% of them."""
    rng = np.random.default_rng(4)
    rate = np.mean([rejects(rng)[0] for _ in range(300)])
    assert 0.01 <= rate <= 0.10, rate                          # binomial sd at 5% and 300 sets: 1.3 points


def test_paired_beats_marginal_intervals_on_correlated_models():
    """The paired interval of a difference is much narrower than the two marginal intervals suggest."""
    rng = np.random.default_rng(5)
    target, a, b = synthetic(rng, lift=0.3, flip=0.02)
    scores = score_models({"a": a[None], "b": b[None]}, target, 2, 2000, rng)
    c = compare(scores.point["a"], scores.point["b"], scores.draws["a"], scores.draws["b"], 0.05)
    marginal = [np.quantile(scores.draws[n], [0.025, 0.975]) for n in "ab"]
    assert (c.ci_high - c.ci_low) < 0.5 * ((marginal[0][1] - marginal[0][0]) + (marginal[1][1] - marginal[1][0]))


def test_compare_family_holm_corrects_and_leaves_out_the_target():
    rng = np.random.default_rng(6)
    target, better, base = synthetic(rng, lift=0.6, flip=0.02)
    same = base.copy()
    scores = score_models({"base": base[None], "better": better[None], "same": same[None]}, target, 2, 2000, rng)
    family = compare_family(scores, "base", ["base", "better", "same"], 0.05, "vs_baseline")
    assert set(family) == {"better", "same"}
    ps = [family[n]["vs_baseline_p"] for n in ("better", "same")]
    np.testing.assert_allclose([family[n]["vs_baseline_p_holm"] for n in ("better", "same")], holm(ps))
    assert family["better"]["vs_baseline_verdict"] == 1
    assert family["same"]["vs_baseline_diff"] == 0.0 and family["same"]["vs_baseline_verdict"] == 0


def test_a_strategy_without_a_validation_score_is_never_the_best():
    target = np.r_[np.zeros(6, int), np.ones(6, int)]
    right = np.ones((1, 12), bool)
    for val in ({"nan": float("nan"), "a": 0.6, "b": 0.7, "c": 0.7}, {"a": 0.6, "b": 0.7, "c": 0.7, "nan": float("nan")}):
        out, facts = paired_results({n: right for n in val}, target, 2, val, baseline="a", ceilings={},
                                    resamples=50, alpha=0.05, rng=np.random.default_rng(0))
        assert facts["best"] == "b" and [n for n in out if out[n]["best_on_validation"]] == ["b"]


def test_paired_results_columns_ceiling_gap_and_seed_floor():
    target = np.r_[np.zeros(8, int), np.ones(4, int)]
    collapsed = np.vstack([target == 0, target == 0])              # constant "class 0": 0.5 on both seeds
    half = np.vstack([np.r_[np.ones(8), [1, 1, 0, 0]], np.r_[np.ones(8), [1, 1, 0, 0]]]).astype(bool)
    ceiling = np.vstack([np.ones(12), np.r_[np.ones(8), [1, 1, 1, 0]]]).astype(bool)
    correct = {"baseline": collapsed, "half": half, "baseline@natural": ceiling}
    out, facts = paired_results(correct, target, 2, {"baseline": 0.5, "half": 0.8}, baseline="baseline",
                                ceilings={"baseline@natural": "baseline"}, resamples=300, alpha=0.05,
                                rng=np.random.default_rng(7))
    assert facts["best"] == "half" and facts["ceiling"] == "baseline@natural"
    assert out["half"]["vs_baseline_diff"] == pytest.approx(0.75 - 0.5)
    assert "vs_best_diff" not in out["half"] and out["baseline"]["vs_best_diff"] == pytest.approx(-0.25)
    # ceiling (1 + (1 + 0.75) / 2) / 2 = 0.9375: the gap is 0.4375, "half" closes 0.25 of it
    assert out["baseline@natural"]["vs_baseline_diff"] == pytest.approx(0.4375)
    assert out["half"]["gap_closed"] == pytest.approx(0.25 / 0.4375)
    assert out["half"]["seed_gap"] == 0.0 and out["half"]["seed_diff_p"] == 1.0
    assert out["baseline@natural"]["seed_gap"] == pytest.approx(0.125)   # 1.0 against 0.875
    floor = noise_floor(out, ["half", "baseline@natural"], 0.05)
    assert floor["mean_seed_gap"] == pytest.approx(0.0625) and floor["strategies"] == 2
    table = paired_table({n: {**out[n], "per_class_accuracy": 0.9375 if "@" in n else 0.5} for n in out},
                         facts, floor, {"baseline@natural": "baseline"})
    assert "| half | +0.250 |" in table and "(target)" in table and "Ceiling: `baseline@natural`" in table


def test_without_the_baseline_in_the_study_only_the_best_family_is_given():
    target = np.r_[np.zeros(6, int), np.ones(3, int)]
    correct = {"a": (target == 0)[None], "b": np.ones((1, 9), bool)}
    out, facts = paired_results(correct, target, 2, {"a": 0.5, "b": 1.0}, baseline="baseline", ceilings={},
                                resamples=200, alpha=0.05, rng=np.random.default_rng(8))
    assert facts["baseline"] is None and "vs_baseline_diff" not in out["a"] and "vs_best_diff" in out["a"]
    assert seed_spread(score_models(correct, target, 2, 50, np.random.default_rng(0)), "a", 0.05) == {}
