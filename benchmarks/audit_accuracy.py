"""How close is the audit's automatic estimate to the truth? Scored on generated photos and on real ones.

    python -m benchmarks.audit_accuracy                  # both data sets, noise 0, 2, 5, 10, 20 %
    python -m benchmarks.audit_accuracy --quick          # smoke run: two levels, few photos, short training
    python -m benchmarks.audit_accuracy --data standin --noise 0.1 --set epochs=10
    python -m benchmarks.audit_accuracy --json docs/audit_accuracy.json   # the docs' table is generated from it

Noise level: the share of flawed photos recorded with no flag at all (params
``generate.label_noise``, report section 5.2.5). Data sets:

* ``generated``: a generated export of ``--size`` Redbox photos, rendered once and
  ingested with the ingest library; at each level the labels are those the
  generator writes for it (weldnet.synth.flags.sample_labels: same seed, same photos and
  true flags, and the photos hidden at 5% are also hidden at 10%);
* ``standin``: real images, sklearn's scanned handwritten digits
  (weldnet.synth.digits): eights play No Clamp Used (8% of the photos), nines Photo
  Does Not Show Enough Of Clamps (4%), the other digits flagless photos (88%), upscaled
  to the audit's thumbnails; the noise is drawn the generator's way.

At each level the audit model is cross-validated (AuditParams defaults, or --set) and
every task estimated as the audit stage does (weldnet.audit.run.audit_task), then
scored:

* truth: share of photos whose recorded class differs from the class of their true flags;
* estimate [ci_low, ci_high]: the automatic estimate and its 95% bootstrap interval;
  covered: the interval contains the truth; within: |estimate - truth| is at most
  max(1.5 points, 30% of the truth);
* issues, joint: cleanlab's label-issue share and 1 - trace of its calibrated joint,
  for comparison; auc: worst-class out-of-fold AUC against the recorded classes;
  precision / recall of the suspects list against the truly mislabelled photos.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml
from sklearn.datasets import load_digits

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run as a script from anywhere

from weldnet.audit.estimate import flag_matrix, true_mislabelled
from weldnet.audit.run import RigModel, audit_task, fit_rig_models
from weldnet.core.config import build
from weldnet.core.flags import FLAGS
from weldnet.core.params import AuditParams, GenerateSpec, RigCounts, RigShares, TaskSpec
from weldnet.photos.decode import load_thumbnails
from weldnet.photos.files import read_photos
from weldnet.photos.images import PhotoInfo
from weldnet.photos.ingest import build_manifest, check_rows, decode_labels, parse_label_table
from weldnet.scoring.bench import audit_accuracy_table
from weldnet.synth.digits import FLAG_SHARES, draw_photos, recorded_flags, true_flags, upscale
from weldnet.synth.export import generate
from weldnet.synth.flags import rig_flag_model, sample_labels

CLAMP = TaskSpec("clamp_detected", {"no_clamp": ["No Clamp Used"]})
CLAMP_3WAY = TaskSpec("clamp_detected", {
    "no_clamp": ["No Clamp Used"], "not_enough_of_clamps": ["Photo Does Not Show Enough Of Clamps"]})
GROUND_SHEET = TaskSpec("ground_sheet", {"no_ground_sheet": ["No Ground Sheet"]})
TASKS = {
    "generated": {"clamp_detection": CLAMP, "clamp_detection_3way": CLAMP_3WAY, "ground_sheet": GROUND_SHEET},
    "standin": {"clamp_detection": CLAMP, "clamp_detection_3way": CLAMP_3WAY},
}
RIG = "redbox"
LEVELS = [0.0, 0.02, 0.05, 0.10, 0.20]
TARGET_POINTS, TARGET_SHARE = 0.015, 0.30   # within max(1.5 points, 30% of the truth)


@dataclasses.dataclass
class Photos:
    """One data set: thumbnails, names, and a function from noise level to (recorded, true) flag tables."""

    thumbs: np.ndarray
    images: list[str]
    flags_at: Callable[[float], tuple[pd.DataFrame, pd.DataFrame]]


def ingest(export: Path) -> pd.DataFrame:
    """The manifest of an export, built with the ingest library as the ingest stage does."""
    entries, _ = check_rows(parse_label_table(decode_labels((export / "labels.csv").read_bytes())))
    results = read_photos(export, entries, max_pixels=89_478_485, workers=2)
    photos = {e.image: r for e, r in zip(entries, results) if isinstance(r, PhotoInfo)}
    return build_manifest(entries, photos)


def generated_photos(size: int, seed: int, cfg: AuditParams, workdir: Path) -> Photos:
    """A generated Redbox export, rendered and ingested once; labels per level from the generator's draws."""
    export, truth = workdir / f"export-{seed}-{size}", workdir / f"truth-{seed}-{size}.csv"
    if not (export / "labels.csv").is_file():
        generate(GenerateSpec(seed=seed, size=RigCounts(redbox=size, bluebox=0),
                              label_noise=RigShares(redbox=0.0, bluebox=0.0)), export, truth)
    manifest = ingest(export)
    rows = manifest[manifest["rig"] == RIG].reset_index(drop=True)
    order = rows["image"].str.extract(r"_(\d+)\.jpg$")[0].astype(int).to_numpy()
    model = rig_flag_model(RIG)

    def flags_at(noise: float) -> tuple[pd.DataFrame, pd.DataFrame]:
        true, hidden = sample_labels(model, seed, RIG, size, noise)
        true, hidden = true[order], hidden[order]
        recorded = np.where(hidden[:, None], False, true)
        return (pd.DataFrame(recorded.astype(np.int64), columns=list(FLAGS)),
                pd.DataFrame(true.astype(np.int64), columns=list(FLAGS)))

    if not flag_matrix(rows).equals(flags_at(0.0)[0]):
        raise RuntimeError("the generator's labels differ from the ingested export's; regenerate the work dir")
    return Photos(load_thumbnails(export, rows, cfg.thumb_size, cfg.workers), rows["image"].tolist(), flags_at)


