"""One threshold certified for several recalls at once: any flaw, and each flag with enough photos.

A whole-photo rule clears a photo when its any-flaw score ``A`` is below a
threshold ``t``. The rule must send to review, at a certified rate, both

* (a) flawed photos, whatever their flags: miss rate ``R_0(t) = P(A < t | flawed)``;
* (b) the photos carrying flag ``j``, for every flag ``j`` with enough calibration
  photos: ``R_j(t) = P(A < t | flag j)``.

**Method: Learn-then-Test over the one threshold, with the intersection-union test.**
The candidate thresholds are ordered from the strictest up, and every ``R_i`` grows
with ``t``, so they are tested in that fixed sequence (Angelopoulos et al. 2021),
stopping at the first that fails: fixed-sequence testing spends the whole level
``alpha = 1 - confidence`` on each step, with no correction across thresholds.
At one threshold the null hypothesis is "some ``R_i(t) > eps``" (``eps = 1 -
target_recall``), a union; its p-value is the *largest* of the per-risk binomial
p-values ``P(Binomial(n_i, eps) <= misses_i)`` (intersection-union test, Berger
1982), so rejecting it certifies every ``R_i(t) <= eps`` at once, at level
``alpha``, with no Bonferroni or Holm factor. Each per-risk p-value is at most
``alpha`` exactly when its Clopper-Pearson upper bound is at most ``eps``
(weldnet.triage.certify), so the sequence stops just past

    t = min_i t_i,   t_i = the (k*_i + 1)-th lowest score among the n_i photos of risk i,

where ``k*_i = allowed_misses(n_i, target_recall, confidence)``. Each risk needs
``flawed_needed`` photos at least (59 for 95% at 95%). Bonferroni over m risks
tested separately would need ``flawed_needed`` at confidence ``1 - alpha / m`` (90
photos each for five risks, 94 for six), and Holm rejects all m only when its
smallest p-value is below ``alpha / m`` as well; for "every risk certified
together", which one threshold needs, neither can do better than this test.

A flag is tested only when its count allows a certificate (``k* >= 0``); which
flags those are depends on the labels, never on the scores, so the guarantee
holds given the counts. Flags left out are listed with their count and the count
needed. Scores are read as in certify.py: finite, ``>= 0``, and threshold 0 clears
nothing (when the any-flaw risk itself cannot be certified).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np

from weldnet.triage.certify import (
    allowed_misses,
    binomial_cdf,
    certified_threshold,
    clopper_pearson_interval,
    clopper_pearson_upper,
    flawed_needed,
)

ANY_FLAW = "any flaw"
METHOD = ("Learn-then-Test, fixed sequence over the threshold; intersection-union test across the risks "
          "(largest one-sided binomial p-value), Clopper-Pearson")


@dataclass(frozen=True)
class RiskCheck:
    """One certified risk at the common threshold: photos carrying it, how many the threshold misses."""

    name: str
    photos: int                  # calibration photos carrying it (n_i)
    allowed_misses: int          # k*_i
    limit: float                 # t_i: the most permissive threshold this risk alone allows
    missed: int                  # photos of it scoring below the common threshold
    recall: float
    recall_low: float            # two-sided Clopper-Pearson interval at the certificate's confidence
    recall_high: float
    miss_rate_upper: float       # one-sided Clopper-Pearson upper bound (<= 1 - target when certified)
    p_value: float               # P(Binomial(n_i, 1 - target) <= missed)


@dataclass(frozen=True)
class Uncertified:
    """A flag too rare in the calibration split for any certificate."""

    name: str
    photos: int
    needed: int


@dataclass(frozen=True)
class SimultaneousCertificate:
    threshold: float                      # clear when the any-flaw score is below it
    target_recall: float
    confidence: float
    certified: bool                       # False: too few flawed photos, nothing is cleared
    binding: str | None                   # the risk whose limit set the threshold
    p_value: float                        # largest per-risk p-value at the threshold (<= 1 - confidence)
    risks: tuple[RiskCheck, ...]          # the any-flaw risk first, then the certified flags
    uncertified: tuple[Uncertified, ...]  # flags too rare to certify
    flawed_needed: int
    cleared: int                          # calibration photos below the threshold
    photos: int

    def as_dict(self) -> dict:
        return asdict(self)


def check_risk(name: str, score: np.ndarray, carries: np.ndarray, threshold: float, target_recall: float,
               confidence: float, limit: float = float("nan")) -> RiskCheck:
    """How the photos carrying a risk fare at ``threshold``: misses, recall with its interval, bound, p-value."""
    values = np.asarray(score, dtype=np.float64)[np.asarray(carries, dtype=bool)]
    n = len(values)
    missed = int(np.sum(values < threshold))
    caught = n - missed
    low, high = clopper_pearson_interval(caught, n, confidence)
    return RiskCheck(name=name, photos=n, allowed_misses=allowed_misses(n, target_recall, confidence), limit=limit,
                     missed=missed, recall=caught / n if n else float("nan"), recall_low=low, recall_high=high,
                     miss_rate_upper=clopper_pearson_upper(missed, n, confidence),
                     p_value=binomial_cdf(missed, n, 1.0 - target_recall))


def simultaneous_threshold(score: np.ndarray, flawed: np.ndarray, flags: Mapping[str, np.ndarray],
                           target_recall: float, confidence: float) -> SimultaneousCertificate:
    """The most permissive threshold whose any-flaw recall and every certifiable flag's recall are all certified.

    ``score``: any-flaw scores (finite, >= 0) of the calibration photos; ``flawed``:
    which carry any flag; ``flags[name]``: which carry that flag. See the module doc.
    """
    score = np.asarray(score, dtype=np.float64)
    flawed = np.asarray(flawed, dtype=bool)
    for name, carries in flags.items():
        if np.asarray(carries).shape != score.shape:
            raise ValueError(f"flag '{name}': {np.asarray(carries).shape} rows, the scores have {score.shape}")
        if np.any(np.asarray(carries, dtype=bool) & ~flawed):
            raise ValueError(f"flag '{name}' is carried by a photo not marked flawed")
    needed = flawed_needed(target_recall, confidence)
    limits = {ANY_FLAW: certified_threshold(score, flawed, target_recall, confidence)}
    uncertified = []
    for name, carries in flags.items():
        single = certified_threshold(score, np.asarray(carries, dtype=bool), target_recall, confidence)
        if single.certified:
            limits[name] = single
        else:
            uncertified.append(Uncertified(name, single.flawed, needed))
    certified = limits[ANY_FLAW].certified
    if certified:
        binding = min(limits, key=lambda name: limits[name].threshold)   # first in order on ties: any flaw
        threshold = limits[binding].threshold
    else:
        binding, threshold = None, 0.0
    masks = {ANY_FLAW: flawed, **{name: np.asarray(flags[name], dtype=bool) for name in limits if name != ANY_FLAW}}
    risks = tuple(check_risk(name, score, masks[name], threshold, target_recall, confidence, limits[name].threshold)
                  for name in limits)
    return SimultaneousCertificate(
        threshold=threshold, target_recall=target_recall, confidence=confidence, certified=certified,
        binding=binding, p_value=max(r.p_value for r in risks) if certified else 1.0, risks=risks,
        uncertified=tuple(uncertified), flawed_needed=needed, cleared=int(np.sum(score < threshold)),
        photos=len(score))


def bonferroni_needed(target_recall: float, confidence: float, tests: int) -> int:
    """Photos each of ``tests`` separately thresholded risks would need under Bonferroni (for comparison)."""
    return flawed_needed(target_recall, 1.0 - (1.0 - confidence) / tests)


def uncertified_note(items: tuple[Uncertified, ...] | list[Uncertified], split: str = "calibration") -> str:
    """The flags that cannot be certified, in plain words (empty when there are none)."""
    if not items:
        return ""
    parts = [f"{u.name} ({u.photos} {split} photo{'s' if u.photos != 1 else ''})" for u in items]
    return (f"Not certified on their own, too few {split} photos (each needs {items[0].needed} for a certificate): "
            + "; ".join(parts) + ". Their photos still count in the any-flaw recall")
