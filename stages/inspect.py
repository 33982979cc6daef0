"""Stage inspect: one multi-label model over every common flag of a rig, clearing whole photos with a certificate.

Splits the rig's photos four ways (``inspect.split``), trains the task's
architecture (``model``) on every flag with ``inspect.min_flag_count`` training
photos with each candidate loss of ``inspect.losses`` (the shared training loop,
weldnet.train.loop.fit, as the pretrain stage runs it), keeps the loss whose
model clears most perfect validation photos, and certifies on the calibration
split one threshold on the any-flaw score for ``triage.target_recall`` at
``triage.confidence``: any flaw, and each flag with enough photos, together
(weldnet.triage.simultaneous). The test split checks it. Writes an inspection
bundle for ``python -m weldnet.triage``, metrics/inspect.json and the per-flag
table metrics/inspect.md. Photos are held in memory (``loader.cache_mb``).
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from weldnet.core.config import DataError, run_stage
from weldnet.core.files import write_json, write_text
from weldnet.core.params import load_checked_params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", required=True, type=Path)
    parser.add_argument("--shards", required=True, type=Path, help="photos at preprocess.size, as the bundle sees them")
    parser.add_argument("--inputs", required=True, type=Path, help="the same photos at model.input_size, to train on")
    parser.add_argument("--out", required=True, type=Path, help="inspection bundle folder")
    parser.add_argument("--metrics", required=True, type=Path, help="inspect.json, for dvc metrics diff")
    parser.add_argument("--table", required=True, type=Path, help="the per-flag table (markdown)")
    args = parser.parse_args()
    params = load_checked_params()

    import numpy as np
    import torch

    from weldnet.core.flags import FLAGS
    from weldnet.core.params import SamplingParams
    from weldnet.photos.dataset import PhotoCache, PhotoDataset, host_size, materialise, stored_photos
    from weldnet.photos.manifest import read_manifest
    from weldnet.photos.shards import INDEX, read_index, shard_photos
    from weldnet.photos.transforms import resize_uint8
    from weldnet.strategies.models import build_model
    from weldnet.strategies.multilabel import build_multilabel_loss
    from weldnet.strategies.sampling import build_loader
    from weldnet.train.device import Precision, make_deterministic, precision_for, resolve_device
    from weldnet.train.loop import FitSettings, fit, task_input
    from weldnet.train.predict import predict_logits
    from weldnet.train.pretraining import common_flags
    from weldnet.triage.bundle import export_gap, export_network, network_logits, write_bundle
    from weldnet.triage.certify import flawed_needed
    from weldnet.triage.inspect import (
        any_flaw_score,
        flag_aucs,
        flag_table,
        inspect_bundle_info,
        inspect_readme,
        inspect_report,
        rare_flags,
        split_check,
        split_rows,
        validation_automation,
    )
    from weldnet.triage.simultaneous import METHOD, simultaneous_threshold

    spec, model_params, loader_params = params.inspect, params.model, params.loader
    target, confidence = params.triage.target_recall, params.triage.confidence
    device = resolve_device(params.device)
    make_deterministic(device)
    precision = precision_for(device, model_params.mixed_precision)

    manifest = read_manifest(args.manifest)
    rig = manifest[manifest["rig"] == spec.rig].reset_index(drop=True)
    if rig.empty:
        raise DataError(f"the export has no {spec.rig} photo; set inspect.rig to one of "
                        f"{', '.join(sorted(set(manifest['rig'])))}")
    split = split_rows(len(rig), spec.split, np.random.default_rng(spec.seed))
    rows = {name: np.flatnonzero(split == name) for name in spec.split}
    train = rig.iloc[rows["train"]]
    flags = common_flags(train, spec.min_flag_count)
    if not flags:
        raise DataError(f"no {spec.rig} flag has {spec.min_flag_count} training photos; lower "
                        "inspect.min_flag_count or give the split more photos (inspect.split.train)")
    rare = rare_flags(train, rig, flags, spec.min_flag_count)
    targets = rig[flags].to_numpy(dtype=np.float32)
    flawed = rig[[f for f in FLAGS if f in rig.columns]].to_numpy().sum(axis=1) > 0
    positives = targets[rows["train"]].sum(axis=0).astype(int).tolist()
    priors = [n / len(rows["train"]) for n in positives]
    enough = flawed_needed(target, confidence)
    print(f"inspect: {len(rig)} {spec.rig} photos ({', '.join(f'{len(r)} {n}' for n, r in rows.items())}), "
          f"{len(flags)} flags modelled, {len(rare)} too rare")

    index, inputs_index = read_index(args.shards / INDEX), read_index(args.inputs / INDEX)
    cache = PhotoCache(loader_params.cache_mb, device, loader_params.workers)
    held = cache.hold(stored_photos(shard_photos(inputs_index, args.inputs, rig["image"].tolist()),
                                    host_size(device, model_params.input_size), args.inputs), f"{spec.rig} photos")
    photos = PhotoDataset(held, torch.from_numpy(targets))
    val = photos.subset(rows["val"])

    def logits_of(model: torch.nn.Module, subset: PhotoDataset, arithmetic: Precision = precision) -> np.ndarray:
        return predict_logits(model, subset, device, model_params.input_size, spec.eval_batch_size,
                              workers=loader_params.workers, precision=arithmetic).astype(np.float64)

    candidates, fitted = {}, {}
    for name in spec.losses:
        loss = build_multilabel_loss(name, positives, len(rows["train"]), spec)

        def validate(model: torch.nn.Module) -> dict[str, float]:
            logits = logits_of(model, val)
            cleared, _ = validation_automation(logits, targets[rows["val"]], flawed[rows["val"]], priors, target,
                                               enough)
            return {"val/perfect_cleared": cleared,
                    "val/mean_auc": float(np.nanmean(flag_aucs(logits, targets[rows["val"]])))}

        torch.manual_seed(spec.seed)
        model = build_model(model_params, len(flags))
        loader = build_loader(photos.subset(rows["train"]), np.zeros(len(rows["train"]), dtype=np.int64),
                              spec.batch_size, "none", spec.seed, SamplingParams(), workers=loader_params.workers,
                              pin_memory=device.type == "cuda")
        run = FitSettings(device, task_input(model_params.input_size, spec.flip), validate, lambda *_: None,
                          spec.seed, f"inspect {name}", precision,
                          rank=lambda s: (s["val/perfect_cleared"], s["val/mean_auc"]))
        result = fit(model, loss, loader, run, spec)
        candidates[name] = {"perfect_cleared": result.scores["val/perfect_cleared"],
                            "mean_auc": result.scores["val/mean_auc"], "epoch": result.best_epoch}
        fitted[name] = result
        print(f"inspect: {name}: {candidates[name]['perfect_cleared']:.1%} of perfect validation photos cleared at "
              f"the target, mean flag AUC {candidates[name]['mean_auc']:.3f} (epoch {result.best_epoch})")
    chosen = max(spec.losses, key=lambda n: (candidates[n]["perfect_cleared"], candidates[n]["mean_auc"],
                                             -spec.losses.index(n)))
    result = fitted[chosen]
    model = build_model(model_params, len(flags))
    model.load_state_dict(result.state)
    model.eval()
    _, offsets = validation_automation(logits_of(model, val, precision.scoring()), targets[rows["val"]],
                                       flawed[rows["val"]], priors, target, enough)

    # the bundle's program sees the stored photos and resizes them itself: certify what it computes, on the CPU
    size, cpu = params.preprocess.size, torch.device("cpu")
    model = model.cpu()
    program = export_network(model, model_params.input_size, size)
    net = program.module()

    def stored(part: str) -> torch.Tensor:
        return materialise(stored_photos(shard_photos(index, args.shards, rig["image"].iloc[rows[part]].tolist()),
                                         size, args.shards), cpu)

    cal_images = stored("calibration")
    cal_logits = network_logits(net, cal_images).astype(np.float64)
    live = predict_logits(model, resize_uint8(cal_images, model_params.input_size), cpu, model_params.input_size)
    gap = export_gap(live.astype(np.float64), cal_logits)       # stops the stage before anything is written
    del cal_images
    test_logits = network_logits(net, stored("test")).astype(np.float64)
    cal, test = rows["calibration"], rows["test"]
    cal_score, test_score = any_flaw_score(cal_logits, offsets), any_flaw_score(test_logits, offsets)
    cert = simultaneous_threshold(cal_score, flawed[cal], {f: targets[cal, j] > 0.5 for j, f in enumerate(flags)},
                                  target, confidence)
    report = inspect_report(
        cert=cert, rig=spec.rig, flags=flags, offsets=offsets, test_auc=flag_aucs(test_logits, targets[test]),
        loss=chosen, candidates=candidates,
        best_epoch=result.best_epoch, train_counts=dict(zip(flags, positives)), rare=rare, method=METHOD,
        calibration=split_check(cal_score, flawed[cal], targets[cal], flags, cert.threshold, confidence),
        test=split_check(test_score, flawed[test], targets[test], flags, cert.threshold, confidence),
        any_flaw_only={"threshold": cert.risks[0].limit, **{
            part: split_check(score, flawed[r], targets[r], flags, cert.risks[0].limit, confidence)["perfect_cleared"]
            for part, score, r in (("calibration", cal_score, cal), ("test", test_score, test))}})
    report["export_max_abs_diff"] = gap
    info = inspect_bundle_info(rig=spec.rig, flags=flags, offsets=offsets, loss=chosen, model=model_params,
                               best_epoch=result.best_epoch, photo_size=size, max_pixels=params.ingest.max_pixels)

    shutil.rmtree(args.out, ignore_errors=True)
    write_bundle(args.out, program, info, report, inspect_readme(info, report))
    args.metrics.parent.mkdir(parents=True, exist_ok=True)
    prose = ("note", "uncertified_note", "not_modelled_note", "method", "chosen_by")
    write_json(args.metrics, {k: v for k, v in report.items() if k not in prose})
    args.table.parent.mkdir(parents=True, exist_ok=True)
    write_text(args.table, flag_table(report))
    perfect = report["calibration"]["perfect_cleared"]
    print(f"inspect: {chosen} loss; threshold {cert.threshold:.6g}; {report['note']}")
    print(f"inspect: perfect {spec.rig} photos cleared: calibration {perfect['share'] or 0:.1%}, test "
          f"{report['test']['perfect_cleared']['share'] or 0:.1%} -> {args.out}, {args.metrics}, {args.table}")
    for note in (report["uncertified_note"], report["not_modelled_note"]):
        if note:
            print(f"inspect: {note}")


if __name__ == "__main__":
    run_stage(main)