def standin_photos(seed: int, cfg: AuditParams, limit: int | None) -> Photos:
    """The handwritten-digit stand-in (weldnet.synth.digits), one uniform draw per photo for the noise."""
    digits = load_digits()
    rng = np.random.default_rng([seed, 0])
    rows = draw_photos(digits.target, FLAG_SHARES, rng)[:limit]
    true = true_flags(digits.target[rows])
    uniforms = rng.random(len(rows))
    return Photos(upscale(digits.images[rows], cfg.thumb_size, levels=16.0), [f"digit_{i}" for i in rows],
                  lambda noise: (recorded_flags(true, uniforms, noise), true))


def score_level(data: str, photos: Photos, noise: float, cfg: AuditParams) -> list[dict]:
    recorded, true = photos.flags_at(noise)
    started = time.time()
    model: RigModel = fit_rig_models({RIG: photos.thumbs}, {RIG: recorded}, cfg, np.random.default_rng(cfg.seed))[RIG]
    seconds = time.time() - started
    rng = np.random.default_rng([cfg.seed, 1])
    out = []
    for name, task in TASKS[data].items():
        result = audit_task(name, task, RIG, photos.images, recorded, model, cfg, None, rng)
        wrong = true_mislabelled(recorded, true, task)
        truth = float(wrong.mean())
        noisy = {image for image, w in zip(photos.images, wrong) if w}
        listed = set(result.suspects["image"])
        rate = result.rate
        estimated = rate.estimate is not None
        covered = estimated and rate.ci_low is not None and rate.ci_low <= truth <= rate.ci_high
        out.append({
            "data": data, "noise": noise, "task": name, "truth": truth, "estimate": rate.estimate,
            "ci_low": rate.ci_low, "ci_high": rate.ci_high, "covered": "yes" if covered else "no",
            "within": "yes" if estimated and abs(rate.estimate - truth) <= max(TARGET_POINTS, TARGET_SHARE * truth)
            else "no",
            "issues": result.noise.issues_estimate if result.noise else None,
            "joint": result.noise.joint_estimate if result.noise else None,
            "auc": result.model_auc, "suspects": len(listed),
            "precision": len(listed & noisy) / len(listed) if listed else float("nan"),
            "recall": len(listed & noisy) / len(noisy) if noisy else float("nan"),
            "fit_s": seconds, "note": result.note,
        })
    return out


