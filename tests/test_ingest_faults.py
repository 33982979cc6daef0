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
from conftest import params_yaml
from PIL import Image

from stages import ingest as stage
from weldnet.core.config import DataError, ParamError
from weldnet.photos.ingest import REASONS

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


# ------------------------------------------------------------------ harder cases: one small export each

def run_rows(base: Path, rows: list[str], files: dict[str, bytes], header: str = "image,rig,flags") -> dict:
    """Ingest an export holding ``files`` and a labels.csv of ``rows``; the outputs as written and as read."""
    export = base / "export"
    export.mkdir(parents=True, exist_ok=True)
    for rel, data in files.items():
        (export / rel).parent.mkdir(parents=True, exist_ok=True)
        (export / rel).write_bytes(data)
    (export / "labels.csv").write_text("\n".join([header, *rows]) + "\n", encoding="utf-8", newline="")
    write_params(base, workers=1)
    run_in(base, args(export))
    out = base / "out"
    manifest_text = (out / "manifest.csv").read_text(encoding="utf-8") if (out / "manifest.csv").exists() else ""
    rejected_text = (out / "rejected.csv").read_text(encoding="utf-8")
    return {"export": export, "out": out, "manifest_text": manifest_text, "rejected_text": rejected_text,
            "manifest": read_csv_cells(out / "manifest.csv") if manifest_text else [],
            "rejected": read_csv_cells(out / "rejected.csv"),
            "metrics": json.loads((out / "ingest.json").read_text())}


def read_csv_cells(path: Path) -> list[dict[str, str]]:
    """Every cell exactly as a spreadsheet would receive it (no type guessing, no unescaping)."""
    import csv
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def rejected_of(result: dict, image: str) -> list[dict[str, str]]:
    return [r for r in result["rejected"] if r["image"] == image]


P, Q = encode(photo(seed=11)), encode(photo(seed=12))


@pytest.mark.parametrize("bad_row,own_reason", [
    ("p.jpg,redbox,No Clamp Usd", "did you mean 'No Clamp Used'"),   # misspelt flag
    ("p.jpg,greenbox,", "unknown rig 'greenbox'"),                   # unknown rig
    ("p.jpg,redbox,NaN", "'NaN'"),                                   # labels unknown
    ("p.jpg,redbox", "no flags field"),                              # no flags field
    ("p.jpg,redbox,Other,No Clamp Used", "more than the header"),    # malformed row
    ("./p.jpg,redbox,No Clamp Usd", "did you mean 'No Clamp Used'"), # another spelling of the path
])
@pytest.mark.parametrize("bad_first", [True, False])
def test_a_rejected_row_puts_every_row_of_its_photo_in_doubt(tmp_path, bad_row, own_reason, bad_first):
    good = "p.jpg,redbox,"
    rows = [bad_row, good] if bad_first else [good, bad_row]
    result = run_rows(tmp_path, [*rows, "q.jpg,redbox,"], {"p.jpg": P, "q.jpg": Q})
    assert [r["image"] for r in result["manifest"]] == ["q.jpg"]  # p.jpg is not entered as a flawless photo
    doubted = [r for r in result["rejected"] if r["line"] in ("2", "3")]
    assert [r["category"] for r in doubted] == ["conflicting_rows", "conflicting_rows"]
    for r in doubted:
        assert "lines 2, 3" in r["reason"], r
    bad_line = "2" if bad_first else "3"
    assert own_reason in next(r["reason"] for r in doubted if r["line"] == bad_line)  # the fix is still named
    assert not [r for r in result["rejected"] if r["category"] == "no_row"]


def test_duplicates_of_a_photo_beside_a_rejected_row_are_all_in_doubt(tmp_path):
    result = run_rows(tmp_path, ["p.jpg,redbox,", "p.jpg,redbox,", "p.jpg,redbox,No Clamp Usd", "q.jpg,redbox,"],
                      {"p.jpg": P, "q.jpg": Q})
    assert [r["image"] for r in result["manifest"]] == ["q.jpg"]
    assert [r["category"] for r in rejected_of(result, "p.jpg")] == ["conflicting_rows"] * 3
    assert result["metrics"]["rejected"]["by_reason"]["conflicting_rows"] == 3


