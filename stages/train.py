"""Stage train: train one strategy on the task's training split, once per seed.

Writes, per seed, the selected weights (best validation per-class accuracy, or
the last epoch) and the resolved configuration next to them; dvclive logs the
training loss every step and the validation loss and per-class accuracy every
epoch. A checkpoint is saved after each epoch and resumed from when the same
configuration is run again after an interruption.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from stages.validate import load_checked_params
from weldnet.config import DataError, build, run_stage
from weldnet.losses import LossParams, build_loss
from weldnet.models import ModelParams, build_model, resize_uint8
from weldnet.sampling import SamplingParams
from weldnet.schedules import SCHEDULES, Run, ScheduleParams
from weldnet.shards import load_images, read_index
from weldnet.strategy import Strategy, load_strategy, resolved_loss
from weldnet.transfer import freeze_lower_layers, load_imagenet_alexnet, transfer_state
from weldnet.training import TrainParams, make_deterministic, resolve_device


def load_split_images(split: pd.DataFrame, shards: Path, name: str, size: int) -> tuple[torch.Tensor, np.ndarray]:
    rows = split[split["split"] == name]
    index = read_index(shards / "index.csv")
    images = load_images(index, shards, rows["image"].tolist())
    return resize_uint8(torch.from_numpy(np.ascontiguousarray(images)), size), rows["label"].to_numpy()


class DvcLiveLog:
    """Adapter from the training loop's (step, name, value) calls to a dvclive run."""

    def __init__(self, directory: Path):
        from dvclive import Live

        shutil.rmtree(directory, ignore_errors=True)
        self.live = Live(str(directory), save_dvc_exp=False, dvcyaml=None, report=None)

    def __call__(self, step: int, name: str, value: float) -> None:
        self.live.step = step
        self.live.log_metric(name, value, plot=True)

    def close(self) -> None:
        self.live.make_summary()
        self.live.end()


def code_digest() -> str:
    """Digest of the training code (this stage and the weldnet library).

    Part of every checkpoint's fingerprint: after a code change, dvc re-runs the
    stage and a checkpoint written by the old code, even a finished one, is not
    resumed from.
    """
    digest = hashlib.sha256()
    library = Path(__file__).resolve().parents[1] / "weldnet"
    for path in [Path(__file__).resolve(), *sorted(library.glob("*.py"))]:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def checkpoint_io(path: Path, fingerprint: str):
    def save(state: dict) -> None:
        tmp = path.with_suffix(".tmp")
        torch.save({"fingerprint": fingerprint, **state}, tmp)
        os.replace(tmp, path)

    def load() -> dict | None:
        if not path.exists():
            return None
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state.get("fingerprint") != fingerprint:
            print(f"  {path} was written by another configuration; starting afresh")
            return None
        print(f"  resuming from {path} after epoch {state['epoch']}")
        return state

    return save, load


def write_reuse(out: Path, live: Path, name: str, strategy: Strategy) -> None:
    """A strategy that reuses another's model trains nothing; evaluate reads this pointer."""
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(live, ignore_errors=True)
    out.mkdir(parents=True)
    live.mkdir(parents=True)
    (out / "config.json").write_text(json.dumps({"strategy": name, "reuse": strategy.reuse,
                                                 "decision": strategy.decision}, indent=2) + "\n")
    print(f"strategy {name}: no training; evaluate applies '{strategy.decision}' to {strategy.reuse}'s model")


def initialise(model: torch.nn.Module, strategy: Strategy, pretrained: Path) -> None:
    """Copy pretrained layers and freeze the lowest ones, as the strategy's init axis says."""
    if strategy.init == "scratch":
        return
    if strategy.init == "imagenet":
        source = load_imagenet_alexnet()
    else:
        if not pretrained.exists():
            raise DataError(f"{pretrained} not found; run the pretrain stage (dvc repro pretrain)")
        source = torch.load(pretrained, map_location="cpu", weights_only=True)
    copied = transfer_state(model, source, strategy.transfer)
    frozen = freeze_lower_layers(model, strategy.freeze)
    print(f"  init {strategy.init}: {len(copied)} tensors copied ({strategy.transfer}), "
          f"{strategy.freeze} conv layer(s) frozen ({len(frozen)} tensors)")


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
    strategy = load_strategy(params, args.strategy)
    if strategy.reuse is not None:
        args.checkpoints.mkdir(parents=True, exist_ok=True)
        write_reuse(args.out, args.live, args.strategy, strategy)
        return
    loss_name = resolved_loss(strategy, params.get("loss"))
    model_params = build(ModelParams, params.get("model"), "model")
    if strategy.head is not None:
        model_params = replace(model_params, head=strategy.head)
    train_params = build(TrainParams, params.get("train"), "train")
    loss_params = build(LossParams, params.get("losses"), "losses")
    sampling = build(SamplingParams, params.get("sampling"), "sampling")
    schedule_params = build(ScheduleParams, params.get("schedules"), "schedules")
    device = resolve_device(params.get("device", "auto"))
    make_deterministic(device)

    split = pd.read_csv(args.split)
    class_names = list(split.drop_duplicates("label").sort_values("label")["class"])
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
              "model": vars(model_params), "train": vars(train_params), "losses": params.get("losses"),
              "sampling": vars(sampling), "classes": class_names, "train_counts": counts,
              "device": str(device)}
    code = code_digest()
    split_digest = hashlib.sha256(args.split.read_bytes()).hexdigest()
    if strategy.init == "redbox" and args.pretrained.exists():
        split_digest += hashlib.sha256(args.pretrained.read_bytes()).hexdigest()
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    args.checkpoints.mkdir(parents=True, exist_ok=True)
    summary = {}
    for seed in train_params.seeds:
        torch.manual_seed(seed)
        model = build_model(model_params, len(class_names))
        initialise(model, strategy, args.pretrained)
        fingerprint = hashlib.sha256(json.dumps([config, seed, split_digest, code], sort_keys=True,
                                                default=str).encode()).hexdigest()
        log = DvcLiveLog(args.live / f"seed-{seed}")
        run = Run(train_x, train_y, val_x, val_y, params=train_params, sampler=strategy.sampler, sampling=sampling,
                  seed=seed, input_size=model_params.input_size, class_names=class_names, device=device,
                  name=args.strategy, log=log,
                  make_loss=lambda counts_: build_loss(loss_name, counts_, loss_params),
                  checkpoints=lambda phase, seed=seed: checkpoint_io(
                      args.checkpoints / f"seed-{seed}{'-' + phase if phase else ''}.pt", fingerprint))
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
