"""Writing the embedded synthetic export: labels.csv and the photos, in the layout a real user brings.

Photo i of a rig depends only on (seed, rig, i) and the camera settings, so the
output is byte-identical whatever the number of worker processes. The true flags
go to a separate truth file (image,rig,flags,noisy) that only scoring code reads.

Tests and benchmarks build small exports without params.yaml::

    generate(GenerateSpec(size=RigCounts(redbox=10, bluebox=10)), tmp_path / "export", tmp_path / "truth.csv")
"""
from __future__ import annotations

import sys
from pathlib import Path

from weldnet.core.config import DataError
from weldnet.core.files import csv_rows
from weldnet.core.flags import RIGS, format_flags
from weldnet.core.params import Camera, GenerateSpec
from weldnet.core.paths import remove_output
from weldnet.core.pool import ordered_map
from weldnet.core.progress import progress
from weldnet.synth.flags import SCENE_STREAM, flag_names, photo_rng, rig_flag_model, sample_labels
from weldnet.synth.scene import render_scene

# Written into every generated export, so a rerun may delete it but never a real export.
MARKER = ".generated-by-weldnet"


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
        # the marker, not the working directory, proves the folder is ours (tests generate into temporary folders)
        remove_output(export, root=export.absolute().parent)


def write_csv(path: Path, header: list[str], rows: list[list[object]]) -> None:
    with csv_rows(path) as writer:
        writer.writerow(header)
        for row in rows:
            writer.writerow(row)


def prepare_export(export: Path, writer: str = "`python -m stages.generate`") -> None:
    """An empty export folder with one ``images/<rig>`` folder per rig and the marker that lets a rerun
    delete it; replaces a previous generated export, refuses (DataError) to touch any other folder."""
    _clear_export(export)
    for rig in RIGS:
        (export / "images" / rig).mkdir(parents=True, exist_ok=True)
    (export / MARKER).write_text(f"Written by {writer}; deleted and rewritten on every run.\n")


def generate(spec: GenerateSpec, export: Path, truth: Path) -> None:
    """Write a generated export (labels.csv + images) and its truth file; replaces a previous export."""
    export, truth = Path(export), Path(truth)
    prepare_export(export)

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

    for _ in progress(ordered_map(_render_one, jobs, spec.workers, chunksize=8), desc="generate", unit="photo",
                      total=len(jobs), stream=sys.stdout):
        pass

    write_csv(export / "labels.csv", ["image", "rig", "flags"], label_rows)
    truth.parent.mkdir(parents=True, exist_ok=True)
    write_csv(truth, ["image", "rig", "flags", "noisy"], truth_rows)
