"""A real-image stand-in for scoring the audit: scanned handwritten digits with one-sided label noise.

The audit's automatic estimate is scored on generated photos
(benchmarks/audit_accuracy.py); this module builds the same kind of test from real
images. Two digits play two flags of the clamp tasks (:data:`FLAG_DIGITS`), every
other digit a flagless photo; their shares mimic a rig where ``1 - sum(shares)``
of the photos (88% by default) are flagless. Each photo is upscaled to the audit's
thumbnail size, as a photo is scaled down to it. Label noise is the generator's:
a flawed photo (one carrying a flag) is recorded with no flag when its uniform
draw falls below the noise level (weldnet.synth.flags.missing_flags), so the photos
hidden at 5% are also hidden at 10%.

Pure functions: arrays in, arrays and tables out (the benchmarks load the digits),
except :func:`write_export`, which writes the digits as an export in the layout a
user brings (docs/data.md), for the pipeline to train on (benchmarks/digits_study.py).
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageFilter

from weldnet.core.flags import FLAGS, format_flags
from weldnet.synth.export import prepare_export, write_csv
from weldnet.synth.flags import missing_flags

# 8 and 9 are the digits most often misread (3-fold cross-validated logistic regression on
# the raw pixels misreads 18 of the 174 eights and 22 of the 180 nines, mostly as 1, 3 or
# 5), so the two flags are not trivially visible.
FLAG_DIGITS: dict[int, str] = {8: "No Clamp Used", 9: "Photo Does Not Show Enough Of Clamps"}
FLAG_SHARES: dict[int, float] = {8: 0.08, 9: 0.04}


def upscale(images: np.ndarray, size: int, levels: float) -> np.ndarray:
    """Grey images (n, h, w) with values in [0, levels] -> uint8 RGB (n, size, size, 3), dark ink on white.

    Bilinear resampling, as the thumbnails of the audit (weldnet.photos.images.load_resized).
    """
    grey = np.rint(np.clip(255.0 * (1.0 - np.asarray(images, dtype=np.float64) / levels), 0, 255)).astype(np.uint8)
    out = np.empty((len(grey), size, size, 3), dtype=np.uint8)
    for i, image in enumerate(grey):
        out[i] = np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR))[..., None]
    return out


def draw_photos(digits: np.ndarray, shares: Mapping[int, float], rng: np.random.Generator) -> np.ndarray:
    """Indices of the photos of the stand-in, shuffled: digit ``d`` makes up ``shares[d]`` of them and the
    other digits together the rest, with as many photos as the scarcest group allows.

    The group with the fewest photos per unit of share is used whole; the others are
    drawn from without replacement.
    """
    digits = np.asarray(digits)
    flagless = 1.0 - sum(shares.values())
    if not 0 < flagless < 1 or any(s <= 0 for s in shares.values()):
        raise ValueError(f"digit shares {dict(shares)} must be positive and sum to less than 1")
    groups = {d: np.flatnonzero(digits == d) for d in shares}
    groups[-1] = np.flatnonzero(~np.isin(digits, list(shares)))
    group_share = {**shares, -1: flagless}
    empty = [d for d, rows in groups.items() if not len(rows)]
    if empty:
        raise ValueError(f"no photo of digit {empty[0]}" if empty[0] >= 0 else "no flagless digit")
    n = min(len(rows) / group_share[d] for d, rows in groups.items())
    chosen = [rng.choice(rows, size=min(len(rows), max(1, round(group_share[d] * n))), replace=False)
              for d, rows in groups.items()]
    return rng.permutation(np.concatenate(chosen))


def true_flags(digits: np.ndarray, flag_digits: Mapping[int, str] = FLAG_DIGITS) -> pd.DataFrame:
    """The 0/1 flag table (FLAGS columns) of each photo: its digit's flag, or none."""
    digits = np.asarray(digits)
    table = pd.DataFrame(0, index=np.arange(len(digits)), columns=list(FLAGS), dtype=np.int64)
    for digit, flag in flag_digits.items():
        table.loc[digits == digit, flag] = 1
    return table


def recorded_flags(true: pd.DataFrame, uniforms: np.ndarray, noise: float) -> pd.DataFrame:
    """The flags as recorded: a flawed photo whose uniform is below ``noise`` is recorded with none."""
    recorded = true.copy()
    recorded.loc[missing_flags(true.to_numpy(), uniforms, noise), :] = 0
    return recorded


def flag_lists(table: pd.DataFrame) -> list[tuple[str, ...]]:
    """The flag names of each row of a 0/1 flag table."""
    columns = list(table.columns)
    return [tuple(columns[j] for j in np.flatnonzero(row)) for row in table.to_numpy()]


def write_export(export: Path, truth: Path, images: np.ndarray, digits: np.ndarray, size: int,
                 redbox_noise: float, rng: np.random.Generator) -> None:
    """Every digit as a Bluebox photo and, softened, as a Redbox photo: an export and its truth file.

    ``images`` are the grey digits (n, h, w) with values in [0, 16]; each is upscaled
    to ``size`` px (:func:`upscale`) and saved losslessly as ``images/bluebox/digit_<i>.png``,
    with its flags recorded truly (:data:`FLAG_DIGITS`). The Redbox photo of the same
    digit is that image blurred and saved as a JPEG of quality 75, its flags recorded
    with ``redbox_noise`` one-sided label noise. So the two rigs hold the same digits:
    a strategy that starts from the Redbox pretraining has seen every Bluebox test
    digit, and a study on this export keeps to strategies trained from scratch.
    The truth file has the generator's columns (``image,rig,flags,noisy``).
    """
    export, truth = Path(export), Path(truth)
    prepare_export(export, "benchmarks/digits_study.py")
    photos = upscale(images, size, levels=16.0)
    true = true_flags(digits)
    recorded = {"bluebox": true, "redbox": recorded_flags(true, rng.random(len(digits)), redbox_noise)}
    true_names = flag_lists(true)
    label_rows, truth_rows = [], []
    for rig, suffix in (("bluebox", "png"), ("redbox", "jpg")):
        names = flag_lists(recorded[rig])
        for i, photo in enumerate(photos):
            name = f"images/{rig}/digit_{i:04d}.{suffix}"
            image = Image.fromarray(photo)
            if rig == "bluebox":
                image.save(export / name, "PNG")
            else:
                image.filter(ImageFilter.GaussianBlur(1.2)).save(export / name, "JPEG", quality=75)
            label_rows.append([name, rig, format_flags(names[i])])
            truth_rows.append([name, rig, format_flags(true_names[i]), int(names[i] != true_names[i])])
    write_csv(export / "labels.csv", ["image", "rig", "flags"], label_rows)
    truth.parent.mkdir(parents=True, exist_ok=True)
    write_csv(truth, ["image", "rig", "flags", "noisy"], truth_rows)
