"""Stage train: train one strategy on the task's training split, once per seed.

    python -m stages.train --config data/strategies/<s>.json --split data/split.csv --shards data/processed \\
        --out models/<s> --live dvclive/<s> --checkpoints checkpoints/<s>

Reads the strategy's resolved configuration (written by the configure stage) and
no param that changes a result, so it re-runs exactly when that strategy's
configuration, the split, the photos or the training code change. Writes, per seed, the selected
weights (best validation per-class accuracy, or the last epoch) and the resolved
configuration next to them; dvclive logs the training loss every step and the
validation scores every epoch. A checkpoint is saved after each epoch under
--checkpoints (not a DVC output) and resumed from when the same configuration is
run again after an interruption; the stage removes it once the strategy has trained.

From params.yaml it reads only ``loader`` (how photos are read, which never
changes a result). With ``train.nproc_per_node`` > 1 it starts itself again under
torchrun (weldnet.core.distributed); then rank 0 alone writes. A strategy that reuses
another's model does not import torch at all.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

from weldnet.core.config import DataError, build, run_stage
from weldnet.core.distributed import relaunch
from weldnet.core.files import atomic_path, write_json
from weldnet.core.params import StrategyConfig, load_checked_params
from weldnet.core.paths import remove_output


def read_config(path: Path) -> StrategyConfig:
    if not path.is_file():
        raise DataError(f"{path} not found; run the configure stage (dvc repro configure)")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path} is not a configure stage's JSON ({exc}); re-run dvc repro configure") from None
    return build(StrategyConfig, raw, path.as_posix())


def write_reuse(out: Path, live: Path, config: StrategyConfig) -> None:
    """A strategy that reuses another's model trains nothing; evaluate reads this pointer."""
    remove_output(out)
    remove_output(live)
    out.mkdir(parents=True)
    live.mkdir(parents=True)
    strategy = config.strategy
    write_json(out / "config.json", {"strategy": config.name, "reuse": strategy.reuse, "decision": strategy.decision})
    print(f"strategy {config.name}: no training; evaluate applies '{strategy.decision}' to {strategy.reuse}'s model")


def pretrained_state(config: StrategyConfig):
    """The weights the strategy starts from, checked against the digest its configuration names."""
    import torch

    from weldnet.core.digests import file_digest
    from weldnet.strategies.transfer import load_imagenet_alexnet

    if config.strategy.init == "scratch":
        return None
    if config.strategy.init == "imagenet":
        return load_imagenet_alexnet()
    path = Path(config.pretrained.path)
    if not path.is_file():
        raise DataError(f"{path} not found; run the pretrain stage (dvc repro pretrain)")
    if file_digest(path) != config.pretrained.sha256:
        raise DataError(f"{path} changed since the configure stage ran; re-run dvc repro")
    return torch.load(path, map_location="cpu", weights_only=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, type=Path, help="the strategy's resolved configuration")
    parser.add_argument("--split", required=True, type=Path)
    parser.add_argument("--shards", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path, help="model folder of this strategy")
    parser.add_argument("--live", required=True, type=Path, help="dvclive folder of this strategy")
    parser.add_argument("--checkpoints", required=True, type=Path, help="checkpoint folder (kept until done)")
    parser.add_argument("--fits", type=Path, help="finished fits that other strategies may repeat (reused, not rerun)")
    args = parser.parse_args()

    config = read_config(args.config)
    if config.strategy.reuse is not None:    # torch is not even imported: nothing to train
        write_reuse(args.out, args.live, config)
        return
    relaunch(config.train.nproc_per_node, "stages.train", sys.argv[1:])
    train(args, config)


