"""Atomic file output: temp file beside the destination, fsync, rename."""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = [
    "numbered_paths",
    "remove_stale_temp_files",
    "temp_path_for",
    "unused_path",
    "write_atomically",
]

_TEMP_PREFIX = ".scanhopper-"
_TEMP_SUFFIX = ".part"


def numbered_paths(path: Path) -> Iterator[Path]:
    """``path``, then ``stem (2).suffix``, ``stem (3).suffix``... (endless), the way
    file managers name a second file of the same name."""
    yield path
    for number in itertools.count(2):
        yield path.with_name(f"{path.stem} ({number}){path.suffix}")


def unused_path(path: Path) -> Path:
    """The first of :func:`numbered_paths` where nothing exists, so moving a file there
    never replaces another one."""
    return next(p for p in numbered_paths(path) if not p.exists() and not p.is_symlink())


def temp_path_for(dest: Path) -> Path:
    """A temp name beside ``dest`` for writing it: short (so a long ``dest`` name
    still fits the file system's limit), starting with a dot and ending in ``.part``,
    names the watcher ignores."""
    return dest.with_name(f"{_TEMP_PREFIX}{uuid.uuid4().hex[:12]}{_TEMP_SUFFIX}")


def remove_stale_temp_files(folder: Path, before: float) -> list[Path]:
    """Remove the temp files (:func:`temp_path_for`) that writes cut short by a crash
    or SIGKILL left anywhere under ``folder``.

    Only files last modified before ``before`` (seconds since the epoch, the time this
    process started) are removed, so a write in progress is never touched. Other
    names, a user's ``report.pdf.part`` included, are left alone.

    Returns:
        The files removed (none if ``folder`` does not exist).

    Raises:
        OSError: ``folder`` or a temp file cannot be read or removed.
    """
    removed = []
    for path in folder.rglob(f"{_TEMP_PREFIX}*{_TEMP_SUFFIX}"):
        if path.is_file() and path.stat().st_mtime < before:
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(dest: Path, write: Callable[[Path], None]) -> None:
    """Produce ``dest`` whole or not at all.

    ``write`` is called with a temp path on the same filesystem; the file it writes is
    fsynced, renamed over ``dest`` and the directory fsynced, so a crash at any instant
    leaves either the old file or the new one, never a partial one.

    Args:
        dest: The final path; its folder must exist.
        write: Writes the complete file at the path it is given.

    Raises:
        OSError: writing, syncing or renaming failed (e.g. ENOSPC); the temp file is
            removed and ``dest`` is untouched. Whatever ``write`` raises, likewise.
    """
    tmp = temp_path_for(dest)
    try:
        write(tmp)
        _fsync(tmp)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync(dest.parent)