@pytest.mark.parametrize("link", ["symlink", "hardlink"])
@pytest.mark.parametrize("second", ["b.jpg,redbox,Other", "b.jpg,bluebox,", "b.jpg,redbox,No Clamp Usd"])
def test_two_names_of_one_file_with_different_labels_are_both_rejected(tmp_path, link, second):
    export = tmp_path / "export"
    export.mkdir()
    (export / "a.jpg").write_bytes(P)
    if link == "symlink":
        os.symlink("a.jpg", export / "b.jpg")
    else:
        os.link(export / "a.jpg", export / "b.jpg")
    result = run_rows(tmp_path, ["a.jpg,redbox,", second, "q.jpg,redbox,"], {"q.jpg": Q})
    assert [r["image"] for r in result["manifest"]] == ["q.jpg"]
    for image in ("a.jpg", "b.jpg"):
        (row,) = rejected_of(result, image)
        assert row["category"] == "conflicting_rows" and "lines 2, 3" in row["reason"]
        assert "same file" in row["reason"]


def test_two_names_of_one_file_with_the_same_labels_are_both_kept(tmp_path):
    export = tmp_path / "export"
    export.mkdir()
    (export / "a.jpg").write_bytes(P)
    os.symlink("a.jpg", export / "b.jpg")
    result = run_rows(tmp_path, ["a.jpg,redbox,Other", "b.jpg,redbox,other"], {})
    assert [r["image"] for r in result["manifest"]] == ["a.jpg", "b.jpg"]
    assert result["rejected"] == []


MAX_REASON = 400  # characters: a reason names a few lines and values, never all of them


def test_thousands_of_conflicting_rows_give_a_rejected_csv_of_bounded_size(tmp_path):
    rows = [f"p.jpg,redbox,{'Other' if i % 2 else ''}" for i in range(4000)]
    result = run_rows(tmp_path, [*rows, "q.jpg,redbox,"], {"p.jpg": P, "q.jpg": Q})
    assert [r["image"] for r in result["manifest"]] == ["q.jpg"]
    assert len(result["rejected"]) == 4000
    assert {r["category"] for r in result["rejected"]} == {"conflicting_rows"}
    assert max(len(r["reason"]) for r in result["rejected"]) <= MAX_REASON
    assert "and 3,995 more" in result["rejected"][0]["reason"]
    assert len(result["rejected_text"]) < 4000 * (MAX_REASON + 50)


def test_100000_rows_naming_4_photos_are_checked_in_one_pass(tmp_path):
    """Duplicates of a, conflicting labels on b, one bad row among many good ones for c, duplicates of d."""
    labels = {"a": ["redbox,Other"], "b": ["redbox,", "bluebox,"], "c": ["redbox,"], "d": ["bluebox,"]}
    rows = []
    for i in range(100_000):
        name = "abcd"[i % 4]
        rows.append(f"{name}.jpg,{labels[name][(i // 4) % len(labels[name])]}")
    rows[50_002] = "c.jpg,redbox,No Clamp Usd"
    files = {f"{n}.jpg": encode(photo(seed=20 + k)) for k, n in enumerate("abcd")}
    result = run_rows(tmp_path, rows, files)
    assert [r["image"] for r in result["manifest"]] == ["a.jpg", "d.jpg"]
    counts = Counter((r["image"], r["category"]) for r in result["rejected"])
    assert counts == {("a.jpg", "duplicate_row"): 24_999, ("b.jpg", "conflicting_rows"): 25_000,
                      ("c.jpg", "conflicting_rows"): 25_000, ("d.jpg", "duplicate_row"): 24_999}
    assert max(len(r["reason"]) for r in result["rejected"]) <= MAX_REASON
    assert len(result["rejected_text"]) < 100_000 * (MAX_REASON + 50)


