"""Stage train: train one strategy on the task's training split, once per seed.

Writes, per seed, the selected weights (best validation per-class accuracy, or
the last epoch) and the resolved configuration next to them; dvclive logs the
training loss every step and the validation loss and per-class accuracy every
epoch. A checkpoint is saved after each epoch and resumed from when the same
configuration is run again after an interruption.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from weldnet.checkpoints import checkpoint_io, code_digest, file_digest, fingerprint
from weldnet.config import DataError, run_stage
from weldnet.data import class_names as split_class_names, load_split_images, read_split
from weldnet.live import DvcLiveLog
from weldnet.losses import build_loss
from weldnet.models import build_model
from weldnet.params import Strategy, load_checked_params
from weldnet.paths import remove_output
from weldnet.schedules import SCHEDULES, Run
from weldnet.training import make_deterministic, resolve_device
from weldnet.transfer import initialise, load_imagenet_alexnet


def write_reuse(out: Path, live: Path, name: str, strategy: Strategy) -> None:
    """A strategy that reuses another's model trains nothing; evaluate reads this pointer."""
    remove_output(out)
    remove_output(live)
    out.mkdir(parents=True)
    live.mkdir(parents=True)
    (out / "config.json").write_text(json.dumps({"strategy": name, "reuse": strategy.reuse,
                                                 "decision": strategy.decision}, indent=2) + "\n")
    print(f"strategy {name}: no training; evaluate applies '{strategy.decision}' to {strategy.reuse}'s model")


def pretrained_state(strategy: Strategy, pretrained: Path) -> dict[str, torch.Tensor] | None:
    if strategy.init == "scratch":
        return None
    if strategy.init == "imagenet":
        return load_imagenet_alexnet()
    if not pretrained.exists():
        raise DataError(f"{pretrained} not found; run the pretrain stage (dvc repro pretrain)")
    return torch.load(pretrained, map_location="cpu", weights_only=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--strategy", required=True)
    parser.add_argument("--split", required=True, type=Path)
    parser.add_argument("--shards", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path, help="model folder of this strategy")
    parser.add_argument("--live", required=True, type=Path, help="dvclive folder of this strategy")
    parser.add_argument("--checkpoints", required=True, type=Path, help="persistent checkpoint folder")
    parser.add_argument("--pretrained", required=True, type=Path, help="Redbox-pretrained weights")
    args = parser.parse_args()

    params = load_checked_params()
    if args.strategy not in params.strategies:
        raise DataError(f"--strategy {args.strategy!r} is not in params.yaml strategies; "
                        f"valid: {', '.join(params.strategies)}")
    strategy = params.strategies[args.strategy]
    if strategy.reuse is not None:
        args.checkpoints.mkdir(parents=True, exist_ok=True)
        write_reuse(args.out, args.live, args.strategy, strategy)
        return
    loss_name = params.resolved_loss(args.strategy)
    model_params = params.model if strategy.head is None else replace(params.model, head=strategy.head)
    train_params, loss_params, sampling, schedule_params = params.train, params.losses, params.sampling, params.schedules
    device = resolve_device(params.device)
    make_deterministic(device)

    split = read_split(args.split)
    class_names = split_class_names(split)
    train_x, train_y = load_split_images(split, args.shards, "train", model_params.input_size)
    val_x, val_y = load_split_images(split, args.shards, "val", model_params.input_size)
    counts = np.bincount(train_y, minlength=len(class_names)).tolist()
    print(f"strategy {args.strategy}: loss {loss_name}, sampler {strategy.sampler}, schedule {strategy.schedule}, "
          f"{model_params.arch} "
          f"at {model_params.input_size}px on {device}; train counts {dict(zip(class_names, counts))}")

    config = {"strategy": args.strategy, "loss": loss_name, "sampler": strategy.sampler, "init": strategy.init,
              "transfer": strategy.transfer, "freeze": strategy.freeze, "decision": strategy.decision,
              "schedule": strategy.schedule,
              "schedule_params": (asdict(getattr(schedule_params, strategy.schedule))
                                  if strategy.schedule != "standard" else None),
              "model": asdict(model_params), "train": asdict(train_params), "losses": asdict(loss_params),
              "sampling": asdict(sampling), "classes": class_names, "train_counts": counts,
              "device": str(device)}
    code = code_digest(Path(__file__))
    data_digest = file_digest(args.split)
    source = pretrained_state(strategy, args.pretrained)
    if strategy.init == "redbox":
        data_digest += file_digest(args.pretrained)
    remove_output(args.out)
    args.out.mkdir(parents=True)
    args.checkpoints.mkdir(parents=True, exist_ok=True)
    summary = {}
    for seed in train_params.seeds:
        torch.manual_seed(seed)
        model = build_model(model_params, len(class_names))
        if source is not None:
            print("  " + initialise(model, strategy, source))
        run_fingerprint = fingerprint(config, seed, data_digest, code)
        log = DvcLiveLog(args.live / f"seed-{seed}")
        run = Run(train_x, train_y, val_x, val_y, params=train_params, sampler=strategy.sampler, sampling=sampling,
                  seed=seed, input_size=model_params.input_size, class_names=class_names, device=device,
                  name=args.strategy, log=log,
                  make_loss=lambda counts_: build_loss(loss_name, counts_, loss_params),
                  checkpoints=lambda phase, seed=seed: checkpoint_io(
                      args.checkpoints / f"seed-{seed}{'-' + phase if phase else ''}.pt", run_fingerprint))
        result = SCHEDULES[strategy.schedule](model, run, schedule_params)
        log.close()
        seed_dir = args.out / f"seed-{seed}"
        seed_dir.mkdir()
        torch.save(result.state, seed_dir / "model.pt")
        summary[f"seed-{seed}"] = {"best_epoch": result.best_epoch, **result.details}
        print(f"  seed {seed}: selected epoch {result.best_epoch} of {result.epochs_run}")
    (args.out / "config.json").write_text(json.dumps({**config, "seeds": summary}, indent=2) + "\n")


if __name__ == "__main__":
    run_stage(main)
