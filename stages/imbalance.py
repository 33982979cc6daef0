"""Stage imbalance: build the selected task's classes and a seeded, stratified train/val/test split.

The imbalance ratio is imposed on the training split only, by removing
non-default (minority) cases as in the report's section 6; validation and test
keep the data's natural class shares. ``--natural`` also writes the same split
with no imbalance imposed (the same validation and test photos, every training
photo kept): the ceiling strategies train on it.
"""
from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from weldnet.core.config import DataError, run_stage
from weldnet.core.files import write_csv, write_json
from weldnet.core.params import SPLITS, load_checked_params
from weldnet.photos.manifest import read_manifest
from weldnet.photos.tasks import REMOVED, check_every_class_present, class_counts, split_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--manifest", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path, help="split table (CSV)")
    parser.add_argument("--metrics", required=True, type=Path, help="class counts per split (JSON)")
    parser.add_argument("--natural", type=Path, help="the same split at the data's own imbalance (CSV)")
    args = parser.parse_args()

    params = load_checked_params()
    task_name, task, spec = params.task, params.selected_task, params.imbalance

    manifest = read_manifest(args.manifest)
    if not manifest["rig"].isin(task.rigs).any():
        raise DataError(f"the manifest has no photo from rig(s) {', '.join(task.rigs)} used by task '{task_name}'")
    table = split_table(manifest, task, spec)
    counts = class_counts(table, task.class_names)
    check_every_class_present(counts, task_name, spec.ratio)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_csv(args.out, table)
    if args.natural is not None:
        natural = split_table(manifest, task, replace(spec, ratio=None))
        natural_counts = class_counts(natural, task.class_names)
        check_every_class_present(natural_counts, task_name, None)
        # the same photos everywhere, the removed ones back in training: one test set for both
        if not natural["split"].equals(table["split"].replace(REMOVED, "train")):
            raise DataError("the natural split does not keep the same validation and test photos; report this")
        args.natural.parent.mkdir(parents=True, exist_ok=True)
        write_csv(args.natural, natural)
    train = counts["train"]
    summary = {"task": task_name, "classes": task.class_names, "counts": counts,
               "train_majority_share": train[task.default] / max(sum(train.values()), 1)}
    args.metrics.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.metrics, summary)
    print(f"task {task_name}: " + "; ".join(f"{s} {counts[s]}" for s in (*SPLITS, REMOVED)))


if __name__ == "__main__":
    run_stage(main)
