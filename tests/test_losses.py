"""Each loss against its formula, worked out by hand with math.log/exp on a small batch."""
import math

import numpy as np
import pytest
import torch

from weldnet import class_stats
from weldnet.config import ParamError, build
from weldnet.losses import (LOSSES, BayesianCrossEntropy, ClassBalancedCrossEntropy, CrossEntropy, FocalLoss, HingeLoss, LdamLoss, LogitAdjustedLoss, WeightedCrossEntropy, build_loss)
from weldnet.params import LossParams
from weldnet.decisions import posthoc_logit_adjust, threshold_moving

LOGITS = [[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [1.0, -1.0, 0.0], [0.0, 3.0, 0.5], [-0.5, 0.0, 1.5]]
TARGET = [0, 2, 0, 1, 2]
COUNTS = [30, 10, 10]


def log_softmax(row):
    log_z = math.log(sum(math.exp(v) for v in row))
    return [v - log_z for v in row]


def ce(row, y):
    return -log_softmax(row)[y]


def value(loss, logits=LOGITS, target=TARGET):
    return loss(torch.tensor(logits, dtype=torch.float64), torch.tensor(target)).item()


def test_cross_entropy_equation_16():
    expected = sum(ce(z, y) for z, y in zip(LOGITS, TARGET)) / len(TARGET)
    assert value(CrossEntropy(COUNTS)) == pytest.approx(expected, rel=1e-12)


def test_bayesian_equation_17_all_classes_present():
    n, k = len(TARGET), 3
    prior = {c: TARGET.count(c) / n for c in range(k)}  # 2/5, 1/5, 2/5 within the batch
    expected = -sum(log_softmax(z)[y] / prior[y] for z, y in zip(LOGITS, TARGET)) / (k * n)
    assert value(BayesianCrossEntropy(COUNTS)) == pytest.approx(expected, rel=1e-12)


def test_bayesian_with_a_class_absent_from_the_batch():
    target = [0, 0, 1, 0, 1]  # class 2 absent; K stays 3
    expected = -(sum(log_softmax(LOGITS[i])[0] for i in (0, 1, 3)) / (3 / 5)
                 + sum(log_softmax(LOGITS[i])[1] for i in (2, 4)) / (2 / 5)) / (3 * 5)
    logits = torch.tensor(LOGITS, dtype=torch.float64, requires_grad=True)
    loss = BayesianCrossEntropy(COUNTS)(logits, torch.tensor(target))
    loss.backward()
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    assert torch.isfinite(logits.grad).all()
    # the report's backward pass: softmax minus one-hot, divided by K * n_c (the prior times K n)
    n_c = {0: 3, 1: 2}
    for i, y in enumerate(target):
        p = [math.exp(v) for v in log_softmax(LOGITS[i])]
        hand = [(p[c] - (c == y)) / (3 * n_c[y]) for c in range(3)]
        np.testing.assert_allclose(logits.grad[i].numpy(), hand, rtol=1e-10)


def test_bayesian_single_class_batch_is_finite():
    logits = torch.tensor(LOGITS, dtype=torch.float64, requires_grad=True)
    loss = BayesianCrossEntropy([5, 5])(logits[:, :2], torch.zeros(5, dtype=torch.long))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    expected = sum(ce(z[:2], 0) for z in LOGITS) / 5 / 2
    assert loss.item() == pytest.approx(expected, rel=1e-12)


def test_bayesian_on_a_balanced_two_class_batch_is_cross_entropy():
    logits, target = [z[:2] for z in LOGITS[:4]], [0, 1, 1, 0]
    assert value(BayesianCrossEntropy([9, 1]), logits, target) == pytest.approx(
        value(CrossEntropy([9, 1]), logits, target), rel=1e-12)


def weighted_mean_ce(weights, logits=LOGITS, target=TARGET):
    return sum(weights[y] * ce(z, y) for z, y in zip(logits, target)) / sum(weights[y] for y in target)


def test_weighted_uses_inverse_frequency():
    weights = [3 / 7, 9 / 7, 9 / 7]  # 1/30, 1/10, 1/10 scaled to average 1
    loss = WeightedCrossEntropy(COUNTS)
    np.testing.assert_allclose(loss.weight.numpy(), weights, rtol=1e-6)
    assert value(loss) == pytest.approx(weighted_mean_ce(weights), rel=1e-6)


def test_class_balanced_weights_and_value():
    beta, counts = 0.99, [100, 10, 1]
    raw = [(1 - beta) / (1 - beta ** n) for n in counts]
    weights = [3 * w / sum(raw) for w in raw]
    loss = ClassBalancedCrossEntropy(counts, beta=beta)
    np.testing.assert_allclose(loss.weight.numpy(), weights, rtol=1e-6)
    assert value(loss) == pytest.approx(weighted_mean_ce(weights), rel=1e-6)


def test_focal_with_gamma_zero_is_cross_entropy():
    assert value(FocalLoss(COUNTS, gamma=0.0)) == pytest.approx(value(CrossEntropy(COUNTS)), rel=1e-12)


def test_focal_gamma_two_by_hand():
    terms = []
    for z, y in zip(LOGITS, TARGET):
        log_p = log_softmax(z)[y]
        terms.append(-(1 - math.exp(log_p)) ** 2 * log_p)
    assert value(FocalLoss(COUNTS, gamma=2.0)) == pytest.approx(sum(terms) / len(terms), rel=1e-9)


def test_focal_alpha_weights_default_class_by_one_minus_alpha():
    alpha = {0: 0.75, 1: 0.25, 2: 0.25}  # a = 0.25 for the non-default classes
    terms = []
    for z, y in zip(LOGITS, TARGET):
        log_p = log_softmax(z)[y]
        terms.append(-alpha[y] * (1 - math.exp(log_p)) ** 2 * log_p)
    assert value(FocalLoss(COUNTS, gamma=2.0, alpha=0.25)) == pytest.approx(sum(terms) / len(terms), rel=1e-6)


def test_ldam_margins_and_value():
    counts, s = [16, 1, 81], 2.0
    margins = [0.25, 0.5, 0.5 / 3]  # 16^-1/4 = 1/2, 1^-1/4 = 1, 81^-1/4 = 1/3, largest -> 0.5
    loss = LdamLoss(counts, max_margin=0.5, scale=s, drw=False)
    np.testing.assert_allclose(loss.margins.numpy(), margins, rtol=1e-6)
    terms = []
    for z, y in zip(LOGITS, TARGET):
        shifted = [s * (v - margins[y] * (c == y)) for c, v in enumerate(z)]
        terms.append(ce(shifted, y))
    assert value(loss) == pytest.approx(sum(terms) / len(terms), rel=1e-6)
    loss.on_epoch(99, 100)  # no DRW: weights stay ones
    np.testing.assert_array_equal(loss.weight.numpy(), [1.0, 1.0, 1.0])


def test_ldam_drw_switches_weights_at_the_switch_epoch():
    counts, s = [16, 1, 81], 2.0
    loss = LdamLoss(counts, max_margin=0.5, scale=s, drw=True, drw_start=0.8, drw_beta=0.99)
    plain = LdamLoss(counts, max_margin=0.5, scale=s, drw=False)
    loss.on_epoch(7, 10)  # switch epoch = 8
    np.testing.assert_array_equal(loss.weight.numpy(), [1.0, 1.0, 1.0])
    assert value(loss) == pytest.approx(value(plain), rel=1e-12)
    loss.on_epoch(8, 10)
    raw = [(1 - 0.99) / (1 - 0.99 ** n) for n in counts]
    weights = [3 * w / sum(raw) for w in raw]
    np.testing.assert_allclose(loss.weight.numpy(), weights, rtol=1e-6)
    margins = [0.25, 0.5, 0.5 / 3]
    terms = [(weights[y], ce([s * (v - margins[y] * (c == y)) for c, v in enumerate(z)], y))
             for z, y in zip(LOGITS, TARGET)]
    assert value(loss) == pytest.approx(sum(w * t for w, t in terms) / sum(w for w, _ in terms), rel=1e-6)


def test_logit_adjusted_tau_one_is_balanced_softmax():
    prior = [30 / 50, 10 / 50, 10 / 50]
    terms = []
    for z, y in zip(LOGITS, TARGET):
        denominator = sum(p * math.exp(v) for p, v in zip(prior, z))
        terms.append(-math.log(prior[y] * math.exp(z[y]) / denominator))
    assert value(LogitAdjustedLoss(COUNTS, tau=1.0)) == pytest.approx(sum(terms) / len(terms), rel=1e-6)


def test_logit_adjusted_tau_zero_is_cross_entropy():
    assert value(LogitAdjustedLoss(COUNTS, tau=0.0)) == pytest.approx(value(CrossEntropy(COUNTS)), rel=1e-12)


def test_hinge_by_hand():
    margin, k = 2.0, 3
    terms = [sum(max(0.0, margin - z[y] + z[c]) for c in range(k) if c != y) / k for z, y in zip(LOGITS, TARGET)]
    assert value(HingeLoss(COUNTS, margin=margin)) == pytest.approx(sum(terms) / len(terms), rel=1e-12)


def test_threshold_moving_by_hand():
    # 0.8/0.9 = 0.8889 and 0.2/0.1 = 2: the decision flips to the rare class
    moved = threshold_moving(np.array([[0.8, 0.2]]), np.array([0.9, 0.1]))
    np.testing.assert_allclose(moved, [[(0.8 / 0.9) / (0.8 / 0.9 + 2), 2 / (0.8 / 0.9 + 2)]])


def test_threshold_moving_equals_posthoc_logit_adjustment_with_tau_one():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(200, 3)) * 3
    train_priors = class_stats.priors([900, 80, 20])
    probs = torch.softmax(torch.tensor(logits), dim=1).numpy()
    moved = threshold_moving(probs, train_priors)
    adjusted = torch.softmax(torch.tensor(posthoc_logit_adjust(logits, train_priors, tau=1.0)), dim=1).numpy()
    np.testing.assert_allclose(moved, adjusted, rtol=1e-10)
    np.testing.assert_array_equal(moved.argmax(1), adjusted.argmax(1))
    assert (moved.argmax(1) != probs.argmax(1)).any()  # the rule really moves some decisions


