import math

import numpy as np
import pytest

from weldnet.core.config import ParamError
from weldnet.core.metrics import softmax
from weldnet.core.params import DecisionParams
from weldnet.strategies.decisions import (
    DecisionRule,
    apply_decision,
    automation,
    automation_threshold,
    fit_decision,
    flaw_score,
    logit_offset,
)


def test_automation_threshold_by_hand():
    score = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.1, 0.2, 0.3, 0.05, 0.65])
    flawed = np.array([1, 1, 1, 1, 1, 0, 0, 0, 0, 0], dtype=bool)
    # 80% of the 5 flawed photos = 4 must be flagged: the 4th highest flawed score is 0.6
    assert automation_threshold(score, flawed, 0.8) == 0.6
    cleared, recall = automation(score, flawed, 0.6)
    assert cleared == pytest.approx(0.5)  # 0.5, 0.1, 0.2, 0.3, 0.05 fall below 0.6
    assert recall == pytest.approx(0.8)
    assert automation_threshold(score, flawed, 1.0) == 0.5
    assert automation_threshold(score, np.zeros(10, dtype=bool), 0.95) == math.inf


def test_threshold_moving_rule_moves_a_collapsed_looking_prediction():
    priors = np.array([0.98, 0.02])
    logits = np.log(np.array([[0.9, 0.1], [0.99, 0.01]]))
    probs, _ = apply_decision("threshold_moving", logits, np.array([0, 1]), logits, priors, DecisionParams())
    assert probs.argmax(1).tolist() == [1, 0]  # 0.1/0.02 beats 0.9/0.98; 0.01/0.02 does not beat 0.99/0.98
    argmax, _ = apply_decision("argmax", logits, np.array([0, 1]), logits, priors, DecisionParams())
    assert np.allclose(argmax, softmax(logits))


def test_posthoc_tau_is_chosen_on_validation():
    priors = np.array([0.9, 0.1])
    val_logits = np.log(np.array([[0.95, 0.05], [0.85, 0.15], [0.8, 0.2], [0.7, 0.3]]))
    val_y = np.array([0, 0, 1, 1])
    _, info = apply_decision("posthoc_logit", val_logits, val_y, val_logits, priors, DecisionParams([0.0, 1.0, 3.0]))
    # tau=0 predicts all 0 (0.5); tau=1: 0.05/0.1<0.95/0.9 (0 ok), 0.15/0.1=1.5>0.85/.9 (wrong), 0.2, 0.3 right: 0.75
    # tau=3 predicts class 1 everywhere: 0.5
    assert info == {"tau": 1.0}


def test_unknown_rule_names_valid_ones():
    with pytest.raises(ParamError, match="valid: argmax, threshold_moving, posthoc_logit"):
        apply_decision("vote", np.zeros((1, 2)), np.zeros(1, int), np.zeros((1, 2)), np.ones(2) / 2, DecisionParams())


def test_offset_and_flaw_score_by_hand():
    np.testing.assert_allclose(logit_offset([0.75, 0.25], 2.0), [-2 * math.log(0.75), -2 * math.log(0.25)])
    assert flaw_score(np.array([[0.9, 0.1], [0.25, 0.75]])).tolist() == pytest.approx([0.1, 0.75])
    assert flaw_score(np.array([[0.5, 0.2, 0.3]])).tolist() == pytest.approx([0.5])   # any flaw class counts


def test_every_rule_is_softmax_of_logits_plus_its_offset():
    priors = np.array([0.8, 0.15, 0.05])
    logits = np.random.default_rng(0).normal(size=(20, 3)) * 2
    y = np.arange(20) % 3
    for name, tau in (("argmax", 0.0), ("threshold_moving", 1.0), ("posthoc_logit", None)):
        rule = fit_decision(name, logits, y, priors, DecisionParams([0.5, 2.0]))
        assert (rule.tau is None) == (tau is not None)          # only posthoc_logit fits a tau
        expected = softmax(logits - (rule.tau if tau is None else tau) * np.log(priors))
        np.testing.assert_allclose(rule.probs(logits), expected, atol=1e-12)
        np.testing.assert_allclose(softmax(logits + np.array(rule.logit_offset)), expected, atol=1e-12)


def test_a_rule_of_unknown_name_is_refused():
    with pytest.raises(ParamError, match="valid: argmax, threshold_moving, posthoc_logit"):
        DecisionRule("vote", (0.5, 0.5))
