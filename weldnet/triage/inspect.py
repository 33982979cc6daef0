"""Whole-photo triage: one multi-label model over every common flag, and the rule that clears whole photos.

The inspection model has one logit ``z_j`` per modelled flag. The rule:

* each flag is **recalibrated on validation**: ``p_j = sigmoid(z_j + c_j)``, with the
  offset ``c_j`` that makes the mean ``p_j`` over the validation photos equal the
  flag's training share (:func:`calibration_offsets`; calibration in the large,
  so every loss of the axis yields probabilities on one scale);
* the **any-flaw score** is ``A = 1 - prod_j (1 - p_j)``, the probability of at
  least one modelled flag were the flags independent given the photo;
* a photo is **cleared** when ``A < T``; otherwise the flags that sent it to
  review are the fewest, largest ``-log(1 - p_j)`` terms that alone reach the
  threshold (:func:`review_flags`).

``T`` is certified on the calibration split (weldnet.triage.simultaneous): with
confidence ``confidence`` the any-flaw recall and the recall of each flag with
enough calibration photos are all at least ``target_recall``. The photos of the
rig are split four ways once (:func:`split_rows`): train, val (epochs, the loss,
the offsets), calibration (``T`` only) and test (the check), so nothing that
chose the rule saw the photos that certify it.

Flags with fewer than ``min_flag_count`` training photos get no output; they are
listed with their counts, their photos still count as flawed in every recall,
and the triage command sends a photo labelled with one of them to review.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from weldnet.core.flags import FLAGS
from weldnet.core.params import ModelParams, TaskSpec
from weldnet.strategies.decisions import automation_threshold
from weldnet.triage.bundle import DecisionRule, bundle_info
from weldnet.triage.certify import clopper_pearson_interval
from weldnet.triage.simultaneous import ANY_FLAW, SimultaneousCertificate, uncertified_note

KIND = "inspect"


# ------------------------------------------------------------------ data
def split_rows(n: int, shares: Mapping[str, float], rng: np.random.Generator) -> np.ndarray:
    """The split name of each of n photos: a random permutation cut by ``shares`` (in their order)."""
    names = list(shares)
    cuts = np.round(np.cumsum([shares[s] for s in names]) * n).astype(int)
    cuts[-1] = n
    labels = np.empty(n, dtype=object)
    order = rng.permutation(n)
    start = 0
    for name, end in zip(names, cuts):
        labels[order[start:end]] = name
        start = end
    return labels


def flag_counts(manifest: pd.DataFrame) -> dict[str, int]:
    """Photos carrying each Table 1 flag, for the flags any photo carries, in Table 1 order."""
    return {f: int(manifest[f].sum()) for f in FLAGS if f in manifest.columns and int(manifest[f].sum()) > 0}


@dataclass(frozen=True)
class RareFlag:
    """A flag too rare to model: its training photos, its photos on the rig, and the count a model needs."""

    name: str
    train: int
    photos: int
    needed: int


def rare_flags(train: pd.DataFrame, rig: pd.DataFrame, modelled: Sequence[str], needed: int) -> list[RareFlag]:
    return [RareFlag(f, int(train[f].sum()), n, needed) for f, n in flag_counts(rig).items() if f not in modelled]


def rare_note(rare: Sequence[RareFlag]) -> str:
    if not rare:
        return ""
    parts = [f"{r.name} ({r.train} training photo{'' if r.train == 1 else 's'}, {r.photos} in all)" for r in rare]
    return (f"Not modelled, fewer than {rare[0].needed} training photos: " + "; ".join(parts)
            + ". A photo labelled with one of them goes to review; unlabelled, only the any-flaw recall covers it")


# ------------------------------------------------------------------ the rule
def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float64)))     # the logistic function, no overflow


def calibration_offsets(logits: np.ndarray, priors: Sequence[float]) -> np.ndarray:
    """``c_j`` with ``mean_i sigmoid(z_ij + c_j) = priors[j]`` over validation photos (bisection on [-50, 50])."""
    logits = np.asarray(logits, dtype=np.float64)
    out = np.zeros(logits.shape[1])
    for j, prior in enumerate(priors):
        low, high = -50.0, 50.0
        for _ in range(100):
            mid = 0.5 * (low + high)
            if _sigmoid(logits[:, j] + mid).mean() < prior:
                low = mid
            else:
                high = mid
        out[j] = 0.5 * (low + high)
    return out


def flag_terms(logits: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """``-log(1 - p_j) = softplus(z_j + c_j)`` per photo and flag: each flag's share of the any-flaw evidence."""
    return np.logaddexp(0.0, np.asarray(logits, dtype=np.float64) + np.asarray(offsets, dtype=np.float64)[None, :])


