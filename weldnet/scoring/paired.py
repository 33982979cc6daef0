"""Paired comparisons of strategies on the same test photos: a bootstrap that can tell them apart.

Every strategy is scored on the same test photos, so two strategies' per-class
accuracies share most of their test-set noise; comparing their marginal intervals
ignores that and is far too cautious. The paired bootstrap resamples the photos
once and scores every model on the same resample:

- each resample draws, within each class, as many photos as the class has, with
  replacement (stratified, like ``weldnet.core.metrics.bootstrap_interval``, since
  per-class accuracy is a mean of class recalls);
- the same draw serves every strategy and every seed; a strategy's score on it is
  the mean over its seeds of per-class accuracy, so the difference of two
  strategies is the average of their per-seed differences on the same photos;
- the difference's 1 - alpha interval is the percentile interval of the resampled
  differences, and its two-sided p-value
  ``p = min(1, 2 (1 + min(#{d* <= 0}, #{d* >= 0})) / (B + 1))``,
  the smallest level at which that interval would exclude 0 (never below
  ``2 / (B + 1)``: B must be large enough for the family's Holm correction);
- Holm's step-down correction runs over each family of comparisons (every strategy
  against the baseline; every strategy against the best on validation), and the
  verdict is ``better`` (1), ``worse`` (-1) or ``no detectable difference`` (0)
  at Holm-adjusted level alpha.

The interval covers test-photo sampling, given the trained models: it says what
another test set of the same size would show for these very seeds. How far
retraining moves a strategy is the seed noise floor (:func:`seed_spread`): the
same bootstrap between two seeds of one strategy.

Everything here is pure numpy: correctness arrays in, numbers out.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np

from weldnet.core.metrics import best_by_validation

VERDICTS: dict[int, str] = {1: "better", 0: "no detectable difference", -1: "worse"}


def resample_counts(target: np.ndarray, num_classes: int, resamples: int,
                    rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    """A stratified bootstrap as counts: for each class present, (its rows, (resamples, n_c) draw counts).

    Row ``b`` of a class's counts says how often each of its photos is drawn in
    resample ``b`` (``n_c`` draws with replacement): the same as indexing with
    ``rng.choice(rows, n_c)``, in a form that scores many models in one product.
    """
    out = []
    for cls in range(num_classes):
        rows = np.flatnonzero(target == cls)
        n = len(rows)
        if n:
            picks = rng.integers(0, n, size=(resamples, n)) + n * np.arange(resamples)[:, None]
            out.append((rows, np.bincount(picks.ravel(), minlength=resamples * n).reshape(resamples, n)))
    return out


def resampled_scores(correct: np.ndarray, draws: Sequence[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Per-class accuracy of each row of ``correct`` (models x photos, 0/1) on each resample: (resamples, models)."""
    correct = np.atleast_2d(np.asarray(correct, dtype=np.float64))
    recalls = [counts @ correct[:, rows].T / len(rows) for rows, counts in draws]
    return np.mean(recalls, axis=0)


def point_scores(correct: np.ndarray, target: np.ndarray, num_classes: int) -> np.ndarray:
    """Per-class accuracy of each row of ``correct`` on the test photos themselves (mean recall of the classes present)."""
    correct = np.atleast_2d(np.asarray(correct, dtype=np.float64))
    recalls = [correct[:, target == cls].mean(axis=1) for cls in range(num_classes) if np.any(target == cls)]
    return np.mean(recalls, axis=0)