def test_a_field_over_the_csv_limit_rejects_its_row_only(tmp_path):
    long_flags = "Other;" * 30_000                      # 180,000 characters
    long_image = "x" * 200_000 + ".jpg"
    wrapped = "Other\n" + "y" * 140_000                 # a quoted field spanning two lines
    rows = ["p.jpg,redbox,", f'q.jpg,redbox,"{long_flags}"', f"{long_image},redbox,",
            f'r.jpg,redbox,"{wrapped}"', "s.jpg,redbox,"]
    files = {"p.jpg": P, "q.jpg": Q, "r.jpg": encode(photo(seed=13)), "s.jpg": encode(photo(seed=14))}
    result = run_rows(tmp_path, rows, files)
    assert [r["image"] for r in result["manifest"]] == ["p.jpg", "s.jpg"]
    too_long = [r for r in result["rejected"] if r["category"] == "field_too_long"]
    assert [r["line"] for r in too_long] == ["3", "4", "5"]
    for r in too_long:
        assert "131,072" in r["reason"] and "quote" not in r["reason"].split(";")[0], r
        assert len(r["reason"]) <= MAX_REASON and len(r["image"]) <= 300
    assert "flags" in too_long[0]["reason"] and "image" in too_long[1]["reason"]
    assert "lines 5-6" in too_long[2]["reason"]
    assert next(r for r in result["rejected"] if r["line"] == "4")["image"].startswith("xxxx")
    assert {r["image"] for r in result["rejected"] if r["category"] == "no_row"} == set()


def test_a_header_with_a_huge_field_and_no_image_column_is_one_short_error(tmp_path):
    export = tmp_path / "export"
    export.mkdir()
    (export / "labels.csv").write_text("name,rig,flags," + "z" * 200_000 + "\np.jpg,redbox,\n")
    write_params(tmp_path, workers=1)
    with pytest.raises(DataError, match="lacks column") as info:
        run_in(tmp_path, args(export))
    assert len(str(info.value)) < 600 and "\n" not in str(info.value)


def test_image_names_are_kept_exactly_as_written(tmp_path):
    files = {" lead.jpg": P, "trail.jpg ": Q, "in side.jpg": encode(photo(seed=15)), "x.jpg": encode(photo(seed=16))}
    rows = ['" lead.jpg",redbox,', '"trail.jpg ",redbox,', "in side.jpg,redbox,", '" x.jpg",redbox,']
    result = run_rows(tmp_path, rows, files)
    assert [r["image"] for r in result["manifest"]] == [" lead.jpg", "trail.jpg ", "in side.jpg"]
    (missing,) = rejected_of(result, " x.jpg")
    assert missing["category"] == "missing_file" and "'x.jpg'" in missing["reason"] and "spaces" in missing["reason"]
    (orphan,) = rejected_of(result, "x.jpg")
    assert orphan["category"] == "no_row" and "line 5" in orphan["reason"] and "spaces" in orphan["reason"]


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def test_cells_a_spreadsheet_would_evaluate_are_neutralised_and_recoverable(tmp_path):
    from weldnet.photos.manifest import read_manifest

    names = ["=cmd.jpg", "+plus.jpg", "-minus.jpg", "@at.jpg", "\ttab.jpg", "'quote.jpg", "plain.jpg"]
    files = {name: encode(photo(seed=30 + k)) for k, name in enumerate(names)}
    rows = [f'"{name}",redbox,' for name in names]
    rows += ['"=HYPERLINK(""x"")",redbox,', "@SUM(A1).jpg,=1+1,", "-2.jpg,redbox,No Clamp Usd"]
    result = run_rows(tmp_path, rows, files)
    for table in ("manifest", "rejected"):
        for row in result[table]:
            for cell in row.values():
                assert not cell.startswith(FORMULA_START), (table, row)
    written = [r["image"] for r in result["manifest"]]
    assert written == ["'=cmd.jpg", "'+plus.jpg", "'-minus.jpg", "'@at.jpg", "'\ttab.jpg", "''quote.jpg",
                       "plain.jpg"]
    assert read_manifest(result["out"] / "manifest.csv")["image"].tolist() == names  # one apostrophe removed
    assert {r["image"] for r in result["rejected"]} == {"'=HYPERLINK(\"x\")", "'@SUM(A1).jpg", "'-2.jpg"}


def test_later_stages_open_the_photos_whose_names_were_neutralised(tmp_path):
    from stages import preprocess
    from weldnet.photos.shards import read_index

    names = ["=cmd.jpg", "-minus.jpg", "'quote.jpg"]
    result = run_rows(tmp_path, [f'"{n}",bluebox,' for n in names],
                      {n: encode(photo(seed=40 + k)) for k, n in enumerate(names)})
    (tmp_path / "params.yaml").write_text(params_yaml(preprocess={"size": 16, "shard_size": 10, "workers": 1}))
    with contextlib.chdir(tmp_path):
        preprocess.main(["--export", str(result["export"]), "--manifest", "out/manifest.csv", "--out", "processed"])
    assert read_index(tmp_path / "processed/index.csv")["image"].tolist() == names


