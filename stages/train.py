"""Stage train: train one strategy on the task's training split, once per seed.

    python -m stages.train --config data/strategies/<s>.json --split data/split.csv --shards data/processed \\
        --out models/<s> --live dvclive/<s> --checkpoints checkpoints/<s>

Reads only the strategy's resolved configuration (written by the configure stage),
never params.yaml, so it re-runs exactly when that strategy's configuration, the
split, the photos or the training code change. Writes, per seed, the selected
weights (best validation per-class accuracy, or the last epoch) and the resolved
configuration next to them; dvclive logs the training loss every step and the
validation scores every epoch. A checkpoint is saved after each epoch under
--checkpoints (not a DVC output) and resumed from when the same configuration is
run again after an interruption; the stage removes it once the strategy has trained.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from weldnet.checkpoints import checkpoint_io, code_digest
from weldnet.digests import file_digest, fingerprint
from weldnet.config import DataError, build, run_stage
from weldnet.data import PhotoDataset, class_names as split_class_names, load_split_images, read_split
from weldnet.live import DvcLiveLog
from weldnet.losses import build_loss
from weldnet.models import build_model
from weldnet.params import StrategyConfig
from weldnet.paths import remove_output
from weldnet.schedules import SCHEDULES, Run
from weldnet.training import (make_deterministic, predict_logits, resolve_device, task_input,
                              validation_scores)
from weldnet.transfer import initialise, load_imagenet_alexnet


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
    (out / "config.json").write_text(json.dumps({"strategy": config.name, "reuse": strategy.reuse,
                                                 "decision": strategy.decision}, indent=2) + "\n")
    print(f"strategy {config.name}: no training; evaluate applies '{strategy.decision}' to {strategy.reuse}'s model")


def pretrained_state(config: StrategyConfig) -> dict[str, torch.Tensor] | None:
    """The weights the strategy starts from, checked against the digest its configuration names."""
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
    args = parser.parse_args()

    config = read_config(args.config)
    strategy = config.strategy
    if strategy.reuse is not None:
        write_reuse(args.out, args.live, config)
        return
    model_params, train_params = config.model, config.train
    device = resolve_device(config.device)
    make_deterministic(device)

    split = read_split(args.split)
    class_names = split_class_names(split)
    train_x, train_y = load_split_images(split, args.shards, "train", model_params.input_size)
    val_x, val_y = load_split_images(split, args.shards, "val", model_params.input_size)
    counts = np.bincount(train_y, minlength=len(class_names)).tolist()
    print(f"strategy {config.name}: loss {config.loss}, weighting {strategy.weighting}, sampler {strategy.sampler}, "
          f"schedule {strategy.schedule}, "
          f"{model_params.arch} at {model_params.input_size}px on {device}; "
          f"train counts {dict(zip(class_names, counts))}")

    record = asdict(config)
    record = {"strategy": record.pop("name"), "decision": strategy.decision, "axes": record.pop("strategy"),
              **record, "classes": class_names, "train_counts": counts, "device": str(device)}
    code = code_digest(Path(__file__))
    data_digest = file_digest(args.split)
    source = pretrained_state(config)
    remove_output(args.out)
    args.out.mkdir(parents=True)
    train = PhotoDataset(train_x, torch.as_tensor(train_y, dtype=torch.long))

    def validate(model: torch.nn.Module) -> dict[str, float]:
        logits = predict_logits(model, val_x, device, model_params.input_size, train_params.eval_batch_size)
        return validation_scores(logits, val_y, class_names)

    summary = {}
    for seed in train_params.seeds:
        torch.manual_seed(seed)
        model = build_model(model_params, len(class_names))
        if source is not None:
            print("  " + initialise(model, strategy, source))
        run_fingerprint = fingerprint(asdict(config), seed, data_digest, code)
        log = DvcLiveLog(args.live / f"seed-{seed}")
        run = Run(train, train_y, validate, params=train_params, sampler=strategy.sampler, sampling=config.sampling,
                  seed=seed, prepare=task_input(model_params.input_size, train_params.flip),
                  input_size=model_params.input_size, class_names=class_names, device=device,
                  name=config.name, log=log,
                  make_loss=lambda counts_: build_loss(config.loss, counts_, config.losses,
                                                       weighting=strategy.weighting, weightings=config.weightings),
                  checkpoints=lambda phase, seed=seed: checkpoint_io(
                      args.checkpoints / f"seed-{seed}{'-' + phase if phase else ''}.pt", run_fingerprint))
        result = SCHEDULES[strategy.schedule](model, run, config.schedules)
        log.close()
        seed_dir = args.out / f"seed-{seed}"
        seed_dir.mkdir()
        torch.save(result.state, seed_dir / "model.pt")
        summary[f"seed-{seed}"] = {"best_epoch": result.best_epoch, **result.details}
        print(f"  seed {seed}: selected epoch {result.best_epoch} of {result.epochs_run}")
    (args.out / "config.json").write_text(json.dumps({**record, "seeds": summary}, indent=2) + "\n")
    remove_output(args.checkpoints)   # trained: the run-cache, not a checkpoint, keeps it now


if __name__ == "__main__":
    run_stage(main)