def test_posthoc_rules_reject_zero_priors():
    with pytest.raises(ValueError, match="priors"):
        threshold_moving(np.array([[0.5, 0.5]]), np.array([1.0, 0.0]))


def test_registry_holds_exactly_the_params_names():
    assert set(LOSSES) == {"cross_entropy", "bayesian", "weighted", "class_balanced", "focal", "ldam",
                           "logit_adjusted", "hinge"}


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_loss_builds_and_backpropagates(name):
    loss = build_loss(name, [40, 8, 2], LossParams())
    loss.on_epoch(0, 10)
    logits = torch.tensor(LOGITS, requires_grad=True)
    out = loss(logits, torch.tensor([0, 0, 1, 0, 0]))  # class 2 absent from the batch
    out.backward()
    assert out.ndim == 0 and torch.isfinite(out) and torch.isfinite(logits.grad).all()


def test_derived_tensors_are_buffers_that_follow_the_module():
    loss = build_loss("ldam", [9, 1], LossParams()).to(torch.float64)
    buffers = dict(loss.named_buffers())
    assert set(buffers) == {"margins", "weight"} and buffers["weight"].dtype == torch.float64
    loss.on_epoch(9, 10)
    assert loss.weight.dtype == torch.float64 and loss.weight[1] > loss.weight[0]
    assert "weight" in build_loss("weighted", [9, 1], LossParams()).state_dict()


