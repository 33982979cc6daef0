"""Class-count maths against values worked out by hand from the formulas."""
import math

import numpy as np
import pytest

from weldnet.core import class_stats as cs


def test_priors_are_class_shares():
    np.testing.assert_allclose(cs.priors([3, 1]), [0.75, 0.25])


def test_inverse_frequency_weights_average_one():
    # 1/3 and 1/1, scaled by K / (1/3 + 1) = 2 / (4/3) = 1.5
    np.testing.assert_allclose(cs.inverse_frequency_weights([3, 1]), [0.5, 1.5])
    # 1/30, 1/10, 1/10 scaled by 3 / (7/30) = 90/7
    np.testing.assert_allclose(cs.inverse_frequency_weights([30, 10, 10]), [3 / 7, 9 / 7, 9 / 7])


def test_effective_number_weights_by_hand():
    beta = 0.5
    raw = [(1 - beta) / (1 - beta ** 10), (1 - beta) / (1 - beta ** 2)]
    expected = [2 * w / sum(raw) for w in raw]
    np.testing.assert_allclose(cs.effective_number_weights([10, 2], beta), expected, rtol=1e-12)


def test_effective_number_weights_limits():
    np.testing.assert_array_equal(cs.effective_number_weights([100, 10, 1], 0.0), [1.0, 1.0, 1.0])
    # beta -> 1 tends to inverse frequency; this needs the expm1/log1p form to stay exact
    np.testing.assert_allclose(cs.effective_number_weights([100, 10], 1 - 1e-12),
                               cs.inverse_frequency_weights([100, 10]), rtol=1e-6)


def test_effective_number_weights_at_the_papers_beta():
    # beta = 0.9999: effective numbers (1 - beta^n) / (1 - beta) for n = 9000 and 1000
    e = [(1 - 0.9999 ** n) / 1e-4 for n in (9000, 1000)]
    raw = [1 / e[0], 1 / e[1]]
    expected = [2 * w / sum(raw) for w in raw]
    np.testing.assert_allclose(cs.effective_number_weights([9000, 1000], 0.9999), expected, rtol=1e-9)


def test_effective_number_rejects_beta_one():
    with pytest.raises(ValueError, match="beta"):
        cs.effective_number_weights([3, 1], 1.0)


def test_ldam_margins_fourth_root_and_maximum():
    # 16^-1/4 = 0.5, 1^-1/4 = 1, 81^-1/4 = 1/3; rescaled so the largest is 0.5
    np.testing.assert_allclose(cs.ldam_margins([16, 1, 81], 0.5), [0.25, 0.5, 0.5 / 3])


def test_logit_offsets_are_tau_log_prior():
    np.testing.assert_allclose(cs.logit_offsets([3, 1], 2.0), [2 * math.log(0.75), 2 * math.log(0.25)])
    np.testing.assert_array_equal(cs.scaled_log_priors([0.75, 0.25], 2.0), cs.logit_offsets([3, 1], 2.0))


def test_zero_counts_stay_finite_and_count_as_one():
    counts = [5, 0, 3]
    np.testing.assert_allclose(cs.priors(counts), [5 / 9, 1 / 9, 3 / 9])
    for values in (cs.inverse_frequency_weights(counts), cs.effective_number_weights(counts, 0.9999),
                   cs.ldam_margins(counts, 0.5), cs.logit_offsets(counts, 1.0),
                   cs.drw_weights(9, 10, counts, 0.8, 0.9999), cs.priors([0, 0])):
        assert np.all(np.isfinite(values))


@pytest.mark.parametrize("counts", [[], [3, -1], [[1, 2]]])
def test_bad_counts_are_rejected(counts):
    with pytest.raises(ValueError, match="class counts"):
        cs.priors(counts)


@pytest.mark.parametrize("total, start, switch", [(200, 0.8, 160), (10, 0.8, 8), (10, 0.0, 0),
                                                  (10, 1.0, 10), (3, 0.5, 2), (100, 0.29, 29)])
def test_drw_switch_epoch(total, start, switch):
    assert cs.drw_switch_epoch(total, start) == switch


def test_drw_switch_epoch_rejects_out_of_range_start():
    with pytest.raises(ValueError, match="start"):
        cs.drw_switch_epoch(10, 1.5)


def test_drw_weights_switch_exactly_at_the_switch_epoch():
    counts = [9000, 1000]
    before = cs.drw_weights(159, 200, counts, start=0.8, beta=0.9999)
    at = cs.drw_weights(160, 200, counts, start=0.8, beta=0.9999)
    np.testing.assert_array_equal(before, [1.0, 1.0])
    np.testing.assert_array_equal(cs.drw_weights(0, 200, counts), [1.0, 1.0])
    np.testing.assert_allclose(at, cs.effective_number_weights(counts, 0.9999))
    assert at[1] > 5 * at[0]  # the minority class is up-weighted from epoch 160 on
    np.testing.assert_allclose(cs.drw_weights(199, 200, counts), at)


def test_largest_remainder():
    np.testing.assert_array_equal(cs.largest_remainder(np.array([1.5, 1.5, 1.0])), [2, 1, 1])
    np.testing.assert_array_equal(cs.largest_remainder(np.array([0.2, 0.3, 0.5])), [0, 0, 1])
    np.testing.assert_array_equal(cs.largest_remainder(np.array([5.12, 250.88])), [5, 251])
