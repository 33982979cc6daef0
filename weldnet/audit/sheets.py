"""The audit's files for people: the review sheet to fill in, the suspects table, and their contact sheets."""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pandas as pd
from PIL import Image

from weldnet.audit.estimate import contact_sheet, flag_matrix
from weldnet.audit.run import TaskAudit
from weldnet.core.config import DataError, ParamError
from weldnet.core.files import render_png, write_bytes, write_csv
from weldnet.photos.decode import sheet_thumbnails

REVIEW_COLUMNS = ("rig", "number", "image", "verdict")
SUSPECT_COLUMNS = ("task", "rig", "rank", "image", "recorded_class", "recorded_prob",
                   "suggested_class", "suggested_prob")


def save_sheet(export: Path, manifest: pd.DataFrame, images: list[str], captions: list[str], longest: int,
               out: Path) -> None:
    """A contact sheet of manifest photos (each checked against its SHA-256), one caption each."""
    rows = manifest.set_index("image").loc[images].reset_index()
    thumbs = sheet_thumbnails(export, rows, longest)
    write_bytes(out, render_png(Image.fromarray(contact_sheet(thumbs, captions, columns=10)).save, optimize=True))


def read_review_sheet(path: Path, manifest: pd.DataFrame) -> pd.DataFrame:
    """The filled-in review sheet, checked against the manifest: its photos must be flagless ones."""
    if not path.is_file():
        raise ParamError(f"audit.review_sheet = {str(path)!r} not found; give the filled-in copy of "
                         "data/audit/review_sheet.csv, or null")
    sheet = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in ("rig", "image", "verdict") if c not in sheet.columns]
    if missing:
        raise DataError(f"review sheet {path} lacks column '{missing[0]}'; fill in the verdict column "
                        "of data/audit/review_sheet.csv without renaming columns")
    flags = flag_matrix(manifest)
    flagless = set(manifest.loc[flags.sum(axis=1).to_numpy() == 0, "image"])
    stray = [image for image in sheet["image"] if image not in flagless]
    if stray:
        raise DataError(f"review sheet {path}: photo '{stray[0]}' is not a flagless photo of the current "
                        "manifest; the sheet was drawn from other data, review the new data/audit/review_sheet.csv")
    return sheet


def write_review_sheets(export: Path, manifest: pd.DataFrame, samples: dict[str, list[str]], longest: int,
                        out: Path, plots: Path) -> None:
    """review_sheet.csv (empty verdicts) and one numbered contact sheet per rig."""
    rows = [(rig, i, image, "") for rig, sample in samples.items() for i, image in enumerate(sample, start=1)]
    write_csv(out / "review_sheet.csv", pd.DataFrame(rows, columns=list(REVIEW_COLUMNS)))
    for rig, sample in samples.items():
        if sample:
            captions = [f"#{i} {Path(image).stem}" for i, image in enumerate(sample, start=1)]
            save_sheet(export, manifest, sample, captions, longest, plots / f"review_{rig}.png")


def write_suspects(export: Path, manifest: pd.DataFrame, results: dict[tuple[str, str], TaskAudit], shown: int,
                   longest: int, out: Path, plots: Path) -> None:
    """suspects.csv (every task and rig) and a contact sheet of the top ``shown`` of each."""
    tables = []
    for (name, rig), result in results.items():
        table = result.suspects.assign(task=name, rig=rig)[list(SUSPECT_COLUMNS)]
        tables.append(table)
        top = table.head(shown)
        if len(top):
            captions = [f"#{k} {Path(i).stem}\n{r} > {c}" for k, i, r, c in
                        zip(top["rank"], top["image"], top["recorded_class"], top["suggested_class"])]
            save_sheet(export, manifest, top["image"].tolist(), captions, longest,
                       plots / f"suspects_{name}_{rig}.png")
    write_csv(out / "suspects.csv", pd.concat(tables, ignore_index=True))


def summary_lines(results: Iterable[TaskAudit], cross: dict[str, dict[str, float]]) -> list[str]:
    """One line per task and rig (estimate, bound, verdict) and per cross-rig flag."""
    lines = []
    for result in results:
        rate = result.rate
        shown = "n/a" if rate.estimate is None else f"{rate.estimate:.1%}"
        if rate.ci_low is not None:
            shown += f" [{rate.ci_low:.1%}, {rate.ci_high:.1%}]"
        verdict = {True: "learnable", False: "UNLEARNABLE", None: "unknown"}[result.verdict.learnable]
        straddle = " (the interval straddles the bound)" if result.verdict.straddles_bound else ""
        note = f" - {result.note}" if result.note else ""
        lines.append(f"{result.task} on {result.rig}: mislabelled {shown} by {rate.method}, "
                     f"bound 1-k = {result.verdict.bound:.1%}: {verdict}{straddle}{note}")
    for flag, row in cross.items():
        lines.append(f"Bluebox model vs Redbox records, {flag}: disagreement {row['disagreement']:.1%} "
                     f"(missing {row['missing']:.1%}, extra {row['extra']:.1%}; "
                     f"on Bluebox itself {row['baseline_disagreement']:.1%})")
    return lines
