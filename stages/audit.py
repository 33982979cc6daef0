"""Stage audit: are the labels of each task, on each rig, too noisy to learn from?

Reads the manifest, the export's photos and params ``audit`` and ``tasks``; writes
metrics/audit.json (per task and rig: majority share, mislabelled share with its
95% interval, lazy-bound verdict), metrics/label_stats.json (Table 1 per rig),
metrics/cross_rig.json (Bluebox model vs Redbox records), the review sheet and the
suspects table (data/audit/) and their contact sheets (plots/audit/).
Never reads data/truth.csv.
"""
from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterable
from functools import partial
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from stages.validate import load_checked_params
from weldnet.audit import AuditParams, contact_sheet, draw_review_sample, flag_matrix, label_stats, review_counts
from weldnet.audit_run import TaskAudit, audit_task, cross_rig_check, fit_rig_models
from weldnet.config import DataError, ParamError, build, run_stage, section
from weldnet.flags import RIGS
from weldnet.images import ImageRejected, load_resized, open_normalised
from weldnet.tasks import TaskSpec

REVIEW_COLUMNS = ("rig", "number", "image", "verdict")
SUSPECT_COLUMNS = ("task", "rig", "rank", "image", "recorded_class", "recorded_prob",
                   "suggested_class", "suggested_prob")


def read_manifest(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"{path} not found; run the ingest stage first (dvc repro ingest)")
    manifest = pd.read_csv(path, dtype={"image": str, "rig": str, "sha256": str}, keep_default_na=False)
    for column in ("image", "rig", "width", "height"):
        if column not in manifest.columns:
            raise DataError(f"{path} lacks column '{column}'; re-run the ingest stage")
    flag_matrix(manifest)
    return manifest


def _thumb(job: tuple[str, int], size: int) -> np.ndarray:
    path, max_pixels = job
    return load_resized(path, size, max_pixels)


def load_thumbnails(export: Path, rows: pd.DataFrame, size: int, workers: int) -> np.ndarray:
    """uint8 (n, size, size, 3) thumbnails of the manifest rows, decoded in ``workers`` processes."""
    jobs = [(str(export / image), int(w) * int(h) + 1) for image, w, h in
            zip(rows["image"], rows["width"], rows["height"])]
    if not jobs:
        return np.zeros((0, size, size, 3), dtype=np.uint8)
    try:
        if workers == 1:
            thumbs = [_thumb(job, size) for job in jobs]
        else:
            with get_context("fork").Pool(workers) as pool:
                thumbs = pool.map(partial(_thumb, size=size), jobs, chunksize=64)
    except ImageRejected as exc:
        raise DataError(f"a photo of the manifest cannot be read any more ({exc}); re-run the ingest stage") from None
    return np.stack(thumbs)


def sheet_thumbnail(path: Path, longest: int) -> np.ndarray:
    """A photo shrunk (aspect kept) so that its longest side is ``longest``, for a contact sheet."""
    im = open_normalised(path, max_pixels=1 << 40, draft_size=(longest, longest))
    im.thumbnail((longest, longest))
    return np.asarray(im, dtype=np.uint8)


def save_sheet(export: Path, images: list[str], captions: list[str], longest: int, out: Path) -> None:
    thumbs = [sheet_thumbnail(export / image, longest) for image in images]
    Image.fromarray(contact_sheet(thumbs, captions, columns=10)).save(out, optimize=True)


def read_review_sheet(path: Path, manifest: pd.DataFrame) -> pd.DataFrame:
    """The filled-in review sheet, checked against the manifest: its photos must be flagless ones."""
    if not path.is_file():
        raise ParamError(f"audit.review_sheet = {str(path)!r} not found; give the filled-in copy of "
                         "data/audit/review_sheet.csv, or null")
    sheet = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in ("rig", "image", "verdict") if c not in sheet.columns]
    if missing:
        raise DataError(f"review sheet {path} lacks column '{missing[0]}'; fill in the verdict column "
                        "of data/audit/review_sheet.csv without renaming columns")
    flags = flag_matrix(manifest)
    flagless = set(manifest.loc[flags.sum(axis=1).to_numpy() == 0, "image"])
    stray = [image for image in sheet["image"] if image not in flagless]
    if stray:
        raise DataError(f"review sheet {path}: photo '{stray[0]}' is not a flagless photo of the current "
                        "manifest; the sheet was drawn from other data, review the new data/audit/review_sheet.csv")
    return sheet


def write_review_sheets(export: Path, samples: dict[str, list[str]], longest: int, out: Path, plots: Path) -> None:
    """review_sheet.csv (empty verdicts) and one numbered contact sheet per rig."""
    rows = [(rig, i, image, "") for rig, sample in samples.items() for i, image in enumerate(sample, start=1)]
    pd.DataFrame(rows, columns=list(REVIEW_COLUMNS)).to_csv(out / "review_sheet.csv", index=False)
    for rig, sample in samples.items():
        if sample:
            captions = [f"#{i} {Path(image).stem}" for i, image in enumerate(sample, start=1)]
            save_sheet(export, sample, captions, longest, plots / f"review_{rig}.png")


def write_suspects(export: Path, results: dict[tuple[str, str], TaskAudit], shown: int, longest: int,
                   out: Path, plots: Path) -> None:
    """suspects.csv (every task and rig) and a contact sheet of the top ``shown`` of each."""
    tables = []
    for (name, rig), result in results.items():
        table = result.suspects.assign(task=name, rig=rig)[list(SUSPECT_COLUMNS)]
        tables.append(table)
        top = table.head(shown)
        if len(top):
            captions = [f"#{k} {Path(i).stem}\n{r} > {c}" for k, i, r, c in
                        zip(top["rank"], top["image"], top["recorded_class"], top["suggested_class"])]
            save_sheet(export, top["image"].tolist(), captions, longest, plots / f"suspects_{name}_{rig}.png")
    pd.concat(tables, ignore_index=True).to_csv(out / "suspects.csv", index=False)