def show(table: pd.DataFrame) -> str:
    return table.drop(columns=["note"]).to_string(index=False, float_format=lambda v: f"{v:.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", choices=list(TASKS), default=list(TASKS))
    parser.add_argument("--noise", type=float, nargs="+", help=f"noise levels (default {LEVELS})")
    parser.add_argument("--size", type=int, help="generated Redbox photos (default 3000; --quick 800)")
    parser.add_argument("--standin-size", type=int, help="stand-in photos (default all 1640; --quick 800)")
    parser.add_argument("--seed", type=int, default=2014, help="generator and stand-in seed")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override an audit param, e.g. epochs=20 (YAML value)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: levels 0 and 10%%, 800 + 800 photos, folds=2 epochs=6 bootstrap=40")
    parser.add_argument("--workdir", type=Path, help="keep the generated export here and reuse it (default: a temp dir)")
    parser.add_argument("--json", type=Path, help="also write every row here (docs/audit_accuracy.json feeds the docs)")
    args = parser.parse_args()
    overrides = {"folds": 2, "epochs": 6, "bootstrap": 40} if args.quick else {}
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key] = yaml.safe_load(value)
    cfg = build(AuditParams, overrides, "audit")
    levels = args.noise or ([0.0, 0.10] if args.quick else LEVELS)
    size = args.size or (800 if args.quick else 3000)
    standin_size = args.standin_size or (800 if args.quick else None)
    torch.set_num_threads(1)   # the folds train in cfg.workers processes, as in the audit stage
    print(f"audit params: {dataclasses.asdict(cfg)}")
    started = time.time()
    rows = []
    with tempfile.TemporaryDirectory(prefix="audit-bench-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        for data in args.data:
            photos = (generated_photos(size, args.seed, cfg, workdir) if data == "generated"
                      else standin_photos(args.seed, cfg, standin_size))
            print(f"\n{data}: {len(photos.images)} photos ({time.time() - started:.0f} s)", flush=True)
            for noise in levels:
                rows += score_level(data, photos, noise, cfg)
                print(show(pd.DataFrame(rows[-len(TASKS[data]):])), flush=True)
    table = pd.DataFrame(rows)
    print("\nAll levels (truth, estimate and interval as shares of the photos):")
    print(show(table))
    notes = table.loc[table["note"] != "", ["data", "noise", "task", "note"]]
    for _, row in notes.iterrows():
        print(f"note: {row['data']} {row['noise']:g} {row['task']}: {row['note']}")
    print(f"\nTarget: estimate within max({TARGET_POINTS:.1%}, {TARGET_SHARE:.0%} of the truth) at every level, "
          "interval covering the truth:")
    for (data, task), group in table.groupby(["data", "task"], sort=False):
        within, covered = (group["within"] == "yes").sum(), (group["covered"] == "yes").sum()
        errors = (group["estimate"].astype(float) - group["truth"]).abs()
        worst = f"{errors.max():.2%}" if errors.notna().any() else "n/a"
        verdict = "met" if within == covered == len(group) else "NOT met"
        print(f"  {data:9s} {task:22s} within {within}/{len(group)}, covered {covered}/{len(group)}, "
              f"worst error {worst}: {verdict}")
    print("\n" + audit_accuracy_table(rows))
    if args.json:
        clean = [{k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()} for row in rows]
        args.json.write_text(json.dumps(clean, indent=1) + "\n")
    print(f"done in {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
