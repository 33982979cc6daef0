"""Reading the files an export's rows name: every photo is located inside the export and fully decoded.

The rules for rows live in ``weldnet.photos.ingest`` (pure functions); this module does
the disk side, in worker processes (weldnet.core.pool), in row order.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from weldnet.core.paths import NotRegularFile, read_regular_file
from weldnet.core.pool import ordered_map
from weldnet.core.progress import progress
from weldnet.photos.images import ImageRejected, PhotoInfo, inspect_photo
from weldnet.photos.ingest import Entry, Rejection


def read_photo(root: str, image: str, max_pixels: int) -> PhotoInfo | Rejection:
    """Locate ``image`` inside the export (no escape through symlinks), read and decode it."""
    path = os.path.join(root, image)
    real = os.path.realpath(path)
    if os.path.commonpath([real, os.path.realpath(root)]) != os.path.realpath(root):
        return Rejection(image, "symlink points outside the export folder; copy the photo into the export",
                         "unsafe_path")
    if not os.path.exists(real):
        return Rejection(image, "file not found in the export; fix the path or remove the row", "missing_file")
    try:
        return inspect_photo(read_regular_file(real), max_pixels)
    except NotRegularFile as exc:
        return Rejection(image, f"{exc}; fix the path or remove the row", "missing_file")
    except ImageRejected as exc:
        return Rejection(image, str(exc), exc.category)
    except OSError as exc:
        return Rejection(image, f"cannot read the file ({exc.strerror or exc})", "unreadable_image")


def _read_photo_task(task: tuple[str, str, int]) -> PhotoInfo | Rejection:
    return read_photo(*task)


def read_photos(root: Path, entries: Sequence[Entry], max_pixels: int,
                workers: int) -> list[PhotoInfo | Rejection]:
    """read_photo for every entry, in order, spread over ``workers`` processes (weldnet.core.pool)."""
    tasks = [(str(root), entry.image, max_pixels) for entry in entries]
    return list(progress(ordered_map(_read_photo_task, tasks, workers, max_chunk=64), desc="ingest", unit="photo",
                         total=len(tasks), stream=sys.stdout))


def file_identities(root: Path, names: Iterable[str]) -> dict[str, tuple[int, int]]:
    """(device, inode) of each export-relative name that is a file inside the export, after symlinks.

    Two names with the same identity are one photo (a symlink beside its
    target, a hard link); names that are missing or lead outside are left out.
    """
    top = os.path.realpath(root)
    found = {}
    for name in names:
        real = os.path.realpath(os.path.join(root, name))
        if os.path.commonpath([real, top]) != top:
            continue
        try:
            st = os.stat(real)
        except (OSError, ValueError):
            continue
        found[name] = (st.st_dev, st.st_ino)
    return found


def photos_on_disk(root: Path) -> list[str]:
    """Export-relative POSIX paths of every file under the export (symlinked folders not followed)."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        rel = Path(folder).relative_to(root)
        found.extend((rel / name).as_posix() for name in files)
    return found