def test_logits_with_the_wrong_number_of_classes_are_rejected():
    with pytest.raises(ValueError, match="3 classes"):
        CrossEntropy(COUNTS)(torch.zeros(2, 4), torch.tensor([0, 1]))


def test_unknown_loss_name_names_the_valid_ones():
    with pytest.raises(ParamError, match="unknown name 'bayes'; valid: cross_entropy, bayesian, "):
        build_loss("bayes", [9, 1], LossParams())


def test_loss_params_from_yaml_mapping():
    params = build(LossParams, {"focal": {"gamma": 1, "alpha": 0.25}, "ldam": {"drw": False}}, "losses")
    assert params.focal.gamma == 1.0 and params.focal.alpha == 0.25
    assert params.ldam.drw is False and params.ldam.scale == 30.0 and params.class_balanced.beta == 0.9999
    defaults = LossParams()
    assert (defaults.focal.gamma, defaults.focal.alpha) == (2.0, None)
    assert (defaults.ldam.max_margin, defaults.ldam.scale, defaults.ldam.drw_start) == (0.5, 30.0, 0.8)
    assert defaults.logit_adjusted.tau == 1.0 and defaults.hinge.margin == 1.0


@pytest.mark.parametrize("mapping, message", [
    ({"class_balanced": {"beta": 1.0}}, r"losses.class_balanced.beta = 1.0 is out of range"),
    ({"focal": {"gamma": -1}}, r"losses.focal.gamma"),
    ({"focal": {"alpha": 1.5}}, r"losses.focal.alpha"),
    ({"ldam": {"drw_start": 2}}, r"losses.ldam.drw_start"),
    ({"ldam": {"scale": 0}}, r"losses.ldam.scale"),
    ({"hinge": {"margn": 1}}, r"unknown key 'margn'"),
])
def test_loss_params_out_of_range_are_rejected(mapping, message):
    with pytest.raises(ParamError, match=message):
        build(LossParams, mapping, "losses")
