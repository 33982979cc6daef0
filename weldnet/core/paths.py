"""File-system guards: every stage deletes through :func:`remove_output`, every photo is read by :func:`read_regular_file`.

``remove_output`` deletes only a stage's own declared output (the path dvc.yaml
passes it) or something under it, and only inside the working directory (the
repository root when DVC runs the stage). Anything else is refused with one
line, so a path built from a hostile name or argument (``models/../../x``) can
never reach outside the repository.

``read_regular_file`` opens without blocking and checks the opened file is a
regular file, so a photo replaced by a FIFO or a device is reported instead of
hanging the stage.
"""
from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

from weldnet.core.config import StageError


class NotRegularFile(OSError):
    """The path names a FIFO, a device, a socket or a folder, not a file's bytes."""


def read_regular_file(path: str | Path) -> bytes:
    """The bytes of a regular file; NotRegularFile for anything else (without blocking on a FIFO).

    The check is made on the opened descriptor, so the file cannot be swapped
    between the check and the read.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = "a folder" if stat.S_ISDIR(mode) else "a FIFO, device or socket"
            raise NotRegularFile(f"not a regular file ({kind})")
        with os.fdopen(fd, "rb") as fh:
            fd = -1  # closed by the file object
            return fh.read()
    finally:
        if fd >= 0:
            os.close(fd)


def _resolved(path: Path) -> Path:
    """``path`` made absolute with every symlink and '..' resolved, except that a final symlink is not followed."""
    if path.name in ("", ".", ".."):
        return Path(os.path.realpath(path))
    return Path(os.path.realpath(path.parent)) / path.name


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def remove_output(path: Path, within: Path | None = None, root: Path | None = None) -> None:
    """Delete ``path`` (a file, a symlink or a folder tree), which must be the declared output ``within`` or lie in it.

    ``within`` defaults to ``path`` itself; ``root`` (default: the working
    directory) is the folder every deletion must stay inside; neither ``root``
    nor a folder holding it is ever deleted. Symlinks are removed, never followed.
    A missing path is no error. Raises StageError, deleting nothing, otherwise.
    """
    path = Path(path)
    declared = Path(within) if within is not None else path
    top = Path(os.path.realpath(root if root is not None else os.getcwd()))
    target, output = _resolved(path), _resolved(declared)
    if not _inside(output, top) or output == top:
        raise StageError(f"refusing to delete {path}: {declared} is outside the working directory {top} "
                         "(or is that directory); stages write their outputs inside the repository")
    if not _inside(target, output):
        raise StageError(f"refusing to delete {path}: it resolves to {target}, outside {declared}, "
                         "the stage's declared output")
    if not os.path.lexists(target):
        return
    if target.is_symlink() or not target.is_dir():
        target.unlink()
    else:
        shutil.rmtree(target)
