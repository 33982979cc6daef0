"""Each loss, and each loss with each class weighting, against its formula worked out by hand on a small batch."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from weldnet.core import class_stats
from weldnet.core.config import ParamError, build
from weldnet.core.params import LossParams, WeightingParams
from weldnet.strategies.decisions import posthoc_logit_adjust, threshold_moving
from weldnet.strategies.losses import (
    LOSSES,
    WEIGHTINGS,
    BayesianCrossEntropy,
    CrossEntropy,
    DeferredReweighting,
    EffectiveNumber,
    FocalLoss,
    HingeLoss,
    InverseFrequency,
    LdamLoss,
    LogitAdjustedLoss,
    build_loss,
)

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


def test_cross_entropy_with_inverse_frequency_weights():
    weights = [3 / 7, 9 / 7, 9 / 7]  # 1/30, 1/10, 1/10 scaled to average 1
    loss = build_loss("cross_entropy", COUNTS, LossParams(), weighting="inverse_frequency")
    np.testing.assert_allclose(loss.weight.numpy(), weights, rtol=1e-6)
    assert value(loss) == pytest.approx(weighted_mean_ce(weights), rel=1e-6)


def test_cross_entropy_with_effective_number_weights():
    beta, counts = 0.99, [100, 10, 1]
    raw = [(1 - beta) / (1 - beta ** n) for n in counts]
    weights = [3 * w / sum(raw) for w in raw]
    loss = CrossEntropy(counts, EffectiveNumber(beta))
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
    loss = LdamLoss(counts, max_margin=0.5, scale=s)
    np.testing.assert_allclose(loss.margins.numpy(), margins, rtol=1e-6)
    terms = []
    for z, y in zip(LOGITS, TARGET):
        shifted = [s * (v - margins[y] * (c == y)) for c, v in enumerate(z)]
        terms.append(ce(shifted, y))
    assert value(loss) == pytest.approx(sum(terms) / len(terms), rel=1e-6)
    loss.on_epoch(99, 100)  # no weighting: weights stay ones
    np.testing.assert_array_equal(loss.weight.numpy(), [1.0, 1.0, 1.0])


def test_ldam_drw_switches_weights_at_the_switch_epoch():
    counts, s = [16, 1, 81], 2.0
    loss = LdamLoss(counts, max_margin=0.5, scale=s, weighting=DeferredReweighting(start=0.8, beta=0.99))
    plain = LdamLoss(counts, max_margin=0.5, scale=s)
    np.testing.assert_array_equal(loss.weight.numpy(), [1.0, 1.0, 1.0])   # before the first epoch
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
    assert set(LOSSES) == {"cross_entropy", "bayesian", "focal", "ldam", "logit_adjusted", "hinge"}
    assert set(WEIGHTINGS) == {"none", "inverse_frequency", "effective_number", "drw"}


@pytest.mark.parametrize("weighting", sorted(WEIGHTINGS))
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_loss_takes_every_weighting_and_backpropagates(name, weighting):
    loss = build_loss(name, [40, 8, 2], LossParams(), weighting=weighting)
    for epoch in (0, 9):                               # DRW: before and after its switch (epoch 8 of 10)
        loss.on_epoch(epoch, 10)
        logits = torch.tensor(LOGITS, requires_grad=True)
        out = loss(logits, torch.tensor([0, 0, 1, 0, 0]))  # class 2 absent from the batch
        out.backward()
        assert out.ndim == 0 and torch.isfinite(out) and torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_equal_class_weights_leave_every_loss_unchanged(name):
    """beta = 0 gives every class weight 1: each loss's weighted form must reduce to its plain formula."""
    logits, target = torch.tensor(LOGITS, dtype=torch.float64), torch.tensor(TARGET)
    plain = build_loss(name, COUNTS, LossParams())
    ones = build_loss(name, COUNTS, LossParams(), weighting="effective_number",
                      weightings=build(WeightingParams, {"effective_number": {"beta": 0.0}}, "weightings"))
    assert ones.weighted and not plain.weighted
    assert ones(logits, target).item() == pytest.approx(plain(logits, target).item(), rel=1e-12)


def test_derived_tensors_are_buffers_that_follow_the_module():
    loss = build_loss("ldam", [9, 1], LossParams(), weighting="drw").to(torch.float64)
    buffers = dict(loss.named_buffers())
    assert set(buffers) == {"margins", "weight"} and buffers["weight"].dtype == torch.float64
    loss.on_epoch(9, 10)
    assert loss.weight.dtype == torch.float64 and loss.weight[1] > loss.weight[0]
    assert "weight" in build_loss("cross_entropy", [9, 1], LossParams(), weighting="inverse_frequency").state_dict()


