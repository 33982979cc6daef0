"""Outputs under hostile names and failing disks: every file reads back exactly, or the stage ends in one line.

* Every CSV the project writes round-trips through ``csv.reader`` for any name
  (carriage return, line feed, tab, quotes, commas), and a name whose bytes are
  not UTF-8 is written with ``\\xNN`` escapes instead of crashing the writer.
* Ingest lists a non-UTF-8 file name as ``unreadable_name`` and still writes its
  manifest; names that differ from the disk only by Unicode normalisation are
  named with the fix.
* A write that fails (a file-size limit standing in for a full disk) ends the
  stage with one line naming the file and the cause, exit code 2, and leaves no
  partial output behind.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import resource
import signal
import subprocess
import sys
import unicodedata
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import params_yaml
from PIL import Image

from stages import ingest as ingest_stage
from weldnet.core.config import StageError, run_stage
from weldnet.core.files import atomic_path, csv_rows, csv_text, printable, write_csv, write_json, write_text
from weldnet.photos.manifest import read_manifest

REPO = Path(__file__).resolve().parents[1]
HOSTILE = ["cr\rname.jpg", "lf\nname.jpg", "tab\tname.jpg", 'quote"name.jpg', "comma,name.jpg", "both\r\n.jpg",
           '"', "", " space .jpg", "plain.jpg"]
LATIN1 = os.fsdecode(b"caf\xe9.jpg")          # what Python makes of a Latin-1 name on a UTF-8 system


def jpeg(seed: int) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(arr).save(buffer, "JPEG")
    return buffer.getvalue()


def read_exact(path: Path) -> str:
    with path.open(encoding="utf-8", newline="") as fh:
        return fh.read()


def cells(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text, newline="")))


# ------------------------------------------------------------------ the shared writer
def test_a_table_of_hostile_names_round_trips_through_csv_reader():
    table = pd.DataFrame({"image": HOSTILE, "n": range(len(HOSTILE))})
    assert cells(csv_text(table)) == [["image", "n"], *[[name, str(k)] for k, name in enumerate(HOSTILE)]]
    assert pd.read_csv(io.StringIO(csv_text(table)), keep_default_na=False)["n"].tolist() == list(range(len(HOSTILE)))


def test_a_plain_table_is_written_as_before():
    table = pd.DataFrame({"image": ["a.jpg", "b c.jpg"], "x": [0.5, 1.25]})
    assert csv_text(table, float_format="%.5g") == "image,x\na.jpg,0.5\nb c.jpg,1.25\n"


def test_rows_written_one_at_a_time_round_trip(tmp_path):
    with csv_rows(tmp_path / "t.csv") as writer:
        writer.writerow(["image", "decision"])
        for name in HOSTILE:
            writer.writerow([name, "clear"])
    text = read_exact(tmp_path / "t.csv")
    assert cells(text) == [["image", "decision"], *[[name, "clear"] for name in HOSTILE]]


def test_a_non_utf8_name_is_written_escaped_never_a_crash(tmp_path):
    assert printable(LATIN1) == "caf\\xe9.jpg" and printable("café.jpg") == "café.jpg"
    write_csv(tmp_path / "a.csv", pd.DataFrame({"image": [LATIN1]}))
    write_json(tmp_path / "a.json", {"image": LATIN1})
    with csv_rows(tmp_path / "b.csv") as writer:
        writer.writerow([LATIN1])
    assert cells((tmp_path / "a.csv").read_text(encoding="utf-8")) == [["image"], ["caf\\xe9.jpg"]]
    assert json.loads((tmp_path / "a.json").read_text(encoding="utf-8")) == {"image": LATIN1}   # \\udce9: exact
    assert (tmp_path / "b.csv").read_text(encoding="utf-8") == "caf\\xe9.jpg\n"


def test_an_interrupted_write_leaves_the_old_file_and_no_partial_one(tmp_path):
    out = tmp_path / "out.csv"
    write_text(out, "old\n")
    with pytest.raises(KeyboardInterrupt), csv_rows(out) as writer:
        writer.writerow(["new"])
        raise KeyboardInterrupt
    assert out.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]


def test_a_failed_write_is_one_stage_error_naming_the_file(tmp_path):
    out = tmp_path / "out.bin"
    with pytest.raises(StageError, match=r"cannot write .*out\.bin: No space left on device; free disk space"):
        with atomic_path(out):
            raise OSError(28, "No space left on device")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ ingest
def run_ingest(base: Path, rows: list[str], files: dict[str | bytes, bytes]) -> dict:
    export = base / "export"
    export.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        path = os.path.join(os.fsencode(export), name) if isinstance(name, bytes) else export / name
        with open(path, "wb") as fh:
            fh.write(data)
    text = "image,rig,flags\n" + "".join(f"{row}\n" for row in rows)
    (export / "labels.csv").write_bytes(text.encode("utf-8"))
    (base / "params.yaml").write_text(params_yaml(ingest={"max_pixels": 100_000, "strict": False, "workers": 1}))
    with contextlib.chdir(base):
        ingest_stage.main(["--export", str(export), "--manifest", "out/manifest.csv",
                           "--rejected", "out/rejected.csv", "--metrics", "out/ingest.json"])
    out = base / "out"
    return {"out": out, "rejected": list(csv.DictReader((out / "rejected.csv").open(encoding="utf-8", newline=""))),
            "metrics": json.loads((out / "ingest.json").read_text())}


def csv_field(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def test_a_non_utf8_file_name_is_listed_as_unreadable_name_and_ingest_goes_on(tmp_path):
    result = run_ingest(tmp_path, ["good.jpg,redbox,"], {"good.jpg": jpeg(0), b"caf\xe9.jpg": jpeg(1),
                                                          b"notes-\xff.txt": b"x"})
    bad = {r["image"]: r for r in result["rejected"]}
    assert set(bad) == {"caf\\xe9.jpg", "notes-\\xff.txt"}
    assert all(r["category"] == "unreadable_name" and "not UTF-8" in r["reason"] and "rename" in r["reason"]
               for r in bad.values())
    assert read_manifest(result["out"] / "manifest.csv")["image"].tolist() == ["good.jpg"]
    assert result["metrics"]["rejected"]["by_reason"]["unreadable_name"] == 2


def test_names_with_line_ends_tabs_quotes_and_commas_reach_the_manifest_exactly(tmp_path):
    names = [n for n in HOSTILE if n not in ("", '"', "plain.jpg")] + ["plain.jpg"]
    files = {name: jpeg(k) for k, name in enumerate(names)}
    result = run_ingest(tmp_path, [f"{csv_field(name)},redbox," for name in names], files)
    assert result["rejected"] == []
    assert read_manifest(result["out"] / "manifest.csv")["image"].tolist() == names
    # the rows of the file itself: one per photo, whatever the names hold
    text = read_exact(result["out"] / "manifest.csv")
    assert [row[0] for row in cells(text)[1:]] == [("'" + n if n.startswith(("\t", "\r")) else n) for n in names]


def test_a_name_differing_only_by_unicode_normalisation_is_named_with_the_fix(tmp_path):
    nfc, nfd = unicodedata.normalize("NFC", "café/José.jpg"), unicodedata.normalize("NFD", "café/José.jpg")
    assert nfc != nfd
    (tmp_path / "export" / unicodedata.normalize("NFD", "café")).mkdir(parents=True)
    result = run_ingest(tmp_path, [f"{nfc},redbox,", "good.jpg,redbox,"], {nfd: jpeg(0), "good.jpg": jpeg(1)})
    by_category = {r["category"]: r for r in result["rejected"]}
    assert set(by_category) == {"missing_file", "no_row"}
    for row in by_category.values():
        assert "Unicode normalisation" in row["reason"] and "NFC" in row["reason"] and "convmv" in row["reason"]
    assert by_category["missing_file"]["image"] == nfc and by_category["no_row"]["image"] == nfd


# ------------------------------------------------------------------ write errors: a file-size limit
def _limit_file_size(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def run_limited(argv: list[str], cwd: Path, limit: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
                          preexec_fn=_limit_file_size(limit))


def test_ingest_under_a_file_size_limit_ends_in_one_line_and_leaves_no_partial_output(tmp_path):
    export = tmp_path / "export"
    export.mkdir()
    rows = []
    for k in range(40):
        (export / f"photo_{k:03d}_with_a_long_name_to_fill_the_manifest.jpg").write_bytes(jpeg(k))
        rows.append(f"photo_{k:03d}_with_a_long_name_to_fill_the_manifest.jpg,redbox,")
    (export / "labels.csv").write_text("image,rig,flags\n" + "\n".join(rows) + "\n")
    (tmp_path / "params.yaml").write_text(params_yaml(ingest={"max_pixels": 100_000, "strict": False, "workers": 1}))
    argv = ["-m", "stages.ingest", "--export", str(export), "--manifest", "out/manifest.csv",
            "--rejected", "out/rejected.csv", "--metrics", "out/ingest.json"]
    done = run_limited(argv, tmp_path, 2048)         # rejected.csv and ingest.json fit, the manifest does not
    assert done.returncode == 2, done.stderr
    last = done.stderr.strip().splitlines()
    assert len(last) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "cannot write out/manifest.csv: File too large" in last[0]
    assert not (tmp_path / "out" / "manifest.csv").exists()
    assert not [p for p in (tmp_path / "out").iterdir() if "partial" in p.name]
    again = run_limited(argv, tmp_path, resource.RLIM_INFINITY)
    assert again.returncode == 0 and len(read_manifest(tmp_path / "out" / "manifest.csv")) == 40


PNG_SCRIPT = """
import sys
import numpy as np
from PIL import Image
from weldnet.core.config import run_stage
from weldnet.core.files import render_png, write_bytes
from weldnet.audit.estimate import contact_sheet

