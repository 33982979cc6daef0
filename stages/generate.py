"""Stage `generate`: synthetic Redbox/Bluebox weld photos with known flags, in the export layout.

    python -m stages.generate --export data/export --truth data/truth.csv

Reads the `generate` section of params.yaml. Writes `<export>/labels.csv` (image,rig,flags:
the *recorded* flags, with Redbox label noise) and `<export>/images/<rig>/<rig>_<NNNNN>.jpg`,
and the true flags to the truth file (image,rig,flags,noisy), which only scoring code reads.
Photo i of a rig depends only on (seed, rig, i) and the camera settings, so the output is
byte-identical whatever the number of worker processes.

Other modules' tests build a small export without params.yaml:

    generate(GenerateSpec(size=RigCounts(redbox=10, bluebox=10)), tmp_path / "export", tmp_path / "truth.csv")
"""
from __future__ import annotations

import argparse
import csv
import shutil
from dataclasses import dataclass, field
from multiprocessing import Pool
from pathlib import Path

from stages.validate import load_checked_params
from weldnet.config import DataError, build, check_range, run_stage, section
from weldnet.flags import RIGS, format_flags
from weldnet.scene import render_scene
from weldnet.synth import SCENE_STREAM, flag_names, photo_rng, rig_flag_model, sample_labels

# Written into every generated export, so a rerun may delete it but never a real export.
MARKER = ".generated-by-weldnet"


@dataclass(frozen=True)
class RigCounts:
    redbox: int
    bluebox: int


@dataclass(frozen=True)
class RigShares:
    redbox: float
    bluebox: float


@dataclass(frozen=True)
class Camera:
    blur: float          # Gaussian blur radius, output pixels (each photo varies it by +-25%)
    noise: float         # sensor noise standard deviation, 8-bit levels
    jpeg_quality: int    # PIL JPEG quality, 1..95


@dataclass(frozen=True)
class RigCameras:
    redbox: Camera
    bluebox: Camera


@dataclass(frozen=True)
class GenerateSpec:
    seed: int = 2014
    size: RigCounts = field(default_factory=lambda: RigCounts(redbox=3000, bluebox=3000))
    label_noise: RigShares = field(default_factory=lambda: RigShares(redbox=0.10, bluebox=0.0))
    workers: int = 2
    camera: RigCameras = field(default_factory=lambda: RigCameras(
        redbox=Camera(blur=1.2, noise=7.0, jpeg_quality=75),
        bluebox=Camera(blur=0.0, noise=2.5, jpeg_quality=85)))

    def validate(self, where: str) -> None:
        check_range(self.seed, f"{where}.seed", low=0)
        check_range(self.workers, f"{where}.workers", low=1)
        for rig in RIGS:
            check_range(getattr(self.size, rig), f"{where}.size.{rig}", low=0)
            check_range(getattr(self.label_noise, rig), f"{where}.label_noise.{rig}", low=0, high=1)
            camera = getattr(self.camera, rig)
            check_range(camera.blur, f"{where}.camera.{rig}.blur", low=0, high=20)
            check_range(camera.noise, f"{where}.camera.{rig}.noise", low=0, high=64)
            check_range(camera.jpeg_quality, f"{where}.camera.{rig}.jpeg_quality", low=1, high=95)


def image_name(rig: str, index: int) -> str:
    return f"images/{rig}/{rig}_{index:05d}.jpg"


def _render_one(job: tuple[int, str, int, tuple[str, ...], Camera, str]) -> None:
    seed, rig, index, flags, camera, path = job
    img = render_scene(flags, rig, photo_rng(seed, rig, index, SCENE_STREAM), camera.blur, camera.noise)
    img.save(path, "JPEG", quality=camera.jpeg_quality)


def _clear_export(export: Path) -> None:
    if export.exists() and any(export.iterdir()):
        if not (export / MARKER).exists():
            raise DataError(f"{export} is not empty and was not written by this stage; "
                            "point --export at a new or empty directory (it is deleted on every run)")
        shutil.rmtree(export)


def _write_csv(path: Path, header: list[str], rows: list[list[object]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def generate(spec: GenerateSpec, export: Path, truth: Path) -> None:
    """Write a generated export (labels.csv + images) and its truth file; replaces a previous export."""
    export, truth = Path(export), Path(truth)
    _clear_export(export)
    for rig in RIGS:
        (export / "images" / rig).mkdir(parents=True, exist_ok=True)
    (export / MARKER).write_text("Written by `python -m stages.generate`; deleted and rewritten on every run.\n")

    jobs, label_rows, truth_rows = [], [], []
    for rig in RIGS:
        n = getattr(spec.size, rig)
        true_flags, noisy = sample_labels(rig_flag_model(rig), spec.seed, rig, n, getattr(spec.label_noise, rig))
        camera = getattr(spec.camera, rig)
        for i in range(n):
            name, flags = image_name(rig, i), flag_names(true_flags[i])
            jobs.append((spec.seed, rig, i, flags, camera, str(export / name)))
            label_rows.append([name, rig, "" if noisy[i] else format_flags(flags)])
            truth_rows.append([name, rig, format_flags(flags), int(noisy[i])])

    if spec.workers == 1 or len(jobs) < 2:
        for job in jobs:
            _render_one(job)
    else:
        with Pool(min(spec.workers, len(jobs))) as pool:
            for _ in pool.imap_unordered(_render_one, jobs, chunksize=8):
                pass

    _write_csv(export / "labels.csv", ["image", "rig", "flags"], label_rows)
    truth.parent.mkdir(parents=True, exist_ok=True)
    _write_csv(truth, ["image", "rig", "flags", "noisy"], truth_rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--export", type=Path, required=True, help="export directory to (re)write")
    parser.add_argument("--truth", type=Path, required=True, help="CSV of the true flags")
    args = parser.parse_args()
    spec = build(GenerateSpec, section(load_checked_params(), "generate"), "generate")
    generate(spec, args.export, args.truth)
    print(f"generate: wrote {spec.size.redbox} redbox + {spec.size.bluebox} bluebox photos to {args.export}")


if __name__ == "__main__":
    run_stage(main)
