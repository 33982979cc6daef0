"""Stage pretrain: train the task's architecture on every common Redbox flag at once (multi-label).

This is the report's suggested use of the large, noisy Redbox set: learn features
there, then transfer them to the Bluebox task (strategies with ``init: redbox``).
With ``audit.drop_suspects`` the photos the audit suspects of being mislabelled
are left out first, so ``dvc exp run -S audit.drop_suspects=true`` measures what
label cleaning does to transfer. It runs the same training loop as the train
stages (weldnet.train.loop.fit), with its own optimiser settings (``pretrain``),
checkpoints as they do and resumes after an interruption.

The Redbox photos are read from the inputs stage's shards, at the model's input
size; they stay in memory (RAM, or GPU memory on CUDA) while they fit
``loader.cache_mb``. With ``train.nproc_per_node`` > 1 the stage starts itself
again under torchrun, as the train stages do.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from pathlib import Path

from weldnet.core.config import DataError, run_stage
from weldnet.core.distributed import relaunch
from weldnet.core.files import atomic_path, write_json
from weldnet.core.params import Params, load_checked_params
from weldnet.core.paths import remove_output

MEAN_BALANCED = "val/mean_balanced_accuracy"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", required=True, type=Path)
    parser.add_argument("--suspects", required=True, type=Path, help="the audit's suspects table")
    parser.add_argument("--shards", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--live", required=True, type=Path)
    parser.add_argument("--checkpoints", required=True, type=Path, help="checkpoint folder (kept until done)")
    args = parser.parse_args()

    params = load_checked_params()
    relaunch(params.train.nproc_per_node, "stages.pretrain", sys.argv[1:])
    pretrain(args, params)


def pretrain(args: argparse.Namespace, params: Params) -> None:
    import numpy as np
    import pandas as pd
    import torch
    from torch import nn

    from weldnet.core.digests import file_digest, fingerprint
    from weldnet.core.distributed import stop
    from weldnet.core.params import SamplingParams
    from weldnet.photos.dataset import PhotoDataset, host_size, stored_photos
    from weldnet.photos.manifest import read_manifest
    from weldnet.photos.shards import INDEX, read_index, shard_photos
    from weldnet.strategies.models import build_model
    from weldnet.strategies.sampling import build_loader
    from weldnet.train.checkpoints import checkpoint_io, code_digest
    from weldnet.train.loop import FitSettings, fit, task_input
    from weldnet.train.pretraining import balanced_accuracy_per_flag, common_flags, drop_suspects, validation_rows
    from weldnet.train.setup import close_log, stage_setup

    spec, model_params = params.pretrain, params.model
    setup = stage_setup(params.device, model_params.mixed_precision, params.loader)
    group, device = setup.group, setup.device

    manifest = read_manifest(args.manifest)
    redbox = manifest[manifest["rig"] == "redbox"].reset_index(drop=True)
    if redbox.empty:
        raise DataError("the export has no Redbox photo to pretrain on; use strategies with init: scratch")
    dropped = 0
    if params.audit.drop_suspects:
        kept = drop_suspects(redbox, pd.read_csv(args.suspects), rigs=["redbox"])
        dropped = len(redbox) - len(kept)
        redbox = kept
    flags = common_flags(redbox, spec.min_flag_count)
    if not flags:
        raise DataError(f"no Redbox flag has {spec.min_flag_count} photos; lower pretrain.min_flag_count")

    val_rows, train_rows = validation_rows(len(redbox), spec.val_share, np.random.default_rng(spec.seed))
    targets = redbox[flags].to_numpy(dtype=np.float32)
    photos = stored_photos(shard_photos(read_index(args.shards / INDEX), args.shards, redbox["image"].tolist()),
                           host_size(device, model_params.input_size), args.shards)
    photos = PhotoDataset(setup.cache.hold(photos, "Redbox photos"), torch.from_numpy(targets))
    print(f"pretrain on {len(train_rows)} Redbox photos ({dropped} suspects dropped), {len(flags)} flags"
          + (f", {group.world} processes" if group.world > 1 else ""))

    def score(logits: np.ndarray) -> dict[str, float]:
        balanced = balanced_accuracy_per_flag(logits, targets[val_rows])
        return {MEAN_BALANCED: float(np.nanmean(balanced)),
                **{f"val/balanced_accuracy/{flag}": float(b) for flag, b in zip(flags, balanced)}}

    torch.manual_seed(spec.seed)
    model = build_model(model_params, len(flags))
    loader = build_loader(photos.subset(train_rows), np.zeros(len(train_rows), dtype=np.int64), spec.batch_size,
                          "none", spec.seed, SamplingParams(), workers=setup.workers,
                          pin_memory=device.type == "cuda", rank=group.rank, world=group.world)
    run_fingerprint = fingerprint(asdict(spec), asdict(model_params), flags, dropped,
                                  file_digest(args.manifest), code_digest(Path(__file__)),
                                  *([group.world] if group.world > 1 else []))
    log = setup.live_log(args.live)
    run = FitSettings(device, task_input(model_params.input_size, spec.flip),
                      setup.validator(photos.subset(val_rows), model_params.input_size, spec.eval_batch_size, score),
                      log, spec.seed, "pretrain", setup.precision, rank=lambda scores: (scores[MEAN_BALANCED],))
    result = fit(model, nn.BCEWithLogitsLoss(), loader, run, spec,
                 checkpoint_io(args.checkpoints / "pretrain.pt", run_fingerprint))
    close_log(log)
    if group.main:
        args.out.mkdir(parents=True, exist_ok=True)
        with atomic_path(args.out / "redbox.pt") as tmp:
            torch.save(result.state, tmp)
        report = {"flags": flags, "photos": len(redbox), "suspects_dropped": dropped, "model": asdict(model_params),
                  "epoch": result.best_epoch,
                  "val_balanced_accuracy": {f: result.scores[f"val/balanced_accuracy/{f}"] for f in flags}}
        if group.world > 1:
            report["world_size"] = group.world
        write_json(args.out / "config.json", report)
        remove_output(args.checkpoints)
    print(f"validation balanced accuracy, mean over flags: {result.scores[MEAN_BALANCED]:.3f}")
    stop()


if __name__ == "__main__":
    run_stage(main)
