"""Preprocess: shard shapes and boundaries, index correctness, and every photo normalised to upright RGB."""
from __future__ import annotations

import contextlib
import hashlib
import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import params_yaml
from PIL import Image

from stages import ingest, preprocess
from weldnet.core.config import DataError
from weldnet.photos.shards import load_images, load_rig, plan_shards, read_index

SIZE = 16
RED, BLUE, WHITE = (200, 30, 30), (30, 30, 200), (255, 255, 255)


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def solid(colour: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> Image.Image:
    return Image.new("RGB", size, colour)


def halves(size: tuple[int, int] = (64, 32)) -> Image.Image:
    """Left half red, right half blue."""
    arr = np.empty((size[1], size[0], 3), np.uint8)
    arr[:, : size[0] // 2] = RED
    arr[:, size[0] // 2:] = BLUE
    return Image.fromarray(arr)


def rotated_halves() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned 90 degrees clockwise: the red left half becomes the top
    return encode(halves(), "JPEG", quality=95, exif=exif.tobytes())


def colour(i: int) -> tuple[int, int, int]:
    return (20 * i, 250 - 20 * i, 7 * i)


# image -> (rig, bytes); redbox has 5 photos (shards of 3 and 2), bluebox exactly 3 (one full shard)
PHOTOS = {
    **{f"red/{i}.png": ("redbox", encode(solid(colour(i)), "PNG")) for i in range(3)},
    "red/gray.png": ("redbox", encode(Image.new("L", (40, 30), 90), "PNG")),
    "red/gray16.png": ("redbox", encode(Image.fromarray(np.full((30, 40), 40000, np.uint16)), "PNG")),
    "blue/rgba.png": ("bluebox", encode(Image.new("RGBA", (40, 30), (0, 0, 0, 0)), "PNG")),
    "blue/rotated.jpg": ("bluebox", rotated_halves()),
    "blue/cmyk.jpg": ("bluebox", encode(solid(RED).convert("CMYK"), "JPEG", quality=95)),
}


def write_params(folder: Path, workers: int = 2, shard_size: int = 3) -> None:
    (folder / "params.yaml").write_text(params_yaml(
        ingest={"workers": workers}, preprocess={"size": SIZE, "shard_size": shard_size, "workers": workers}))


def run(stage, folder: Path, *argv: str) -> None:
    with contextlib.chdir(folder):
        stage.main(list(argv))


def preprocess_args(export: Path) -> list[str]:
    return ["--export", str(export), "--manifest", "manifest.csv", "--out", "processed"]


@pytest.fixture(scope="module")
def processed(tmp_path_factory):
    base = tmp_path_factory.mktemp("pre")
    export = base / "export"
    for image, (_, data) in PHOTOS.items():
        (export / image).parent.mkdir(parents=True, exist_ok=True)
        (export / image).write_bytes(data)
    rows = [f"{image},{rig}," for image, (rig, _) in PHOTOS.items()]
    (export / "labels.csv").write_text("\n".join(["image,rig,flags", *rows]) + "\n")
    write_params(base)
    run(ingest, base, "--export", str(export), "--manifest", "manifest.csv", "--rejected", "rejected.csv",
        "--metrics", "ingest.json")
    run(preprocess, base, *preprocess_args(export))
    return base, export


def pixel(images: np.ndarray, k: int, y: int, x: int) -> np.ndarray:
    return images[k, y, x].astype(int)


def test_shards_have_the_right_shapes_dtype_and_boundaries(processed):
    out = processed[0] / "processed"
    shapes = {p.name: np.load(p, mmap_mode="r").shape for p in sorted(out.glob("*.npy"))}
    assert shapes == {"redbox-000.npy": (3, SIZE, SIZE, 3), "redbox-001.npy": (2, SIZE, SIZE, 3),
                      "bluebox-000.npy": (3, SIZE, SIZE, 3)}
    assert all(np.load(p, mmap_mode="r").dtype == np.uint8 for p in out.glob("*.npy"))


def test_index_lists_every_photo_in_manifest_order_at_its_shard_and_row(processed):
    index = read_index(processed[0] / "processed/index.csv")
    assert index["image"].tolist() == list(PHOTOS)
    assert list(zip(index["shard"], index["row"])) == [
        ("redbox-000.npy", 0), ("redbox-000.npy", 1), ("redbox-000.npy", 2), ("redbox-001.npy", 0),
        ("redbox-001.npy", 1), ("bluebox-000.npy", 0), ("bluebox-000.npy", 1), ("bluebox-000.npy", 2)]


def test_a_known_photo_lands_at_its_row_with_its_pixels(processed):
    out = processed[0] / "processed"
    shard = np.load(out / "redbox-000.npy")
    for i in range(3):
        assert (shard[i] == colour(i)).all(), i


def test_load_images_follows_the_requested_order_with_repeats(processed):
    out = processed[0] / "processed"
    index = read_index(out / "index.csv")
    images = load_images(index, out, ["red/2.png", "red/0.png", "red/gray.png", "red/2.png"])
    assert images.shape == (4, SIZE, SIZE, 3) and images.dtype == np.uint8
    assert (images[0] == colour(2)).all() and (images[1] == colour(0)).all() and (images[3] == colour(2)).all()
    assert load_images(index, out, []).shape == (0, SIZE, SIZE, 3)
    with pytest.raises(DataError, match="not in .*index.csv"):
        load_images(index, out, ["red/nope.png"])


def test_every_mode_becomes_upright_rgb(processed):
    out = processed[0] / "processed"
    index = read_index(out / "index.csv")
    names = ["red/gray.png", "red/gray16.png", "blue/rgba.png", "blue/rotated.jpg", "blue/cmyk.jpg"]
    gray, gray16, rgba, rotated, cmyk = load_images(index, out, names)
    assert (gray == 90).all()
    assert (gray16 == 40000 // 257).all()
    assert (rgba == WHITE).all()  # transparency composited on white
    assert np.abs(pixel(rotated[None], 0, 0, 0) - RED).max() < 20  # red half on top after EXIF rotation
    assert np.abs(pixel(rotated[None], 0, SIZE - 1, 0) - BLUE).max() < 20
    assert np.abs(cmyk.reshape(-1, 3).mean(axis=0) - RED).max() < 20


def test_load_rig_returns_one_rig_in_index_order(processed):
    out = processed[0] / "processed"
    names, images = load_rig(read_index(out / "index.csv"), out, "bluebox")
    assert names == ["blue/rgba.png", "blue/rotated.jpg", "blue/cmyk.jpg"] and images.shape[0] == 3


def test_one_worker_writes_the_same_shards_and_stale_shards_go(processed, tmp_path):
    base, export = processed
    write_params(tmp_path, workers=1)
    (tmp_path / "manifest.csv").write_bytes((base / "manifest.csv").read_bytes())
    (tmp_path / "processed").mkdir()
    np.save(tmp_path / "processed/redbox-009.npy", np.zeros(1, np.uint8))
    run(preprocess, tmp_path, *preprocess_args(export))
    names = sorted(p.name for p in (tmp_path / "processed").glob("*.npy"))
    assert names == ["bluebox-000.npy", "redbox-000.npy", "redbox-001.npy"]
    for name in names:
        assert (np.load(tmp_path / "processed" / name) == np.load(base / "processed" / name)).all()


def test_a_folder_holding_other_files_is_not_emptied(processed, tmp_path):
    base, export = processed
    write_params(tmp_path)
    (tmp_path / "manifest.csv").write_bytes((base / "manifest.csv").read_bytes())
    (tmp_path / "processed").mkdir()
    (tmp_path / "processed/keep.txt").write_text("mine")
    with pytest.raises(DataError, match="refusing to empty"):
        run(preprocess, tmp_path, *preprocess_args(export))
    assert (tmp_path / "processed/keep.txt").exists()


def test_a_photo_that_fails_to_decode_is_a_data_error_naming_it(processed, tmp_path):
    base, export = processed
    broken = tmp_path / "export/bad.jpg"
    broken.parent.mkdir()
    broken.write_bytes(encode(halves(), "JPEG")[:300])
    manifest = pd.read_csv(base / "manifest.csv").head(1)
    manifest.loc[0, ["image", "sha256"]] = ["bad.jpg", hashlib.sha256(broken.read_bytes()).hexdigest()]
    manifest.to_csv(tmp_path / "manifest.csv", index=False)
    write_params(tmp_path)
    with pytest.raises(DataError, match=r"bad\.jpg: corrupt or truncated"):
        run(preprocess, tmp_path, *preprocess_args(tmp_path / "export"))


def test_a_photo_changed_since_ingest_is_a_data_error(processed, tmp_path):
    base, export = processed
    copy = tmp_path / "export"
    for image in PHOTOS:
        (copy / image).parent.mkdir(parents=True, exist_ok=True)
        (copy / image).write_bytes((export / image).read_bytes())
    (copy / "red/1.png").write_bytes(encode(solid(BLUE), "PNG"))
    (tmp_path / "manifest.csv").write_bytes((base / "manifest.csv").read_bytes())
    write_params(tmp_path)
    with pytest.raises(DataError, match=r"red/1\.png: the file changed since ingest"):
        run(preprocess, tmp_path, *preprocess_args(copy))


def test_a_missing_manifest_says_to_run_ingest(tmp_path):
    write_params(tmp_path)
    with pytest.raises(DataError, match="run the ingest stage"):
        run(preprocess, tmp_path, *preprocess_args(tmp_path))


def test_plan_shards_counts_rows_per_rig():
    plan = plan_shards(["a", "b", "c", "d", "e"], ["redbox", "bluebox", "redbox", "redbox", "bluebox"], 2)
    assert plan["shard"].tolist() == ["redbox-000.npy", "bluebox-000.npy", "redbox-000.npy", "redbox-001.npy",
                                      "bluebox-000.npy"]
    assert plan["row"].tolist() == [0, 0, 1, 0, 1]