def train(args: argparse.Namespace, config: StrategyConfig) -> None:
    import hashlib

    import numpy as np
    import torch

    from weldnet.core.digests import file_digest, fingerprint
    from weldnet.core.distributed import start, stop
    from weldnet.photos.dataset import PhotoCache, host_size, read_split, split_dataset
    from weldnet.photos.dataset import class_names as split_class_names
    from weldnet.photos.shards import read_index
    from weldnet.strategies.losses import build_loss
    from weldnet.strategies.models import build_model
    from weldnet.strategies.transfer import initialise
    from weldnet.train.checkpoints import checkpoint_io, code_digest
    from weldnet.train.live import DvcLiveLog
    from weldnet.train.schedules import SCHEDULES, FitMemo, Run
    from weldnet.train.training import (
        make_deterministic,
        precision_for,
        predict_logits,
        resolve_device,
        task_input,
        validation_scores,
    )

    strategy = config.strategy
    loader = load_checked_params().loader    # how photos are read: never changes a result, so not a dep
    model_params, train_params = config.model, config.train
    group, device = start(resolve_device(config.device))
    if not group.main:                       # one voice: rank 0 prints, every rank still reports errors
        sys.stdout = open(os.devnull, "w")
    make_deterministic(device)
    precision = precision_for(device, model_params.mixed_precision)

    split = read_split(args.split)
    class_names = split_class_names(split)
    index = read_index(args.shards / "index.csv")
    cache = PhotoCache(loader.cache_mb, device, loader.workers)
    size = host_size(device, model_params.input_size)
    train_set, train_y = split_dataset(split, index, args.shards, "train", size, cache)
    val_set, val_y = split_dataset(split, index, args.shards, "val", size, cache)
    counts = np.bincount(train_y, minlength=len(class_names)).tolist()
    print(f"strategy {config.name}: loss {config.loss}, weighting {strategy.weighting}, sampler {strategy.sampler}, "
          f"schedule {strategy.schedule}, {model_params.arch} at {model_params.input_size}px on {device}"
          + (f" ({group.world} processes)" if group.world > 1 else "")
          + f"; train counts {dict(zip(class_names, counts))}")

    record = asdict(config)
    record = {"strategy": record.pop("name"), "decision": strategy.decision, "axes": record.pop("strategy"),
              **record, "classes": class_names, "train_counts": counts, "device": str(device)}
    if group.world > 1:
        record["world_size"] = group.world
    code = code_digest(Path(__file__))
    data_digest = file_digest(args.split)
    source = pretrained_state(config)
    if group.main:
        remove_output(args.out)
        args.out.mkdir(parents=True)

    def validate(model: torch.nn.Module) -> dict[str, float]:
        logits = predict_logits(model, val_set, device, model_params.input_size, train_params.eval_batch_size,
                                workers=loader.workers, precision=precision)
        return validation_scores(logits, val_y, class_names)

    memo = None
    if args.fits is not None and train_set.in_memory and val_set.in_memory and device.type == "cpu":
        # a fit is decided by these, its own settings and its starting weights (weldnet.train.schedules.FitMemo)
        photos = hashlib.sha256()
        for data in (train_set, val_set):
            photos.update(data.source.images.numpy().tobytes())
            photos.update(data.targets.numpy().tobytes())
        loss_params = getattr(config.losses, config.loss, None)
        memo = FitMemo(args.fits, fingerprint(config.loss, None if loss_params is None else asdict(loss_params),
                                              asdict(model_params), str(device), group.world, code,
                                              photos.hexdigest(), class_names),
                       write=group.main)

    summary = {}
    for seed in train_params.seeds:
        torch.manual_seed(seed)
        model = build_model(model_params, len(class_names))
        if source is not None:
            print("  " + initialise(model, strategy, source))
        run_fingerprint = fingerprint(asdict(config), seed, data_digest, code,
                                      *([group.world] if group.world > 1 else []))
        log = DvcLiveLog(args.live / f"seed-{seed}") if group.main else (lambda *_: None)
        run = Run(train_set, train_y, validate, params=train_params, sampler=strategy.sampler,
                  sampling=config.sampling, seed=seed, prepare=task_input(model_params.input_size, train_params.flip),
                  input_size=model_params.input_size, class_names=class_names, device=device,
                  name=config.name, log=log,
                  make_loss=lambda counts_: build_loss(config.loss, counts_, config.losses,
                                                       weighting=strategy.weighting, weightings=config.weightings),
                  checkpoints=lambda phase, seed=seed: checkpoint_io(
                      args.checkpoints / f"seed-{seed}{'-' + phase if phase else ''}.pt", run_fingerprint),
                  workers=loader.workers, precision=precision, memo=memo)
        result = SCHEDULES[strategy.schedule](model, run, config.schedules)
        if group.main:
            log.close()
            seed_dir = args.out / f"seed-{seed}"
            seed_dir.mkdir()
            with atomic_path(seed_dir / "model.pt") as tmp:
                torch.save(result.state, tmp)
        summary[f"seed-{seed}"] = {"best_epoch": result.best_epoch, **result.details}
        print(f"  seed {seed}: selected epoch {result.best_epoch} of {result.epochs_run}")
    if group.main:
        write_json(args.out / "config.json", {**record, "seeds": summary})
        remove_output(args.checkpoints)   # trained: the run-cache, not a checkpoint, keeps it now
    stop()


if __name__ == "__main__":
    run_stage(main)
