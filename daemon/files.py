"""Files: every open, write, move and delete scanhopper does in its folders.

Paths are walked one component at a time from a configured root's directory, with
``O_NOFOLLOW`` on every component (``openat``-style, through ``dir_fd``), so no symlink
planted anywhere under a root is ever followed, whatever is swapped in between two
lines of our code: a link or a non-directory where a folder is expected raises
:class:`UnsafePathError`. Libraries (PyMuPDF, Pillow) are handed
``/proc/self/fd/N``, the file we opened, never a path they would resolve again.

Source files are checked against the SHA-256 recorded when intake read them
(:func:`open_source`): a file whose bytes differ raises :class:`SourceChangedError`.
A file's identity (device, inode, size, mtime, ctime) is checked before and after each
use; ctime changes with every write and cannot be set by a user, so bytes hashed
once under an identity need no second hash while it holds (git's index relies on the
same stat fields).

Writes go to a temp file beside the destination, created exclusively without
following links, fsynced and renamed; a crash leaves the old file or the new one.
"""

from __future__ import annotations

import errno
import hashlib
import itertools
import os
import stat
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

__all__ = [
    "Identity",
    "OpenFile",
    "SourceChangedError",
    "UnsafePathError",
    "fit_name",
    "move_verified",
    "numbered_paths",
    "open_dir",
    "open_source",
    "remove_stale_temp_files",
    "remove_verified",
    "temp_path_for",
    "write_atomically",
]

NAME_MAX = 255
"""Longest file name, in bytes, on Linux file systems (ext4, xfs, btrfs, tmpfs)."""

_TEMP_PREFIX = ".scanhopper-"
_TEMP_SUFFIX = ".part"
_HASH_CACHE_SIZE = 4096


class UnsafePathError(OSError):
    """A path under a root holds a symlink, or a non-directory where a folder must be,
    or a name such as ``..``: refused, never followed."""

    def __init__(self, root: Path, rel: str | PurePosixPath, what: str) -> None:
        super().__init__(
            errno.ELOOP, f"{Path(root, rel)}: {what}; refused (links are never followed)"
        )
        self.path = Path(root, rel)


class SourceChangedError(OSError):
    """A source file no longer holds the bytes recorded when it was read (it was
    replaced or written since), or changed while it was being used."""

    def __init__(self, path: Path, what: str = "changed since it was read") -> None:
        super().__init__(errno.ESTALE, f"{path}: {what}")
        self.path = path


@dataclass(frozen=True)
class Identity:
    """What ``fstat`` says of a file's bytes: equal identities, equal bytes (unless the
    system clock is set back to forge a ctime)."""

    dev: int
    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> Identity:
        """The identity in a stat result."""
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


@dataclass(frozen=True)
class OpenFile:
    """A regular file opened by :func:`open_source`."""

    fd: int
    identity: Identity
    shown: Path
    """The path to show in messages (root joined with the relative name)."""

    @property
    def path(self) -> Path:
        """``/proc/self/fd/N``: this very file, for libraries that take a path."""
        return Path(f"/proc/self/fd/{self.fd}")

    def sha256(self) -> str:
        """Hex SHA-256 of the file's bytes, read through the descriptor; remembered for
        this identity, so checking the same bytes again costs nothing.

        Raises:
            SourceChangedError: the file was written while being read.
        """
        known = _verified.get(self.identity)
        if known is None:
            digest = hashlib.sha256()
            offset = 0
            while chunk := os.pread(self.fd, 1 << 20, offset):
                digest.update(chunk)
                offset += len(chunk)
            self.check_unchanged()
            known = _verified[self.identity] = digest.hexdigest()
            while len(_verified) > _HASH_CACHE_SIZE:
                _verified.popitem(last=False)
        _verified.move_to_end(self.identity)
        return known

    def check_unchanged(self) -> None:
        """Raise :class:`SourceChangedError` if the file changed since it was opened."""
        if Identity.of(os.fstat(self.fd)) != self.identity:
            raise SourceChangedError(self.shown, "was written while being read")


_verified: OrderedDict[Identity, str] = OrderedDict()
"""Identities whose bytes were hashed, with their SHA-256 (most recent last)."""


