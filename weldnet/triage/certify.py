"""Certifying the triage threshold: recall on flawed photos guaranteed at a confidence level.

The inspector clears a photo automatically when its flaw score is below a
threshold ``t``. The naive ``t`` (weldnet.strategies.decisions.automation_threshold) makes
validation recall exactly the target, so on new photos it falls short about
half the time. Here ``t`` is the most permissive threshold whose **one-sided
Clopper-Pearson upper bound on the miss rate** is at most ``1 - target_recall``:

* with ``n`` flawed calibration photos of which ``k`` score below ``t`` (missed),
  the upper bound ``U(k, n)`` at confidence ``c`` is the ``p`` that solves
  ``P(Binomial(n, p) <= k) = 1 - c`` (``U(n, n) = 1``);
* ``U`` grows with ``k``, so the threshold may miss at most
  ``k* = max {k : U(k, n) <= 1 - target_recall}`` calibration photos, and ``t`` is
  the ``(k* + 1)``-th lowest flawed score (photos scoring at or above it go to review);
* ``k*`` depends on ``n``, the target and ``c`` only, never on the scores, and
  ``U(k, n) <= eps  <=>  P(Binomial(n, eps) <= k) <= 1 - c``; so for exchangeable
  photos the long-run miss rate at ``t`` exceeds ``eps`` with probability at most
  ``1 - c`` (the order-statistic argument of tolerance intervals).

When even ``k* = 0`` fails, ``target^n > 1 - c``: fewer than
``ceil(log(1 - c) / log(target))`` flawed photos (59 for 95% at 95%) cannot
certify anything, and no photo is cleared (threshold 0: no flaw score is below it).

The binomial tail is summed in log space (no scipy), so any ``n`` works.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from weldnet.strategies.decisions import automation, automation_threshold

METHOD = "one-sided Clopper-Pearson upper bound on the miss rate of flawed photos"


def _log_pmf(k: int, n: int, p: float) -> float:
    if p <= 0.0:
        return 0.0 if k == 0 else -math.inf
    if p >= 1.0:
        return 0.0 if k == n else -math.inf
    return (math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
            + k * math.log(p) + (n - k) * math.log1p(-p))


def binomial_cdf(k: int, n: int, p: float) -> float:
    """``P(Binomial(n, p) <= k)``."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    return min(1.0, math.fsum(math.exp(_log_pmf(i, n, p)) for i in range(k + 1)))


def _check(k: int, n: int, confidence: float) -> None:
    if n < 0 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")


def _solve_upper_tail(k: int, n: int, alpha: float) -> float:
    """The p in (0, 1) with ``P(Binomial(n, p) <= k) = alpha`` (the cdf falls as p grows), by bisection."""
    low, high = 0.0, 1.0
    for _ in range(200):
        mid = 0.5 * (low + high)
        if binomial_cdf(k, n, mid) > alpha:
            low = mid
        else:
            high = mid
        if high - low < 1e-15:
            break
    return 0.5 * (low + high)


def clopper_pearson_upper(k: int, n: int, confidence: float) -> float:
    """One-sided Clopper-Pearson upper bound on a proportion after ``k`` events in ``n`` trials.

    ``U`` solves ``P(Binomial(n, U) <= k) = 1 - confidence``; ``U = 1`` when ``k = n``
    (also for ``n = 0``, where nothing is known). For ``k = 0``:
    ``U = 1 - (1 - confidence)^(1/n)``.
    """
    _check(k, n, confidence)
    if k == n:
        return 1.0
    return _solve_upper_tail(k, n, 1.0 - confidence)


def clopper_pearson_interval(k: int, n: int, confidence: float) -> tuple[float, float]:
    """Two-sided Clopper-Pearson interval, ``(1 - confidence) / 2`` in each tail; (0, 1) for n = 0."""
    _check(k, n, confidence)
    if n == 0:
        return 0.0, 1.0
    half = (1.0 - confidence) / 2.0
    low = 0.0 if k == 0 else 1.0 - _solve_upper_tail(n - k, n, half)
    high = 1.0 if k == n else _solve_upper_tail(k, n, half)
    return low, high


def allowed_misses(n: int, target_recall: float, confidence: float) -> int:
    """``k*``: the most flawed calibration photos a certified threshold may miss; -1 when none can be certified.

    The largest k with ``P(Binomial(n, 1 - target_recall) <= k) <= 1 - confidence``,
    which is the same as ``clopper_pearson_upper(k, n, confidence) <= 1 - target_recall``.
    """
    if not 0.0 < target_recall < 1.0:
        raise ValueError(f"target_recall must lie in (0, 1), got {target_recall}")
    _check(0, n, confidence)
    eps, alpha = 1.0 - target_recall, 1.0 - confidence
    total, k = 0.0, -1
    while k + 1 < n:
        total += math.exp(_log_pmf(k + 1, n, eps))
        if total > alpha * (1 + 1e-12):
            break
        k += 1
    return k


def flawed_needed(target_recall: float, confidence: float) -> int:
    """The fewest flawed calibration photos with which a threshold can be certified at all (none missed).

    ``target^n <= 1 - confidence``, so ``n = ceil(log(1 - confidence) / log(target))``.
    """
    n = max(1, math.ceil(math.log(1.0 - confidence) / math.log(target_recall) - 1e-9))
    while allowed_misses(n, target_recall, confidence) < 0:   # guards the float rounding of the formula
        n += 1
    return n