def main():
    thumbs = [np.random.default_rng(k).integers(0, 256, (60, 80, 3), dtype=np.uint8) for k in range(20)]
    write_bytes(sys.argv[1], render_png(Image.fromarray(contact_sheet(thumbs, ["x"] * 20, columns=10)).save))

run_stage(main)
"""


def test_a_png_writer_under_a_file_size_limit_ends_in_one_line(tmp_path):
    (tmp_path / "sheet.py").write_text(PNG_SCRIPT)
    done = run_limited(["sheet.py", "plots/sheet.png"], tmp_path, 4096)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip() == "error: cannot write plots/sheet.png: File too large; free disk space " \
                                  "(or raise the file-size limit, ulimit -f) and run again"
    assert not (tmp_path / "plots" / "sheet.png").exists() and list((tmp_path / "plots").iterdir()) == []


def test_an_os_error_outside_the_writers_is_one_line_with_exit_2(capsys):
    def main() -> None:
        raise OSError(5, "Input/output error", "data/prepared/redbox-000.npy")

    with pytest.raises(SystemExit) as info:
        run_stage(main)
    assert info.value.code == 2
    assert capsys.readouterr().err == "error: I/O error on data/prepared/redbox-000.npy: Input/output error\n"


def test_preprocess_checks_the_shards_against_the_free_disk_before_any_work(tmp_path, monkeypatch):
    from stages import preprocess as preprocess_stage
    from weldnet.core import files

    run_ingest(tmp_path, ["a.jpg,redbox,", "b.jpg,bluebox,"], {"a.jpg": jpeg(0), "b.jpg": jpeg(1)})
    (tmp_path / "params.yaml").write_text(params_yaml(preprocess={"size": 64, "shard_size": 10, "workers": 1}))
    monkeypatch.setattr(files, "free_bytes", lambda path: 20_000)       # 2 x 64 x 64 x 3 = 24,576 bytes needed
    argv = ["--export", "export", "--manifest", "out/manifest.csv", "--out", "prepared"]
    with contextlib.chdir(tmp_path), pytest.raises(StageError) as info:
        preprocess_stage.main(argv)
    assert str(info.value) == ("preprocess of 2 photos at 64x64 needs about 24.8 kB but prepared has 20.0 kB free; "
                               "lower preprocess.size or free disk space")
    assert not (tmp_path / "prepared").exists()
    monkeypatch.setattr(files, "free_bytes", lambda path: 10 ** 12)
    (tmp_path / "prepared").mkdir()
    (tmp_path / "prepared" / ".redbox-000.npy.partial-4242").write_bytes(b"left by a killed run")
    with contextlib.chdir(tmp_path):
        preprocess_stage.main(argv)
    assert sorted(p.name for p in (tmp_path / "prepared").iterdir()) == ["bluebox-000.npy", "index.csv",
                                                                         "redbox-000.npy"]
    assert np.load(tmp_path / "prepared" / "redbox-000.npy").shape == (1, 64, 64, 3)
