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
* automatically, by confident learning (Northcutt et al. 2021) on out-of-fold
  predicted probabilities of a cheap model (:func:`confident_learning`).

Everything here is pure: arrays and data frames in, values out.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from cleanlab.count import compute_confident_joint, estimate_joint
from cleanlab.filter import find_label_issues
from PIL import Image, ImageDraw
from sklearn.metrics import roc_auc_score

from weldnet.config import DataError
from weldnet.flags import FLAGS, TABLE1, RIGS, parse_flags
from weldnet.params import TaskSpec
from weldnet.tasks import assign_classes

Z95 = 1.959963984540054  # two-sided 95% normal quantile

# Verdict words of the review sheet; anything else must be Table 1 flag names.
VERDICT_OK = "ok"
VERDICT_FLAWED = "flawed"

CONFIDENT_LEARNING = "confident_learning"
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
    """Confident-learning result for one task on one rig."""

    rate: RateEstimate
    joint: np.ndarray            # (K, K) joint share of recorded class (rows) and true class (columns)
    noise_matrix: np.ndarray     # P(recorded = i | true = j)
    issues: np.ndarray           # row indices of suspected mislabelled photos, most suspect first
    suggested: np.ndarray        # most likely true class of each suspect
    joint_estimate: float        # 1 - trace of cleanlab's calibrated joint (an upper-side figure)
    bootstrap_rates: np.ndarray = field(repr=False, default_factory=lambda: np.empty((0, 2)))  # (issues, joint)


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

def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a binomial share ``successes / n``.

    centre = (p + z^2/2n) / (1 + z^2/n),
    half   = z / (1 + z^2/n) * sqrt(p(1-p)/n + z^2/4n^2).
    Unlike the normal interval it stays inside [0, 1] and is sound for small n.
    """
    if n <= 0:
        raise ValueError("wilson_interval needs n > 0")
    if not 0 <= successes <= n:
        raise ValueError(f"successes = {successes} must lie in [0, {n}]")
    p = successes / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


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


# ---------------------------------------------------------------- confident learning

def task_class_probs(flag_probs: np.ndarray, flag_names: Sequence[str], task: TaskSpec,
                     prevalence: dict[str, float]) -> np.ndarray:
    """Class probabilities of a task from per-flag probabilities (flags taken as independent).

    A photo belongs to the first class whose flags it carries (weldnet.tasks), so with
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


def _label_issues(labels: np.ndarray, pred_probs: np.ndarray) -> np.ndarray:
    return find_label_issues(labels, pred_probs, filter_by="prune_by_noise_rate",
                             return_indices_ranked_by="self_confidence", n_jobs=1)


def confident_learning(labels: np.ndarray, pred_probs: np.ndarray, n_bootstrap: int,
                       rng: np.random.Generator) -> NoiseEstimate:
    """Estimate the mislabelled share from out-of-fold predicted probabilities.

    Confident learning (Northcutt et al. 2021, cleanlab): the confident joint C[i, j]
    counts photos recorded as class i whose predicted probability of class j reaches
    class j's threshold t_j (the mean predicted probability of j over the photos
    recorded as j), calibrated so that each row sums to the photos recorded as i.
    cleanlab.filter.find_label_issues then takes, for each off-diagonal cell, the
    round(C[i, j]) photos recorded as i with the largest margin p_j - p_i, and keeps
    those whose most probable class is not the recorded one. The estimate is

        r = (number of label issues) / n,

    the suspects are those issues (least confident in their recorded class first) and
    the noise matrix P(recorded = i | true = j) is read off the issues' (recorded,
    most probable) pairs, the other photos counting as correctly recorded.

    Why not cleanlab's own off-diagonal estimate, 1 - trace of the calibrated joint?
    It counts every photo the model is merely unsure about: on generated Redbox clamps
    (out-of-fold AUC about 0.9) it said 6-10% where the truth was 0-0.8%, while the
    issue count stayed within about a point. But the issue count has the opposite
    failure: when more than half of a class's photos are recorded as another class,
    no photo's most probable class is the hidden one and the count falls short. The two
    bracket the truth, so the interval spans both:

        ci_low  = 2.5% quantile of the issue-count estimate,
        ci_high = 97.5% quantile of the calibrated-joint estimate (``joint_estimate``),

    over ``n_bootstrap`` resamples of the photos (pred_probs held fixed). With a model
    that sees the task well the two agree and this is an ordinary bootstrap interval; a
    wide interval says the model cannot settle the question and a review sheet should.
    """
    labels = np.asarray(labels, dtype=np.int64)
    n, n_classes = len(labels), pred_probs.shape[1]
    if np.any(np.bincount(labels, minlength=n_classes) == 0):
        raise ValueError("confident_learning needs at least one photo of every class")
    confident = compute_confident_joint(labels, pred_probs, calibrate=True)
    joint_estimate = float(1.0 - np.trace(estimate_joint(labels, pred_probs, confident_joint=confident)))
    issues = np.asarray(_label_issues(labels, pred_probs), dtype=np.int64)
    masked = pred_probs[issues].copy()
    masked[np.arange(len(issues)), labels[issues]] = -1.0
    suggested = masked.argmax(axis=1) if len(issues) else np.empty(0, dtype=np.int64)
    counts = np.zeros((n_classes, n_classes))
    np.add.at(counts, (labels[issues], suggested), 1)
    counts[np.diag_indices(n_classes)] = np.bincount(labels, minlength=n_classes) - counts.sum(axis=1)
    joint = counts / n
    true_share = joint.sum(axis=0, keepdims=True)
    noise = np.divide(joint, true_share, out=np.zeros_like(joint), where=true_share > 0)
    rate = len(issues) / n
    boot = []
    for _ in range(n_bootstrap):
        rows = rng.integers(0, n, n)
        if np.any(np.bincount(labels[rows], minlength=n_classes) == 0):
            continue
        boot.append((len(_label_issues(labels[rows], pred_probs[rows])) / n,
                     1.0 - np.trace(estimate_joint(labels[rows], pred_probs[rows]))))
    boot_rates = np.asarray(boot).reshape(-1, 2)
    if len(boot_rates) >= 20:
        low = min(float(np.quantile(boot_rates[:, 0], 0.025)), rate)
        high = max(float(np.quantile(boot_rates[:, 1], 0.975)), joint_estimate, rate)
    else:
        low = high = None
    return NoiseEstimate(RateEstimate(rate, low, high, CONFIDENT_LEARNING), joint, noise,
                         issues, suggested, joint_estimate, boot_rates)


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
