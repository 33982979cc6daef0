"""Stage imbalance: build the selected task's classes and a seeded, stratified train/val/test split.

The imbalance ratio is imposed on the training split only, by removing
non-default (minority) cases as in the report's section 6; validation and test
keep the data's natural class shares.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from stages.validate import load_checked_params
from weldnet.config import DataError, ParamError, build, check_choice, check_range, run_stage, section
from weldnet.tasks import REMOVED, SPLITS, TaskSpec, assign_classes, impose_imbalance, stratified_split


@dataclass(frozen=True)
class ImbalanceParams:
    seed: int = 0
    split: dict[str, float] = field(default_factory=lambda: {"train": 0.6, "val": 0.2, "test": 0.2})
    ratio: float | None = 0.98

    def validate(self, where: str) -> None:
        if sorted(self.split) != sorted(SPLITS):
            raise ParamError(f"{where}.split must have exactly the keys {', '.join(SPLITS)}; got {', '.join(self.split)}")
        for name, share in self.split.items():
            check_range(share, f"{where}.split.{name}", 0.0, 1.0, low_open=True)
        if abs(sum(self.split.values()) - 1.0) > 1e-6:
            raise ParamError(f"{where}.split shares sum to {sum(self.split.values()):g}; make them sum to 1")
        if self.ratio is not None:
            check_range(self.ratio, f"{where}.ratio", 0.0, 1.0, low_open=True, high_open=True)


def selected_task(params: dict) -> tuple[str, TaskSpec]:
    tasks = section(params, "tasks")
    if not isinstance(tasks, dict) or not tasks:
        raise ParamError("tasks must map task names to {default, classes, rigs}; see README, Tasks")
    name = section(params, "task")
    check_choice(name, tasks, "task")
    return name, build(TaskSpec, tasks[name], f"tasks.{name}")


def split_table(manifest: pd.DataFrame, task: TaskSpec, spec: ImbalanceParams) -> pd.DataFrame:
    rows = manifest[manifest["rig"].isin(task.rigs)].reset_index(drop=True)
    labels = assign_classes(rows, task)
    rng = np.random.default_rng(spec.seed)
    split = stratified_split(labels, [spec.split[s] for s in SPLITS], rng)
    split = impose_imbalance(labels, split, spec.ratio, rng)
    names = np.asarray(task.class_names, dtype=object)
    return pd.DataFrame({"image": rows["image"], "rig": rows["rig"], "label": labels,
                         "class": names[labels], "split": split})


def class_counts(table: pd.DataFrame, class_names: list[str]) -> dict[str, dict[str, int]]:
    counts = {}
    for split in (*SPLITS, REMOVED):
        part = table[table["split"] == split]
        counts[split] = {name: int((part["class"] == name).sum()) for name in class_names}
    return counts


def check_every_class_present(counts: dict[str, dict[str, int]], task_name: str, ratio: float | None) -> None:
    for split in SPLITS:
        empty = [name for name, n in counts[split].items() if n == 0]
        if empty:
            hint = "raise imbalance.ratio, " if split == "train" and ratio is not None else ""
            raise ParamError(f"task '{task_name}': class '{empty[0]}' has no {split} case after the split; "
                             f"{hint}grow the data set or merge classes in tasks.{task_name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--manifest", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path, help="split table (CSV)")
    parser.add_argument("--metrics", required=True, type=Path, help="class counts per split (JSON)")
    args = parser.parse_args()

    params = load_checked_params()
    task_name, task = selected_task(params)
    spec = build(ImbalanceParams, params.get("imbalance"), "imbalance")

    manifest = pd.read_csv(args.manifest)
    if not manifest["rig"].isin(task.rigs).any():
        raise DataError(f"the manifest has no photo from rig(s) {', '.join(task.rigs)} used by task '{task_name}'")
    table = split_table(manifest, task, spec)
    counts = class_counts(table, task.class_names)
    check_every_class_present(counts, task_name, spec.ratio)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False)
    train = counts["train"]
    summary = {"task": task_name, "classes": task.class_names, "counts": counts,
               "train_majority_share": train[task.default] / max(sum(train.values()), 1)}
    args.metrics.parent.mkdir(parents=True, exist_ok=True)
    args.metrics.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"task {task_name}: " + "; ".join(f"{s} {counts[s]}" for s in (*SPLITS, REMOVED)))


if __name__ == "__main__":
    run_stage(main)
