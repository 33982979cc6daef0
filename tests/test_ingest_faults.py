"""Fault injection for the ingest stage: an export holding every kind of bad data a real one may have.

Each bad row or file must appear in rejected.csv with its category and a reason,
every good photo must reach the manifest with the right labels and upright size,
and strict mode or an unusable labels.csv must end the stage with one line (exit 2).
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from stages import ingest as stage
from weldnet.config import DataError, ParamError
from weldnet.ingest import REASONS
from conftest import params_yaml

REPO = Path(__file__).resolve().parents[1]
MAX_PIXELS = 100_000  # small, so "very large" photos stay cheap to build


def photo(size: tuple[int, int] = (64, 48), seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def encode(im: Image.Image, fmt: str = "JPEG", **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 64x48, shown 48x64
    return encode(photo(), exif=exif.tobytes())


def damaged_png() -> bytes:
    data = bytearray(encode(photo(), "PNG"))
    data[len(data) // 2: len(data) // 2 + 64] = bytes(64)
    return bytes(data)


# path on disk -> content (bytes), for files inside the export
FILES: dict[str, bytes] = {
    "images/redbox/good.jpg": encode(photo()),
    "images/bluebox/flags.jpg": encode(photo(seed=1)),
    "images/redbox/gray.png": encode(photo().convert("L"), "PNG"),
    "images/redbox/palette.png": encode(photo().convert("P"), "PNG"),
    "images/redbox/palette_trns.png": encode(photo().convert("P"), "PNG", transparency=0),
    "images/redbox/gray16.png": encode(Image.fromarray(np.full((48, 64), 40000, np.uint16)), "PNG"),
    "images/redbox/rgba.png": encode(photo().convert("RGBA"), "PNG"),
    "images/redbox/bilevel.png": encode(photo().convert("1"), "PNG"),
    "images/bluebox/cmyk.jpg": encode(photo().convert("CMYK")),
    "images/bluebox/rotated.jpg": rotated_jpeg(),
    "images/bluebox/large.jpg": encode(photo((300, 200))),
    "images/redbox/windows.jpg": encode(photo(seed=2)),
    "images/redbox/dotslash.jpg": encode(photo(seed=3)),
    "images/redbox/dup.jpg": encode(photo(seed=4)),
    "images/redbox/caserig.jpg": encode(photo(seed=5)),
    "images/redbox/upper.JPG": encode(photo(seed=6)),
    "images/redbox/bad_exif.jpg": encode(photo(), exif=b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\xff\xff junk"),
    # bad files
    "images/redbox/truncated.jpg": encode(photo((200, 150)))[:1500],
    "images/redbox/zero.jpg": b"",
    "images/redbox/text.jpg": b"not a photo\n",
    "notes.txt": b"some notes\n",
    "images/redbox/corrupt.jpg": b"\xff\xd8" + bytes(np.random.default_rng(7).integers(0, 256, 3000, dtype=np.uint8)),
    "images/redbox/damaged.png": damaged_png(),
    "images/redbox/gif.png": encode(photo(), "GIF"),
    "images/bluebox/huge.jpg": encode(photo((400, 300))),
    "images/bluebox/bomb.png": encode(Image.new("1", (1000, 1000)), "PNG"),
    # rows rejected for their labels: the files are fine and must not count as "no row"
    "images/redbox/badflag.jpg": encode(photo()),
    "images/redbox/noflags.jpg": encode(photo()),
    "images/redbox/nan.jpg": encode(photo()),
    "images/redbox/greenrig.jpg": encode(photo()),
    "images/redbox/extra.jpg": encode(photo()),
    "images/redbox/conflict.jpg": encode(photo()),
    # photos nobody listed
    "images/redbox/norow.jpg": encode(photo()),
    "images/bluebox/sub/norow2.png": encode(photo(), "PNG"),
    # never reported: hidden files and non-photo files without a row
    "images/redbox/.hidden.jpg": encode(photo()),
    "images/.DS_Store": b"\x00\x01",
    "README.txt": b"export notes\n",
}

# labels.csv data lines (between header and end), as a user's export might have them
ROWS = [
    "images/redbox/good.jpg,redbox,",
    'images/bluebox/flags.jpg,bluebox," no clamp used ;OTHER;; No Clamp Used"',
    "images/redbox/gray.png,redbox,",
    "images/redbox/palette.png,redbox,",
    "images/redbox/palette_trns.png,redbox,",
    "images/redbox/gray16.png,redbox,",
    "images/redbox/rgba.png,redbox,",
    "images/redbox/bilevel.png,redbox,",
    "images/bluebox/cmyk.jpg,bluebox,",
    "images/bluebox/rotated.jpg,bluebox,",
    "images/bluebox/large.jpg,bluebox,",
    "images\\redbox\\windows.jpg,redbox,",
    "./images/redbox/dotslash.jpg,redbox,",
    "images/redbox/link_in.jpg,redbox,",
    "images/redbox/dup.jpg,redbox,Other",
    "images/redbox/caserig.jpg,RedBox,",
    "images/redbox/upper.JPG,redbox,",
    "images/redbox/bad_exif.jpg,redbox,",
    "images/redbox/dup.jpg,redbox,other",
    "images/redbox/truncated.jpg,redbox,",
    "images/redbox/zero.jpg,redbox,",
    "images/redbox/text.jpg,redbox,",
    "notes.txt,redbox,",
    "images/redbox/corrupt.jpg,redbox,",
    "images/redbox/damaged.png,redbox,",
    "images/redbox/gif.png,redbox,",
    "images/bluebox/huge.jpg,bluebox,",
    "images/bluebox/bomb.png,bluebox,",
    "images/redbox/badflag.jpg,redbox,No Clamp Usd",
    "images/redbox/nosuch.jpg,redbox,",
    "images,redbox,",
    "images/redbox/conflict.jpg,redbox,Other",
    "images/redbox/conflict.jpg,redbox,",
    "../outside.jpg,redbox,",
    "{outside},redbox,",
    "images/redbox/link_out.jpg,redbox,",
    "images/redbox/noflags.jpg,redbox",
    "images/redbox/nan.jpg,redbox,NaN",
    "images/redbox/greenrig.jpg,greenbox,",
    "images/redbox/extra.jpg,redbox,No Clamp Used,Other",
    ",redbox,",
    "",
    ",,",
]

# manifest image -> (rig, flags, width, height)
GOOD = {
    "images/redbox/good.jpg": ("redbox", set(), 64, 48),
    "images/bluebox/flags.jpg": ("bluebox", {"No Clamp Used", "Other"}, 64, 48),
    "images/redbox/gray.png": ("redbox", set(), 64, 48),
    "images/redbox/palette.png": ("redbox", set(), 64, 48),
    "images/redbox/palette_trns.png": ("redbox", set(), 64, 48),
    "images/redbox/gray16.png": ("redbox", set(), 64, 48),
    "images/redbox/rgba.png": ("redbox", set(), 64, 48),
    "images/redbox/bilevel.png": ("redbox", set(), 64, 48),
    "images/bluebox/cmyk.jpg": ("bluebox", set(), 64, 48),
    "images/bluebox/rotated.jpg": ("bluebox", set(), 48, 64),
    "images/bluebox/large.jpg": ("bluebox", set(), 300, 200),
    "images/redbox/windows.jpg": ("redbox", set(), 64, 48),
    "images/redbox/dotslash.jpg": ("redbox", set(), 64, 48),
    "images/redbox/link_in.jpg": ("redbox", set(), 64, 48),
    "images/redbox/dup.jpg": ("redbox", {"Other"}, 64, 48),
    "images/redbox/caserig.jpg": ("redbox", set(), 64, 48),
    "images/redbox/upper.JPG": ("redbox", set(), 64, 48),
    "images/redbox/bad_exif.jpg": ("redbox", set(), 64, 48),  # unreadable EXIF: kept, taken as upright
}

# (image as in rejected.csv, category)
BAD = [
    ("images/redbox/dup.jpg", "duplicate_row"),
    ("images/redbox/truncated.jpg", "unreadable_image"),
    ("images/redbox/zero.jpg", "unreadable_image"),
    ("images/redbox/text.jpg", "unreadable_image"),
    ("notes.txt", "unreadable_image"),
    ("images/redbox/corrupt.jpg", "unreadable_image"),
    ("images/redbox/damaged.png", "unreadable_image"),
    ("images/redbox/gif.png", "unreadable_image"),
    ("images/bluebox/huge.jpg", "too_large"),
    ("images/bluebox/bomb.png", "too_large"),
    ("images/redbox/badflag.jpg", "unknown_flag"),
    ("images/redbox/nosuch.jpg", "missing_file"),
    ("images", "missing_file"),
    ("images/redbox/conflict.jpg", "conflicting_rows"),
    ("images/redbox/conflict.jpg", "conflicting_rows"),
    ("../outside.jpg", "unsafe_path"),
    ("{outside}", "unsafe_path"),
    ("images/redbox/link_out.jpg", "unsafe_path"),
    ("images/redbox/noflags.jpg", "labels_unknown"),
    ("images/redbox/nan.jpg", "labels_unknown"),
    ("images/redbox/greenrig.jpg", "unknown_rig"),
    ("images/redbox/extra.jpg", "bad_row"),
    ("", "bad_row"),
    ("images/redbox/norow.jpg", "no_row"),
    ("images/bluebox/sub/norow2.png", "no_row"),
]


def write_params(folder: Path, strict: bool = False, workers: int = 2) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "params.yaml").write_text(
        params_yaml(ingest={"max_pixels": MAX_PIXELS, "strict": strict, "workers": workers}))


def build_export(base: Path) -> tuple[Path, str]:
    export = base / "export"
    for rel, data in FILES.items():
        (export / rel).parent.mkdir(parents=True, exist_ok=True)
        (export / rel).write_bytes(data)
    outside = base / "outside.jpg"
    outside.write_bytes(encode(photo()))
    os.symlink(outside, export / "images/redbox/link_out.jpg")
    os.symlink(export / "images/redbox/good.jpg", export / "images/redbox/link_in.jpg")
    rows = [r.replace("{outside}", str(outside)) for r in ROWS]
    # Excel-style export: UTF-8 BOM and Windows line ends
    text = "\r\n".join(["image,rig,flags", *rows]) + "\r\n"
    (export / "labels.csv").write_bytes(text.encode("utf-8-sig"))
    return export, str(outside)


def args(export: Path) -> list[str]:
    return ["--export", str(export), "--manifest", "out/manifest.csv",
            "--rejected", "out/rejected.csv", "--metrics", "out/ingest.json"]


def run_in(folder: Path, argv: list[str]) -> None:
    with contextlib.chdir(folder):
        stage.main(argv)


def run_subprocess(folder: Path, argv: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "stages.ingest", *argv], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    base = tmp_path_factory.mktemp("faults")
    export, outside = build_export(base)
    write_params(base / "run")
    run_in(base / "run", args(export))
    out = base / "run" / "out"
    manifest = pd.read_csv(out / "manifest.csv", keep_default_na=False)
    rejected = pd.read_csv(out / "rejected.csv", keep_default_na=False)
    metrics = json.loads((out / "ingest.json").read_text())
    return {"base": base, "export": export, "outside": outside, "manifest": manifest,
            "rejected": rejected, "metrics": metrics}


def test_every_good_photo_reaches_the_manifest_with_its_labels_and_upright_size(ingested):
    manifest = ingested["manifest"].set_index("image")
    assert sorted(manifest.index) == sorted(GOOD)
    for image, (rig, flags, width, height) in GOOD.items():
        row = manifest.loc[image]
        raised = {f for f in manifest.columns[4:] if row[f] == 1}
        assert (row["rig"], raised, row["width"], row["height"]) == (rig, flags, width, height), image


def test_manifest_keeps_labels_csv_order_and_content_hashes(ingested):
    manifest, export = ingested["manifest"], ingested["export"]
    assert list(manifest["image"]) == [i for i in GOOD]  # GOOD lists them in row order
    for image, sha in zip(manifest["image"], manifest["sha256"]):
        assert hashlib.sha256((export / image).read_bytes()).hexdigest() == sha


@pytest.mark.parametrize("image,category", BAD)
def test_each_bad_item_is_rejected_with_its_category_and_a_reason(ingested, image, category):
    image = image.replace("{outside}", ingested["outside"])
    rows = ingested["rejected"][ingested["rejected"]["image"] == image]
    assert category in set(rows["category"]), f"{image}: {rows.to_dict('records')}"
    assert all(len(reason) > 10 for reason in rows["reason"])


def test_nothing_but_the_bad_items_is_rejected(ingested):
    rejected = ingested["rejected"]
    expected = Counter((i.replace("{outside}", ingested["outside"]), c) for i, c in BAD)
    assert Counter(zip(rejected["image"], rejected["category"])) == expected


def test_reasons_say_what_to_do(ingested):
    reasons = dict(zip(zip(ingested["rejected"]["image"], ingested["rejected"]["category"]),
                       ingested["rejected"]["reason"]))
    assert "did you mean 'No Clamp Used'" in reasons[("images/redbox/badflag.jpg", "unknown_flag")]
    assert "empty" in reasons[("images/redbox/noflags.jpg", "labels_unknown")]
    assert "'NaN'" in reasons[("images/redbox/nan.jpg", "labels_unknown")]
    assert "truncated" in reasons[("images/redbox/truncated.jpg", "unreadable_image")]
    assert "0 bytes" in reasons[("images/redbox/zero.jpg", "unreadable_image")]
    assert "ingest.max_pixels" in reasons[("images/bluebox/huge.jpg", "too_large")]
    assert reasons[("images/redbox/norow.jpg", "no_row")] == "no row in labels.csv"
    assert "line 16" in reasons[("images/redbox/dup.jpg", "duplicate_row")]  # the kept row


def test_rejected_rows_point_at_their_labels_csv_line(ingested):
    rejected = ingested["rejected"]
    line = dict(zip(rejected["image"], rejected["line"]))
    assert line["images/redbox/truncated.jpg"] == str(2 + ROWS.index("images/redbox/truncated.jpg,redbox,"))
    assert line["images/redbox/norow.jpg"] == ""


def test_metrics_count_photos_flags_and_rejections_per_rig(ingested):
    metrics = ingested["metrics"]
    assert metrics["images"] == {"redbox": 14, "bluebox": 4, "total": 18}
    assert metrics["flags"]["bluebox"]["No Clamp Used"] == 1
    assert metrics["flags"]["bluebox"]["Other"] == 1
    assert metrics["flags"]["bluebox"]["No flag"] == 3
    assert metrics["flags"]["redbox"]["Other"] == 1
    assert metrics["flags"]["redbox"]["No flag"] == 13
    assert metrics["rejected"]["total"] == len(BAD)
    assert list(metrics["rejected"]["by_reason"]) == list(REASONS)
    assert metrics["rejected"]["by_reason"] == {r: sum(c == r for _, c in BAD) for r in REASONS}


def test_strict_mode_fails_with_one_line_after_writing_rejected_csv(ingested, tmp_path):
    write_params(tmp_path, strict=True)
    done = run_subprocess(tmp_path, args(ingested["export"]))
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error") and "ingest.strict is on" in lines[0]
    assert f"{len(BAD)} rejected" in lines[0]
    assert len(pd.read_csv(tmp_path / "out/rejected.csv")) == len(BAD)
    assert not (tmp_path / "out/manifest.csv").exists()


def test_a_clean_export_passes_strict_mode(tmp_path):
    export = tmp_path / "export"
    (export / "a").mkdir(parents=True)
    (export / "a/1.jpg").write_bytes(encode(photo()))
    (export / "labels.csv").write_text("image,rig,flags\na/1.jpg,bluebox,No Clamp Used\n")
    write_params(tmp_path, strict=True, workers=1)
    run_in(tmp_path, args(export))
    assert len(pd.read_csv(tmp_path / "out/manifest.csv")) == 1


@pytest.mark.parametrize("labels,message", [
    (None, "labels.csv not found"),
    (b"", "labels.csv is empty"),
    (b"image,rig\na.jpg,redbox\n", "lacks column(s) flags"),
    (b"image;rig;flags\na.jpg;redbox;\n", "columns must be separated by ','"),
    (b"image,rig,flags,rig\n", "column 'rig' twice"),
    ("image,rig,flags\ncaf\u00e9.jpg,redbox,\n".encode("cp1252"), "not UTF-8"),
    (b"image,rig,flags\nmissing.jpg,redbox,\n", "no photo accepted"),
])
def test_an_unusable_labels_csv_is_one_data_error(tmp_path, labels, message):
    export = tmp_path / "export"
    export.mkdir()
    if labels is not None:
        (export / "labels.csv").write_bytes(labels)
    write_params(tmp_path, workers=1)
    with pytest.raises(DataError, match=re.escape(message)) as info:
        run_in(tmp_path, args(export))
    assert "\n" not in str(info.value)


def test_data_error_exits_2_without_traceback(tmp_path):
    write_params(tmp_path)
    done = run_subprocess(tmp_path, args(tmp_path / "no-such-export"))
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith("error") and len(done.stderr.strip().splitlines()) == 1
    assert "export folder" in done.stderr and "data.export" in done.stderr


def test_unknown_param_key_is_rejected_before_any_work(tmp_path):
    (tmp_path / "params.yaml").write_text(params_yaml(ingest={"max_pixel": 10}))
    with pytest.raises(ParamError, match="unknown key 'max_pixel'; valid keys: max_pixels"):
        run_in(tmp_path, args(tmp_path / "export"))
