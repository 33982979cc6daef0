"""Stage train: train one strategy on the task's training split, once per seed.

    python -m stages.train --config data/strategies/<s>.json --split data/split.csv --shards data/inputs \\
        --out models/<s> --live dvclive/<s> --checkpoints checkpoints/<s>

Reads the strategy's resolved configuration (written by the configure stage) and
no param that changes a result, so it re-runs exactly when that strategy's
configuration, the split, the photos or the training code change. Writes, per seed, the selected
weights (best validation per-class accuracy, or the last epoch) and the resolved
configuration next to them; the run log (dvclive's format) has the training loss of every step and the
validation scores every epoch. A checkpoint is saved under --checkpoints (not a DVC
output) after the first epoch, then at most every 30 s and after the last epoch, and
resumed from when the same configuration is run again after an interruption; the
stage removes it once the strategy has trained.

From params.yaml it reads only ``loader`` (how photos are read, which never
changes a result). With ``train.nproc_per_node`` > 1 it starts itself again under
torchrun (weldnet.core.distributed); then rank 0 alone writes. A strategy that reuses
another's model does not import torch at all.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from weldnet.core.config import DataError, build, run_stage
from weldnet.core.distributed import relaunch
from weldnet.core.params import StrategyConfig, load_checked_params
from weldnet.core.paths import remove_output
from weldnet.train import store

if TYPE_CHECKING:
    from weldnet.photos.dataset import PhotoDataset
    from weldnet.train.memo import FitMemo
    from weldnet.train.setup import StageSetup


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
    store.write_pointer(out, config.name, strategy.reuse, strategy.decision)
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
    import numpy as np
    import torch

    from weldnet.core.digests import file_digest, fingerprint
    from weldnet.core.distributed import stop
    from weldnet.photos.dataset import class_names, host_size, read_split, split_dataset
    from weldnet.photos.shards import INDEX, read_index
    from weldnet.strategies.augment import build_mix
    from weldnet.strategies.losses import build_loss
    from weldnet.strategies.models import build_model
    from weldnet.strategies.transfer import initialise
    from weldnet.train.checkpoints import checkpoint_io, code_digest
    from weldnet.train.loop import FitSettings, task_input
    from weldnet.train.predict import validation_scores
    from weldnet.train.schedules import SCHEDULES, Run
    from weldnet.train.seeds import seed_plan, train_seeds
    from weldnet.train.setup import close_log, stage_setup

    strategy, model_params = config.strategy, config.model
    setup = stage_setup(config.device, model_params.mixed_precision, load_checked_params().loader)
    device, main = setup.device, setup.group.main
    world = setup.group.world
    plan = seed_plan(config.train.seed_processes, len(config.train.seeds), device, world, torch.get_num_threads())
    plan.before_work()

    split = read_split(args.split)
    classes = class_names(split)
    index = read_index(args.shards / INDEX)
    size = host_size(device, model_params.input_size)
    train_set, train_y = split_dataset(split, index, args.shards, "train", size, setup.cache)
    val_set, val_y = split_dataset(split, index, args.shards, "val", size, setup.cache)
    counts = np.bincount(train_y, minlength=len(classes)).tolist()
    print(f"strategy {config.name}: loss {config.loss}, weighting {strategy.weighting}, sampler {strategy.sampler}, "
          f"augment {strategy.augment}, schedule {strategy.schedule}, {model_params.arch} at {model_params.input_size}px on {device}"
          + (f" ({world} processes)" if world > 1 else "") + f"; train counts {dict(zip(classes, counts))}")
    if plan.processes > 1:
        print(f"  {len(config.train.seeds)} seeds, {plan.processes} at a time in their own processes, "
              f"{plan.threads} thread{'s' if plan.threads > 1 else ''} each")

    code, data_digest = code_digest(Path(__file__)), file_digest(args.split)
    source = pretrained_state(config)
    if main:
        remove_output(args.out)
        args.out.mkdir(parents=True)
    validate = setup.validator(val_set, model_params.input_size, config.train.eval_batch_size,
                               lambda logits: validation_scores(logits, val_y, classes))
    memo = fit_memo(args.fits, config, train_set, val_set, classes, code, setup, plan.threads) if args.fits else None

    def make_loss(counts_: list[int]) -> torch.nn.Module:
        return build_loss(config.loss, counts_, config.losses, weighting=strategy.weighting,
                          weightings=config.weightings)

    second = strategy.crt

    def make_classifier_loss(counts_: list[int]) -> torch.nn.Module:
        return build_loss(second.loss or config.loss, counts_, config.losses, "strategy.crt.loss",
                          weighting=second.weighting or strategy.weighting, weightings=config.weightings,
                          label_smoothing=second.label_smoothing)

    def train_one(seed: int) -> dict:
        torch.manual_seed(seed)
        model = build_model(model_params, len(classes))
        if source is not None:
            print("  " + initialise(model, strategy, source))
        run_fingerprint = fingerprint(asdict(config), seed, data_digest, code, plan.threads,
                                      *([world] if world > 1 else []))
        log = setup.live_log(args.live / f"seed-{seed}")
        loop = FitSettings(device, task_input(model_params.input_size, config.train.flip), validate, log, seed,
                           config.name, setup.precision)
        run = Run(train_set, train_y, loop, config.train, strategy.sampler, config.sampling,
                  model_params.input_size, len(classes), make_loss,
                  checkpoints=lambda phase: checkpoint_io(
                      args.checkpoints / f"seed-{seed}{'-' + phase if phase else ''}.pt", run_fingerprint),
                  workers=setup.workers, memo=memo,
                  make_mix=lambda counts_: build_mix(strategy.augment, config.augmentations, counts_),
                  max_norm=strategy.max_norm, sam=strategy.sam, make_classifier_loss=make_classifier_loss,
                  classifier_max_norm=second.max_norm, classifier_sampler=second.sampler)
        result = SCHEDULES[strategy.schedule](model, run, config.schedules)
        close_log(log)
        if main:
            store.save_weights(args.out, seed, result.state)
        print(f"  seed {seed}: selected epoch {result.best_epoch} of {result.epochs_run}")
        return {"best_epoch": result.best_epoch, **result.details}

    done = train_seeds(train_one, config.train.seeds, plan)
    summary = {store.seed_name(seed): entry for seed, entry in zip(config.train.seeds, done)}
    if main:
        record = asdict(config)
        record = {"strategy": record.pop("name"), "decision": strategy.decision, "axes": record.pop("strategy"),
                  **record, "classes": classes, "train_counts": counts, "device": str(device),
                  **({"world_size": world} if world > 1 else {}), "threads": plan.threads,
                  "seed_processes": plan.processes, "seeds": summary}
        store.write_record(args.out, record)
        remove_output(args.checkpoints)   # trained: the run-cache, not a checkpoint, keeps it now
    stop()


def fit_memo(folder: Path, config: StrategyConfig, train_set: PhotoDataset, val_set: PhotoDataset, classes: list[str],
             code: str, setup: StageSetup, threads: int) -> FitMemo | None:
    """The finished fits a strategy may reuse (weldnet.train.memo.FitMemo), keyed by what decides a fit here.

    Only on the CPU with both splits in memory: there a fit's numbers depend on these alone
    (with the thread count, which orders the CPU's floating-point sums).
    """
    import hashlib

    from weldnet.core.digests import fingerprint
    from weldnet.train.memo import FitMemo

    if not (train_set.in_memory and val_set.in_memory and setup.device.type == "cpu"):
        return None
    photos = hashlib.sha256()
    for data in (train_set, val_set):
        photos.update(data.source.images.numpy().tobytes())
        photos.update(data.targets.numpy().tobytes())
    loss_params = getattr(config.losses, config.loss, None)
    return FitMemo(folder, fingerprint(config.loss, None if loss_params is None else asdict(loss_params),
                                       asdict(config.model), str(setup.device), setup.group.world, threads, code,
                                       photos.hexdigest(), classes),
                   write=setup.group.main)


if __name__ == "__main__":
    run_stage(main)