# ---------------------------------------------------------------- weighted losses by hand
W = [0.5, 2.0, 0.5]   # class weights for the hand computations below


class FixedWeights(InverseFrequency):
    """A weighting that returns W, whatever the counts (hand computations need round numbers)."""

    def weights(self, counts, epoch, total_epochs):
        return np.array(W)


def test_weighted_focal_is_the_weighted_mean_of_its_terms():
    terms = []
    for z, y in zip(LOGITS, TARGET):
        log_p = log_softmax(z)[y]
        terms.append(-(1 - math.exp(log_p)) ** 2 * log_p)
    expected = sum(W[y] * t for y, t in zip(TARGET, terms)) / sum(W[y] for y in TARGET)
    assert value(FocalLoss(COUNTS, gamma=2.0, weighting=FixedWeights())) == pytest.approx(expected, rel=1e-9)


def test_weighted_bayesian_multiplies_each_class_term():
    n_c = {0: 2, 1: 1, 2: 2}   # TARGET = [0, 2, 0, 1, 2]
    expected = sum(W[y] * ce(z, y) / n_c[y] for z, y in zip(LOGITS, TARGET)) / 3
    assert value(BayesianCrossEntropy(COUNTS, FixedWeights())) == pytest.approx(expected, rel=1e-12)


def test_weighted_logit_adjusted_and_hinge_by_hand():
    prior = [30 / 50, 10 / 50, 10 / 50]
    adjusted = [[v + math.log(p) for v, p in zip(z, prior)] for z in LOGITS]
    assert value(LogitAdjustedLoss(COUNTS, tau=1.0, weighting=FixedWeights())) == pytest.approx(
        weighted_mean_ce(W, adjusted), rel=1e-6)     # the offsets are a float32 buffer
    hinge = [sum(max(0.0, 1.0 - z[y] + z[c]) for c in range(3) if c != y) / 3 for z, y in zip(LOGITS, TARGET)]
    expected = sum(W[y] * h for y, h in zip(TARGET, hinge)) / sum(W[y] for y in TARGET)
    assert value(HingeLoss(COUNTS, margin=1.0, weighting=FixedWeights())) == pytest.approx(expected, rel=1e-12)


def test_drw_on_cross_entropy_switches_at_its_epoch():
    loss = build_loss("cross_entropy", COUNTS, LossParams(), weighting="drw")
    loss.on_epoch(11, 15)                              # switch at floor(0.8 * 15 + 0.5) = 12
    assert value(loss) == pytest.approx(value(CrossEntropy(COUNTS)), rel=1e-6)
    loss.on_epoch(12, 15)
    weights = class_stats.effective_number_weights(COUNTS, 0.9999)
    assert value(loss) == pytest.approx(weighted_mean_ce(weights), rel=1e-6)


# ---------------------------------------------------------------- the strategies renamed onto the axis
# The three losses as they were written before re-weighting became an axis, verbatim.
class OldWeightedCrossEntropy(nn.Module):
    def __init__(self, class_counts):
        super().__init__()
        self.register_buffer("weight", torch.as_tensor(class_stats.inverse_frequency_weights(class_counts),
                                                       dtype=torch.float32))

    def forward(self, logits, target):
        return F.cross_entropy(logits, target, weight=self.weight.to(logits.dtype))


class OldClassBalancedCrossEntropy(nn.Module):
    def __init__(self, class_counts, beta=0.9999):
        super().__init__()
        self.register_buffer("weight", torch.as_tensor(class_stats.effective_number_weights(class_counts, beta),
                                                       dtype=torch.float32))

    def forward(self, logits, target):
        return F.cross_entropy(logits, target, weight=self.weight.to(logits.dtype))


class OldLdamLoss(nn.Module):
    def __init__(self, class_counts, max_margin=0.5, scale=30.0, drw=True, drw_start=0.8, drw_beta=0.9999):
        super().__init__()
        self.class_counts, self.num_classes = tuple(class_counts), len(class_counts)
        self.scale, self.drw, self.drw_start, self.drw_beta = scale, drw, drw_start, drw_beta
        self.register_buffer("margins", torch.as_tensor(class_stats.ldam_margins(class_counts, max_margin),
                                                        dtype=torch.float32))
        self.register_buffer("weight", torch.ones(self.num_classes))

    def on_epoch(self, epoch, total_epochs):
        if self.drw:
            w = class_stats.drw_weights(epoch, total_epochs, self.class_counts, self.drw_start, self.drw_beta)
            self.weight.copy_(torch.as_tensor(w, dtype=self.weight.dtype))

    def forward(self, logits, target):
        true_class = F.one_hot(target, self.num_classes).to(logits.dtype)
        adjusted = logits - true_class * self.margins.to(logits.dtype)[target][:, None]
        return F.cross_entropy(self.scale * adjusted, target, weight=self.weight.to(logits.dtype))


