"""Reading a user's label table and deciding which photos are accepted.

Pure functions: they take the text of ``labels.csv``, the rows parsed from it,
the photo checks done by the ingest stage and the list of files on disk, and
return tables; the stage does all file I/O.

The rules (also in docs/bad-data.md):

* A row needs ``image``, ``rig`` and ``flags`` fields. An *empty* flags field
  is a photo with no flag; a row with no flags field at all, or a value such as
  ``NaN``/``NA``/``null`` (what spreadsheet and pandas exports write for a
  missing value), means the labels are unknown: that row is rejected.
* Flag names are matched case-insensitively against Table 1; a row with an
  unknown name is rejected (dropping the name would silently turn, say, a
  misspelt "No Clamp Used" photo into a clamped one).
* Rig names are matched case-insensitively; other rigs are rejected.
* Paths are relative to the export folder; ``\\`` is read as ``/``. Absolute
  paths and paths leaving the folder are rejected (symlinks are checked by the
  stage, which can see the disk). Image names are kept exactly as written,
  spaces included; a name that differs from a file on disk only by spaces
  around it, or only by Unicode normalisation (NFC in labels.csv, NFD on
  disk, as macOS exports write), is named in the reason with the fix.
* Several rows naming the same photo with the same rig and flags: the first is
  kept, the others are listed as duplicates. Rows naming the same photo with
  different rigs or flags: all are rejected, since nothing tells which is right.
  So are all rows of a photo that one *rejected* row also names (its labels are
  in doubt), and rows naming one file under two names (a symlink or hard link
  beside its target) with different labels. One pass over the rows: time,
  memory and reason length stay linear in the number of rows.
* A field over MAX_FIELD characters rejects its row; the others are read.
* Photos on disk (``.jpg``, ``.jpeg``, ``.png``, any case, hidden files skipped)
  that no row names are listed as rejected; so is any file whose name is not
  UTF-8 (``unreadable_name``, the name shown with ``\\xNN`` for its bytes).
"""
from __future__ import annotations

import codecs
import contextlib
import csv
import dataclasses
import difflib
import functools
import io
import posixpath
import re
import unicodedata
from collections.abc import Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import pandas as pd

from weldnet.core.config import DataError, shown
from weldnet.core.files import is_printable, printable
from weldnet.core.flags import FLAGS, RIGS, parse_flags
from weldnet.photos.images import PhotoInfo
from weldnet.photos.manifest import MANIFEST_COLUMNS

REQUIRED_COLUMNS: tuple[str, ...] = ("image", "rig", "flags")
REJECTED_COLUMNS: tuple[str, ...] = ("image", "reason", "category", "line")
PHOTO_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png")
NO_FLAG = "No flag"

# Rejection categories, the keys of metrics/ingest.json "rejected.by_reason" (keep stable).
REASONS: tuple[str, ...] = (
    "bad_row",            # wrong number of fields, empty image field
    "field_too_long",     # a field over MAX_FIELD characters
    "labels_unknown",     # no flags field, or NaN/NA/null
    "unknown_rig",
    "unknown_flag",
    "unsafe_path",        # absolute, ../, symlink leaving the export
    "duplicate_row",      # same image, same labels: first row kept
    "conflicting_rows",   # same image (or file), different labels, or beside a rejected row: all rejected
    "missing_file",
    "unreadable_image",   # zero-byte, truncated, corrupt, not JPEG/PNG
    "too_large",          # over ingest.max_pixels
    "no_row",             # photo on disk that labels.csv does not name
    "unreadable_name",    # file on disk whose name is not UTF-8: listed with \xNN for its bytes
)

# What spreadsheets and pandas write for a missing value (case-insensitive); an
# empty field is *not* in this list: it means "no flag".
MISSING_VALUES = frozenset({"nan", "-nan", "na", "n/a", "#n/a", "<na>", "null", "none", "#na"})

MAX_FIELD = 131_072      # characters in one field (the csv module's own default limit)
SHOWN_LINES = 5          # line numbers a reason lists before "and N more"
SHOWN_IMAGE = 200        # characters of an over-long image field kept in rejected.csv

_FIX_UNKNOWN = ("labels unknown: leave the flags field empty for a photo with no flag, "
                "or list its Table 1 flags separated by ';'")


@dataclass(frozen=True)
class LabelRow:
    """One data row of labels.csv as written; ``None`` marks a field the row does not have.

    ``line`` is the line the row starts on, ``last_line`` the one it ends on
    (a quoted field may span lines); ``too_long`` names a field over MAX_FIELD
    characters and its length.
    """

    line: int
    image: str
    rig: str | None
    flags: str | None
    extra: tuple[str, ...] = ()
    last_line: int | None = dataclasses.field(default=None, compare=False)
    too_long: tuple[str, int] | None = None


