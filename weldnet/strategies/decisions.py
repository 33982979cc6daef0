"""The decision-rule axis: how a trained model's outputs become test predictions.

A rule may fit one number on the validation split (never on test) and returns
test-set class probabilities. Also here: the inspector's automation threshold,
the report's Table 2 "Automation" column.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from weldnet.core.config import check_choice
from weldnet.core.metrics import per_class_accuracy, softmax
from weldnet.core.params import DecisionParams


def _positive_priors(train_priors: np.ndarray) -> np.ndarray:
    p = np.asarray(train_priors, dtype=np.float64)
    if np.any(p <= 0) or not np.all(np.isfinite(p)):
        raise ValueError(f"training priors must be finite and positive, got {p.tolist()}; "
                         "compute them with weldnet.core.class_stats.priors(counts)")
    return p


def threshold_moving(probs: np.ndarray, train_priors: np.ndarray) -> np.ndarray:
    """Report section 6.4.6: ``q_c = (f_c / p_c) / sum_k (f_k / p_k)`` for each row of probabilities f."""
    moved = np.asarray(probs, dtype=np.float64) / _positive_priors(train_priors)
    return moved / moved.sum(axis=-1, keepdims=True)


def posthoc_logit_adjust(logits: np.ndarray, train_priors: np.ndarray, tau: float = 1.0) -> np.ndarray:
    """Post-hoc logit adjustment (Menon et al. 2021): ``z_c - tau * log p_c``.

    With tau = 1 its softmax equals ``threshold_moving(softmax(z), p)``.
    """
    return np.asarray(logits, dtype=np.float64) - tau * np.log(_positive_priors(train_priors))


Decision = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray, DecisionParams], tuple[np.ndarray, dict]]


def _argmax(val_logits, val_y, test_logits, priors, params):
    return softmax(test_logits), {}


def _threshold_moving(val_logits, val_y, test_logits, priors, params):
    """Divide the probabilities by the training priors and renormalise (report section 6.4.6)."""
    return threshold_moving(softmax(test_logits), priors), {}


def _posthoc_logit(val_logits, val_y, test_logits, priors, params):
    """Subtract tau * log prior from the logits, with tau chosen for validation per-class accuracy."""
    k = val_logits.shape[1]
    scores = [per_class_accuracy(posthoc_logit_adjust(val_logits, priors, tau).argmax(1), val_y, k)
              for tau in params.tau_grid]
    tau = params.tau_grid[int(np.argmax(scores))]  # the first (smallest) tau among ties
    return softmax(posthoc_logit_adjust(test_logits, priors, tau)), {"tau": float(tau)}


DECISIONS: dict[str, Decision] = {"argmax": _argmax, "threshold_moving": _threshold_moving,
                                  "posthoc_logit": _posthoc_logit}


def apply_decision(name: str, val_logits: np.ndarray, val_y: np.ndarray, test_logits: np.ndarray,
                   train_priors: np.ndarray, params: DecisionParams) -> tuple[np.ndarray, dict]:
    check_choice(name, DECISIONS, "decision")
    return DECISIONS[name](val_logits, val_y, test_logits, train_priors, params)


def automation_threshold(flaw_score: np.ndarray, flawed: np.ndarray, target_recall: float) -> float:
    """Largest threshold t such that flagging ``flaw_score >= t`` catches ``target_recall`` of flawed photos.

    Photos scoring below t are cleared automatically. With no flawed photo every
    photo can be cleared (t = inf).
    """
    flawed_scores = np.sort(flaw_score[flawed])[::-1]
    if len(flawed_scores) == 0:
        return math.inf
    needed = max(1, math.ceil(target_recall * len(flawed_scores) - 1e-9))
    return float(flawed_scores[needed - 1])


def automation(flaw_score: np.ndarray, flawed: np.ndarray, threshold: float) -> tuple[float, float]:
    """(share of photos cleared, recall on flawed photos) when photos scoring below ``threshold`` are cleared."""
    flagged = flaw_score >= threshold
    recall = float(flagged[flawed].mean()) if flawed.any() else float("nan")
    return float((~flagged).mean()), recall
