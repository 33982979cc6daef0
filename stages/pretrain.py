"""Stage pretrain: train the task's architecture on every common Redbox flag at once (multi-label).

This is the report's suggested use of the large, noisy Redbox set: learn features
there, then transfer them to the Bluebox task (strategies with ``init: redbox``).
With ``audit.drop_suspects`` the photos the audit suspects of being mislabelled
are left out first, so ``dvc exp run -S audit.drop_suspects=true`` measures what
label cleaning does to transfer.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from weldnet.config import DataError, run_stage
from weldnet.live import DvcLiveLog
from weldnet.manifest import read_manifest
from weldnet.models import build_model, resize_uint8
from weldnet.params import SamplingParams, load_checked_params
from weldnet.pretraining import balanced_accuracy_per_flag, common_flags, drop_suspects, validation_rows
from weldnet.shards import load_images, read_index
from weldnet.training import (build_loader, build_optimizer, epoch_seed, lr_at, make_deterministic, predict_logits,
                              resolve_device, train_one_epoch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--manifest", required=True, type=Path)
    parser.add_argument("--suspects", required=True, type=Path, help="the audit's suspects table")
    parser.add_argument("--shards", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--live", required=True, type=Path)
    args = parser.parse_args()

    params = load_checked_params()
    spec, model_params = params.pretrain, params.model
    device = resolve_device(params.device)
    make_deterministic(device)

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
    index = read_index(args.shards / "index.csv")
    images = resize_uint8(torch.from_numpy(load_images(index, args.shards, redbox["image"].tolist())),
                          model_params.input_size)
    print(f"pretrain on {len(train_rows)} Redbox photos ({dropped} suspects dropped), {len(flags)} flags")

    torch.manual_seed(spec.seed)
    model = build_model(model_params, len(flags)).to(device)
    loss_fn = nn.BCEWithLogitsLoss()
    optimizer = build_optimizer(model, spec)
    loader = build_loader(np.zeros(len(train_rows), dtype=np.int64), spec.batch_size, "none", spec.seed,
                          SamplingParams())
    train_x, train_y = images[train_rows], torch.from_numpy(targets[train_rows])
    total = len(loader) * spec.epochs
    log = DvcLiveLog(args.live)
    step = 0
    for epoch in range(spec.epochs):
        torch.manual_seed(epoch_seed(spec.seed, epoch))
        loader.sampler.set_epoch(epoch)
        step = train_one_epoch(model, loss_fn, optimizer, loader, train_x, train_y, device,
                               input_size=model_params.input_size, flip=spec.flip, first_step=step,
                               lr_for_step=lambda s: lr_at(s, total, spec.lr, spec.lr_schedule), log=log,
                               generator=torch.Generator().manual_seed(epoch_seed(spec.seed, epoch)),
                               name="pretrain")
        logits = predict_logits(model, images[val_rows], device, model_params.input_size)
        balanced = balanced_accuracy_per_flag(logits, targets[val_rows])
        log(step - 1, "val/mean_balanced_accuracy", float(np.nanmean(balanced)))
    log.close()

    args.out.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.cpu() for k, v in model.state_dict().items()}, args.out / "redbox.pt")
    report = {"flags": flags, "photos": len(redbox), "suspects_dropped": dropped,
              "model": asdict(model_params),
              "val_balanced_accuracy": {f: float(b) for f, b in zip(flags, balanced)}}
    (args.out / "config.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"validation balanced accuracy, mean over flags: {np.nanmean(balanced):.3f}")


if __name__ == "__main__":
    run_stage(main)