@dataclass(frozen=True)
class Entry:
    """An accepted row: normalised relative path, canonical rig and flags."""

    line: int
    image: str
    rig: str
    flags: tuple[str, ...]


@dataclass(frozen=True)
class Rejection:
    image: str
    reason: str
    category: str
    line: int | None = None

    def __post_init__(self) -> None:
        if self.category not in REASONS:
            raise ValueError(f"unknown rejection category {self.category!r}; valid: {', '.join(REASONS)}")


def decode_labels(data: bytes) -> str:
    """Text of labels.csv: UTF-8 with or without a BOM, or UTF-16 with a BOM (Excel 'Unicode text')."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        encoding = "utf-16"
    else:
        encoding = "utf-8-sig"
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise DataError(f"labels.csv is not UTF-8 text (line {line}); save it as 'CSV UTF-8'") from None


@contextlib.contextmanager
def _csv_field_limit(limit: int) -> Iterator[None]:
    previous = csv.field_size_limit(limit)
    try:
        yield
    finally:
        csv.field_size_limit(previous)


def parse_label_table(text: str) -> list[LabelRow]:
    """Rows of labels.csv text (any line ends, header in any column order, extra columns ignored).

    Raises DataError when the table as a whole is unusable: empty, a required
    column missing, a column named twice, or a line the CSV reader cannot read.
    Lines that are blank or hold only empty fields are skipped. A field longer
    than MAX_FIELD is read whole (it is already in memory) and marks its row.
    """
    # strict: a stray opening quote must fail loudly, not swallow every later row into one field
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        with _csv_field_limit(max(MAX_FIELD, len(text) + 1)):  # no field can be longer than the text
            header = next(reader, None)
            while header is not None and not any(field.strip() for field in header):
                header = next(reader, None)
            if header is None:
                raise DataError("labels.csv is empty; it needs a header line 'image,rig,flags' and one row per photo")
            names = [field.strip().lower() for field in header]
            _check_header(names, header)
            column = {name: names.index(name) for name in REQUIRED_COLUMNS}
            rows = []
            start = reader.line_num + 1
            for fields in reader:
                if any(field.strip() for field in fields):
                    rows.append(_label_row(start, reader.line_num, fields, column, len(names)))
                start = reader.line_num + 1
    except csv.Error as exc:
        raise DataError(f"labels.csv cannot be read as CSV at line {reader.line_num} ({exc}); check the quotes "
                        "there and above (a field that opens with '\"' must close with '\"'), "
                        "or re-export it as CSV") from None
    return rows


def _check_header(names: list[str], header: list[str]) -> None:
    duplicated = sorted({n for n in names if n in REQUIRED_COLUMNS and names.count(n) > 1})
    if duplicated:
        raise DataError(f"labels.csv names column '{duplicated[0]}' twice; keep one")
    missing = [name for name in REQUIRED_COLUMNS if name not in names]
    if not missing:
        return
    found = shown(",".join(header))
    if len(header) == 1 and ";" in header[0]:
        raise DataError(f"labels.csv header is {found}: columns must be separated by ',' "
                        "(';' separates flags inside the flags field); re-export it as comma-separated CSV")
    raise DataError(f"labels.csv lacks column(s) {', '.join(missing)} (header: {found}); "
                    "its first line must be 'image,rig,flags'")


def _label_row(line: int, last_line: int, fields: list[str], column: dict[str, int], width: int) -> LabelRow:
    def field(name: str) -> str | None:
        index = column[name]
        return fields[index] if index < len(fields) else None

    extra = tuple(f for f in fields[width:] if f.strip())
    too_long = None
    if max(map(len, fields)) > MAX_FIELD:
        too_long = next(((name, len(value)) for name in REQUIRED_COLUMNS
                         if (value := field(name)) is not None and len(value) > MAX_FIELD), None)
    rig = field("rig")
    # the image name is data: kept exactly as written (" lead.jpg" is not "lead.jpg")
    return LabelRow(line=line, image=field("image") or "", rig=None if rig is None else rig.strip(),
                    flags=field("flags"), extra=extra, last_line=last_line, too_long=too_long)


@functools.lru_cache(maxsize=1 << 16)  # called for each row by several checks; rows often repeat a name
def normalise_image_path(image: str) -> str:
    """The export-relative POSIX path of a labels.csv image field; ValueError (the reason) if it is unsafe."""
    path = image.replace("\\", "/")
    if "\0" in path:
        raise ValueError("path contains a NUL character")
    if path.startswith("/") or re.match(r"^[A-Za-z]:", path):
        raise ValueError("absolute path; write it relative to the export folder (e.g. images/redbox/x.jpg)")
    path = posixpath.normpath(path)
    if path == ".." or path.startswith("../"):
        raise ValueError("path leaves the export folder ('..'); write it relative to the export folder")
    if path == ".":
        raise ValueError("path names the export folder itself, not a photo")
    return path


def check_row(row: LabelRow) -> Entry | Rejection:
    """Accept a row (canonical rig, flags and path) or reject it with the first problem found."""
    def reject(reason: str, category: str) -> Rejection:
        return Rejection(row.image, reason, category, row.line)

    if row.too_long is not None:
        name, length = row.too_long
        span = f" (it spans lines {row.line}-{row.last_line})" if row.last_line not in (None, row.line) else ""
        image = row.image if len(row.image) <= SHOWN_IMAGE else row.image[:SHOWN_IMAGE] + "..."
        return Rejection(image, f"the {name} field is {length:,} characters long, over the {MAX_FIELD:,}-character "
                         f"limit{span}; shorten it, or close a quote opened before it", "field_too_long", row.line)
    if row.extra:
        return reject(f"row has {len(row.extra)} field(s) more than the header; separate flags with ';' "
                      "not ',', or quote the flags field", "bad_row")
    if not row.image.strip():
        return reject("empty image field; give the photo's path relative to the export folder", "bad_row")
    try:
        image = normalise_image_path(row.image)
    except ValueError as exc:
        return reject(str(exc), "unsafe_path")
    if row.rig is None:
        return reject("row has no rig field; every row needs image,rig,flags", "bad_row")
    rig = row.rig.lower()
    if rig not in RIGS:
        return reject(f"unknown rig {shown(row.rig)}; valid: {', '.join(RIGS)}", "unknown_rig")
    if row.flags is None:
        return reject(f"row has no flags field, so its {_FIX_UNKNOWN}", "labels_unknown")
    if row.flags.strip().lower() in MISSING_VALUES:
        return reject(f"flags value {shown(row.flags.strip())} means {_FIX_UNKNOWN}", "labels_unknown")
    known, unknown = parse_flags(row.flags)
    if unknown:
        return reject(_unknown_flag_reason(unknown), "unknown_flag")
    return Entry(row.line, image, rig, tuple(known))


def _unknown_flag_reason(unknown: Sequence[str]) -> str:
    parts = []
    lower = [f.lower() for f in FLAGS]
    for name in unknown[:2]:
        close = difflib.get_close_matches(name.lower(), lower, n=1, cutoff=0.75) if len(name) <= 100 else []
        hint = f" (did you mean '{FLAGS[lower.index(close[0])]}'?)" if close else ""
        parts.append(f"{shown(name)}{hint}")
    more = f" and {len(unknown) - 2:,} more" if len(unknown) > 2 else ""
    return f"unknown flag {', '.join(parts)}{more}; use the Table 1 names (docs/data.md)"


def photo_name(row: LabelRow) -> str | None:
    """The export-relative path a row names, accepted or not; None when it names no photo inside the export."""
    if not row.image.strip() or row.too_long is not None and row.too_long[0] == "image":
        return None
    try:
        return normalise_image_path(row.image)
    except ValueError:
        return None


def line_list(lines: Sequence[int]) -> str:
    """'lines 2, 3' or 'lines 2, 3, 4, 5, 6 and 3,995 more': a reason names a few lines, never all of them."""
    shown_lines = ", ".join(str(n) for n in lines[:SHOWN_LINES])
    more = f" and {len(lines) - SHOWN_LINES:,} more" if len(lines) > SHOWN_LINES else ""
    return f"line{'s' if len(lines) > 1 else ''} {shown_lines}{more}"


def check_rows(rows: Sequence[LabelRow], same_file: Mapping[str, Hashable] | None = None,
               ) -> tuple[list[Entry], list[Rejection]]:
    """Row checks plus duplicate and conflict handling; accepted entries come back in labels.csv order.

    Rows are grouped by the photo they name: its normalised path, or
    ``same_file[path]`` when given (the stage maps each path to the file it
    opens, so a symlink and its target are one photo). Within a group:

    * any row rejected on its own, beside an accepted one: every row of the
      group is rejected as conflicting (the labels are in doubt), the rejected
      row's reason still saying what was wrong with it;
    * accepted rows with different rigs or flags: all rejected as conflicting;
    * otherwise the first row of each name is kept, later ones are duplicates.

    One pass, one reason per row of bounded length (line_list).
    """
    results: list[Entry | Rejection] = [check_row(row) for row in rows]
    groups: dict[Hashable, list[int]] = {}
    for i, (row, result) in enumerate(zip(rows, results)):
        name = result.image if isinstance(result, Entry) else photo_name(row)
        if name is not None:
            key = same_file.get(name, name) if same_file is not None else name
            groups.setdefault(key, []).append(i)
    for members in groups.values():
        if len(members) > 1:
            _resolve_group([rows[i] for i in members], [results[i] for i in members], members, results)
    kept = [r for r in results if isinstance(r, Entry)]
    return kept, [r for r in results if isinstance(r, Rejection)]


def _resolve_group(rows: list[LabelRow], found: list[Entry | Rejection], members: list[int],
                   results: list[Entry | Rejection]) -> None:
    """Settle the rows naming one photo: write each row's final result into ``results``."""
    accepted = [r for r in found if isinstance(r, Entry)]
    if not accepted:
        return
    refused = [r for r in found if isinstance(r, Rejection)]
    labels = {(e.rig, e.flags) for e in accepted}
    if refused or len(labels) > 1:
        lines = line_list([row.line for row in rows])
        names = sorted({name for row in rows if (name := photo_name(row)) is not None})
        subject = f"{lines} name this photo"
        if len(names) > 1:
            subject = f"{lines} name the same file ({shown(names[0])}, {shown(names[1])})"
        if refused:
            first = refused[0]
            doubt = (f"labels in doubt: {subject} and line {first.line} is rejected ({first.category}), "
                     f"so all its rows are rejected; fix or delete line {first.line}")
        else:
            doubt = f"conflicting rows: {subject} with different rigs or flags; keep one row per photo"
        for i, row, result in zip(members, rows, found):
            reason = doubt
            if isinstance(result, Rejection):
                reason = f"labels in doubt: {subject}; this row: {result.reason}"
            results[i] = Rejection(row.image, reason, "conflicting_rows", row.line)
        return
    first_of: dict[str, Entry] = {}
    for i, result in zip(members, found):
        first = first_of.setdefault(result.image, result)
        if first is not result:
            results[i] = Rejection(result.image, f"duplicate row: same photo and labels as line {first.line}, "
                                   "which was kept; delete this row", "duplicate_row", result.line)