def values_and_grads(loss, logits, target):
    x = logits.clone().requires_grad_(True)
    out = loss(x, target)
    out.backward()
    return out.detach(), x.grad


@pytest.mark.parametrize("strategy, old", [
    ({"loss": "cross_entropy", "weighting": "inverse_frequency"}, OldWeightedCrossEntropy),
    ({"loss": "cross_entropy", "weighting": "effective_number"}, OldClassBalancedCrossEntropy),
    ({"loss": "ldam", "weighting": "drw"}, OldLdamLoss),
    ({"loss": "ldam", "weighting": "none"}, lambda counts: OldLdamLoss(counts, drw=False)),
])
def test_the_renamed_strategies_give_the_same_values_and_gradients_bit_for_bit(strategy, old):
    """weighted, class_balanced and ldam_drw: identical loss and gradient at every epoch of a 15-epoch run."""
    rng = np.random.default_rng(0)
    counts = [1576, 32]                                # the default study's training split
    new = build_loss(strategy["loss"], counts, LossParams(), weighting=strategy["weighting"])
    before = old(counts)
    for epoch in range(15):
        new.on_epoch(epoch, 15)
        getattr(before, "on_epoch", lambda *a: None)(epoch, 15)
        logits = torch.tensor(rng.normal(size=(64, 2)) * 3, dtype=torch.float32)
        target = torch.tensor((rng.random(64) < 0.1).astype(np.int64))
        value_new, grad_new = values_and_grads(new, logits, target)
        value_old, grad_old = values_and_grads(before, logits, target)
        assert torch.equal(value_new, value_old) and torch.equal(grad_new, grad_old), epoch


def test_logits_with_the_wrong_number_of_classes_are_rejected():
    with pytest.raises(ValueError, match="3 classes"):
        CrossEntropy(COUNTS)(torch.zeros(2, 4), torch.tensor([0, 1]))


def test_unknown_loss_or_weighting_name_names_the_valid_ones():
    with pytest.raises(ParamError, match="unknown name 'bayes'; valid: cross_entropy, bayesian, "):
        build_loss("bayes", [9, 1], LossParams())
    with pytest.raises(ParamError, match="unknown name 'inverse'; valid: none, inverse_frequency, "):
        build_loss("cross_entropy", [9, 1], LossParams(), weighting="inverse")


def test_loss_and_weighting_params_from_yaml_mapping():
    params = build(LossParams, {"focal": {"gamma": 1, "alpha": 0.25}, "ldam": {"scale": 10}}, "losses")
    assert params.focal.gamma == 1.0 and params.focal.alpha == 0.25
    assert params.ldam.scale == 10.0 and params.ldam.max_margin == 0.5
    defaults = LossParams()
    assert (defaults.focal.gamma, defaults.focal.alpha) == (2.0, None)
    assert (defaults.ldam.max_margin, defaults.ldam.scale) == (0.5, 30.0)
    assert defaults.logit_adjusted.tau == 1.0 and defaults.hinge.margin == 1.0
    weightings = build(WeightingParams, {"drw": {"start": 0.5}}, "weightings")
    assert (weightings.drw.start, weightings.drw.beta, weightings.effective_number.beta) == (0.5, 0.9999, 0.9999)


@pytest.mark.parametrize("cls, mapping, message", [
    (LossParams, {"focal": {"gamma": -1}}, r"losses.focal.gamma"),
    (LossParams, {"focal": {"alpha": 1.5}}, r"losses.focal.alpha"),
    (LossParams, {"ldam": {"scale": 0}}, r"losses.ldam.scale"),
    (LossParams, {"hinge": {"margn": 1}}, r"unknown key 'margn'"),
    (WeightingParams, {"effective_number": {"beta": 1.0}}, r"weightings.effective_number.beta = 1.0 is out of range"),
    (WeightingParams, {"drw": {"start": 2}}, r"weightings.drw.start"),
    (WeightingParams, {"drw": {"beta": -0.1}}, r"weightings.drw.beta"),
])
def test_loss_and_weighting_params_out_of_range_are_rejected(cls, mapping, message):
    with pytest.raises(ParamError, match=message):
        build(cls, mapping, "losses" if cls is LossParams else "weightings")