def _parts(rel: str | PurePosixPath, root: Path) -> tuple[str, ...]:
    parts = PurePosixPath(rel).parts
    if not parts or PurePosixPath(rel).is_absolute() or any(p in ("..", ".") for p in parts):
        raise UnsafePathError(root, rel, "not a plain relative path")
    for part in parts:
        if len(os.fsencode(part)) > NAME_MAX:
            raise OSError(errno.ENAMETOOLONG, f"{Path(root, rel)}: a name is too long")
    return parts


def open_dir(root: Path, rel: str | PurePosixPath = "", *, create: bool = False) -> int:
    """Open the folder ``rel`` under ``root`` without following links (``root`` itself
    is configuration and may be reached through links).

    Args:
        root: A configured folder.
        rel: A relative POSIX path, or ``""`` for ``root`` itself.
        create: Make missing folders (mode 0777 less the umask), ``root`` included.

    Returns:
        A directory file descriptor; the caller closes it.

    Raises:
        UnsafePathError: a component is a symlink or not a folder.
        FileNotFoundError: a folder is missing and ``create`` is false.
        OSError: anything else the file system says (EACCES, ENOSPC...).
    """
    if create:
        root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in _parts(rel, root) if str(rel) not in ("", ".") else ():
            if create:
                try:
                    os.mkdir(part, dir_fd=fd)
                except FileExistsError:
                    pass
            try:
                child = os.open(
                    part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd
                )
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise UnsafePathError(
                        root, rel, f"{part!r} is a link or not a folder"
                    ) from None
                raise
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_file(root: Path, rel: str) -> int:
    parent, name = PurePosixPath(rel).parent, PurePosixPath(rel).name
    _parts(rel, root)
    try:
        dir_fd = open_dir(root, parent)
    except UnsafePathError as exc:
        raise UnsafePathError(root, rel, f"a folder on its path is a link ({exc})") from None
    except FileNotFoundError:
        raise FileNotFoundError(errno.ENOENT, "its folder is gone", str(Path(root, rel))) from None
    try:
        # O_NONBLOCK: a FIFO swapped in must not block us; regular files ignore it.
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        return os.open(name, flags, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafePathError(root, rel, "is a symlink") from None
        raise OSError(exc.errno, exc.strerror, str(Path(root, rel))) from None
    finally:
        os.close(dir_fd)


@contextmanager
def open_source(root: Path, rel: str, content_hash: str | None = None) -> Iterator[OpenFile]:
    """Open the regular file ``rel`` under ``root`` for reading, without following
    links, and check it is what was read before.

    Args:
        root: The inbox root (or any folder the file is taken from).
        rel: The file's path relative to ``root`` (POSIX separators).
        content_hash: The SHA-256 recorded for the file; when given, the file must
            still hash to it (hashed at most once per identity, see the module).

    Yields:
        The open file; read it through ``path`` or ``fd``.

    Raises:
        UnsafePathError: a component of ``rel`` is a symlink or not a folder.
        SourceChangedError: the file is not a regular file, does not hash to
            ``content_hash``, or changed while it was open (raised on leaving).
        FileNotFoundError, OSError: it cannot be opened.
    """
    fd = _open_file(root, rel)
    try:
        st = os.fstat(fd)
        shown = Path(root, rel)
        if not stat.S_ISREG(st.st_mode):
            raise SourceChangedError(shown, "is no longer a regular file")
        opened = OpenFile(fd, Identity.of(st), shown)
        if content_hash is not None and opened.sha256() != content_hash:
            raise SourceChangedError(shown)
        yield opened
        opened.check_unchanged()
    finally:
        os.close(fd)


def fit_name(name: str, limit: int = NAME_MAX) -> str:
    """``name`` shortened (before its suffixes) to at most ``limit`` bytes in UTF-8,
    so a name we derive (``x.pdf``, ``x (2).pdf``, ``x.reason.txt``) always fits the
    file system. Characters are never split."""
    if len(name.encode()) <= limit:
        return name
    stem, dot, suffix = name.partition(".")
    suffix = dot + suffix if len(suffix.encode()) < limit // 2 else ""
    room = limit - len(suffix.encode())
    return stem.encode()[:room].decode("utf-8", "ignore") + suffix


def numbered_paths(path: PurePosixPath) -> Iterator[PurePosixPath]:
    """``path``, then ``stem (2).suffix``, ``stem (3).suffix``... (endless), the way
    file managers name a second file of the same name; each fits :data:`NAME_MAX`."""
    yield path.with_name(fit_name(path.name))
    for number in itertools.count(2):
        tail = f" ({number}){path.suffix}"
        stem = fit_name(path.stem, NAME_MAX - len(tail.encode()))
        yield path.with_name(stem + tail)


def _exists(name: str, dir_fd: int) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def temp_path_for(dest: Path) -> Path:
    """A temp name beside ``dest``: short (so a long ``dest`` name still fits the file
    system's limit), starting with a dot and ending in ``.part``, names the watcher
    ignores and :func:`remove_stale_temp_files` removes after a crash."""
    return dest.with_name(_temp_name())


def _temp_name() -> str:
    return f"{_TEMP_PREFIX}{uuid.uuid4().hex[:12]}{_TEMP_SUFFIX}"


def remove_stale_temp_files(folder: Path, before: float) -> list[Path]:
    """Remove the temp files (:func:`temp_path_for`) that writes cut short by a crash
    or SIGKILL left anywhere under ``folder``.

    Only files last modified before ``before`` (seconds since the epoch, the time this
    process started) are removed, so a write in progress is never touched. Other
    names, a user's ``report.pdf.part`` included, are left alone; links are not
    followed.

    Returns:
        The files removed (none if ``folder`` does not exist).

    Raises:
        OSError: ``folder`` or a temp file cannot be read or removed.
    """
    removed = []
    if not folder.is_dir():
        return removed
    for top, _, names, dir_fd in os.fwalk(folder, follow_symlinks=False):
        for name in names:
            if not (name.startswith(_TEMP_PREFIX) and name.endswith(_TEMP_SUFFIX)):
                continue
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            if stat.S_ISREG(st.st_mode) and st.st_mtime < before:
                os.unlink(name, dir_fd=dir_fd)
                removed.append(Path(top, name))
    return removed


def write_atomically(
    root: Path, rel: str | PurePosixPath, write: Callable[[Path], None], *, replace: bool = True
) -> PurePosixPath:
    """Produce ``root/rel`` whole or not at all, creating no file or folder through a
    link.

    Missing folders are made (:func:`open_dir`); ``write`` is called with the path of
    a new temp file in the destination folder (``/proc/self/fd/N``, created with
    ``O_EXCL | O_NOFOLLOW``); the file is fsynced, renamed to its name and the folder
    fsynced, so a crash at any instant leaves either the old file or the new one.

    Args:
        root: A configured folder (outbox, failed, state...).
        rel: The destination, relative to ``root``.
        write: Writes the complete file at the path it is given.
        replace: Replace a file already at ``rel``; when false, the first free name
            of :func:`numbered_paths` is taken instead.

    Returns:
        The path written, relative to ``root``.

    Raises:
        UnsafePathError: a folder on the way, or the destination, is a symlink.
        OSError: writing, syncing or renaming failed (ENOSPC, EROFS, EACCES,
            ENAMETOOLONG); the temp file is removed and the destination untouched.
            Whatever ``write`` raises, likewise.
    """
    rel = PurePosixPath(rel)
    dir_fd = open_dir(root, rel.parent, create=True)
    try:
        tmp = _temp_name()
        fd = os.open(
            tmp,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o666,
            dir_fd=dir_fd,
        )
        try:
            try:
                write(Path(f"/proc/self/fd/{fd}"))
                os.fsync(fd)
            finally:
                os.close(fd)
            name = _free_name(rel, dir_fd, root, replace)
            os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            os.unlink(tmp, dir_fd=dir_fd)
            raise
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return rel.with_name(name)


def _free_name(rel: PurePosixPath, dir_fd: int, root: Path, replace: bool) -> str:
    """The name to rename a finished temp file to (see :func:`write_atomically`)."""
    for candidate in numbered_paths(rel):
        try:
            st = os.stat(candidate.name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return candidate.name
        if stat.S_ISLNK(st.st_mode):
            raise UnsafePathError(root, candidate, "is a symlink")
        if replace and stat.S_ISREG(st.st_mode):
            return candidate.name
    raise AssertionError("numbered_paths is endless")


def _verified_entry(root: Path, rel: str, content_hash: str) -> tuple[int, str, Identity]:
    """Open ``rel``'s folder and check the entry is the file hashing to
    ``content_hash``; returns ``(folder fd, name, identity)``."""
    with open_source(root, rel, content_hash) as opened:
        identity = opened.identity
    name = PurePosixPath(rel).name
    dir_fd = open_dir(root, PurePosixPath(rel).parent)
    return dir_fd, name, identity


def _take(dir_fd: int, name: str, identity: Identity, shown: Path) -> str:
    """Rename the entry ``name`` to a temp name, then check it is the verified file, the
    same inode (so no file swapped in after the check is ever moved or removed); on a
    mismatch it is put back and :class:`SourceChangedError` raised. Returns the temp
    name."""
    tmp = _temp_name()
    os.rename(name, tmp, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    moved = os.stat(tmp, dir_fd=dir_fd, follow_symlinks=False)
    if (moved.st_dev, moved.st_ino) != (identity.dev, identity.ino):  # a rename sets ctime
        _put_back(dir_fd, tmp, name)
        raise SourceChangedError(shown, "was replaced while it was being moved")
    return tmp


def _put_back(dir_fd: int, tmp: str, name: str) -> None:
    """Give a file taken aside (:func:`_take`) its name back, or ``name (2)``... if
    something took the name meanwhile: never replaced, never left hidden."""
    names = numbered_paths(PurePosixPath(name))
    back = next(p.name for p in names if not _exists(p.name, dir_fd))
    os.link(tmp, back, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
    os.unlink(tmp, dir_fd=dir_fd)


def remove_verified(root: Path, rel: str, content_hash: str) -> None:
    """Delete ``root/rel`` only if it is the file hashing to ``content_hash``.

    Raises:
        SourceChangedError: it holds other bytes (it is left in place).
        UnsafePathError, FileNotFoundError, OSError: as :func:`open_source`.
    """
    dir_fd, name, identity = _verified_entry(root, rel, content_hash)
    try:
        tmp = _take(dir_fd, name, identity, Path(root, rel))
        os.unlink(tmp, dir_fd=dir_fd)
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def move_verified(root: Path, rel: str, content_hash: str, target: Path) -> PurePosixPath:
    """Move ``root/rel`` to ``target/rel`` (or ``rel (2)``... beside it: an earlier
    file there is never replaced), only if it is the file hashing to
    ``content_hash``. Across file systems the bytes are copied (verified) and the
    source removed.

    Returns:
        Where it went, relative to ``target``.

    Raises:
        SourceChangedError: it holds other bytes (it is left in place).
        UnsafePathError: a link on either side.
        FileNotFoundError, OSError: as :func:`open_source` and :func:`write_atomically`.
    """
    dir_fd, name, identity = _verified_entry(root, rel, content_hash)
    try:
        dest_fd = open_dir(target, PurePosixPath(rel).parent, create=True)
        try:
            tmp = _take(dir_fd, name, identity, Path(root, rel))
            try:
                dest = _free_name(PurePosixPath(rel), dest_fd, target, replace=False)
                os.rename(tmp, dest, src_dir_fd=dir_fd, dst_dir_fd=dest_fd)
            except OSError as exc:
                _put_back(dir_fd, tmp, name)
                if exc.errno != errno.EXDEV:
                    raise
                return _copy_then_remove(root, rel, content_hash, target)
            os.fsync(dest_fd)
            os.fsync(dir_fd)
            return PurePosixPath(rel).with_name(dest)
        finally:
            os.close(dest_fd)
    finally:
        os.close(dir_fd)


def _copy_then_remove(root: Path, rel: str, content_hash: str, target: Path) -> PurePosixPath:
    def copy(tmp: Path) -> None:
        with open_source(root, rel, content_hash) as opened, tmp.open("wb") as out:
            offset = 0
            while chunk := os.pread(opened.fd, 1 << 20, offset):
                out.write(chunk)
                offset += len(chunk)

    written = write_atomically(target, rel, copy, replace=False)
    remove_verified(root, rel, content_hash)
    return written
