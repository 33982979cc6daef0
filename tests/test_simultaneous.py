"""The simultaneous certificate: one threshold, any-flaw recall and each flag's recall certified together."""
import numpy as np
import pytest

from weldnet.triage.simultaneous import ANY_FLAW, bonferroni_needed, simultaneous_threshold, uncertified_note

# target 0.5 at confidence 0.75 (eps = 0.5, alpha = 0.25), by hand:
#   n = 1: P(Bin(1, .5) <= 0) = 1/2 > 1/4               -> k* = -1, cannot certify
#   n = 2: P(Bin(2, .5) <= 0) = 1/4                     -> k* = 0
#   n = 5: P(<= 1) = 6/32 = .1875, P(<= 2) = 16/32       -> k* = 1
SCORES = np.array([0.10, 0.20, 0.30, 0.40, 0.50, 0.05, 0.15, 0.60])
FLAWED = np.array([1, 1, 1, 1, 1, 0, 0, 0], dtype=bool)


def test_the_any_flaw_limit_binds_when_every_flag_allows_more():
    flags = {"A": np.array([0, 0, 1, 1, 0, 0, 0, 0], bool),     # scores .3, .4: n = 2, k* = 0, limit .3
             "B": np.array([0, 0, 0, 0, 1, 0, 0, 0], bool)}     # one photo: no certificate, 2 needed
    cert = simultaneous_threshold(SCORES, FLAWED, flags, 0.5, 0.75)
    assert cert.certified and cert.binding == ANY_FLAW
    assert cert.threshold == 0.20                                # any flaw: k* = 1, the 2nd lowest flawed score
    any_flaw, a = cert.risks
    assert (any_flaw.photos, any_flaw.allowed_misses, any_flaw.missed, any_flaw.limit) == (5, 1, 1, 0.20)
    assert any_flaw.p_value == pytest.approx(6 / 32)
    assert (a.name, a.photos, a.allowed_misses, a.missed, a.limit) == ("A", 2, 0, 0, 0.30)
    assert a.p_value == pytest.approx(1 / 4)
    assert cert.p_value == pytest.approx(1 / 4) and cert.p_value <= 1 - 0.75
    assert cert.cleared == 3                                     # .05, .10, .15
    assert [(u.name, u.photos, u.needed) for u in cert.uncertified] == [("B", 1, 2)]
    assert "B (1 calibration photo)" in uncertified_note(cert.uncertified)
    assert "needs 2" in uncertified_note(cert.uncertified)


def test_a_flag_with_a_low_scoring_photo_sets_the_threshold_for_every_photo():
    flags = {"A": np.array([1, 0, 0, 1, 0, 0, 0, 0], bool)}     # scores .1 and .4: limit .1
    cert = simultaneous_threshold(SCORES, FLAWED, flags, 0.5, 0.75)
    assert cert.binding == "A" and cert.threshold == 0.10
    assert [r.missed for r in cert.risks] == [0, 0]              # stricter than any flaw needed
    assert cert.cleared == 1                                     # only .05


def test_too_few_flawed_photos_clear_nothing():
    cert = simultaneous_threshold(np.array([0.3, 0.1, 0.2]), np.array([1, 0, 0], bool),
                                  {"A": np.array([1, 0, 0], bool)}, 0.5, 0.75)
    assert not cert.certified and cert.threshold == 0.0 and cert.cleared == 0
    assert [u.name for u in cert.uncertified] == ["A"]


def test_a_flag_on_a_clean_photo_is_refused():
    with pytest.raises(ValueError, match="not marked flawed"):
        simultaneous_threshold(SCORES, FLAWED, {"A": np.array([0, 0, 0, 0, 0, 1, 0, 0], bool)}, 0.5, 0.75)


def test_bonferroni_would_need_more_photos_per_flag():
    assert bonferroni_needed(0.95, 0.95, 1) == 59                # ceil(log .05 / log .95)
    assert bonferroni_needed(0.95, 0.95, 5) == 90                # ceil(log .01 / log .95) = ceil(89.8)


def _population(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Photos flawed w.p. .7 carrying A (.5) and B (.3) independently; a flawed photo's score is its flags' max."""
    flawed = rng.random(n) < 0.7
    a = flawed & (rng.random(n) < 0.5)
    b = flawed & (rng.random(n) < 0.3)
    score = rng.uniform(0.0, 0.6, n)                             # clean photos
    other = rng.uniform(0.3, 1.0, n)                             # flawed photos without A or B
    score = np.where(flawed, np.where(a | b, 0.0, other), score)
    score = np.where(a, np.maximum(score, rng.uniform(0.2, 1.0, n)), score)
    score = np.where(b, np.maximum(score, rng.uniform(0.0, 1.0, n)), score)   # B is the hardest flag
    return score, flawed, a, b


def test_every_certified_recall_holds_together_at_the_stated_confidence():
    rng = np.random.default_rng(0)
    big, big_flawed, big_a, big_b = _population(400_000, rng)
    truth = {name: np.sort(big[mask]) for name, mask in ((ANY_FLAW, big_flawed), ("A", big_a), ("B", big_b))}

    def true_miss(name: str, t: float) -> float:
        return np.searchsorted(truth[name], t, side="left") / len(truth[name])

    target, confidence, trials, failed, any_flaw_alone = 0.9, 0.9, 300, 0, 0
    for _ in range(trials):
        score, flawed, a, b = _population(300, rng)
        cert = simultaneous_threshold(score, flawed, {"A": a, "B": b}, target, confidence)
        assert cert.certified and {r.name for r in cert.risks} == {ANY_FLAW, "A", "B"}
        failed += any(true_miss(r.name, cert.threshold) > 1 - target for r in cert.risks)
        any_flaw_alone += true_miss("B", cert.risks[0].limit) > 1 - target
    # at most alpha = 0.1 of the runs miss any of the three, up to Monte Carlo error (3 sd at 300 runs)
    assert failed / trials <= 0.1 + 3 * np.sqrt(0.1 * 0.9 / trials)
    # the any-flaw threshold alone would fail flag B far more often: the per-flag risks matter
    assert any_flaw_alone / trials > 0.5