@dataclass(frozen=True)
class Certificate:
    """A certified threshold and what it was calibrated on; photos scoring below ``threshold`` are cleared."""

    threshold: float
    target_recall: float
    confidence: float
    flawed: int                  # flawed calibration photos
    clean: int                   # clean calibration photos
    allowed_misses: int          # k*; -1: nothing can be certified
    missed: int                  # flawed calibration photos scoring below the threshold (<= allowed_misses)
    recall: float                # recall on the calibration photos at the threshold
    miss_rate_upper: float       # clopper_pearson_upper(missed, flawed, confidence)
    cleared: int                 # calibration photos (flawed or clean) below the threshold
    flawed_needed: int           # flawed photos that certifying anything needs (see flawed_needed)

    @property
    def certified(self) -> bool:
        return self.allowed_misses >= 0

    def as_dict(self) -> dict:
        return {**asdict(self), "certified": self.certified}


def certified_threshold(flaw_score: np.ndarray, flawed: np.ndarray, target_recall: float,
                        confidence: float) -> Certificate:
    """The most permissive threshold whose miss-rate upper bound is at most ``1 - target_recall`` (module doc).

    Clear a photo when ``flaw_score < threshold``. With too few flawed photos the
    threshold is 0 and nothing is cleared (flaw scores are >= 0).
    """
    flaw_score = np.asarray(flaw_score, dtype=np.float64)
    flawed = np.asarray(flawed, dtype=bool)
    if flaw_score.shape != flawed.shape or flaw_score.ndim != 1:
        raise ValueError("flaw_score and flawed must be 1-d arrays of the same length")
    if not np.all(np.isfinite(flaw_score)) or np.any(flaw_score < 0):
        raise ValueError("flaw scores must be finite and >= 0")
    scores = np.sort(flaw_score[flawed])
    n = len(scores)
    k = allowed_misses(n, target_recall, confidence)
    threshold = float(scores[k]) if k >= 0 else 0.0
    missed = int(np.sum(scores < threshold))
    return Certificate(threshold=threshold, target_recall=target_recall, confidence=confidence, flawed=n,
                       clean=int((~flawed).sum()), allowed_misses=k, missed=missed,
                       recall=(1.0 - missed / n) if n else float("nan"),
                       miss_rate_upper=clopper_pearson_upper(missed, n, confidence),
                       cleared=int(np.sum(flaw_score < threshold)),
                       flawed_needed=flawed_needed(target_recall, confidence))


def note(cert: Certificate) -> str:
    """One plain sentence on what the certificate allows, for triage.json, the stage's log and the README."""
    if not cert.certified:
        return (f"nothing can be cleared: the validation split has {cert.flawed} flawed photo(s), and certifying "
                f"{cert.target_recall:.0%} recall at {cert.confidence:.0%} confidence needs at least "
                f"{cert.flawed_needed} (with none missed); every photo goes to review")
    if cert.cleared == 0:
        return (f"certified, but the threshold clears no validation photo: it may miss {cert.allowed_misses} of "
                f"{cert.flawed} flawed photos, and no photo scores below the lowest flaw score it must keep")
    return (f"certified: the threshold misses {cert.missed} of {cert.flawed} flawed validation photos "
            f"(at most {cert.allowed_misses} allowed); miss-rate upper bound {cert.miss_rate_upper:.4f} "
            f"<= {1 - cert.target_recall:.4f} at {cert.confidence:.0%} confidence")


def _check_split(score: np.ndarray, flawed: np.ndarray, threshold: float, confidence: float) -> dict:
    """Photos, recall (with its two-sided interval) and automation of one labelled split at ``threshold``."""
    flawed = np.asarray(flawed, dtype=bool)
    n = int(flawed.sum())
    caught = int(np.sum(np.asarray(score)[flawed] >= threshold))
    cleared, recall = automation(np.asarray(score), flawed, threshold)
    low, high = clopper_pearson_interval(caught, n, confidence)
    return {"photos": int(len(flawed)), "flawed": n, "clean": int(len(flawed) - n), "recall": recall,
            "recall_low": low, "recall_high": high, "automation": cleared}


def triage_report(cert: Certificate, val_score: np.ndarray, val_flawed: np.ndarray, test_score: np.ndarray,
                  test_flawed: np.ndarray) -> dict:
    """triage.json: the certificate, the expected automation with its interval, the test check, the naive threshold.

    The expected automation is the share of validation photos below the threshold,
    with a two-sided Clopper-Pearson interval at the certificate's confidence. The
    naive threshold (validation recall exactly the target, as evaluate's automation
    uses) is reported beside it for comparison, never used.
    """
    photos = len(val_score)
    share = cert.cleared / photos if photos else float("nan")
    low, high = clopper_pearson_interval(cert.cleared, photos, cert.confidence)
    naive = automation_threshold(np.asarray(val_score), np.asarray(val_flawed, dtype=bool), cert.target_recall)
    naive = naive if np.isfinite(naive) else 0.0
    naive_val, naive_test = (_check_split(s, f, naive, cert.confidence)
                             for s, f in ((val_score, val_flawed), (test_score, test_flawed)))
    return _json_safe({
            "target_recall": cert.target_recall, "confidence": cert.confidence, "method": METHOD,
            "threshold": cert.threshold, "certified": cert.certified, "note": note(cert),
            "calibration": {"split": "val", **{k: v for k, v in cert.as_dict().items()
                                                if k not in ("threshold", "target_recall", "confidence",
                                                             "certified")}},
            "automation": {"expected": share, "low": low, "high": high, "cleared": cert.cleared,
                           "photos": photos},
            "test": {"split": "test", **_check_split(test_score, test_flawed, cert.threshold, cert.confidence)},
            "naive": {"threshold": naive, "val_recall": naive_val["recall"], "val_automation": naive_val["automation"],
                      "test_recall": naive_test["recall"], "test_automation": naive_test["automation"]}})


def _json_safe(value: object) -> object:
    """NaN (a split with no flawed photo has no recall) becomes null, which JSON and dvc metrics can read."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
