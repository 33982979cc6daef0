"""Speed ratios, measured in one run: the training loop against a bare loop, preprocess against plain Pillow.

1. Training: ``weldnet.train.loop.fit`` as the train stages run it (a DataLoader over
   the cached photos, the strategy's sampler, augmentation, every step's loss logged,
   validation after every epoch, checkpoints) against a bare loop of the same model
   over the same batches, already prepared in memory (zero_grad, forward, loss,
   backward, step), with the same validation forward passes after every epoch
   (validation is part of the method) and no logging, checkpoint or progress. The
   ratio is the bare loop's time over the training loop's, i.e. the share of the
   bare speed the loop keeps (target: at least 0.9).
2. Preprocess: the preprocess stage (JPEG draft decoding, 2 worker processes, SHA-256
   checks, shards) against plain Pillow in one process,
   ``Image.open(p).convert("RGB").resize((256, 256))``, on the same photos (half
   640x480 Redbox, half 1280x960 Bluebox JPEGs), by default as many as the default
   run's generated export holds (3000 per rig). The ratio is Pillow's time over
   preprocess's (target: at least 3). Wall time is the ratio a user sees; CPU time
   (all processes) is printed beside it because it is what other load skews least.
   The stage's fixed start-up (Python, imports, params, forking the workers; timed on
   one photo per rig) is included in its time and printed on its own: on a few hundred
   photos it is a large share of the stage, on the default export a small one.

    python benchmarks/train_speed.py                     # small_cnn at 64 px on the CPU, the default run's sizes
    python benchmarks/train_speed.py --device cuda --arch alexnet --input-size 224   # the report's model on a GPU

Each measurement is repeated (``--repeats``, interleaved) and the median is printed,
with the load average. Nothing is asserted.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))


def timed(fn) -> tuple[float, float]:
    """(wall s, CPU s of this process) of ``fn()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def training_ratio(args: argparse.Namespace) -> dict:
    import torch

    from weldnet.core.params import LossParams, ModelParams, SamplingParams, TrainParams
    from weldnet.photos.dataset import PhotoDataset, set_loader_epoch
    from weldnet.strategies.losses import build_loss
    from weldnet.strategies.models import build_model
    from weldnet.strategies.sampling import build_loader
    from weldnet.train.checkpoints import checkpoint_io
    from weldnet.train.device import make_deterministic, precision_for, resolve_device
    from weldnet.train.live import DvcLiveLog
    from weldnet.train.loop import FitSettings, epoch_seed, fit, task_input
    from weldnet.train.predict import model_input, predict_logits, validation_scores

    device = resolve_device(args.device)
    make_deterministic(device)
    model_params = ModelParams(arch=args.arch, input_size=args.input_size)
    params = TrainParams(epochs=args.epochs, batch_size=args.batch_size)
    precision = precision_for(device, model_params.mixed_precision)
    rng = np.random.default_rng(0)

    def photos(n: int) -> torch.Tensor:
        """Photos as the inputs stage stores them (at the model's size), held where the model runs."""
        size = args.input_size
        return torch.from_numpy(rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)).to(device)

    train_y = np.array([0] * args.train_default + [1] * args.train_minority)
    val_y = np.array([0] * (args.val - args.val // 8) + [1] * (args.val // 8))
    train = PhotoDataset(photos(len(train_y)), torch.as_tensor(train_y))
    val = PhotoDataset(photos(len(val_y)), torch.as_tensor(val_y))
    counts = np.bincount(train_y).tolist()
    prepare = task_input(args.input_size, params.flip)
    names = ["clamp_detected", "no_clamp"]

    def loop() -> None:
        torch.manual_seed(0)
        model = build_model(model_params, 2)
        loader = build_loader(train, train_y, params.batch_size, "none", 0, SamplingParams())
        log = DvcLiveLog(Path("live"))
        run = FitSettings(device, prepare, lambda m: validation_scores(
            predict_logits(m, val, device, args.input_size, params.eval_batch_size, precision=precision), val_y, names),
            log, seed=0, name="benchmark", precision=precision)
        save, _ = checkpoint_io(Path("ckpt") / "seed-0.pt", "benchmark")     # saved as a run does, never resumed
        fit(model, build_loss("cross_entropy", counts, LossParams()), loader, run, params, (save, lambda: None))
        log.close()

    # the bare loop's batches: the loop's own epoch orders and augmentation, prepared once, in memory;
    # its validation inputs too, forwarded after every epoch as the loop's validation does
    loader = build_loader(train, train_y, params.batch_size, "none", 0, SamplingParams())
    batches = []
    for epoch in range(params.epochs):
        set_loader_epoch(loader, epoch)
        generator = torch.Generator().manual_seed(epoch_seed(0, epoch))
        batches.append([(precision.layout(prepare(x.to(device), generator)), y.to(device)) for x, y in loader])
    val_inputs = [precision.layout(model_input(val.source.images[i:i + params.eval_batch_size], args.input_size))
                  for i in range(0, len(val), params.eval_batch_size)]

    def bare() -> None:
        torch.manual_seed(0)
        model = build_model(model_params, 2).to(device)
        if precision.channels_last:
            model.to(memory_format=torch.channels_last)
        loss_fn = build_loss("cross_entropy", counts, LossParams()).to(device)
        optimizer = torch.optim.SGD(model.parameters(), lr=params.lr, momentum=params.momentum,
                                    weight_decay=params.weight_decay)
        scaler = precision.scaler()
        for epoch in batches:
            model.train()
            for x, y in epoch:
                optimizer.zero_grad(set_to_none=True)
                with precision.autocast(device):
                    out = model(x)
                loss = loss_fn(out.float(), y)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    loss.backward()
                    optimizer.step()
            model.eval()
            with torch.no_grad(), precision.autocast(device):
                logits = torch.cat([model(x).float() for x in val_inputs])
            logits.cpu()
        if device.type == "cuda":
            torch.cuda.synchronize()

    def synced(fn):
        def run() -> None:
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
        return run

    images = len(train) * params.epochs
    results: dict[str, list[tuple[float, float]]] = {"loop": [], "bare": []}
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory(dir=REPO) as tmp:     # the log and checkpoint are written inside the working directory
        os.chdir(tmp)
        try:
            synced(bare)()                                   # warm-up (allocator, kernels)
            for _ in range(args.repeats):
                results["loop"].append(timed(synced(loop)))
                results["bare"].append(timed(bare))
        finally:
            os.chdir(cwd)
    loop_wall, loop_cpu = (statistics.median(t[k] for t in results["loop"]) for k in (0, 1))
    bare_wall, bare_cpu = (statistics.median(t[k] for t in results["bare"]) for k in (0, 1))
    print(f"training: {args.arch} at {args.input_size} px on {device} ({precision.dtype or 'float32'}), "
          f"{len(train)} photos x {params.epochs} epochs, batch {params.batch_size}, validation on {len(val)}; "
          f"median of {args.repeats}, torch threads {torch.get_num_threads()}")
    print(f"  training loop: {loop_wall:.2f} s wall ({images / loop_wall:.0f} photos/s), {loop_cpu:.2f} s CPU")
    print(f"  bare loop:     {bare_wall:.2f} s wall ({images / bare_wall:.0f} photos/s), {bare_cpu:.2f} s CPU")
    print(f"  ratio training loop / bare loop: {bare_wall / loop_wall:.3f} (wall; target at least 0.9), "
          f"{bare_cpu / loop_cpu:.3f} (CPU)")
    return {"device": str(device), "arch": args.arch, "input_size": args.input_size,
            "precision": str(precision.dtype or "float32"), "batch_size": params.batch_size, "photos": len(train),
            "epochs": params.epochs, "val": len(val), "repeats": args.repeats, "torch_threads": torch.get_num_threads(),
            "loop": {"wall_s": round(loop_wall, 3), "cpu_s": round(loop_cpu, 3),
                     "photos_per_s": round(images / loop_wall)},
            "bare": {"wall_s": round(bare_wall, 3), "cpu_s": round(bare_cpu, 3),
                     "photos_per_s": round(images / bare_wall)},
            "ratio_wall": round(bare_wall / loop_wall, 3), "ratio_cpu": round(bare_cpu / loop_cpu, 3)}


def plain_pillow(paths: list[Path], size: int) -> None:
    from PIL import Image

    for path in paths:
        with Image.open(path) as im:
            np.asarray(im.convert("RGB").resize((size, size)))


def preprocess_ratio(args: argparse.Namespace) -> dict:
    from preprocess_speed import build_export, ingest, run_stage, write_params

    def ingested(tmp: Path, name: str, per_rig: int) -> tuple[Path, Path, list[str]]:
        """An export of ``per_rig`` photos per rig and a run folder holding its manifest: (export, run, images)."""
        export, work = tmp / f"{name}_export", tmp / f"{name}_run"
        images = build_export(export, {"redbox": per_rig, "bluebox": per_rig})
        work.mkdir()
        write_params(work, args.size, 1000, 2)
        ingest(work, export)
        return export, work, images

    with tempfile.TemporaryDirectory() as tmp:
        export, work, images = ingested(Path(tmp), "all", args.photos)
        one_export, one_work, _ = ingested(Path(tmp), "one", 1)     # the stage's start-up alone
        paths = [export / image for image in images]
        runs: dict[str, list[tuple[float, float]]] = {"preprocess": [], "pillow": [], "startup": []}
        for _ in range(args.repeats):
            for key, folder, source in (("preprocess", work, export), ("startup", one_work, one_export)):
                wall, _, _ = run_stage(folder, "stages.preprocess", ["--export", str(source), "--manifest",
                                                                     "manifest.csv", "--out", "processed"])
                runs[key].append((wall, run_stage.cpu_s))
            runs["pillow"].append(timed(lambda: plain_pillow(paths, args.size)))
    pre_wall, pre_cpu = (statistics.median(t[k] for t in runs["preprocess"]) for k in (0, 1))
    pil_wall, pil_cpu = (statistics.median(t[k] for t in runs["pillow"]) for k in (0, 1))
    start_wall, start_cpu = (statistics.median(t[k] for t in runs["startup"]) for k in (0, 1))
    n = len(paths)
    print(f"preprocess: {n} photos ({args.photos} 640x480 + {args.photos} 1280x960 JPEG) to {args.size} px; "
          f"median of {args.repeats}")
    print(f"  preprocess stage (2 workers): {pre_wall:.2f} s wall ({pre_wall / n * 1e3:.2f} ms/photo), "
          f"{pre_cpu:.2f} s CPU, start-up included")
    print(f"  plain Pillow, one process:    {pil_wall:.2f} s wall ({pil_wall / n * 1e3:.2f} ms/photo), "
          f"{pil_cpu:.2f} s CPU")
    print(f"  of which start-up:            {start_wall:.2f} s wall, {start_cpu:.2f} s CPU (one photo per rig)")
    print(f"  ratio preprocess / plain Pillow: {pil_wall / pre_wall:.2f}x (wall; target at least 3), "
          f"{pil_cpu / pre_cpu:.2f}x (CPU)")
    return {"photos": n, "size": args.size, "repeats": args.repeats,
            "preprocess": {"wall_s": round(pre_wall, 3), "cpu_s": round(pre_cpu, 3)},
            "startup": {"wall_s": round(start_wall, 3), "cpu_s": round(start_cpu, 3)},
            "pillow": {"wall_s": round(pil_wall, 3), "cpu_s": round(pil_cpu, 3)},
            "ratio_wall": round(pil_wall / pre_wall, 3), "ratio_cpu": round(pil_cpu / pre_cpu, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    parser.add_argument("--arch", default="small_cnn")
    parser.add_argument("--input-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64, help="train.batch_size")
    parser.add_argument("--train-default", type=int, default=1576, help="default-class training photos")
    parser.add_argument("--train-minority", type=int, default=32, help="minority training photos")
    parser.add_argument("--val", type=int, default=600, help="validation photos")
    parser.add_argument("--photos", type=int, default=3000,
                        help="photos per rig for the preprocess ratio (default: the default run's export, 3000)")
    parser.add_argument("--size", type=int, default=256, help="preprocess.size")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", choices=["training", "preprocess"], help="measure one ratio only")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args()
    os.environ.setdefault("WELDNET_PROGRESS", "off")
    load = [round(x, 2) for x in os.getloadavg()]
    print(f"machine: {os.cpu_count()} CPUs, load average {' '.join(f'{x:.1f}' for x in load)} at start")
    report = {"cpus": os.cpu_count(), "load_average_start": load, "training": None, "preprocess": None}
    if args.only != "preprocess":
        report["training"] = training_ratio(args)
    if args.only != "training":
        report["preprocess"] = preprocess_ratio(args)
    report["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    print(f"load average at end {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
