"""The audit of every task on every rig, from arrays: thumbnails, flag tables, review verdicts.

:func:`fit_rig_models` runs the k-fold cross-validation of the cheap model once per
rig; :func:`audit_task` then estimates one task's mislabelled share on that rig
from the out-of-fold probabilities (and from the review sheet when one was filled
in) and applies the lazy-classifier bound. The stage only does the I/O around these.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from weldnet.audit.estimate import (
    NOT_ESTIMABLE,
    BoundVerdict,
    NoiseEstimate,
    RateEstimate,
    cross_rig_disagreement,
    estimate_mislabelling,
    lazy_bound_verdict,
    majority_share,
    noise_matrix_dict,
    review_estimate,
    round_metric,
    separability,
    suspects_table,
    task_class_probs,
)
from weldnet.audit.model import CPU, FitSettings, cross_validate
from weldnet.core.flags import FLAGS
from weldnet.core.params import AuditParams, TaskSpec
from weldnet.photos.tasks import assign_classes
from weldnet.train.device import precision_for

if TYPE_CHECKING:
    import torch


@dataclass
class RigModel:
    """Out-of-fold flag probabilities of one rig's photos, from the audit model's k-fold cross-validation."""

    flag_names: list[str]             # flags the model predicts (common enough on the rig)
    targets: np.ndarray               # recorded 0/1 flags, (n, len(flag_names))
    oof_probs: np.ndarray | None      # (n, len(flag_names)); None when too little data to train
    prevalence: dict[str, float]      # recorded share of every flag on the rig
    transfer_probs: dict[str, np.ndarray] = field(default_factory=dict)  # other rig -> its photos' probs


@dataclass
class TaskAudit:
    """One task on one rig."""

    task: str
    rig: str
    class_names: list[str]
    class_counts: np.ndarray
    majority_share: float
    rate: RateEstimate                # the headline estimate: review sheet if given, else automatic
    automatic: RateEstimate
    review: RateEstimate | None
    review_counts: tuple[int, int] | None
    verdict: BoundVerdict
    model_auc: float | None
    noise: NoiseEstimate | None
    suspects: pd.DataFrame
    note: str = ""

    def as_dict(self) -> dict:
        n = int(self.class_counts.sum())
        entry = {
            "n": n,
            "class_shares": {c: round_metric(k / n if n else 0.0) for c, k in zip(self.class_names, self.class_counts)},
            "majority_share": round_metric(self.majority_share),
            "mislabelled_rate": self.rate.as_dict(),
            "learnable": self.verdict.learnable,
            "bound": round_metric(self.verdict.bound),
            "straddles_bound": self.verdict.straddles_bound,
            "model_auc": round_metric(self.model_auc),
            "automatic": {**{k: v for k, v in self.automatic.as_dict().items() if k != "method"},
                          "issues_estimate": round_metric(self.noise.issues_estimate) if self.noise else None,
                          "joint_estimate": round_metric(self.noise.joint_estimate) if self.noise else None},
            "review": None,
            "noise_matrix": noise_matrix_dict(self.noise.noise_matrix, self.class_names) if self.noise else None,
            "suspects": int(len(self.suspects)),
            "note": self.note,
        }
        if self.review is not None and self.review_counts is not None:
            entry["review"] = {**{k: v for k, v in self.review.as_dict().items() if k != "method"},
                               "reviewed": self.review_counts[0], "flawed": self.review_counts[1]}
        return entry


def modelled_flags(flags: pd.DataFrame, min_count: int) -> list[str]:
    """Flags with at least ``min_count`` photos both with and without them: enough to learn."""
    counts = flags[list(FLAGS)].sum(axis=0)
    n = len(flags)
    return [f for f in FLAGS if counts[f] >= min_count and n - counts[f] >= min_count]


def fit_rig_models(thumbs: dict[str, np.ndarray], flags: dict[str, pd.DataFrame], cfg: AuditParams,
                   rng: np.random.Generator, transfer: dict[str, str] | None = None,
                   device: torch.device | None = None) -> dict[str, RigModel]:
    """k-fold cross-validation of the tiny multi-label CNN on each rig's thumbnails.

    ``transfer`` (e.g. {"bluebox": "redbox"}): the source rig's fold models also predict
    the target rig's photos, for the cross-rig check. ``device``: where the folds train (default the CPU),
    in bf16 autocast where it computes bf16 natively and ``audit.mixed_precision`` is on.
    """
    transfer = transfer or {}
    models, data = {}, {}
    for rig, table in flags.items():
        names = modelled_flags(table, cfg.min_flag_count)
        n = len(table)
        prevalence = {f: float(table[f].mean()) if n else 0.0 for f in FLAGS}
        models[rig] = RigModel(names, table[names].to_numpy(dtype=np.float32), None, prevalence)
        if names and n >= 2 * cfg.folds:
            data[rig] = (thumbs[rig], models[rig].targets)
    settings = FitSettings(cfg.epochs, cfg.batch_size, cfg.learning_rate, cfg.weight_decay, cfg.warmup, cfg.width)
    moves = {source: target for source, target in transfer.items() if source in data and len(thumbs[target])}
    done = cross_validate(data, cfg.folds, settings, rng, cfg.workers, moves,
                          {target: thumbs[target] for target in moves.values()}, device=device,
                          precision=precision_for(device or CPU, cfg.mixed_precision))
    for rig, result in done.items():
        models[rig].oof_probs = result.oof_probs
        if result.transfer_probs is not None:
            models[rig].transfer_probs[moves[rig]] = result.transfer_probs
    return models


def _unestimable(task: TaskSpec, cfg: AuditParams, rig_model: RigModel, counts: np.ndarray) -> str:
    """Why confident learning cannot be run for this task on this rig ('' when it can)."""
    if rig_model.oof_probs is None:
        return "too few photos or no flag common enough on this rig to train the audit model"
    for name, class_flags, count in zip(task.class_names, [[]] + task.class_flags(), counts):
        if count < cfg.min_class_count:
            return (f"class '{name}' has {int(count)} photos here, fewer than "
                    f"audit.min_class_count = {cfg.min_class_count}")
        if class_flags and not set(class_flags) & set(rig_model.flag_names):
            return (f"no flag of class '{name}' has audit.min_flag_count = {cfg.min_flag_count} "
                    "photos here, so the audit model does not predict it")
    return ""


def audit_task(name: str, task: TaskSpec, rig: str, images: Sequence[str], flags: pd.DataFrame,
               rig_model: RigModel, cfg: AuditParams, review: tuple[int, int] | None,
               rng: np.random.Generator) -> TaskAudit:
    """Mislabelled share, noise matrix, suspects and bound verdict of one task on one rig.

    ``review`` is (reviewed, found mislabelled for this task) from the rig's filled-in
    review sheet, or None; when given, its estimate is the headline one.
    """
    labels = assign_classes(flags, task)
    n_classes = len(task.class_names)
    counts = np.bincount(labels, minlength=n_classes)
    k = majority_share(labels, n_classes)
    note = _unestimable(task, cfg, rig_model, counts)
    noise = None
    suspects = pd.DataFrame(columns=["rank", "image", "recorded_class", "recorded_prob",
                                     "suggested_class", "suggested_prob"])
    auc = None
    if not note:
        probs = task_class_probs(rig_model.oof_probs, rig_model.flag_names, task, rig_model.prevalence)
        auc = separability(labels, probs)
        if auc < cfg.min_auc:
            note = (f"the audit model barely sees this task here (out-of-fold AUC {auc:.2f} < "
                    f"audit.min_auc = {cfg.min_auc:g}); fill in the review sheet instead")
    flagless = flags[list(FLAGS)].to_numpy().sum(axis=1) == 0
    if note:
        automatic = RateEstimate(None, None, None, NOT_ESTIMABLE)
    else:
        noise = estimate_mislabelling(labels, probs, cfg.bootstrap, rng, flagless)
        automatic = noise.rate
        suspects = suspects_table(list(images), labels, probs, noise, task.class_names)
    flagless_share = float(np.mean(flagless)) if len(flags) else 0.0
    reviewed = review_estimate(*review, flagless_share) if review is not None and review[0] > 0 else None
    rate = reviewed if reviewed is not None else automatic
    if rate.method != NOT_ESTIMABLE:
        note = ""
    return TaskAudit(name, rig, task.class_names, counts, k, rate, automatic, reviewed, review,
                     lazy_bound_verdict(rate, k), auc, noise, suspects, note)


def cross_rig_check(source: RigModel, target: str, target_flags: pd.DataFrame,
                    cfg: AuditParams) -> dict[str, dict[str, float]]:
    """Disagreement of the source rig's model (its fold models, averaged) with the target rig's records.

    Checked flags: those the source model predicts (>= min_flag_count photos with and
    without on the source rig) that also appear on >= min_flag_count target photos.
    ``baseline_disagreement`` is the source model's out-of-fold disagreement on its own
    rig: the part of the disagreement that is the model's error, not the labels'.
    """
    if target not in source.transfer_probs or source.oof_probs is None:
        return {}
    checked = [f for f in source.flag_names if target_flags[f].sum() >= cfg.min_flag_count]
    if not checked:
        return {}
    columns = [source.flag_names.index(f) for f in checked]
    target_probs = source.transfer_probs[target][:, columns]
    on_target = cross_rig_disagreement(target_probs, target_flags[checked].to_numpy(), cfg.cross_rig_threshold)
    on_source = cross_rig_disagreement(source.oof_probs[:, columns], source.targets[:, columns],
                                       cfg.cross_rig_threshold)
    return {flag: {"disagreement": round_metric(on_target["disagreement"][i]),
                   "missing": round_metric(on_target["missing"][i]),
                   "extra": round_metric(on_target["extra"][i]),
                   "recorded_share": round_metric(float(target_flags[flag].mean())),
                   "predicted_share": round_metric(float(np.mean(target_probs[:, i] >= cfg.cross_rig_threshold))),
                   "baseline_disagreement": round_metric(on_source["disagreement"][i])}
            for i, flag in enumerate(checked)}
