"""The manifest ingest writes, read back the one way every later stage reads it.

Image ids stay text (a photo named ``NA`` or ``null`` is not a missing value),
and a manifest that is missing, lacks a column, lists no photo or lists a photo
twice stops the stage with one line naming the fix.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from weldnet.config import DataError
from weldnet.flags import FLAGS

MANIFEST_COLUMNS: tuple[str, ...] = ("image", "rig", "width", "height", "sha256", *FLAGS)


def read_manifest(path: Path) -> pd.DataFrame:
    """data/interim/manifest.csv as ingest wrote it: image, rig, width, height, sha256, one 0/1 column per flag."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} not found; run the ingest stage first (dvc repro ingest)")
    manifest = pd.read_csv(path, dtype={"image": str, "rig": str, "sha256": str}, keep_default_na=False)
    missing = [c for c in MANIFEST_COLUMNS if c not in manifest.columns]
    if missing:
        raise DataError(f"{path} lacks column(s) {', '.join(missing)}; re-run the ingest stage")
    if manifest.empty:
        raise DataError(f"{path} lists no photo; see the ingest stage's rejected.csv")
    if manifest["image"].duplicated().any():
        raise DataError(f"{path} lists '{manifest['image'][manifest['image'].duplicated()].iloc[0]}' twice; "
                        "re-run the ingest stage")
    return manifest