def listed_paths(rows: Iterable[LabelRow]) -> set[str]:
    """Normalised paths named by any row, accepted or not (those photos have a row)."""
    return {name for row in rows if (name := photo_name(row)) is not None}


def is_photo_name(relative_path: str) -> bool:
    """Whether a file on disk counts as a photo that labels.csv should name (hidden files do not)."""
    parts = relative_path.split("/")
    return (not any(p.startswith(".") for p in parts)
            and relative_path.lower().endswith(PHOTO_SUFFIXES))


def unlisted_photos(files: Iterable[str], listed: set[str]) -> list[Rejection]:
    """A rejection for every photo file on disk (export-relative POSIX path) that no row names.

    A file whose name is not UTF-8 (Python holds its bytes as surrogate escapes)
    can be named by no row of a UTF-8 labels.csv: it is listed as ``unreadable_name``
    under its name with ``\\xNN`` for those bytes, photo or not, since its suffix
    may be the part that is not UTF-8.
    """
    out = []
    for path in sorted(files):
        if not is_printable(path):
            out.append(Rejection(printable(path), "file name is not UTF-8 (shown with \\xNN for its bytes), so no "
                                 "row of labels.csv can name it; rename it to UTF-8 (e.g. convmv -r -f latin1 -t utf8 "
                                 "--notest on the export) and name it in labels.csv", "unreadable_name"))
        elif is_photo_name(path) and path not in listed:
            out.append(Rejection(path, "no row in labels.csv", "no_row"))
    return out


