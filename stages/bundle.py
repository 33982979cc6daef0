"""Stage bundle: package one strategy for the inspector, with a threshold certified on validation.

The strategy is ``triage.strategy``, or the study's best by validation per-class
accuracy (metrics/evaluate.json); its seed is ``triage.seed``, or the best of its
seeds by the same measure. Never chosen on test. Writes the bundle folder
(weldnet.triage.bundle: exported network, decision rule, photo normalisation, classes,
certified threshold) and the certificate as a metrics file. The export is checked
against the live model on the validation photos before anything is written. It
runs on the CPU whatever `device` says: the exported program must load anywhere,
and scoring the validation and test photos takes seconds.
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import torch

from weldnet.core.config import DataError, build, run_stage
from weldnet.core.files import write_json
from weldnet.core.metrics import per_class_accuracy
from weldnet.core.params import ModelParams, load_checked_params
from weldnet.photos.dataset import load_split_images, read_split
from weldnet.photos.transforms import resize_uint8
from weldnet.strategies.models import build_model
from weldnet.train.training import predict_logits
from weldnet.triage.bundle import (
    bundle_info,
    choose_best,
    export_gap,
    export_network,
    fit_rule,
    flaw_scores,
    metrics_view,
    network_logits,
    readme_text,
    strategy_config,
    write_bundle,
)
from weldnet.triage.certify import certified_threshold, triage_report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--split", required=True, type=Path)
    parser.add_argument("--shards", required=True, type=Path)
    parser.add_argument("--models", required=True, type=Path, help="folder holding one model folder per strategy")
    parser.add_argument("--evaluate", required=True, type=Path, help="metrics/evaluate.json (validation scores)")
    parser.add_argument("--out", required=True, type=Path, help="bundle folder")
    parser.add_argument("--metrics", required=True, type=Path, help="the certificate, for dvc metrics diff")
    args = parser.parse_args()

    params = load_checked_params()
    spec, size = params.triage, params.preprocess.size
    strategy = spec.strategy
    if strategy is None:
        if not args.evaluate.is_file():
            raise DataError(f"{args.evaluate} not found; run the evaluate stage first (dvc repro evaluate)")
        results = json.loads(args.evaluate.read_text())
        try:
            scores = {name: float(results[name]["val_per_class_accuracy"]) for name in params.study if name in results}
        except (KeyError, TypeError, ValueError):
            raise DataError(f"{args.evaluate} lacks val_per_class_accuracy per strategy; re-run evaluate") from None
        strategy = choose_best(scores, params.study)
        chosen_by = f"best validation per-class accuracy of the study ({scores[strategy]:.4f}, {args.evaluate})"
    else:
        chosen_by = "triage.strategy"
    config = strategy_config(args.models, strategy)
    classes, counts = config["classes"], config["train_counts"]

    split = read_split(args.split)
    val_x, val_y = load_split_images(split, args.shards, "val", size)
    test_x, test_y = load_split_images(split, args.shards, "test", size)
    if val_x.shape[1] != size:
        raise DataError(f"the shards in {args.shards} hold {val_x.shape[1]}px photos, preprocess.size is {size}; "
                        "re-run the preprocess stage")
    model_params = build(ModelParams, config["model"], f"{args.models / strategy}/config.json: model")
    cpu = torch.device("cpu")

    def live_model(seed_name: str) -> torch.nn.Module:
        model = build_model(model_params, len(classes))
        model.load_state_dict(torch.load(args.models / config["strategy"] / seed_name / "model.pt",
                                         map_location="cpu", weights_only=True))
        return model.eval()

    # what evaluate feeds the live model: the shards resized to its input size
    val_small = resize_uint8(val_x, model_params.input_size)

    def live_logits(model: torch.nn.Module) -> np.ndarray:
        return predict_logits(model, val_small, cpu, model_params.input_size).astype(np.float64)

    seeds = list(config["seeds"])
    if spec.seed is not None:
        seed_name = f"seed-{spec.seed}"
        if seed_name not in seeds:
            raise DataError(f"triage.seed = {spec.seed}: strategy '{strategy}' was trained with {', '.join(seeds)}")
    else:
        val_scores = {}
        for name in seeds:
            logits = live_logits(live_model(name))
            probs = fit_rule(config["decision"], logits, val_y, counts, params.evaluate.decisions).probs(logits)
            val_scores[name] = per_class_accuracy(probs.argmax(axis=1), val_y, len(classes))
        seed_name = choose_best(val_scores, seeds)

    model = live_model(seed_name)
    expected = live_logits(model)
    program = export_network(model, model_params.input_size, size)
    net = program.module()
    val_logits = network_logits(net, val_x).astype(np.float64)
    gap = export_gap(expected, val_logits)          # stops the stage, before anything is written
    test_logits = network_logits(net, test_x).astype(np.float64)

    rule = fit_rule(config["decision"], expected, val_y, counts, params.evaluate.decisions)   # as evaluate fits it
    val_score, test_score = flaw_scores(rule.probs(val_logits)), flaw_scores(rule.probs(test_logits))
    cert = certified_threshold(val_score, val_y != 0, spec.target_recall, spec.confidence)
    report = {"strategy": strategy, "seed": seed_name, "chosen_by": chosen_by,
              "decision": config["decision"], "export_max_abs_diff": gap,
              **triage_report(cert, val_score, val_y != 0, test_score, test_y != 0)}
    info = bundle_info(strategy=strategy, seed=seed_name, config=config, rule=rule, task_name=params.task,
                       task=params.selected_task, photo_size=size, max_pixels=params.ingest.max_pixels)

    shutil.rmtree(args.out, ignore_errors=True)
    write_bundle(args.out, program, info, report, readme_text(info, report))
    args.metrics.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.metrics, metrics_view(report))
    auto, test = report["automation"], report["test"]
    recall = "n/a (no flawed photo)" if test["recall"] is None else f"{test['recall']:.3f}"
    print(f"bundle: {strategy} ({seed_name}, {config['decision']}), chosen by {chosen_by}")
    print(f"bundle: threshold {cert.threshold:.6g} for {spec.target_recall:.0%} recall at "
          f"{spec.confidence:.0%} confidence; {report['note']}")
    print(f"bundle: expected automation {auto['expected']:.3f} [{auto['low']:.3f}, {auto['high']:.3f}]; "
          f"test check: recall {recall}, automation {test['automation']:.3f} -> {args.out}")


if __name__ == "__main__":
    run_stage(main)
