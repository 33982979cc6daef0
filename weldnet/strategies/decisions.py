"""The decision-rule axis: how a trained model's outputs become class probabilities, and the flaw score.

A rule may fit one number on the validation split (never on test): :func:`fit_decision`
returns it as a :class:`DecisionRule`, which evaluate applies to validation and
test and the triage bundle ships. Every rule equals
``softmax(logits + logit_offset)`` with ``logit_offset = -tau * log p`` (p the
training priors): tau = 0 for ``argmax``, 1 for ``threshold_moving``, the fitted
tau for ``posthoc_logit``. Also here: the flaw score ``1 - p(default class)`` and
the inspector's automation threshold, the report's Table 2 "Automation" column.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from weldnet.core.class_stats import scaled_log_priors
from weldnet.core.config import check_choice
from weldnet.core.metrics import per_class_accuracy, softmax
from weldnet.core.params import DecisionParams


def _positive_priors(train_priors: np.ndarray) -> np.ndarray:
    p = np.asarray(train_priors, dtype=np.float64)
    if np.any(p <= 0) or not np.all(np.isfinite(p)):
        raise ValueError(f"training priors must be finite and positive, got {p.tolist()}; "
                         "compute them with weldnet.core.class_stats.priors(counts)")
    return p


def logit_offset(train_priors: np.ndarray, tau: float) -> np.ndarray:
    """Post-hoc logit adjustment's offset (Menon et al. 2021): ``-tau * log p_c``, added to the logits."""
    return -scaled_log_priors(_positive_priors(train_priors), tau)


def threshold_moving(probs: np.ndarray, train_priors: np.ndarray) -> np.ndarray:
    """Report section 6.4.6: ``q_c = (f_c / p_c) / sum_k (f_k / p_k)`` for each row of probabilities f."""
    moved = np.asarray(probs, dtype=np.float64) / _positive_priors(train_priors)
    return moved / moved.sum(axis=-1, keepdims=True)


def posthoc_logit_adjust(logits: np.ndarray, train_priors: np.ndarray, tau: float = 1.0) -> np.ndarray:
    """Post-hoc logit adjustment (Menon et al. 2021): ``z_c - tau * log p_c``.

    With tau = 1 its softmax equals ``threshold_moving(softmax(z), p)``.
    """
    return np.asarray(logits, dtype=np.float64) + logit_offset(train_priors, tau)


def flaw_score(probs: np.ndarray) -> np.ndarray:
    """``1 - p(default class)``: the probability that a photo shows any flaw of the task."""
    return 1.0 - np.asarray(probs, dtype=np.float64)[:, 0]


# ------------------------------------------------------------------ the rules
@dataclass(frozen=True)
class Decision:
    """One rule: what it fits on validation (tau, or None) and how it turns logits into probabilities."""

    fit: Callable[[np.ndarray, np.ndarray, np.ndarray, DecisionParams], float | None]
    probs: Callable[[np.ndarray, np.ndarray, float | None], np.ndarray]
    tau: float | None            # the tau it equals when it fits none (see the module doc)


def _fits_nothing(val_logits, val_y, priors, params) -> None:
    return None


def _best_tau(val_logits, val_y, priors, params) -> float:
    """The tau of ``params.tau_grid`` with the best validation per-class accuracy; the first (smallest) among ties."""
    k = val_logits.shape[1]
    scores = [per_class_accuracy(posthoc_logit_adjust(val_logits, priors, tau).argmax(1), val_y, k)
              for tau in params.tau_grid]
    return float(params.tau_grid[int(np.argmax(scores))])


DECISIONS: dict[str, Decision] = {
    "argmax": Decision(_fits_nothing, lambda logits, priors, tau: softmax(logits), 0.0),
    # divide the probabilities by the training priors and renormalise (report section 6.4.6)
    "threshold_moving": Decision(_fits_nothing, lambda logits, priors, tau: threshold_moving(softmax(logits), priors),
                                 1.0),
    # subtract tau * log prior from the logits, tau chosen for validation per-class accuracy
    "posthoc_logit": Decision(_best_tau, lambda logits, priors, tau: softmax(posthoc_logit_adjust(logits, priors, tau)),
                              None),
}


@dataclass(frozen=True)
class DecisionRule:
    """A decision rule with what it fitted on validation: logits in, class probabilities out."""

    decision: str                    # a key of DECISIONS
    train_priors: tuple[float, ...]  # class shares of the rows the model trained on
    tau: float | None = None         # what the rule fitted (posthoc_logit's tau), None when it fits nothing

    def __post_init__(self) -> None:
        check_choice(self.decision, DECISIONS, "decision")

    def probs(self, logits: np.ndarray) -> np.ndarray:
        priors = np.asarray(self.train_priors, dtype=np.float64)
        return DECISIONS[self.decision].probs(np.asarray(logits, dtype=np.float64), priors, self.tau)

    @property
    def fitted(self) -> dict:
        """What the rule fitted on validation, as evaluate reports it: ``{"tau": t}``, or empty."""
        return {} if self.tau is None else {"tau": self.tau}

    @property
    def logit_offset(self) -> list[float]:
        """``softmax(logits + logit_offset)`` equals :meth:`probs` (up to rounding): ``-tau * log prior``."""
        fixed = DECISIONS[self.decision].tau
        tau = fixed if fixed is not None else (self.tau or 0.0)
        return [float(v) for v in logit_offset(np.asarray(self.train_priors), tau)]

    def as_dict(self) -> dict:
        return {"rule": self.decision, "tau": self.tau, "train_priors": list(self.train_priors),
                "logit_offset": self.logit_offset,
                "formula": "p = softmax(logits + logit_offset); flaw score = 1 - p[0]"}

    @classmethod
    def from_dict(cls, d: dict) -> DecisionRule:
        """The rule :meth:`as_dict` wrote."""
        return cls(d["rule"], tuple(float(p) for p in d["train_priors"]), d.get("tau"))


def fit_decision(name: str, val_logits: np.ndarray, val_y: np.ndarray, train_priors: np.ndarray,
                 params: DecisionParams) -> DecisionRule:
    """Rule ``name`` with what it fits fitted on validation (never on test)."""
    check_choice(name, DECISIONS, "decision")
    priors = np.asarray(train_priors, dtype=np.float64)
    tau = DECISIONS[name].fit(np.asarray(val_logits, dtype=np.float64), val_y, priors, params)
    return DecisionRule(name, tuple(float(p) for p in priors), tau)


def apply_decision(name: str, val_logits: np.ndarray, val_y: np.ndarray, test_logits: np.ndarray,
                   train_priors: np.ndarray, params: DecisionParams) -> tuple[np.ndarray, dict]:
    """(class probabilities of ``test_logits``, what was fitted) for rule ``name`` fitted on validation."""
    rule = fit_decision(name, val_logits, val_y, train_priors, params)
    return rule.probs(test_logits), rule.fitted


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