# ------------------------------------------------------------------ files that change under the pipeline

def test_a_fifo_is_never_opened_as_a_photo(tmp_path):
    from weldnet.core.paths import NotRegularFile, read_regular_file

    os.mkfifo(tmp_path / "pipe.jpg")
    with pytest.raises(NotRegularFile, match="not a regular file"):
        read_regular_file(tmp_path / "pipe.jpg")  # returns at once: nothing ever writes to the FIFO
    (tmp_path / "ok.jpg").write_bytes(P)
    assert read_regular_file(tmp_path / "ok.jpg") == P


def test_ingest_rejects_a_fifo_named_as_a_photo(tmp_path):
    export = tmp_path / "export"
    export.mkdir()
    os.mkfifo(export / "pipe.jpg")
    result = run_rows(tmp_path, ["pipe.jpg,redbox,", "q.jpg,redbox,"], {"q.jpg": Q})
    assert [r["image"] for r in result["manifest"]] == ["q.jpg"]
    (row,) = rejected_of(result, "pipe.jpg")
    assert row["category"] == "missing_file" and "regular file" in row["reason"]


@pytest.fixture()
def ingested_pair(tmp_path):
    """An ingested export of two Bluebox photos, a.jpg and b.jpg."""
    result = run_rows(tmp_path, ["a.jpg,bluebox,", "b.jpg,bluebox,"], {"a.jpg": P, "b.jpg": Q})
    (tmp_path / "params.yaml").write_text(params_yaml(preprocess={"size": 16, "shard_size": 10, "workers": 1}))
    return tmp_path, result["export"]


def run_preprocess_subprocess(folder: Path, export: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "stages.preprocess", "--export", str(export), "--manifest",
                           "out/manifest.csv", "--out", "processed"], cwd=folder, env=env, capture_output=True,
                          text=True, timeout=60)


def test_preprocess_stops_on_a_photo_replaced_by_a_fifo_without_hanging(ingested_pair):
    folder, export = ingested_pair
    (export / "b.jpg").unlink()
    os.mkfifo(export / "b.jpg")
    done = run_preprocess_subprocess(folder, export)  # a hang fails here with TimeoutExpired
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert "b.jpg" in done.stderr and "not a regular file" in done.stderr


@pytest.mark.parametrize("change", ["fifo", "content", "folder"])
def test_the_audit_readers_check_each_photo_like_preprocess(ingested_pair, change):
    from weldnet.photos.decode import load_thumbnails, sheet_thumbnails
    from weldnet.photos.manifest import read_manifest

    folder, export = ingested_pair
    manifest = read_manifest(folder / "out/manifest.csv")
    (export / "b.jpg").unlink()
    if change == "fifo":
        os.mkfifo(export / "b.jpg")
        message = "not a regular file"
    elif change == "content":
        (export / "b.jpg").write_bytes(encode(photo(seed=99)))
        message = "changed since ingest"
    else:
        (export / "b.jpg").mkdir()
        message = "not a regular file"
    for read in (lambda: load_thumbnails(export, manifest, 16, 1), lambda: sheet_thumbnails(export, manifest, 32)):
        with pytest.raises(DataError, match=message) as info:
            read()
        assert "b.jpg" in str(info.value)


def test_the_contact_sheets_keep_the_manifests_pixel_limit(ingested_pair):
    from weldnet.photos.decode import sheet_thumbnails
    from weldnet.photos.manifest import read_manifest

    folder, export = ingested_pair
    manifest = read_manifest(folder / "out/manifest.csv")
    big = encode(photo((400, 300), seed=5))  # same SHA-256 as recorded, but larger than the recorded size
    (export / "b.jpg").write_bytes(big)
    manifest.loc[1, "sha256"] = hashlib.sha256(big).hexdigest()
    with pytest.raises(DataError, match="pixel limit"):
        sheet_thumbnails(export, manifest, 32)
    manifest.loc[1, ["width", "height"]] = [400, 300]
    assert sheet_thumbnails(export, manifest, 32)[1].shape == (24, 32, 3)
