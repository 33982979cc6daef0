"""Writing outputs: all or nothing, in a form that reads back exactly, or one line naming the file and the cause.

Every output goes to a temporary name beside it (``.<name>.partial-<pid>``) and
is renamed over the real name only once it is complete and flushed, so a later
stage (or a rerun) sees the old file or the new one, never half of one. A write
that fails (a full disk, a file-size limit, an I/O error) removes the temporary
file and raises :class:`WriteError`, a StageError whose one line names the file
and the cause; ``run_stage`` prints it and exits with code 2.

CSV files round-trip through ``csv.reader`` for any text: a cell holding a comma,
a quote or a line end is quoted. Python's writer quotes ``\\n`` but not a lone
``\\r`` when lines end in ``\\n``, so a table or row holding ``\\r`` anywhere is
written with every cell quoted. Text that is not valid Unicode (a file name
whose bytes were not UTF-8, which Python holds as surrogate escapes) is written
with ``\\xNN`` for each such byte (:func:`printable`) instead of crashing; the
stages that meet such names also give them the category ``unreadable_name``.
"""
from __future__ import annotations

import codecs
import contextlib
import csv
import io
import json
import os
import shutil
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

from weldnet.core.config import StageError

ESCAPE_ERRORS = "weldnet-escape"
PARTIAL = ".partial-"             # .<name>.partial-<pid>: a write in progress, or one killed part-way


class WriteError(StageError):
    """An output could not be written; the message names the file and the cause."""


