"""The manifest ingest writes, read back the one way every later stage reads it.

Image ids stay text (a photo named ``NA`` or ``null`` is not a missing value),
and a manifest that is missing, lacks a column, lists no photo or lists a photo
twice stops the stage with one line naming the fix.

Cells a spreadsheet would evaluate as a formula (text starting with ``=``,
``+``, ``-``, ``@``, a tab or a carriage return: the OWASP list) are written
with one leading apostrophe, as are cells that already start with one, so the
original is always the cell without its first apostrophe. The manifest and
rejected.csv are written that way (:func:`spreadsheet_safe`), and
:func:`read_manifest` removes the apostrophe again, so every later stage sees
the exact file names.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from weldnet.core.config import DataError
from weldnet.core.files import write_csv
from weldnet.core.flags import FLAGS

MANIFEST_COLUMNS: tuple[str, ...] = ("image", "rig", "width", "height", "sha256", *FLAGS)
TEXT_COLUMNS: tuple[str, ...] = ("image", "rig", "sha256")

FORMULA_PREFIXES: tuple[str, ...] = ("=", "+", "-", "@", "\t", "\r")
ESCAPE = "'"


def spreadsheet_cell(text: str) -> str:
    """``text`` as a CSV cell no spreadsheet evaluates: a formula-like or apostrophe-led cell gains one apostrophe."""
    return ESCAPE + text if text.startswith((*FORMULA_PREFIXES, ESCAPE)) else text


def original_cell(cell: str) -> str:
    """The text :func:`spreadsheet_cell` was given."""
    return cell[1:] if cell.startswith(ESCAPE) else cell


def spreadsheet_safe(table: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``table`` with every text cell passed through :func:`spreadsheet_cell`, for writing as CSV."""
    table = table.copy()
    first = set("".join(FORMULA_PREFIXES) + ESCAPE)
    for column in table.columns:
        cells = table[column]
        if cells.dtype == object or pd.api.types.is_string_dtype(cells):
            table[column] = [ESCAPE + v if isinstance(v, str) and v[:1] in first else v for v in cells.tolist()]
    return table


def write_manifest(manifest: pd.DataFrame, path: Path) -> None:
    """Write the manifest as CSV atomically, text cells made spreadsheet-safe (read it back with :func:`read_manifest`)."""
    write_csv(path, spreadsheet_safe(manifest[list(MANIFEST_COLUMNS)]))


def read_manifest(path: Path) -> pd.DataFrame:
    """data/interim/manifest.csv as ingest wrote it: image, rig, width, height, sha256, one 0/1 column per flag."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} not found; run the ingest stage first (dvc repro ingest)")
    manifest = pd.read_csv(path, dtype=dict.fromkeys(TEXT_COLUMNS, str), keep_default_na=False)
    missing = [c for c in MANIFEST_COLUMNS if c not in manifest.columns]
    if missing:
        raise DataError(f"{path} lacks column(s) {', '.join(missing)}; re-run the ingest stage")
    for column in TEXT_COLUMNS:
        manifest[column] = [original_cell(cell) for cell in manifest[column]]
    if manifest.empty:
        raise DataError(f"{path} lists no photo; see the ingest stage's rejected.csv")
    if manifest["image"].duplicated().any():
        raise DataError(f"{path} lists '{manifest['image'][manifest['image'].duplicated()].iloc[0]}' twice; "
                        "re-run the ingest stage")
    return manifest
