"""Stage bundle: package one strategy for the inspector, with a threshold certified on validation.

The strategy is ``triage.strategy``, or the study's best by validation per-class
accuracy; its seed is ``triage.seed``, or the best of its seeds by the same
measure; its decision rule is the one evaluate fitted on validation for that seed.
All three come from the evaluate stage's validation record (``--validation``), never
from test. Writes the bundle folder (weldnet.triage.bundle: exported network,
decision rule, photo normalisation, classes, certified threshold) and the
certificate as a metrics file. The export is checked against the live model on the
validation photos before anything is written, and the threshold is certified on the
exported network's own validation scores: what the inspector will run. It runs on
the CPU whatever `device` says: the exported program must load anywhere, and
scoring the validation and test photos takes seconds.
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import torch

from weldnet.core.config import DataError, run_stage
from weldnet.core.files import write_json
from weldnet.core.metrics import best_by_validation
from weldnet.core.params import load_checked_params
from weldnet.photos.dataset import load_split_images, read_split
from weldnet.photos.transforms import resize_uint8
from weldnet.strategies.decisions import flaw_score
from weldnet.train import store
from weldnet.train.predict import predict_logits
from weldnet.triage.bundle import (
    bundle_info,
    export_gap,
    export_network,
    metrics_view,
    network_logits,
    read_validation,
    readme_text,
    write_bundle,
)
from weldnet.triage.certify import certified_threshold, triage_report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--split", required=True, type=Path)
    parser.add_argument("--shards", required=True, type=Path)
    parser.add_argument("--models", required=True, type=Path, help="folder holding one model folder per strategy")
    parser.add_argument("--validation", required=True, type=Path,
                        help="the evaluate stage's validation record (scores per seed, fitted decision rules)")
    parser.add_argument("--out", required=True, type=Path, help="bundle folder")
    parser.add_argument("--metrics", required=True, type=Path, help="the certificate, for dvc metrics diff")
    args = parser.parse_args()

    params = load_checked_params()
    spec, size = params.triage, params.preprocess.size
    chosen = read_validation(args.validation)
    strategy = spec.strategy
    if strategy is None:
        scores = {name: chosen[name].val_per_class_accuracy for name in params.study if name in chosen}
        try:
            strategy = best_by_validation(scores, params.study)
        except DataError:
            raise DataError("no strategy has a validation per-class accuracy to choose by; "
                            f"set triage.strategy or check {args.validation}") from None
        chosen_by = f"best validation per-class accuracy of the study ({scores[strategy]:.4f}, {args.validation})"
    else:
        chosen_by = "triage.strategy"
    if strategy not in chosen:
        raise DataError(f"{args.validation} has no strategy '{strategy}'; re-run dvc repro evaluate")
    trained, record = store.read_trained(args.models, strategy), chosen[strategy]
    classes = trained.classes

    seeds = trained.seeds
    if spec.seed is not None:
        seed_name = store.seed_name(spec.seed)
        if seed_name not in seeds:
            raise DataError(f"triage.seed = {spec.seed}: strategy '{strategy}' was trained with {', '.join(seeds)}")
    else:
        try:
            seed_name = best_by_validation(record.seeds, seeds)
        except DataError:
            raise DataError(f"no seed of '{strategy}' has a validation per-class accuracy to choose by; "
                            f"set triage.seed or check {args.validation}") from None
    if seed_name not in record.rules:
        raise DataError(f"{args.validation} has no {seed_name} of '{strategy}'; re-run dvc repro evaluate")
    rule = record.rules[seed_name]                  # as evaluate fitted it on validation
    if len(rule.train_priors) != len(classes):
        raise DataError(f"{args.validation} holds a {len(rule.train_priors)}-class rule for '{strategy}', "
                        f"its model has {len(classes)} classes; re-run dvc repro evaluate")

    split = read_split(args.split)
    val_x, val_y = load_split_images(split, args.shards, "val", size)
    test_x, test_y = load_split_images(split, args.shards, "test", size)
    if val_x.shape[1] != size:
        raise DataError(f"the shards in {args.shards} hold {val_x.shape[1]}px photos, preprocess.size is {size}; "
                        "re-run the preprocess stage")
    input_size = trained.model_params.input_size
    cpu = torch.device("cpu")

    model = trained.load_model(seed_name)
    # what evaluate feeds the live model: the shards resized to its input size
    expected = predict_logits(model, resize_uint8(val_x, input_size), cpu, input_size).astype(np.float64)
    program = export_network(model, input_size, size)
    net = program.module()
    val_logits = network_logits(net, val_x).astype(np.float64)
    gap = export_gap(expected, val_logits)          # stops the stage, before anything is written
    test_logits = network_logits(net, test_x).astype(np.float64)

    val_score, test_score = flaw_score(rule.probs(val_logits)), flaw_score(rule.probs(test_logits))
    cert = certified_threshold(val_score, val_y != 0, spec.target_recall, spec.confidence)
    report = {"strategy": strategy, "seed": seed_name, "chosen_by": chosen_by,
              "decision": trained.decision, "export_max_abs_diff": gap,
              **triage_report(cert, val_score, val_y != 0, test_score, test_y != 0)}
    info = bundle_info(strategy=strategy, seed=seed_name, config=trained.record, rule=rule, task_name=params.task,
                       task=params.selected_task, photo_size=size, max_pixels=params.ingest.max_pixels)

    shutil.rmtree(args.out, ignore_errors=True)
    write_bundle(args.out, program, info, report, readme_text(info, report))
    args.metrics.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.metrics, metrics_view(report))
    auto, test = report["automation"], report["test"]
    recall = "n/a (no flawed photo)" if test["recall"] is None else f"{test['recall']:.3f}"
    print(f"bundle: {strategy} ({seed_name}, {trained.decision}), chosen by {chosen_by}")
    print(f"bundle: threshold {cert.threshold:.6g} for {spec.target_recall:.0%} recall at "
          f"{spec.confidence:.0%} confidence; {report['note']}")
    print(f"bundle: expected automation {auto['expected']:.3f} [{auto['low']:.3f}, {auto['high']:.3f}]; "
          f"test check: recall {recall}, automation {test['automation']:.3f} -> {args.out}")


if __name__ == "__main__":
    run_stage(main)
