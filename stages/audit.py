"""Stage audit: are the labels of each task, on each rig, too noisy to learn from?

Reads the manifest, the export's photos and params ``audit`` and ``tasks``; writes
metrics/audit.json (per task and rig: majority share, mislabelled share with its
95% interval, lazy-bound verdict), metrics/label_stats.json (Table 1 per rig),
metrics/cross_rig.json (Bluebox model vs Redbox records), the review sheet, the
suspects table and the flag pair counts (data/audit/) and the contact sheets (plots/audit/).
Never reads data/truth.csv.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from weldnet.audit.estimate import draw_review_sample, flag_matrix, flag_pairs, label_stats, review_counts
from weldnet.audit.run import audit_task, cross_rig_check, fit_rig_models
from weldnet.audit.sheets import read_review_sheet, summary_lines, write_review_sheets, write_suspects
from weldnet.core.config import run_stage
from weldnet.core.files import write_csv, write_json
from weldnet.core.flags import RIGS
from weldnet.core.params import load_checked_params
from weldnet.core.paths import remove_output
from weldnet.photos.decode import load_thumbnails
from weldnet.photos.manifest import read_manifest
from weldnet.train.device import resolve_device


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
    with tempfile.TemporaryDirectory(prefix="weldnet-audit-") as scratch:
        run_audit(args, Path(scratch))


def run_audit(args: argparse.Namespace, scratch: Path) -> None:
    params = load_checked_params()
    cfg, tasks = params.audit, params.tasks
    manifest = read_manifest(args.manifest)
    sheet = read_review_sheet(Path(cfg.review_sheet), manifest) if cfg.review_sheet else None
    started = time.time()
    device = resolve_device(params.device)
    if device.type == "cpu":
        # One torch thread per process: the folds train in audit.workers processes instead,
        # which is faster on a small CPU and does not collapse when other jobs share it.
        torch.set_num_threads(1)
    for folder in (args.out, args.plots):
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("*.png" if folder == args.plots else "*.csv"):
            remove_output(old, within=folder)

    # thumbnails stay in RAM while they fit loader.cache_mb, else in a memory-mapped file (same numbers)
    in_ram = len(manifest) * cfg.thumb_size ** 2 * 3 <= params.loader.cache_mb * 2**20
    stats, pairs, samples, rows_by_rig, flags_by_rig, thumbs_by_rig = {}, [], {}, {}, {}, {}
    for r, rig in enumerate(RIGS):
        rows = rows_by_rig[rig] = manifest[manifest["rig"] == rig].reset_index(drop=True)
        flags = flags_by_rig[rig] = flag_matrix(rows)
        stats[rig] = label_stats(flags, rig)
        pairs.append(flag_pairs(flags, rig))
        flagless = rows.loc[flags.sum(axis=1).to_numpy() == 0, "image"].tolist()
        samples[rig] = draw_review_sample(flagless, cfg.review_size, np.random.default_rng([cfg.seed, r]))
        thumbs_by_rig[rig] = load_thumbnails(args.export, rows, cfg.thumb_size, cfg.workers,
                                             None if in_ram else scratch / f"{rig}.npy",
                                             desc=f"audit thumbnails {rig}")
    write_review_sheets(args.export, manifest, samples, cfg.sheet_thumb, args.out, args.plots)
    loaded = time.time()
    print(f"audit: {len(manifest)} photos read ({loaded - started:.0f} s)")

    rig_models = fit_rig_models(thumbs_by_rig, flags_by_rig, cfg, np.random.default_rng(cfg.seed),
                                transfer={"bluebox": "redbox"}, device=device)
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

    write_suspects(args.export, manifest, results, cfg.suspects_sheet, cfg.sheet_thumb, args.out, args.plots)
    write_csv(args.out / "flag_pairs.csv", pd.concat(pairs, ignore_index=True))

    audit = {name: {rig: results[name, rig].as_dict() for rig in RIGS} for name in tasks}
    outputs = [(args.metrics, audit), (args.stats, stats)]
    if args.cross_rig is not None:
        outputs.append((args.cross_rig, cross))
    for path, payload in outputs:
        write_json(path, payload)
    for line in summary_lines(results.values(), cross):
        print(f"audit: {line}")
    print(f"audit: done in {time.time() - started:.0f} s")


if __name__ == "__main__":
    run_stage(main)