def summary_lines(results: Iterable[TaskAudit], cross: dict[str, dict[str, float]]) -> list[str]:
    """One line per task and rig (estimate, bound, verdict) and per cross-rig flag."""
    lines = []
    for result in results:
        rate = result.rate
        shown = "n/a" if rate.estimate is None else f"{rate.estimate:.1%}"
        if rate.ci_low is not None:
            shown += f" [{rate.ci_low:.1%}, {rate.ci_high:.1%}]"
        verdict = {True: "learnable", False: "UNLEARNABLE", None: "unknown"}[result.verdict.learnable]
        straddle = " (the interval straddles the bound)" if result.verdict.straddles_bound else ""
        note = f" - {result.note}" if result.note else ""
        lines.append(f"{result.task} on {result.rig}: mislabelled {shown} by {rate.method}, "
                     f"bound 1-k = {result.verdict.bound:.1%}: {verdict}{straddle}{note}")
    for flag, row in cross.items():
        lines.append(f"Bluebox model vs Redbox records, {flag}: disagreement {row['disagreement']:.1%} "
                     f"(missing {row['missing']:.1%}, extra {row['extra']:.1%}; "
                     f"on Bluebox itself {row['baseline_disagreement']:.1%})")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--export", type=Path, required=True)
    parser.add_argument("--metrics", type=Path, required=True, help="metrics/audit.json")
    parser.add_argument("--stats", type=Path, required=True, help="metrics/label_stats.json")
    parser.add_argument("--cross-rig", type=Path, help="metrics/cross_rig.json (omitted: printed only)")
    parser.add_argument("--out", type=Path, required=True, help="data/audit")
    parser.add_argument("--plots", type=Path, required=True, help="plots/audit")
    args = parser.parse_args(argv)

    params = load_checked_params()
    cfg = build(AuditParams, section(params, "audit"), "audit")
    task_section = section(params, "tasks")
    if not isinstance(task_section, dict) or not task_section:
        raise ParamError("tasks must map task names to task definitions; add at least one task")
    tasks = {name: build(TaskSpec, spec, f"tasks.{name}") for name, spec in task_section.items()}
    manifest = read_manifest(args.manifest)
    sheet = read_review_sheet(Path(cfg.review_sheet), manifest) if cfg.review_sheet else None
    started = time.time()
    # One torch thread per process: the folds train in audit.workers processes instead,
    # which is faster on a small CPU and does not collapse when other jobs share it.
    torch.set_num_threads(1)
    for folder in (args.out, args.plots):
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("*.png" if folder == args.plots else "*.csv"):
            old.unlink()

    stats, samples, rows_by_rig, flags_by_rig, thumbs_by_rig = {}, {}, {}, {}, {}
    for r, rig in enumerate(RIGS):
        rows = rows_by_rig[rig] = manifest[manifest["rig"] == rig].reset_index(drop=True)
        flags = flags_by_rig[rig] = flag_matrix(rows)
        stats[rig] = label_stats(flags, rig)
        flagless = rows.loc[flags.sum(axis=1).to_numpy() == 0, "image"].tolist()
        samples[rig] = draw_review_sample(flagless, cfg.review_size, np.random.default_rng([cfg.seed, r]))
        thumbs_by_rig[rig] = load_thumbnails(args.export, rows, cfg.thumb_size, cfg.workers)
    write_review_sheets(args.export, samples, cfg.sheet_thumb, args.out, args.plots)
    loaded = time.time()
    print(f"audit: {len(manifest)} photos read ({loaded - started:.0f} s)")

    rig_models = fit_rig_models(thumbs_by_rig, flags_by_rig, cfg, np.random.default_rng(cfg.seed),
                                transfer={"bluebox": "redbox"})
    fitted = time.time()
    print(f"audit: {cfg.folds}-fold cross-validation of the audit model on "
          + ", ".join(f"{rig} ({len(m.flag_names)} flags)" for rig, m in rig_models.items())
          + f" ({fitted - loaded:.0f} s)")
    rng = np.random.default_rng([cfg.seed, 1])
    results = {}
    for rig in RIGS:
        counts_of = {}
        if sheet is not None:
            verdicts = sheet.loc[sheet["rig"] == rig, "verdict"].tolist()
            counts_of = {name: review_counts(verdicts, task) for name, task in tasks.items()}
        for name, task in tasks.items():
            results[name, rig] = audit_task(name, task, rig, rows_by_rig[rig]["image"].tolist(), flags_by_rig[rig],
                                            rig_models[rig], cfg, counts_of.get(name), rng)
    cross = cross_rig_check(rig_models["bluebox"], "redbox", flags_by_rig["redbox"], cfg)
    print(f"audit: estimates ({time.time() - fitted:.0f} s)")

    write_suspects(args.export, results, cfg.suspects_sheet, cfg.sheet_thumb, args.out, args.plots)

    audit = {name: {rig: results[name, rig].as_dict() for rig in RIGS} for name in tasks}
    outputs = [(args.metrics, audit), (args.stats, stats)]
    if args.cross_rig is not None:
        outputs.append((args.cross_rig, cross))
    for path, payload in outputs:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    for line in summary_lines(results.values(), cross):
        print(f"audit: {line}")
    print(f"audit: done in {time.time() - started:.0f} s")


if __name__ == "__main__":
    run_stage(main)