def _escape(exc: UnicodeError) -> tuple[str, int]:
    """Codec error handler: a surrogate-escaped byte as ``\\xNN``, any other unencodable character as ``\\uNNNN``."""
    if not isinstance(exc, UnicodeEncodeError):
        raise exc
    parts = []
    for ch in exc.object[exc.start:exc.end]:
        code = ord(ch)
        parts.append(f"\\x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"\\u{code:04x}")
    return "".join(parts), exc.end


codecs.register_error(ESCAPE_ERRORS, _escape)


def is_printable(text: str) -> bool:
    """True when ``text`` encodes as UTF-8 (no surrogate escapes from a non-UTF-8 file name)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def printable(text: str) -> str:
    """``text`` as valid UTF-8 text: each byte a non-UTF-8 file name held becomes ``\\xNN``."""
    return text if is_printable(text) else text.encode("utf-8", ESCAPE_ERRORS).decode("utf-8")


def write_failure(path: Path | str, exc: OSError) -> WriteError:
    """The one-line error for ``exc`` raised while writing ``path``."""
    cause = exc.strerror or str(exc) or type(exc).__name__
    hint = ""
    if exc.errno in (27, 28, 122):       # EFBIG, ENOSPC, EDQUOT
        hint = "; free disk space (or raise the file-size limit, ulimit -f) and run again"
    elif exc.errno in (13, 30):          # EACCES, EROFS
        hint = "; make its folder writable and run again"
    return WriteError(f"cannot write {printable(str(path))}: {cause}{hint}")


def _partial_name(path: Path) -> Path:
    return path.with_name(f".{path.name}{PARTIAL}{os.getpid()}")


def is_partial(path: Path | str) -> bool:
    """True for the temporary file of a write that never finished (its process was killed): safe to delete."""
    name = Path(path).name
    return name.startswith(".") and PARTIAL in name and name.rsplit(PARTIAL, 1)[1].isdigit()


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; renamed over ``path`` when the block ends without error.

    On any error the temporary file is removed and ``path`` is left as it was;
    an OSError becomes a :class:`WriteError` naming ``path``.
    """
    path = Path(path)
    tmp = _partial_name(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        _discard(tmp)
        raise write_failure(path, exc) from None
    except RuntimeError as exc:      # torch's writers report a failed write as a RuntimeError
        _discard(tmp)
        if "writ" not in str(exc).lower():
            raise
        raise WriteError(f"cannot write {printable(str(path))}: {str(exc).splitlines()[0] if str(exc) else exc!r}; "
                         "free disk space (or raise the file-size limit, ulimit -f) and run again") from None
    except BaseException:
        _discard(tmp)
        raise


def _discard(tmp: Path) -> None:
    with contextlib.suppress(OSError):
        tmp.unlink()


def write_bytes(path: Path | str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: Path | str, text: str) -> None:
    """Write ``text`` to ``path`` atomically as UTF-8 (non-UTF-8 name bytes as ``\\xNN``)."""
    write_bytes(path, text.encode("utf-8", ESCAPE_ERRORS))


def write_json(path: Path | str, payload: Any, **dumps: Any) -> None:
    """``json.dumps(payload, indent=2)`` and a line end, written atomically."""
    write_text(path, json.dumps(payload, **{"indent": 2, **dumps}) + "\n")


def _needs_full_quoting(cells: Iterable[Any]) -> bool:
    return any(isinstance(c, str) and "\r" in c for c in cells)


def csv_text(table: Any, **to_csv: Any) -> str:
    """A DataFrame as CSV text that ``csv.reader`` reads back cell for cell (see the module docstring)."""
    text_columns = [c for c in table.columns if table[c].dtype == object or str(table[c].dtype) in ("str", "string")]
    cells = (c for column in text_columns for c in table[column].tolist())
    quoting = csv.QUOTE_ALL if _needs_full_quoting([*table.columns, *cells]) else csv.QUOTE_MINIMAL
    return table.to_csv(None, lineterminator="\n", quoting=quoting, **{"index": False, **to_csv})


def write_csv(path: Path | str, table: Any, **to_csv: Any) -> None:
    """Write a DataFrame as CSV atomically (``index=False`` unless given; extra arguments go to ``to_csv``)."""
    write_text(path, csv_text(table, **to_csv))


class CsvRows:
    """Rows written one at a time, each of which round-trips through ``csv.reader`` (for streaming writers)."""

    def __init__(self, fh: TextIO) -> None:
        self._minimal = csv.writer(fh, lineterminator="\n")
        self._all = csv.writer(fh, lineterminator="\n", quoting=csv.QUOTE_ALL)

    def writerow(self, row: Sequence[Any]) -> None:
        row = [printable(c) if isinstance(c, str) else c for c in row]
        (self._all if _needs_full_quoting(row) else self._minimal).writerow(row)


@contextlib.contextmanager
def csv_rows(path: Path | str) -> Iterator[CsvRows]:
    """Write a CSV row by row to a temporary file; it replaces ``path`` only when the block ends without error.

    Memory stays flat (rows go straight to disk); an interrupted run leaves
    ``path`` as it was and no partial file behind.
    """
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8", errors=ESCAPE_ERRORS) as fh:
        yield CsvRows(fh)


def render_png(save: Any, **kwargs: Any) -> bytes:
    """The bytes ``save(buffer, format="png", **kwargs)`` writes into memory (Matplotlib's or Pillow's save)."""
    buffer = io.BytesIO()
    save(buffer, format="png", **kwargs)
    return buffer.getvalue()


def human_bytes(n: float) -> str:
    """``n`` bytes as a short text: 512 B, 3.2 MB, 8.1 GB (powers of 1000, as disk makers and df -H count)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def free_bytes(path: Path | str) -> int:
    """Free space for an unprivileged writer on the file system that holds ``path`` (or its nearest parent)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def check_disk(path: Path | str, need: int, what: str, fix: str, reclaimed: int = 0) -> None:
    """WriteError before any work when ``need`` bytes will not fit beside ``path`` (``reclaimed``: freed first)."""
    free = free_bytes(path) + reclaimed
    if need > free:
        raise WriteError(f"{what} needs about {human_bytes(need)} but {printable(str(path))} has "
                         f"{human_bytes(free)} free; {fix}")
