"""Progress of the long stages: every photo counted, the lines on stdout (stderr keeps the one-line errors)."""
import hashlib
import re

import numpy as np
import pandas as pd
from PIL import Image

from weldnet.core.params import GenerateSpec, RigCounts
from weldnet.core.progress import Progress
from weldnet.photos.decode import decode_resized, load_thumbnails
from weldnet.photos.shards import plan_shards, write_order, write_shards
from weldnet.synth.export import generate


def manifest_of(export, names):
    rows = []
    for name in names:
        data = (export / name).read_bytes()
        with Image.open(export / name) as im:
            rows.append((name, "redbox", hashlib.sha256(data).hexdigest(), *im.size))
    return pd.DataFrame(rows, columns=["image", "rig", "sha256", "width", "height"])


def test_generate_counts_every_photo_on_stdout(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WELDNET_PROGRESS", "lines")
    generate(GenerateSpec(size=RigCounts(redbox=3, bluebox=2), workers=1), tmp_path / "export", tmp_path / "t.csv")
    out, err = capsys.readouterr()
    assert re.search(r"^generate: 5/5 photos, [\d.]+ photos/s in \d+ s$", out, re.MULTILINE), out
    assert err == ""


def test_preprocess_counts_the_last_photo_although_the_shards_stop_pulling_first(tmp_path, capsys, monkeypatch):
    """write_shards zips the index with the photos, so the photo iterator is never asked past its last item."""
    monkeypatch.setenv("WELDNET_PROGRESS", "lines")
    export = tmp_path / "export"
    export.mkdir()
    names = []
    for i in range(4):
        Image.new("RGB", (40, 30), (10 * i, 0, 0)).save(export / f"{i}.png")
        names.append(f"{i}.png")
    rows = manifest_of(export, names)
    ordered = write_order(plan_shards(rows["image"].tolist(), rows["rig"].tolist(), 3))
    (tmp_path / "shards").mkdir()
    with Progress(len(rows), "preprocess", unit="photo") as bar:
        write_shards(tmp_path / "shards", ordered, decode_resized(export, rows, 8, 1, bar=bar), 8)
        assert bar.count == 4
    thumbs = load_thumbnails(export, rows, 8, 1, desc="thumbnails")
    assert thumbs.shape == (4, 8, 8, 3) and np.any(thumbs)
    out = capsys.readouterr().out
    assert "thumbnails: 4/4 photos" in out