def _unspaced(path: str) -> str:
    """The name with the spaces around each part dropped and in Unicode NFC form: the key of a near twin."""
    return unicodedata.normalize("NFC", "/".join(part.strip() for part in path.split("/")))


_NFC_FIX = ("normalise the names to NFC (macOS exports write NFD), e.g. convmv -r -f utf8 -t utf8 --nfc --notest "
            "on the export, or write the name in labels.csv exactly as the file is named")


def _differ_by(a: str, b: str) -> tuple[str, str]:
    """How two names with the same :func:`_unspaced` key differ, and what to do about it."""
    spaced = unicodedata.normalize("NFC", a) != unicodedata.normalize("NFC", b)     # what NFC leaves: spaces
    normalised = "/".join(p.strip() for p in a.split("/")) != "/".join(p.strip() for p in b.split("/"))
    if spaced and normalised:
        return ("by spaces around them and by Unicode normalisation (NFC vs NFD: they print alike)",
                "write the name exactly as the file is named; " + _NFC_FIX)
    if normalised:
        return "only by Unicode normalisation (NFC vs NFD: they print alike)", _NFC_FIX
    return "only by spaces around them", "write the name exactly as the file is named"


def spacing_hints(rejections: Sequence[Rejection], files: Iterable[str]) -> list[Rejection]:
    """``rejections`` with a note on each missing file and photo without a row that differ only by spaces.

    Names are kept exactly as written, so ``" lead.jpg"`` in labels.csv and
    ``lead.jpg`` on disk are a missing file and a photo without a row; both
    reasons then say which name to correct.
    """
    on_disk = {_unspaced(f): f for f in files}
    missing: dict[str, Rejection] = {}
    for r in rejections:
        if r.category == "missing_file":
            with contextlib.suppress(ValueError):
                missing.setdefault(_unspaced(normalise_image_path(r.image)), r)
    out = []
    for r in rejections:
        if r.category == "missing_file" and (name := _spaced_twin(r.image, on_disk)) is not None:
            how, fix = _differ_by(normalise_image_path(r.image), name)
            r = Rejection(r.image, f"file not found in the export, but {shown(name)} is: the names differ {how}; "
                          f"{fix}", r.category, r.line)
        elif r.category == "no_row" and (row := missing.get(_unspaced(r.image))) is not None:
            how, fix = _differ_by(r.image, normalise_image_path(row.image))
            r = Rejection(r.image, f"no row in labels.csv; line {row.line} names {shown(row.image)}, which differs "
                          f"{how}: {fix}", r.category, r.line)
        out.append(r)
    return out


