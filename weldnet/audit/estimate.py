"""Label audit: is a task's labelling too noisy to learn it? (report, section 5.2.5)

A classifier that always answers the majority class scores an error rate of
``1 - k`` (k = majority share). A perfect classifier scored against labels of which
a share ``r`` is wrong scores ``r``. So when ``r > 1 - k`` the lazy classifier beats
the perfect one, and the task cannot be learned from those labels: this is the
lazy-classifier bound of :func:`lazy_bound_verdict`.

``r`` is estimated two ways:

* the report's way, a human review of a random sample of flagless photos
  (:func:`review_estimate`): ``r = f * p`` where ``f`` is the share of flagless
  photos and ``p`` the share of the reviewed sample that should have carried one of
  the task's flags; the 95% interval is ``f`` times the Wilson interval of ``p``;
* automatically, from out-of-fold predicted probabilities of a cheap model
  (:func:`estimate_mislabelling`): the noise is one-sided (flawed photos recorded
  with no flag), so the share of each class hidden among the flagless photos is a
  mixture proportion, estimated by best-bin estimation, and ``r = f * p`` as above;
  cleanlab's label issues (Northcutt et al. 2021) are the suspects.

Everything here is pure: arrays and data frames in, values out.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from cleanlab.count import estimate_joint
from cleanlab.filter import find_label_issues
from PIL import Image, ImageDraw
from sklearn.metrics import roc_auc_score

from weldnet.core.config import DataError
from weldnet.core.flags import FLAGS, RIGS, TABLE1, parse_flags
from weldnet.core.params import TaskSpec
from weldnet.photos.tasks import assign_classes

Z95 = 1.959963984540054  # two-sided 95% normal quantile
# Candidate thresholds of hidden_share: the scores above which 5%, 10%, ..., 100% of a
# class's recorded photos lie.
RECALL_BINS = 20

# Verdict words of the review sheet; anything else must be Table 1 flag names.
VERDICT_OK = "ok"
VERDICT_FLAWED = "flawed"

MIXTURE_PROPORTION = "mixture_proportion"
REVIEW_SHEET = "review_sheet"
NOT_ESTIMABLE = "not_estimable"


@dataclass(frozen=True)
class RateEstimate:
    """A mislabelled share with its 95% interval and the method that produced it."""

    estimate: float | None
    ci_low: float | None
    ci_high: float | None
    method: str

    def as_dict(self) -> dict:
        return {"estimate": round_metric(self.estimate), "ci_low": round_metric(self.ci_low),
                "ci_high": round_metric(self.ci_high), "method": self.method}


@dataclass(frozen=True)
class BoundVerdict:
    """The lazy-classifier bound: unlearnable when r > bound = 1 - k."""

    learnable: bool | None
    bound: float
    straddles_bound: bool


@dataclass
class NoiseEstimate:
    """The automatic estimate for one task on one rig (:func:`estimate_mislabelling`)."""

    rate: RateEstimate
    hidden: np.ndarray           # (K,) estimated photos of each class recorded as the default class
    joint: np.ndarray            # (K, K) joint share of recorded class (rows) and true class (columns)
    noise_matrix: np.ndarray     # P(recorded = i | true = j)
    issues: np.ndarray           # cleanlab's label issues (row indices), most suspect first: the suspects
    suggested: np.ndarray        # most likely true class of each suspect
    issues_estimate: float       # len(issues) / n
    joint_estimate: float        # 1 - trace of cleanlab's calibrated joint
    bootstrap_rates: np.ndarray = field(repr=False, default_factory=lambda: np.empty(0))


# ---------------------------------------------------------------- per-rig statistics

def flag_matrix(manifest: pd.DataFrame) -> pd.DataFrame:
    """The 0/1 flag columns of a manifest, in Table 1 order."""
    missing = [f for f in FLAGS if f not in manifest.columns]
    if missing:
        raise DataError(f"manifest lacks flag column '{missing[0]}'; re-run the ingest stage")
    return manifest[list(FLAGS)].astype(np.int64)


def label_stats(flags: pd.DataFrame, rig: str) -> dict:
    """Table 1 for one rig's photos: photo count, count per flag, flagless count and share.

    The pair counts are a table, not metrics: :func:`flag_pairs`.
    """
    values = flags[list(FLAGS)].to_numpy(dtype=np.int64)
    n = len(values)
    flagless = int(np.sum(values.sum(axis=1) == 0))
    counts = {f: int(c) for f, c in zip(FLAGS, values.sum(axis=0))}
    return {"n": n, "flagless": flagless, "flagless_share": round_metric(flagless / n if n else 0.0),
            "flags": counts}


def flag_pairs(flags: pd.DataFrame, rig: str) -> pd.DataFrame:
    """Co-occurrence on one rig: photos carrying both flags, for every pair the rig records in Table 1.

    Columns rig, flag_a, flag_b, photos; pairs in Table 1 order, so the rows do not
    change with the data.
    """
    values = flags[list(FLAGS)].to_numpy(dtype=np.int64)
    both = values.T @ values
    column = RIGS.index(rig)
    recorded = [i for i, f in enumerate(FLAGS) if TABLE1[f][column] is not None]
    rows = [(rig, FLAGS[i], FLAGS[j], int(both[i, j])) for a, i in enumerate(recorded) for j in recorded[a + 1:]]
    return pd.DataFrame(rows, columns=["rig", "flag_a", "flag_b", "photos"])


# ---------------------------------------------------------------- intervals and the bound

def wilson_bounds(successes: np.ndarray, n: int, z: float = Z95) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval of binomial shares ``successes / n``, element-wise.

    centre = (p + z^2/2n) / (1 + z^2/n),
    half   = z / (1 + z^2/n) * sqrt(p(1-p)/n + z^2/4n^2).
    Unlike the normal interval it stays inside [0, 1] and is sound for small n and
    for counts of 0 (upper bound z^2 / (n + z^2)).
    """
    p = np.asarray(successes, dtype=np.float64) / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z / denom * np.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return np.maximum(0.0, centre - half), np.minimum(1.0, centre + half)


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of one binomial share ``successes / n`` (:func:`wilson_bounds`)."""
    if n <= 0:
        raise ValueError("wilson_interval needs n > 0")
    if not 0 <= successes <= n:
        raise ValueError(f"successes = {successes} must lie in [0, {n}]")
    low, high = wilson_bounds(np.asarray(successes), n, z)
    return float(low), float(high)


def majority_share(labels: np.ndarray, n_classes: int) -> float:
    """k: share of the most common recorded class."""
    if len(labels) == 0:
        return 1.0
    return float(np.bincount(labels, minlength=n_classes).max() / len(labels))


def lazy_bound_verdict(rate: RateEstimate, k: float) -> BoundVerdict:
    """Learnable unless the mislabelled share r exceeds 1 - k (report 5.2.5).

    The verdict follows the point estimate; ``straddles_bound`` is true when the 95%
    interval contains the bound, i.e. the data cannot tell learnable from not.
    No estimate gives ``learnable = None``.
    """
    bound = 1.0 - k
    if rate.estimate is None:
        return BoundVerdict(None, bound, False)
    straddles = rate.ci_low is not None and rate.ci_high is not None and rate.ci_low <= bound <= rate.ci_high
    return BoundVerdict(not rate.estimate > bound, bound, bool(straddles))


# ---------------------------------------------------------------- the review sheet

def draw_review_sample(flagless_images: Sequence[str], size: int, rng: np.random.Generator) -> list[str]:
    """A random sample (without replacement) of ``size`` flagless photos, in draw order."""
    images = list(flagless_images)
    take = min(size, len(images))
    return [images[i] for i in rng.choice(len(images), size=take, replace=False)]


def parse_verdict(cell: object) -> tuple[str, frozenset[str]]:
    """Read one verdict cell: ('', {}) not reviewed, ('ok', {}), ('flawed', {}) or ('flags', {names}).

    Accepted: blank (photo not reviewed, left out of the estimate), ``ok`` (rightly
    flagless), ``flawed`` (should carry at least one flag, not said which), or
    ``;``-separated Table 1 flag names (case-insensitive) that the photo should carry.
    """
    if cell is None or (isinstance(cell, float) and math.isnan(cell)):
        return "", frozenset()
    text = str(cell).strip()
    if not text:
        return "", frozenset()
    if text.lower() == VERDICT_OK:
        return VERDICT_OK, frozenset()
    if text.lower() == VERDICT_FLAWED:
        return VERDICT_FLAWED, frozenset()
    known, unknown = parse_flags(text)
    if unknown:
        raise DataError(f"review verdict '{text}': unknown flag '{unknown[0]}'; write ok, flawed, "
                        "or ';'-separated Table 1 flag names")
    return "flags", frozenset(known)


def review_counts(verdicts: Sequence[object], task: TaskSpec) -> tuple[int, int]:
    """(reviewed, mislabelled for ``task``) among a rig's review verdicts.

    A flagless photo is the task's default class, so it is mislabelled for the task
    when it should carry a flag of one of the task's other classes. ``flawed`` does
    not say which flag, so it counts as mislabelled for every task (an upper bound).
    """
    task_flags = {f for flags in task.class_flags() for f in flags}
    reviewed = wrong = 0
    for cell in verdicts:
        kind, flags = parse_verdict(cell)
        if not kind:
            continue
        reviewed += 1
        if kind == VERDICT_FLAWED or flags & task_flags:
            wrong += 1
    return reviewed, wrong


def review_estimate(reviewed: int, wrong: int, flagless_share: float) -> RateEstimate:
    """r = f * wrong / reviewed, with f times the Wilson 95% interval of wrong / reviewed."""
    if reviewed == 0:
        return RateEstimate(None, None, None, NOT_ESTIMABLE)
    low, high = wilson_interval(wrong, reviewed)
    return RateEstimate(flagless_share * wrong / reviewed, flagless_share * low,
                        flagless_share * high, REVIEW_SHEET)


# ---------------------------------------------------------------- the automatic estimate

def task_class_probs(flag_probs: np.ndarray, flag_names: Sequence[str], task: TaskSpec,
                     prevalence: dict[str, float]) -> np.ndarray:
    """Class probabilities of a task from per-flag probabilities (flags taken as independent).

    A photo belongs to the first class whose flags it carries (weldnet.photos.tasks), so with
    q_c = 1 - prod_{f in c} (1 - p_f): P(c) = q_c * prod_{c' before c} (1 - q_c') and
    P(default) = prod_c (1 - q_c). A flag the model does not predict (too rare on the
    rig) gets its prevalence as a constant probability.
    """
    n = len(flag_probs)
    column = {name: i for i, name in enumerate(flag_names)}
    probs = np.zeros((n, len(task.class_names)))
    remaining = np.ones(n)
    for index, class_flags in enumerate(task.class_flags(), start=1):
        absent = np.ones(n)
        for flag in class_flags:
            p = flag_probs[:, column[flag]] if flag in column else np.full(n, prevalence.get(flag, 0.0))
            absent *= 1.0 - p
        probs[:, index] = remaining * (1.0 - absent)
        remaining = remaining * absent
    probs[:, 0] = remaining
    probs = np.clip(probs, 1e-6, None)
    return probs / probs.sum(axis=1, keepdims=True)


def hidden_share(recorded: np.ndarray, pool: np.ndarray, bins: int = RECALL_BINS, z: float = Z95) -> float:
    """Share of the photos of ``pool`` that truly belong to class c, under one-sided noise.

    ``recorded``: the out-of-fold probability of class c of the photos recorded as c;
    ``pool``: the same probability of the photos that can hide class c (recorded as the
    default class, with no flag).

    One-sided noise: a photo recorded as c is truly c, and a share of the true c photos
    lands in the pool, whichever photos they are. Out of fold, the hidden photos then
    score like the recorded ones, and the pool mixes a share ``alpha`` of class c with
    ``1 - alpha`` of others, so for every threshold t

        q_p(t) = alpha * q_c(t) + (1 - alpha) * q_o(t) >= alpha * q_c(t),

    q_p, q_c, q_o being the shares scoring at least t among the pool, the recorded
    class-c photos and the others. q_p(t) / q_c(t) is an upper bound of alpha at every
    threshold, and equals it where no other photo scores as high (a pure top bin).
    Best-bin estimation (Garg et al. 2021, "Mixture proportion estimation and PU
    learning: a modern approach") takes the threshold whose upper confidence bound of
    that ratio is smallest:

        t* = argmin_t W+(a(t), n_p) / W-(b(t), n_c),    alpha = (a(t*) / n_p) / (b(t*) / n_c),

    with a(t), b(t) the photos scoring at least t among the n_p of the pool and the n_c
    recorded class-c photos, and W+, W- the upper and lower Wilson 95% bounds (the
    paper's bound, distribution-free and as wide at every threshold, is too loose for
    shares of a few percent and picks too low a threshold). The candidate thresholds
    are the class-c scores above which 1/bins, 2/bins, ..., all of the recorded class-c
    photos lie; a few candidates rather than every score, so that the minimum picks up
    less chance. alpha is 0 for an empty pool, and at most 1.
    """
    recorded, pool = np.sort(np.asarray(recorded, float)), np.sort(np.asarray(pool, float))
    n_c, n_p = len(recorded), len(pool)
    if n_c == 0:
        raise ValueError("hidden_share needs at least one photo recorded as the class")
    if n_p == 0:
        return 0.0
    ranks = np.unique(np.ceil(np.arange(1, bins + 1) * n_c / bins).astype(np.int64))
    thresholds = recorded[n_c - ranks]
    above_c = n_c - np.searchsorted(recorded, thresholds, side="left")
    above_p = n_p - np.searchsorted(pool, thresholds, side="left")
    upper = wilson_bounds(above_p, n_p, z)[1] / np.maximum(wilson_bounds(above_c, n_c, z)[0], 1e-12)
    best = int(np.argmin(upper))
    return float(min(1.0, (above_p[best] / n_p) / (above_c[best] / n_c)))


def hidden_counts(labels: np.ndarray, pred_probs: np.ndarray, pool: np.ndarray | None = None) -> np.ndarray:
    """Estimated number of photos of each class recorded as the default class 0 (0 for class 0).

    ``pool``: the photos that can hide another class (a bool mask, all recorded as
    class 0); None: every photo recorded as class 0. Class c's count is
    hidden_share(class c's probabilities of the photos recorded as c, and of the pool)
    times the size of the pool. Should the counts add up to more than the pool, they
    are scaled down to it.
    """
    labels = np.asarray(labels, dtype=np.int64)
    pool = labels == 0 if pool is None else np.asarray(pool, dtype=bool)
    if np.any(labels[pool] != 0):
        raise ValueError("the pool of possibly mislabelled photos must be recorded as the default class")
    n_pool = int(pool.sum())
    counts = np.zeros(pred_probs.shape[1])
    for c in range(1, pred_probs.shape[1]):
        counts[c] = hidden_share(pred_probs[labels == c, c], pred_probs[pool, c]) * n_pool
    total = counts.sum()
    return counts * (n_pool / total) if total > n_pool else counts


def one_sided_rate(labels: np.ndarray, pred_probs: np.ndarray, pool: np.ndarray | None = None) -> float:
    """The mislabelled share under one-sided noise: r = sum_c hidden_counts[c] / n."""
    return float(hidden_counts(labels, pred_probs, pool).sum() / len(labels))


def _label_issues(labels: np.ndarray, pred_probs: np.ndarray) -> np.ndarray:
    return find_label_issues(labels, pred_probs, filter_by="prune_by_noise_rate",
                             return_indices_ranked_by="self_confidence", n_jobs=1)


def estimate_mislabelling(labels: np.ndarray, pred_probs: np.ndarray, n_bootstrap: int,
                          rng: np.random.Generator, flagless: np.ndarray | None = None) -> NoiseEstimate:
    """The mislabelled share of a task from out-of-fold class probabilities, under one-sided noise.

    The noise is the report's (section 5.2.5): a flawed photo recorded with no flag at
    all. So a photo recorded in a class other than the default class 0 is right, and only
    the photos recorded with no flag (``flagless``, a bool mask; None: every class-0
    photo) can hide another class. The estimate is

        r = f * sum over classes c != 0 of hidden_share(c)     (:func:`one_sided_rate`),

    with f the flagless share of the photos and hidden_share(c) the share of class c
    among the flagless photos: the report's review-sheet figure f * m / n, with the
    reviewed share m / n estimated from the model's probabilities. Its 95% interval is
    the 2.5% and 97.5% quantiles of r over ``n_bootstrap`` resamples of the photos
    (with replacement, probabilities held fixed, resamples lacking a class skipped;
    fewer than 20 left: no interval). It covers the sampling of the photos, not the
    training of the model. The noise matrix P(recorded = i | true = j) follows from the
    hidden counts.

    Where no flagless photo of another class scores like the best of class c, the
    estimate is right; where the model sees class c poorly, other photos among its top
    scores make it an upper bound that overshoots. For comparison, from cleanlab
    (Northcutt et al. 2021):

    * ``issues_estimate``: the share of cleanlab's label issues (find_label_issues,
      prune_by_noise_rate), the photos it confidently finds mislabelled. It undercounts
      when the model finds only some of the hidden photos;
    * ``joint_estimate``: 1 - trace of cleanlab's calibrated confident joint, which also
      counts the photos the model is unsure about, on both sides.

    The suspects (``issues``) are cleanlab's label issues, least confident in their
    recorded class first.
    """
    labels = np.asarray(labels, dtype=np.int64)
    n, n_classes = len(labels), pred_probs.shape[1]
    pool = labels == 0 if flagless is None else np.asarray(flagless, dtype=bool)
    recorded_counts = np.bincount(labels, minlength=n_classes)
    if np.any(recorded_counts == 0):
        raise ValueError("estimate_mislabelling needs at least one photo of every class")
    hidden = hidden_counts(labels, pred_probs, pool)
    rate = float(hidden.sum() / n)
    counts = np.diag(recorded_counts.astype(np.float64))
    counts[0, :] += hidden
    counts[0, 0] -= hidden.sum()
    joint = counts / n
    true_share = joint.sum(axis=0, keepdims=True)
    noise = np.divide(joint, true_share, out=np.zeros_like(joint), where=true_share > 0)
    joint_estimate = float(1.0 - np.trace(estimate_joint(labels, pred_probs)))
    issues = np.asarray(_label_issues(labels, pred_probs), dtype=np.int64)
    masked = pred_probs[issues].copy()
    masked[np.arange(len(issues)), labels[issues]] = -1.0
    suggested = masked.argmax(axis=1) if len(issues) else np.empty(0, dtype=np.int64)
    boot = []
    for _ in range(n_bootstrap):
        rows = rng.integers(0, n, n)
        if np.all(np.bincount(labels[rows], minlength=n_classes) > 0):
            boot.append(one_sided_rate(labels[rows], pred_probs[rows], pool[rows]))
    low = high = None
    if len(boot) >= 20:
        low, high = (float(q) for q in np.quantile(boot, [0.025, 0.975]))
    return NoiseEstimate(RateEstimate(rate, low, high, MIXTURE_PROPORTION), hidden, joint, noise,
                         issues, suggested, len(issues) / n, joint_estimate, np.asarray(boot))


def separability(labels: np.ndarray, pred_probs: np.ndarray) -> float:
    """The worst one-vs-rest ROC AUC, over classes, of the predicted class probabilities
    against the recorded classes.

    Confident learning is only as good as the model: a model blind to one class (AUC
    near 0.5) makes many photos cross that class's threshold by chance and the
    estimated noise explodes. Label noise lowers this AUC only mildly, a blind model
    to 0.5. The worst class counts, not the mean: one easy class would hide a blind one.
    """
    aucs = []
    for c in range(pred_probs.shape[1]):
        positive = labels == c
        if positive.all() or not positive.any():
            continue
        aucs.append(roc_auc_score(positive, pred_probs[:, c]))
    return float(np.min(aucs)) if aucs else 0.5


def true_mislabelled(recorded: pd.DataFrame, true: pd.DataFrame, task: TaskSpec) -> np.ndarray:
    """For scoring only: which photos' recorded class differs from the class of their true flags."""
    return assign_classes(recorded, task) != assign_classes(true, task)


def noise_matrix_dict(noise: np.ndarray, class_names: Sequence[str]) -> dict[str, dict[str, float]]:
    """{true class: {recorded class: P(recorded | true)}}."""
    return {true: {rec: round_metric(float(noise[i, j])) for i, rec in enumerate(class_names)}
            for j, true in enumerate(class_names)}


def suspects_table(images: Sequence[str], labels: np.ndarray, pred_probs: np.ndarray,
                   result: NoiseEstimate, class_names: Sequence[str]) -> pd.DataFrame:
    """Ranked suspects of one task on one rig: rank, image, recorded and suggested class with their probabilities."""
    rows = result.issues
    return pd.DataFrame({
        "rank": np.arange(1, len(rows) + 1),
        "image": [images[i] for i in rows],
        "recorded_class": [class_names[c] for c in labels[rows]],
        "recorded_prob": np.round(pred_probs[rows, labels[rows]], 4),
        "suggested_class": [class_names[c] for c in result.suggested],
        "suggested_prob": np.round(pred_probs[rows, result.suggested], 4),
    })


# ---------------------------------------------------------------- cross-rig check

def cross_rig_disagreement(probs: np.ndarray, recorded: np.ndarray, threshold: float) -> dict[str, np.ndarray]:
    """Per-flag disagreement between predicted flags (prob >= threshold) and recorded 0/1 flags.

    Returns shares over photos, one value per flag column: ``disagreement`` (prediction
    differs from the record), ``missing`` (predicted but not recorded, the Redbox
    failure the report found) and ``extra`` (recorded but not predicted).
    """
    predicted = probs >= threshold
    recorded = recorded.astype(bool)
    return {"disagreement": np.mean(predicted != recorded, axis=0),
            "missing": np.mean(predicted & ~recorded, axis=0),
            "extra": np.mean(~predicted & recorded, axis=0)}


# ---------------------------------------------------------------- contact sheets

def contact_sheet(thumbs: Sequence[np.ndarray], captions: Sequence[str], columns: int = 8) -> np.ndarray:
    """Thumbnails (any sizes up to the largest) on a white grid, each with its caption (one or
    more lines, cut to the cell's width) below."""
    if len(thumbs) != len(captions):
        raise ValueError("contact_sheet needs one caption per thumbnail")
    caption_height = 12 * max((c.count("\n") + 1 for c in captions), default=1) + 2
    if not thumbs:
        return np.full((caption_height, 200, 3), 255, dtype=np.uint8)
    cell_h = max(t.shape[0] for t in thumbs) + caption_height + 4
    cell_w = max(t.shape[1] for t in thumbs) + 4
    columns = max(1, min(columns, len(thumbs)))
    rows = math.ceil(len(thumbs) / columns)
    sheet = Image.new("RGB", (columns * cell_w, rows * cell_h), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for i, (thumb, caption) in enumerate(zip(thumbs, captions)):
        x, y = (i % columns) * cell_w + 2, (i // columns) * cell_h + 2
        sheet.paste(Image.fromarray(np.asarray(thumb, dtype=np.uint8)), (x, y))
        text = "\n".join(line[: cell_w // 6] for line in caption.split("\n"))
        draw.multiline_text((x, y + thumb.shape[0] + 1), text, fill=(0, 0, 0), spacing=1)
    return np.asarray(sheet)


def round_metric(value: float | None, digits: int = 5) -> float | None:
    return None if value is None else round(float(value), digits)