def any_flaw_score(logits: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """``1 - prod_j (1 - p_j)``, in [0, 1]: below the certified threshold for a cleared photo."""
    return -np.expm1(-flag_terms(logits, offsets).sum(axis=1))


def review_flags(logits: np.ndarray, offsets: np.ndarray, threshold: float,
                 flags: Sequence[str]) -> list[list[str]]:
    """Per photo: nothing when cleared; else the fewest flags, largest first, whose terms alone reach ``threshold``.

    With threshold 0 (nothing certified) no flag is named: the photo goes to review
    because nothing can be cleared.
    """
    terms = flag_terms(logits, offsets)
    score = -np.expm1(-terms.sum(axis=1))
    if threshold <= 0.0:
        return [[] for _ in range(len(terms))]
    needed = -math.log1p(-threshold) if threshold < 1.0 else math.inf
    out = []
    for row, s in zip(terms, score):
        if s < threshold:
            out.append([])
            continue
        order = np.argsort(-row, kind="stable")
        reach = np.flatnonzero(np.cumsum(row[order]) >= needed * (1 - 1e-12))
        out.append([flags[k] for k in order[:reach[0] + 1 if len(reach) else len(order)]])
    return out


def perfect_cleared(score: np.ndarray, flawed: np.ndarray, threshold: float) -> float:
    """Share of perfect photos (no flag) scoring below the threshold; NaN without any."""
    clean = ~np.asarray(flawed, dtype=bool)
    return float(np.mean(np.asarray(score)[clean] < threshold)) if clean.any() else float("nan")


def flag_aucs(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """ROC AUC of each flag's logit (NaN for a flag carried by every photo or none): what the model can see."""
    from sklearn.metrics import roc_auc_score

    out = np.full(targets.shape[1], np.nan)
    for j in range(targets.shape[1]):
        y = targets[:, j] > 0.5
        if 0 < y.sum() < len(y):
            out[j] = roc_auc_score(y, logits[:, j])
    return out


def validation_automation(logits: np.ndarray, targets: np.ndarray, flawed: np.ndarray, priors: Sequence[float],
                          target_recall: float, min_photos: int) -> tuple[float, np.ndarray]:
    """(share of perfect validation photos cleared, the offsets): how epochs and the loss are chosen.

    Offsets from these photos; the naive version of the certified rule: the highest
    threshold keeping validation recall at the target for any flaw and for each
    flag with ``min_photos`` validation photos. Never used to certify.
    """
    flawed = np.asarray(flawed, dtype=bool)
    offsets = calibration_offsets(logits, priors)
    score = any_flaw_score(logits, offsets)
    risks = [flawed] + [targets[:, j] > 0.5 for j in range(targets.shape[1])
                        if (targets[:, j] > 0.5).sum() >= min_photos]
    limits = [automation_threshold(score, r, target_recall) for r in risks if r.any()]
    return (perfect_cleared(score, flawed, min(limits)) if limits else float("nan")), offsets


# ------------------------------------------------------------------ the report
def _recall(caught: int, n: int, confidence: float) -> dict:
    low, high = clopper_pearson_interval(caught, n, confidence)
    return {"photos": n, "recall": caught / n if n else None, "low": low, "high": high}


def split_check(score: np.ndarray, flawed: np.ndarray, targets: np.ndarray, flags: Sequence[str], threshold: float,
                confidence: float) -> dict:
    """Recall (two-sided Clopper-Pearson interval) of any flaw and each flag, automation and perfect photos cleared."""
    flawed = np.asarray(flawed, dtype=bool)
    sent = np.asarray(score) >= threshold
    n = len(score)
    cleared = int((~sent).sum())
    clean = ~flawed
    low, high = clopper_pearson_interval(cleared, n, confidence)
    plow, phigh = clopper_pearson_interval(int((~sent & clean).sum()), int(clean.sum()), confidence)
    return {"photos": n, "flawed": int(flawed.sum()), "perfect": int(clean.sum()),
            "automation": {"share": cleared / n if n else None, "low": low, "high": high},
            "perfect_cleared": {"share": perfect_cleared(score, flawed, threshold) if clean.any() else None,
                                "low": plow, "high": phigh},
            "any_flaw": _recall(int(sent[flawed].sum()), int(flawed.sum()), confidence),
            "flags": {f: _recall(int(sent[targets[:, j] > 0.5].sum()), int((targets[:, j] > 0.5).sum()), confidence)
                      for j, f in enumerate(flags)}}


def certificate_note(cert: SimultaneousCertificate, rig: str) -> str:
    """What the certificate covers, in one paragraph for inspect.json, the stage's log and the bundle's README."""
    target, conf = cert.target_recall, cert.confidence
    if not cert.certified:
        any_flaw = cert.risks[0]
        return (f"nothing can be cleared: the calibration split has {any_flaw.photos} flawed {rig} photo(s), and "
                f"certifying {target:.0%} recall at {conf:.0%} confidence needs at least {cert.flawed_needed}; "
                "every photo goes to review")
    flags = [r.name for r in cert.risks if r.name != ANY_FLAW]
    covered = ("; and for each of " + ", ".join(flags)) if flags else ""
    return (f"certified at {conf:.0%} confidence, all together: at least {target:.0%} of flawed {rig} photos, "
            f"whatever their flags, go to review{covered}, at least {target:.0%} of the photos carrying it go to "
            f"review (set by {cert.binding}; largest p-value {cert.p_value:.4f} <= {1 - conf:.2f})")


def inspect_report(*, cert: SimultaneousCertificate, rig: str, flags: Sequence[str], offsets: np.ndarray,
                   test_auc: np.ndarray, loss: str, candidates: Mapping[str, dict], best_epoch: int,
                   train_counts: Mapping[str, int],
                   rare: Sequence[RareFlag], calibration: dict, test: dict, method: str,
                   any_flaw_only: dict | None = None) -> dict:
    """inspect.json: the certificate, per-flag recall with intervals on calibration and test, the rare flags.

    ``any_flaw_only``: what the any-flaw certificate alone would allow (its threshold,
    perfect photos cleared), to show what the per-flag guarantees cost.
    """
    certified = {r.name: r for r in cert.risks}
    per_flag = {}
    for f in flags:
        risk = certified.get(f)
        uncert = next((u for u in cert.uncertified if u.name == f), None)
        per_flag[f] = {"train": int(train_counts[f]), "certified": risk is not None,
                       "needed": cert.flawed_needed, "calibration": calibration["flags"][f],
                       "test": test["flags"][f], "test_auc": float(test_auc[flags.index(f)]), **({"limit": risk.limit, "missed": risk.missed,
                                                     "miss_rate_upper": risk.miss_rate_upper,
                                                     "p_value": risk.p_value} if risk else {}),
                       **({"short_by": max(0, uncert.needed - uncert.photos)} if uncert else {})}
    any_risk = cert.risks[0]
    return _finite({
        "rig": rig, "loss": loss, "chosen_by": "share of perfect validation photos cleared at the target",
        "candidates": dict(candidates), "best_epoch": best_epoch,
        "target_recall": cert.target_recall, "confidence": cert.confidence, "method": method,
        "threshold": cert.threshold, "certified": cert.certified, "binding": cert.binding, "p_value": cert.p_value,
        "flags": list(flags), "offsets": [float(c) for c in offsets],
        "any_flaw": {"missed": any_risk.missed, "allowed_misses": any_risk.allowed_misses,
                     "miss_rate_upper": any_risk.miss_rate_upper, "p_value": any_risk.p_value,
                     "calibration": calibration["any_flaw"], "test": test["any_flaw"]},
        "per_flag": per_flag,
        "uncertified": [{"flag": u.name, "photos": u.photos, "needed": u.needed} for u in cert.uncertified],
        "not_modelled": [{"flag": r.name, "train": r.train, "photos": r.photos, "needed": r.needed} for r in rare],
        "calibration": {k: calibration[k] for k in ("photos", "flawed", "perfect", "automation", "perfect_cleared")},
        "test": {k: test[k] for k in ("photos", "flawed", "perfect", "automation", "perfect_cleared")},
        **({"any_flaw_only": any_flaw_only} if any_flaw_only is not None else {}),
        "note": certificate_note(cert, rig), "uncertified_note": uncertified_note(cert.uncertified),
        "not_modelled_note": rare_note(rare)})


def _finite(value: object) -> object:
    """NaN and infinities become null, which JSON and dvc metrics can read."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _cell(r: dict) -> str:
    if not r["photos"]:
        return "-"
    return f"{r['recall']:.3f} [{r['low']:.3f}, {r['high']:.3f}] of {r['photos']}"


def flag_table(report: dict) -> str:
    """metrics/inspect.md: the certificate and the headline, one row per modelled flag, then the flags not modelled."""
    conf = report["confidence"]
    cal, test = report["calibration"], report["test"]
    lines = [f"### Whole-photo triage, {report['rig']} ({report['loss']} loss)", "",
             report["note"] + ".", "",
             f"Perfect photos cleared: calibration {cal['perfect_cleared']['share'] or 0:.1%}, test "
             f"{test['perfect_cleared']['share'] or 0:.1%} [{test['perfect_cleared']['low']:.1%}, "
             f"{test['perfect_cleared']['high']:.1%}]; all photos cleared (test) {test['automation']['share'] or 0:.1%}.",
             *([f"The any-flaw certificate alone (threshold {report['any_flaw_only']['threshold']:.4g}, no per-flag "
                f"guarantee) would clear {report['any_flaw_only']['test']['share'] or 0:.1%} of perfect test photos.",
                ""] if "any_flaw_only" in report else []),
             "", f"| flag | training photos | certified | calibration recall [{conf:.0%} interval] of n "
             f"| test recall [{conf:.0%} interval] of n |", "|---|---:|---|---|---|",
             f"| any flaw | - | {'yes' if report['certified'] else 'no'} | {_cell(report['any_flaw']['calibration'])} "
             f"| {_cell(report['any_flaw']['test'])} |"]
    for flag, row in report["per_flag"].items():
        status = "yes" if row["certified"] else f"no: {row['calibration']['photos']} of {row['needed']} needed"
        lines.append(f"| {flag} | {row['train']} | {status} | {_cell(row['calibration'])} | {_cell(row['test'])} |")
    for rare in report["not_modelled"]:
        lines.append(f"| {rare['flag']} | {rare['train']} | not modelled ({rare['needed']} training photos needed) "
                     "| - | - |")
    for note in (report["uncertified_note"], report["not_modelled_note"]):
        if note:
            lines += ["", note + "."]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ the bundle
NO_FLAG = "no flag"


def inspect_bundle_info(*, rig: str, flags: Sequence[str], offsets: np.ndarray, loss: str, model: ModelParams,
                        best_epoch: int, photo_size: int, max_pixels: int) -> dict:
    """bundle.json of an inspection bundle: the single-task layout (photos, network), its kind, flags and offsets.

    ``classes`` and ``task`` name "no flag" and one class per flag, so the parts of
    the triage command that only read them work unchanged.
    """
    config = {"model": asdict(model), "classes": [NO_FLAG, *flags], "loss": loss,
              "seeds": {"seed-0": {"best_epoch": best_epoch}}}
    task = TaskSpec(default=NO_FLAG, classes={f: [f] for f in flags}, rigs=[rig])
    rule = DecisionRule("argmax", tuple(1.0 / (len(flags) + 1) for _ in range(len(flags) + 1)))
    info = bundle_info(strategy=f"inspection model ({loss} loss)", seed="seed-0", config=config, rule=rule,
                       task_name=KIND, task=task, photo_size=photo_size, max_pixels=max_pixels)
    info["kind"] = KIND
    info["flags"] = list(flags)
    info["network"]["output"] = f"logits, shape (N, {len(flags)}): one per flag, in the order of flags"
    info["decision"] = {"rule": KIND, "offsets": [float(c) for c in offsets],
                        "formula": "p_j = sigmoid(logits_j + offsets_j); any-flaw score = 1 - prod_j (1 - p_j); "
                                   "clear when it is below triage.json threshold"}
    return info


def is_inspection(info: Mapping) -> bool:
    return info.get("kind") == KIND


@dataclass(frozen=True)
class InspectRule:
    """The whole-photo rule of a bundle: per photo, its any-flaw score and the flags that send it to review."""

    flags: tuple[str, ...]
    offsets: np.ndarray
    threshold: float

    @classmethod
    def of(cls, info: Mapping, certificate: Mapping) -> InspectRule:
        return cls(tuple(info["flags"]), np.asarray(info["decision"]["offsets"], dtype=np.float64),
                   float(certificate["threshold"]))

    def decide(self, logits: np.ndarray) -> tuple[np.ndarray, list[list[str]]]:
        return any_flaw_score(logits, self.offsets), review_flags(logits, self.offsets, self.threshold, self.flags)

    def unmodelled(self, labelled: Sequence[str]) -> list[str]:
        """The labelled flag names this rule has no output for (Table 1 flags it does not model, unknown names)."""
        return [name for name in labelled if name not in self.flags]


def inspect_readme(info: dict, report: dict) -> str:
    """The inspection bundle's README.md: the guarantee, its limits, and the rule applied by hand."""
    size = info["photos"]["size"]
    test = report["test"]
    notes = "\n\n".join(n + "." for n in (report["uncertified_note"], report["not_modelled_note"]) if n)
    return f"""# Whole-photo triage bundle: {info['strategy']}, {report['rig']} photos

Run it on new photos (files, folders, or an export with labels.csv):

    python -m weldnet.triage PHOTOS... --bundle <this folder> --out triage.csv

A photo is cleared only when its any-flaw score, 1 - prod_j (1 - p_j) over the {len(report['flags'])} modelled
flags, is below {report['threshold']:.6g}; otherwise it goes to review, and its row names the flags that sent it
there. A photo that cannot be read, of another rig, or labelled in labels.csv with a flag this bundle has no
output for, goes to review as well.

**Certificate:** {report['note']}. Method: {report['method']}.

{notes}

On the test split: {test['perfect_cleared']['share'] or 0:.1%} of perfect photos cleared
[{test['perfect_cleared']['low']:.1%}, {test['perfect_cleared']['high']:.1%}], any-flaw recall
{(report['any_flaw']['test']['recall'] or 0):.3f} [{report['any_flaw']['test']['low']:.3f}, \
{report['any_flaw']['test']['high']:.3f}].

**Without weldnet:** decode and resize as bundle.json "photos" says, then

    info, cert = json.load(open("bundle.json")), json.load(open("triage.json"))
    net = torch.export.load("network.pt2").module()
    logits = net(torch.from_numpy(photo_uint8_{size}x{size}x3)[None]).double().numpy()
    p = 1 / (1 + np.exp(-(logits + np.array(info["decision"]["offsets"]))))
    clear = bool(1 - np.prod(1 - p) < cert["threshold"])
"""


UNMODELLED = "unmodelled_flag"


def photo_decision(score: float, over: Sequence[str], unmodelled: Sequence[str],
                   threshold: float) -> tuple[bool, str, str | None]:
    """(cleared, reason, category) of one readable photo of the bundle's rig.

    A photo labelled with a flag the bundle has no output for goes to review
    whatever its score (category ``unmodelled_flag``); otherwise it is cleared
    below the certified threshold, and sent to review naming its flags at or above it.
    """
    if unmodelled:
        names = ", ".join(f"'{n}'" for n in unmodelled)
        return False, (f"labels.csv gives it {names}, which the bundle has no output for; reviewed by hand"), UNMODELLED
    if threshold <= 0.0:
        return False, "the bundle clears no photo (see its triage.json)", None
    if score < threshold:
        return True, f"every modelled flag is below the certified threshold (any-flaw score < {threshold:.6g})", None
    return False, f"flagged: {'; '.join(over)} (any-flaw score at or above {threshold:.6g})", None