def _spaced_twin(image: str, on_disk: Mapping[str, str]) -> str | None:
    try:
        path = normalise_image_path(image)
    except ValueError:
        return None
    twin = on_disk.get(_unspaced(path))
    return twin if twin is not None and twin != path else None


def build_manifest(entries: Sequence[Entry], photos: Mapping[str, PhotoInfo]) -> pd.DataFrame:
    """Manifest rows for the entries whose photo was read: image, rig, size, sha256, one 0/1 column per flag."""
    records = []
    for entry in entries:
        info = photos.get(entry.image)
        if info is None:
            continue
        flags = set(entry.flags)
        records.append((entry.image, entry.rig, info.width, info.height, info.sha256,
                        *(int(f in flags) for f in FLAGS)))
    manifest = pd.DataFrame.from_records(records, columns=list(MANIFEST_COLUMNS))
    return manifest.astype({"width": "int64", "height": "int64", **{f: "int64" for f in FLAGS}})


def rejection_table(rejections: Iterable[Rejection]) -> pd.DataFrame:
    """rejected.csv: label rows in line order, then photos without a row by path."""
    ordered = sorted(rejections, key=lambda r: (r.line is None, r.line or 0, r.image))
    table = pd.DataFrame([(r.image, r.reason, r.category, r.line) for r in ordered],
                         columns=list(REJECTED_COLUMNS))
    return table.astype({"line": "Int64"})


def rejection_counts(rejections: Iterable[Rejection]) -> dict[str, int]:
    counts = dict.fromkeys(REASONS, 0)
    for rejection in rejections:
        counts[rejection.category] += 1
    return counts


def ingest_metrics(manifest: pd.DataFrame, rejections: Sequence[Rejection]) -> dict:
    """Photos and flag counts per rig (Table 1 for this data) and rejection counts; keys never change."""
    images = {rig: int((manifest["rig"] == rig).sum()) for rig in RIGS}
    images["total"] = int(len(manifest))
    flags = {}
    for rig in RIGS:
        rows = manifest[manifest["rig"] == rig]
        counts = {flag: int(rows[flag].sum()) for flag in FLAGS}
        counts[NO_FLAG] = int((rows[list(FLAGS)].sum(axis=1) == 0).sum())
        flags[rig] = counts
    return {"images": images, "flags": flags,
            "rejected": {"total": len(rejections), "by_reason": rejection_counts(rejections)}}


def rejection_summary(rejections: Sequence[Rejection]) -> str:
    """'3 rejected: 2 unreadable_image, 1 no_row' (largest first)."""
    counts = sorted(((n, c) for c, n in rejection_counts(rejections).items() if n), key=lambda t: (-t[0], t[1]))
    return f"{len(rejections)} rejected: " + ", ".join(f"{n} {c}" for n, c in counts)