def bootstrap_p_value(deltas: np.ndarray) -> float:
    """Two-sided p-value of "no difference" from resampled differences (see the module doc)."""
    deltas = np.asarray(deltas)
    tail = min(int(np.sum(deltas <= 0)), int(np.sum(deltas >= 0)))
    return float(min(1.0, 2.0 * (1 + tail) / (len(deltas) + 1)))


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values: ``max_{j <= i} min(1, (m - j) p_(j))`` in sorted order, mapped back."""
    p = np.asarray(p_values, dtype=np.float64)
    m = len(p)
    if m == 0:
        return p
    order = np.argsort(p, kind="stable")
    stepped = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted = np.empty(m)
    adjusted[order] = np.maximum.accumulate(stepped)
    return adjusted


def verdict(diff: float, p_adjusted: float, alpha: float) -> int:
    """1 better, -1 worse, 0 no detectable difference at adjusted level alpha."""
    if p_adjusted >= alpha or diff == 0:
        return 0
    return 1 if diff > 0 else -1


@dataclass(frozen=True)
class Scores:
    """Seed-averaged per-class accuracy of each model: on the test photos and on every paired resample."""

    point: dict[str, float]
    draws: dict[str, np.ndarray]        # (resamples,) per model
    seeds: dict[str, np.ndarray]        # (seeds,) per model: each seed's own score
    seed_draws: dict[str, np.ndarray]   # (resamples, seeds) per model


def score_models(correct: Mapping[str, np.ndarray], target: np.ndarray, num_classes: int, resamples: int,
                 rng: np.random.Generator) -> Scores:
    """Score every model (``correct[name]``: seeds x photos, 0/1) on one shared set of stratified resamples."""
    names = list(correct)
    stacked = np.vstack([np.atleast_2d(correct[n]) for n in names])
    sizes = [len(np.atleast_2d(correct[n])) for n in names]
    draws = resample_counts(target, num_classes, resamples, rng)
    all_draws = resampled_scores(stacked, draws)
    all_points = point_scores(stacked, target, num_classes)
    bounds = np.cumsum([0, *sizes])
    cut = {n: slice(bounds[i], bounds[i + 1]) for i, n in enumerate(names)}
    return Scores(point={n: float(all_points[cut[n]].mean()) for n in names},
                  draws={n: all_draws[:, cut[n]].mean(axis=1) for n in names},
                  seeds={n: all_points[cut[n]] for n in names},
                  seed_draws={n: all_draws[:, cut[n]] for n in names})


@dataclass(frozen=True)
class Comparison:
    diff: float          # per-class accuracy of the strategy minus the target's
    ci_low: float
    ci_high: float
    p: float             # unadjusted two-sided bootstrap p-value


def compare(point_a: float, point_b: float, draws_a: np.ndarray, draws_b: np.ndarray, alpha: float) -> Comparison:
    """The paired difference a - b with its percentile interval and bootstrap p-value."""
    deltas = np.asarray(draws_a) - np.asarray(draws_b)
    low, high = np.quantile(deltas, [alpha / 2, 1 - alpha / 2])
    return Comparison(float(point_a - point_b), float(low), float(high), bootstrap_p_value(deltas))


def compare_family(scores: Scores, target: str, names: Sequence[str], alpha: float, prefix: str) -> dict[str, dict]:
    """Every strategy of ``names`` but ``target`` against ``target``, Holm-corrected together.

    Returns ``{name: {<prefix>_diff, _ci_low, _ci_high, _p, _p_holm, _verdict}}``.
    """
    others = [n for n in names if n != target]
    found = [compare(scores.point[n], scores.point[target], scores.draws[n], scores.draws[target], alpha)
             for n in others]
    adjusted = holm([c.p for c in found])
    out = {}
    for name, c, p_holm in zip(others, found, adjusted):
        out[name] = {f"{prefix}_diff": c.diff, f"{prefix}_ci_low": c.ci_low, f"{prefix}_ci_high": c.ci_high,
                     f"{prefix}_p": c.p, f"{prefix}_p_holm": float(p_holm),
                     f"{prefix}_verdict": verdict(c.diff, float(p_holm), alpha)}
    return out


def gap_closed(scores: Scores, strategy: str, baseline: str, ceiling: str, alpha: float) -> dict[str, float]:
    """How much of the gap between the baseline and its ceiling the strategy closes, ``(s - b) / (c - b)``.

    The interval is the percentile interval of the same ratio on the paired
    resamples; it is given only when the ceiling is detectably above the baseline
    (else the ratio has no stable denominator, and only the point is returned).
    """
    gap = scores.point[ceiling] - scores.point[baseline]
    out = {"gap_closed": float((scores.point[strategy] - scores.point[baseline]) / gap) if gap else float("nan")}
    ceiling_gap = compare(scores.point[ceiling], scores.point[baseline], scores.draws[ceiling],
                          scores.draws[baseline], alpha)
    if ceiling_gap.p < alpha and ceiling_gap.diff > 0:
        ratio = (scores.draws[strategy] - scores.draws[baseline]) / (scores.draws[ceiling] - scores.draws[baseline])
        low, high = np.quantile(ratio[np.isfinite(ratio)], [alpha / 2, 1 - alpha / 2])
        out.update(gap_closed_ci_low=float(low), gap_closed_ci_high=float(high))
    if not np.isfinite(out["gap_closed"]):
        out.pop("gap_closed")
    return out


def seed_spread(scores: Scores, name: str, alpha: float) -> dict[str, float]:
    """How far apart the seeds of one strategy land, and whether that is beyond test-photo noise.

    ``seed_gap``: mean over seed pairs of |per-class accuracy of seed i - of seed j|.
    ``seed_diff``, ``_ci_low``, ``_ci_high``, ``_p``: the paired bootstrap of the first
    seed against the second (same photos), so ``seed_diff_p < alpha`` says retraining
    moved this strategy more than the test photos explain. Empty with one seed.
    """
    points, draws = scores.seeds[name], scores.seed_draws[name]
    if len(points) < 2:
        return {}
    gaps = [abs(points[i] - points[j]) for i, j in combinations(range(len(points)), 2)]
    first = compare(points[0], points[1], draws[:, 0], draws[:, 1], alpha)
    return {"seed_gap": float(np.mean(gaps)), "seed_diff": first.diff, "seed_diff_ci_low": first.ci_low,
            "seed_diff_ci_high": first.ci_high, "seed_diff_p": first.p}


def paired_results(correct: Mapping[str, np.ndarray], target: np.ndarray, num_classes: int,
                   val_scores: Mapping[str, float], *, baseline: str | None, ceilings: Mapping[str, str],
                   resamples: int, alpha: float, rng: np.random.Generator) -> tuple[dict[str, dict], dict]:
    """The paired columns of every model, and what the summary says about them.

    ``correct``: each study strategy's, then each ceiling's, seeds x test photos 0/1;
    ``val_scores``: each study strategy's validation per-class accuracy (it picks the
    best-on-validation target); ``ceilings``: ceiling entry -> the strategy it is the
    ceiling of. Returns ``({model: {scalar columns}}, facts)`` with facts: ``best``,
    ``baseline`` (None when not in the study), ``ceiling`` (the baseline's, or None),
    ``resamples``, ``alpha``, ``photos``.
    """
    scores = score_models(correct, target, num_classes, resamples, rng)
    study = [n for n in correct if n not in ceilings]
    best = best_by_validation({n: val_scores[n] for n in study})
    out: dict[str, dict] = {n: {"best_on_validation": n == best} for n in correct}
    families = [("vs_best", best)]
    if baseline is not None and baseline in study:
        families.insert(0, ("vs_baseline", baseline))
    for prefix, target_name in families:
        for name, columns in compare_family(scores, target_name, study, alpha, prefix).items():
            out[name].update(columns)
    ceiling = next((c for c, source in ceilings.items() if source == baseline), None)
    if ceiling is not None and baseline in study:
        c = compare(scores.point[ceiling], scores.point[baseline], scores.draws[ceiling], scores.draws[baseline], alpha)
        out[ceiling].update(vs_baseline_diff=c.diff, vs_baseline_ci_low=c.ci_low, vs_baseline_ci_high=c.ci_high,
                            vs_baseline_p=c.p)
        for name in study:
            out[name].update(gap_closed(scores, name, baseline, ceiling, alpha))
    for name in correct:
        out[name].update(seed_spread(scores, name, alpha))
    facts = {"best": best, "baseline": baseline if baseline in study else None, "ceiling": ceiling,
             "resamples": resamples, "alpha": alpha, "photos": int(len(target))}
    return out, facts


def noise_floor(paired: Mapping[str, dict], learners: Sequence[str], alpha: float) -> dict[str, float]:
    """The seed noise floor over ``learners`` (trained strategies that did not collapse on every seed).

    ``mean_seed_gap``: their mean seed_gap; ``apart``: how many of them have seeds
    apart beyond test-photo noise (seed_diff_p < alpha); ``strategies``: how many had two seeds.
    """
    gaps = [(paired[n]["seed_gap"], paired[n]["seed_diff_p"]) for n in learners if "seed_gap" in paired[n]]
    if not gaps:
        return {}
    return {"mean_seed_gap": float(np.mean([g for g, _ in gaps])), "max_seed_gap": float(max(g for g, _ in gaps)),
            "apart": int(sum(p < alpha for _, p in gaps)), "strategies": len(gaps)}


def _signed(x: float) -> str:
    return f"{x:+.3f}"


def _pct(x: float) -> str:
    return f"{x:.0%}".replace("-0%", "0%")


def _p(x: float) -> str:
    return f"{x:.4f}" if x >= 0.0001 else "<0.0001"


def paired_table(results: Mapping[str, dict], facts: dict, floor: dict, ceiling_of: Mapping[str, str]) -> str:
    """The paired comparisons as Markdown, for metrics/summary.md."""
    alpha, best, baseline, ceiling = facts["alpha"], facts["best"], facts["baseline"], facts["ceiling"]
    level = f"{1 - alpha:.0%}"
    families = ([("vs_baseline", f"vs {baseline}")] if baseline else []) + [("vs_best", f"vs {best} (best on validation)")]
    header = ["strategy"]
    for _, title in families:
        header += [title, f"{level} interval", "p (Holm)", "verdict"]
    if ceiling:
        header.append("gap closed")
    header.append("seeds apart")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, r in results.items():
        if name in ceiling_of:
            continue
        cells = [name]
        for prefix, _ in families:
            if f"{prefix}_diff" in r:
                cells += [_signed(r[f"{prefix}_diff"]), f"[{r[f'{prefix}_ci_low']:+.3f}, {r[f'{prefix}_ci_high']:+.3f}]",
                          _p(r[f"{prefix}_p_holm"]), VERDICTS[r[f"{prefix}_verdict"]]]
            else:
                cells += ["(target)", "", "", ""]
        if ceiling:
            if "gap_closed" in r and "gap_closed_ci_low" in r:
                cells.append(f"{_pct(r['gap_closed'])} [{_pct(r['gap_closed_ci_low'])}, {_pct(r['gap_closed_ci_high'])}]")
            else:
                cells.append(_pct(r["gap_closed"]) if "gap_closed" in r else "")
        if "seed_gap" in r:
            cells.append(f"{r['seed_gap']:.3f}" + (" (beyond test noise)" if r["seed_diff_p"] < alpha else ""))
        else:
            cells.append("")
        lines.append("| " + " | ".join(cells) + " |")
    notes = [f"\nPaired bootstrap over the {facts['photos']} test photos ({facts['resamples']:,} resamples, "
             "stratified by class; the same photos for every strategy and seed, seeds averaged): difference in "
             f"per-class accuracy with its {level} percentile interval; p-values Holm-corrected within each "
             f"column's family; verdict at Holm-adjusted {alpha:g}. The interval is for these trained seeds."]
    if ceiling:
        c = results[ceiling]
        notes.append(f"Ceiling: `{ceiling}`, the same model trained at the task's natural imbalance, scores "
                     f"{c['per_class_accuracy']:.3f}, {_signed(c['vs_baseline_diff'])} "
                     f"[{c['vs_baseline_ci_low']:+.3f}, {c['vs_baseline_ci_high']:+.3f}] over {baseline}; "
                     f"gap closed = (strategy - {baseline}) / (ceiling - {baseline}).")
    if not floor:
        notes.append("Seed noise floor: not measured (it needs two seeds of a trained strategy that did not "
                     "collapse on every seed).")
    else:
        notes.append(f"Seed noise floor: two seeds of the same strategy land {floor['mean_seed_gap']:.3f} apart on "
                     f"average (largest {floor['max_seed_gap']:.3f}), over the {floor['strategies']} trained "
                     f"strategies that did not collapse on every seed; for {floor['apart']} of them the seed-vs-seed "
                     "paired bootstrap puts the seeds apart beyond test-photo noise. \"seeds apart\": each "
                     "strategy's mean gap between seeds.")
    return "\n".join(lines) + "\n" + "\n\n".join(notes) + "\n"
