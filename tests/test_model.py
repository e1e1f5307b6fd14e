"""Model-based test: one real daemon driven through random sequences of what users and
file systems do, checked against a model of every byte the test wrote.

A Hypothesis ``RuleBasedStateMachine`` (``ScanhopperMachine``) runs the real daemon
(``harness.Daemon``: ``scanhopper run`` in a subprocess, the fake OCR engine whose text
for a page is the page file's stem, ``stable_seconds`` and ``settle_seconds`` 0.3) and
applies rules: pages added to folder documents or loose in the inbox, replaced (in place
or by rename), deleted, unreadable pages, folders renamed and deleted, the completion
marker before or after pages, slow copies, symlinks (in a document, a folder swapped for
a link with ``renameat2(RENAME_EXCHANGE)``, links planted in the outbox and the failed
and archive folders), a full outbox (a tmpfs filled up, then freed), SIGKILL and
restart, and pauses. Every page is a small PNG whose pixels encode a unique version id,
so a page of a PDF names its file (the text layer) and the exact bytes it came from
(the pixels); the model keeps every version each file ever had and every snapshot of
each folder (one after each change the test made).

Invariants. After each step: the daemon is alive; no victim file was read (the victim
folder is a tmpfs mounted ``strictatime``, so any read changes an atime), ``victim_out``
is empty; every PDF a watcher thread saw in the outbox (sampled every 0.1 s) opened
whole. At the end of each example the test stops changing things and waits (at most
``SETTLE_SECONDS``) until every document is settled, then checks:

- every PDF seen in the outbox, during the run or at the end, is a whole valid PDF whose
  pages are, in natural order, the readable pages of ONE snapshot of its folder in the
  model (``keep``; under ``delete`` the daemon's own deletions make snapshots unknowable,
  so each page is checked against its file's versions, in natural order, no file twice);
  each page's text is its file's stem and its pixels are a version that file had;
  a folder is published only if a marker was once in it;
- the latest PDF of every complete folder or loose file holds every readable file
  present at the end, at its current version, and no other version of them (it may
  hold files deleted since: deleting a page does not re-open a published document),
  and the unreadable ones are named in the error; or the document is ``waiting`` or
  ``failed`` with a reason; no page is left to read, no document left ``complete`` or
  ``publishing``;
- the inbox holds only what the test put there, with the bytes it wrote, less what
  the daemon may remove: a failed document's files (found, bytes equal, in the failed
  folder), and under ``delete`` files whose bytes are in a PDF it published (seen by
  the watcher); a file whose bytes were never published is never deleted, and bytes
  that were published and then deleted from the inbox are still in some PDF at the end;
- nothing outside the configured folders was read, written, moved or deleted: the
  victim folder's names, bytes, mtimes and atimes are unchanged, ``victim_out`` is empty,
  every link the test made (in the inbox, planted elsewhere) is still there, unchanged;
- the daemon exits 0 on SIGTERM and leaves no ``.scanhopper-*.part`` file in the outbox
  or the failed folder.

Checks that timing could make flaky are made exact the other way: a PDF is compared with
the set of snapshots the folder ever had, not with "now"; liveness (the latest PDF holds
the final pages) is polled until it holds, within a bound, and only once the test has
stopped changing the inbox.

One daemon per example: start costs about 1.6 s, and a fresh state database, outbox and
set of mounts per example keeps examples independent, so that a failure Hypothesis
shrinks is the failure of that sequence alone, not of state (documents, publish backoff,
a full disk, planted links, the hash cache) left by earlier examples; each example also
ends with the checks only a stopped daemon allows (exit code 0, no temp file left).

Defects it found, each fixed and kept as a deterministic test below:

1. ``source_policy = "delete"``: a document's third publication replaced the PDF of its
   first (``d0.pdf``, ``d0 (2).pdf``, then ``d0.pdf`` again), whose sources were deleted.
2. ``source_policy = "delete"``: an unreadable page, whose bytes are in no PDF, was
   deleted with the published ones.
3. The inbox watcher (watchfiles, through notify's recursive walk) followed a folder
   link in the inbox and watched the folders it points to, outside the inbox.
4. A folder moved out of the inbox before it was published and moved back under the
   same name stayed ``gone``, even once marked complete.
5. A failed document's file whose destination in the failed folder is a link was left
   under a hidden temp name (``.scanhopper-*.part``) in the inbox, not in place.

The machine reports each as a failure (``SCANHOPPER_MODEL_STRICT=0`` counts them as
``known defect N`` in the figures it prints instead, to see past one while hunting).

Runs: ``SCANHOPPER_MODEL_EXAMPLES`` examples per source policy (default 10: the file
takes about 2.5 minutes on 2 cores), ``SCANHOPPER_MODEL_STEPS`` steps at most per
example (default 20). The long run (about 30 minutes)::

    SCANHOPPER_MODEL_EXAMPLES=170 timeout 2100 .venv/bin/python -m pytest \\
        tests/test_model.py -q -s -k machine

Needs root for the tmpfs mounts; without ``mount`` permission the full-disk rule and the
atime check are skipped with a warning saying so.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import hashlib
import io
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections import Counter
from pathlib import Path

import pymupdf
import pytest
from harness import Daemon
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from PIL import Image

pytestmark = pytest.mark.slow

EXAMPLES = int(os.environ.get("SCANHOPPER_MODEL_EXAMPLES", "10"))
STEPS = int(os.environ.get("SCANHOPPER_MODEL_STEPS", "20"))
STRICT = os.environ.get("SCANHOPPER_MODEL_STRICT", "1") not in ("", "0")
SETTLE_SECONDS = 30.0
"""Bound on the wait for every document to settle at the end of an example."""

FOLDERS = ("d0", "d1", "d2", "n/d3", "r0", "r1", "n/r2")
"""Folder documents the machine may create (``n/...`` publish under ``outbox/n/``)."""
LOOSE = tuple(f"l{n}.png" for n in range(1, 6))
"""Loose files the machine may drop in the inbox root."""
MARKER = ".complete"
PAGE_NUMBERS = st.integers(1, 30)
"""Page file ``p{n}.png``: natural order is numeric order (``p2`` before ``p10``)."""
PICK = st.integers(0, 63)
"""Which existing page or folder a rule acts on (modulo how many there are). Draws never
depend on the model: the daemon changes the inbox too (deletions, failed documents),
and Hypothesis requires a choice sequence to draw the same way each time it is run."""

WIDTH, HEIGHT = 40, 24
MAGIC = (0xA5, 0x5A)
VICTIM_IDS = 900_000
"""Version ids of the victim folder's pages: seen in a PDF, the victim was read."""

PLANT = (
    *(f"outbox/{f}.pdf" for f in FOLDERS),
    "outbox/n",
    *(f"outbox/{Path(name).stem}.pdf" for name in LOOSE),
    *(f"failed/{f}" for f in (*FOLDERS, "n", *LOOSE)),
    "archive/d0",
    "archive/n",
)
"""Where links into victim_out may be planted (relative to the daemon's home)."""

_PDF_NAME = re.compile(r"^(?P<stem>.*?)(?: \((?P<n>\d+)\))?\.pdf$")


# -- pages -------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def page_png(vid: int) -> bytes:
    """A small grey PNG whose first pixels hold ``MAGIC`` and ``vid`` (and a few more
    pixels drawn from ``vid``, so sizes vary)."""
    image = Image.new("L", (WIDTH, HEIGHT), 255)
    for x, value in enumerate((*MAGIC, *vid.to_bytes(4, "big"))):
        image.putpixel((x, 0), value)
    rnd = random.Random(vid)
    for _ in range(rnd.randint(1, 12)):
        image.putpixel((rnd.randrange(WIDTH), rnd.randrange(1, HEIGHT)), rnd.randrange(256))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@functools.lru_cache(maxsize=4096)
def page_pixels(vid: int) -> bytes:
    with Image.open(io.BytesIO(page_png(vid))) as image:
        return image.tobytes()


def bad_page(vid: int) -> bytes:
    """Bytes no image library reads (a page the daemon must refuse, not lose)."""
    return f"scanhopper model test: not an image, version {vid}\n".encode()


def version_of(samples: bytes) -> int | None:
    """The version id whose page has exactly these grey pixels, or ``None``."""
    if len(samples) != WIDTH * HEIGHT or samples[:2] != bytes(MAGIC):
        return None
    vid = int.from_bytes(samples[2:6], "big")
    return vid if samples == page_pixels(vid) else None


def parse_pdf(data: bytes) -> tuple[list[tuple[str, int | None]] | None, str | None]:
    """``([(text, version id or None)] per page, None)`` or ``(None, what is wrong)``."""
    try:
        with pymupdf.open(stream=data, filetype="pdf") as doc:
            if doc.is_repaired:
                return None, "damaged (MuPDF repaired it)"
            if doc.page_count == 0:
                return None, "no pages"
            pages = []
            for page in doc:
                images = page.get_images(full=True)
                vid = None
                if len(images) == 1:
                    pix = pymupdf.Pixmap(doc, images[0][0])
                    if pix.n == 1 and not pix.alpha:
                        vid = version_of(pix.samples)
                pages.append((page.get_text().strip(), vid))
            return pages, None
    except Exception as exc:  # any failure to read is a partial or corrupt output
        return None, f"unreadable ({type(exc).__name__}: {exc})"


def natural_key(name: str) -> int:
    """``p{n}.png`` -> ``n``: natural order of the test's names, independent of natsort."""
    return int(re.sub(r"\D", "", name) or 0)


def natural(names) -> list[str]:
    return sorted(names, key=natural_key)


def _step(method):
    """Mark the machine broken when a step raises, so teardown does not mask it."""

    @functools.wraps(method)
    def step(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except BaseException:
            self.broken = True
            raise

    return step


# -- the environment -----------------------------------------------------------------


def mount_tmpfs(path: Path, options: str) -> str | None:
    """Mount a tmpfs at ``path``; returns why not, or ``None`` once mounted."""
    try:
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except OSError as exc:
        return str(exc)
    return None if result.returncode == 0 else (result.stderr.strip() or "mount failed")


def umount(path: Path) -> None:
    if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


_CAN_MOUNT: str | bool | None = False
"""``None`` when tmpfs mounts work, else why not (``False``: not tried yet)."""


def can_mount() -> str | None:
    global _CAN_MOUNT
    if _CAN_MOUNT is False:
        probe = Path(tempfile.mkdtemp(prefix="scanhopper-mount-probe-"))
        _CAN_MOUNT = mount_tmpfs(probe, "size=64k")
        if _CAN_MOUNT is None:
            umount(probe)
        else:
            warnings.warn(
                f"tmpfs mounts are not permitted ({_CAN_MOUNT}): the full-disk rule and "
                "the victim atime check are skipped",
                stacklevel=2,
            )
        probe.rmdir()
    return _CAN_MOUNT


STATS: Counter[str] = Counter()
"""What the examples did and met, printed after each run (rules, states, PDFs...)."""

_KEPT: Path | None = None
"""The folder of the last failing example, kept for a look."""

_libc = ctypes.CDLL(None, use_errno=True)


def exchange(a: Path, b: Path) -> None:
    """Swap two names atomically (``renameat2(RENAME_EXCHANGE)``)."""
    renameat2 = getattr(_libc, "renameat2", None)
    if renameat2 is None:
        raise OSError(errno.ENOSYS, "renameat2 is not available")
    if renameat2(-100, os.fsencode(a), -100, os.fsencode(b), 2) != 0:  # AT_FDCWD
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(a))


def write_new(path: Path, data: bytes) -> None:
    """Write ``path`` in place (created, or truncated then written), never through a
    link; missing folders are made (the daemon may remove an empty one meanwhile)."""
    for attempt in range(20):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.is_symlink():
                path.unlink()
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
            return
        except FileNotFoundError:
            if attempt == 19:
                raise
            time.sleep(0.01)


def write_by_rename(path: Path, data: bytes) -> None:
    """Write a hidden temp file beside ``path`` and rename it over ``path``."""
    for attempt in range(20):
        tmp = path.with_name(f".tmp-{os.getpid()}-{attempt}")
        try:
            write_new(tmp, data)
            os.rename(tmp, path)
            return
        except FileNotFoundError:
            if attempt == 19:
                raise
            time.sleep(0.01)


def regular_files(folder: Path) -> dict[str, Path]:
    """``{relative path: path}`` of regular files under ``folder``; links not followed."""
    found = {}
    for top, _, names in os.walk(folder):
        for name in names:
            path = Path(top, name)
            if path.is_file() and not path.is_symlink():
                found[path.relative_to(folder).as_posix()] = path
    return found


def read_nofollow(path: Path) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read()
    finally:
        os.close(fd)


class OutboxWatcher(threading.Thread):
    """Reads every PDF in the outbox every 0.1 s and parses each new content once, so
    PDFs that a later version replaces are checked too."""

    def __init__(self, outbox: Path) -> None:
        super().__init__(daemon=True)
        self.outbox = outbox
        self.seen: dict[tuple[str, str], list[tuple[str, int | None]]] = {}
        self.problems: list[str] = []
        self.running = True

    def run(self) -> None:
        while self.running:
            self.sample()
            time.sleep(0.1)

    def sample(self) -> None:
        for rel, path in regular_files(self.outbox).items():
            if not rel.endswith(".pdf") or Path(rel).name.startswith("."):
                continue
            data = read_nofollow(path)
            if data is None:
                continue
            key = (rel, hashlib.sha256(data).hexdigest())
            if key in self.seen:
                continue
            pages, problem = parse_pdf(data)
            if problem:
                self.problems.append(f"{rel}: {problem}")
            else:
                self.seen[key] = pages


# -- the machine ---------------------------------------------------------------------


class ScanhopperMachine(RuleBasedStateMachine):
    """Users and file systems against one daemon; see the module docstring."""

    POLICY = "keep"

    def __init__(self) -> None:
        super().__init__()
        self.home = Path(tempfile.mkdtemp(prefix="scanhopper-model-"))
        self.mounts: list[Path] = []
        self.broken = False
        self.log: list[str] = []
        self.known_defects = []
        self.next_vid = 1
        self.blobs: dict[int, bytes] = {}
        self.bad: set[int] = set()
        self.folders: dict[str, dict[str, int]] = {}
        """Folder documents the test made: ``{path: {file name: version}}``."""
        self.history: dict[str, list[tuple[tuple[str, int], ...]]] = {}
        """Every content each folder path had, one snapshot after each change."""
        self.versions: dict[tuple[str, str], set[int]] = {}
        """``(folder path or "", file name) -> every version it had``."""
        self.marked: set[str] = set()
        self.loose: dict[str, int] = {}
        self.links: dict[str, set[str]] = {}
        """Links the test made inside the inbox: ``{folder ("" = root): {names}}``."""
        self.swapped: set[str] = set()
        """Folder paths swapped for a link to the victim folder."""
        self.planted: dict[Path, Path] = {}
        """Links planted in the outbox, failed and archive folders -> target."""
        self.removed: list[tuple[str, str, int]] = []
        """Files the daemon removed from the inbox: ``(folder, name, version)``."""
        self.disk_full = False
        self.victim_dir_linked = False
        """A link to the victim folder was made in the inbox (defect 3 may list it)."""

        mountable = can_mount() is None
        self.victim = self.home / "victim"
        self.victim_out = self.home / "victim_out"
        self.outbox = self.home / "outbox"
        for folder in (self.victim, self.victim_out, self.outbox, self.home / "trash"):
            folder.mkdir()
        self.atime_checked = mountable and self._mount(self.victim, "size=1m,strictatime")
        self.outbox_tmpfs = mountable and self._mount(self.outbox, "size=4m")
        self.victim_files = {
            "p1.png": page_png(VICTIM_IDS + 1),
            "p2.png": page_png(VICTIM_IDS + 2),
            "p9.png": bad_page(VICTIM_IDS + 9),
            MARKER: b"",
        }
        for name, data in self.victim_files.items():
            (self.victim / name).write_bytes(data)
        self.victim_stats = self._victim_stats()
        self.victim_out_stat = self.victim_out.stat()

        self.daemon = Daemon(self.home, env={"SCANHOPPER_INTAKE__SOURCE_POLICY": self.POLICY})
        for key in [k for k in self.daemon.env if k.startswith("SCANHOPPER_MODEL_")]:
            del self.daemon.env[key]  # the daemon refuses unknown SCANHOPPER_* (exit 9)
        self.inbox = self.daemon.inbox
        self.inbox.mkdir()
        self.daemon.start()
        self.watcher = OutboxWatcher(self.outbox)
        self.watcher.start()

    def _mount(self, path: Path, options: str) -> bool:
        if mount_tmpfs(path, options) is None:
            self.mounts.append(path)
            return True
        return False

    def _victim_stats(self) -> dict[str, tuple[int, int, int]]:
        stats = {}
        for name in [*self.victim_files, "."]:
            st_ = os.stat(self.victim / name, follow_symlinks=False)
            stats[name] = (st_.st_mtime_ns, st_.st_atime_ns, st_.st_size)
        return stats

    # -- model helpers ----------------------------------------------------------------

    def _vid(self, good: bool = True) -> int:
        vid = self.next_vid
        self.next_vid += 1
        self.blobs[vid] = page_png(vid) if good else bad_page(vid)
        if not good:
            self.bad.add(vid)
        return vid

    def _snap(self, folder: str) -> None:
        files = self.folders.get(folder, {})
        self.history.setdefault(folder, []).append(tuple(sorted(files.items())))
        for name, vid in files.items():
            self.versions.setdefault((folder, name), set()).add(vid)

    def _did(self, what: str) -> None:
        self.log.append(f"{time.monotonic():.2f} {what}")
        STATS["op " + re.sub(r"[\s/].*", "", what)] += 1

    def _existing(self) -> list[str]:
        return sorted(self.folders)

    def _sync(self) -> None:
        """Bring the model in line with what the daemon did to the inbox: files it
        removed (recorded, judged at the end), folders it removed once empty. A file the
        test wrote that holds other bytes is a violation at once."""
        for folder in list(self.folders):
            files = self.folders[folder]
            changed = False
            for name, vid in list(files.items()):
                data = read_nofollow(self.inbox / folder / name)
                if data is None and not os.path.lexists(self.inbox / folder / name):
                    self.removed.append((folder, name, vid))
                    del files[name]
                    changed = True
                    self._did(f"daemon removed {folder}/{name} v{vid}")
                elif data != self.blobs[vid]:
                    self._fail(f"{folder}/{name} holds bytes the test did not write (v{vid})")
            if changed:
                self._snap(folder)
            if not files and not os.path.lexists(self.inbox / folder):
                del self.folders[folder]
                self.links.pop(folder, None)
        for name, vid in list(self.loose.items()):
            data = read_nofollow(self.inbox / name)
            if data is None and not os.path.lexists(self.inbox / name):
                self.removed.append(("", name, vid))
                del self.loose[name]
                self._did(f"daemon removed {name} v{vid}")
            elif data != self.blobs[vid]:
                self._fail(f"{name} holds bytes the test did not write (v{vid})")

    def _fail(self, message: str) -> None:
        self.broken = True
        raise AssertionError(f"{message}\n{self._context()}")

    def _context(self) -> str:
        return (
            f"home: {self.home}\nsteps:\n  "
            + "\n  ".join(self.log[-40:])
            + f"\ndaemon log:\n{self.daemon.tail(60)}"
        )

    def _put_page(self, folder: str, name: str, *, good: bool = True, by_rename=False) -> None:
        vid = self._vid(good)
        path = self.inbox / folder / name if folder else self.inbox / name
        (write_by_rename if by_rename else write_new)(path, self.blobs[vid])
        self.links.get(folder, set()).discard(name)
        if folder:
            self.folders.setdefault(folder, {})[name] = vid
            self._snap(folder)
        else:
            self.loose[name] = vid
            self.versions.setdefault(("", name), set()).add(vid)
        self._did(f"write {folder}/{name} v{vid}{'' if good else ' (unreadable)'}")

    # -- rules: pages ------------------------------------------------------------------

    @initialize(
        folders=st.lists(
            st.tuples(
                st.sampled_from(FOLDERS),
                st.lists(PAGE_NUMBERS, min_size=1, max_size=4),
                st.booleans(),
            ),
            min_size=1,
            max_size=3,
            unique_by=lambda t: t[0],
        ),
        loose=st.lists(st.sampled_from(LOOSE), max_size=2, unique=True),
    )
    @_step
    def seed(self, folders, loose) -> None:
        for folder, numbers, marked in folders:
            for n in numbers:
                self._put_page(folder, f"p{n}.png")
            if marked:
                self._mark(folder)
        for name in loose:
            self._put_page("", name)

    @rule(
        folder=st.sampled_from(FOLDERS),
        numbers=st.lists(PAGE_NUMBERS, min_size=1, max_size=3),
        by_rename=st.booleans(),
    )
    @_step
    def add_pages(self, folder, numbers, by_rename) -> None:
        self._sync()
        if folder in self.swapped:
            return
        for n in numbers:
            self._put_page(folder, f"p{n}.png", by_rename=by_rename)

    @rule(name=st.sampled_from(LOOSE), by_rename=st.booleans())
    @_step
    def add_loose_file(self, name, by_rename) -> None:
        self._sync()
        self._put_page("", name, by_rename=by_rename)

    @rule(folder=st.sampled_from(FOLDERS), n=PAGE_NUMBERS, loose=st.booleans())
    @_step
    def add_unreadable_page(self, folder, n, loose) -> None:
        self._sync()
        if loose:
            self._put_page("", LOOSE[n % len(LOOSE)], good=False)
        elif folder not in self.swapped:
            self._put_page(folder, f"p{n}.png", good=False)

    def _pages(self) -> list[tuple[str, str]]:
        pages = [(f, n) for f, files in sorted(self.folders.items()) for n in natural(files)]
        return pages + [("", n) for n in sorted(self.loose)]

    @rule(pick=PICK, by_rename=st.booleans())
    @_step
    def replace_page(self, pick, by_rename) -> None:
        self._sync()
        if pages := self._pages():
            folder, name = pages[pick % len(pages)]
            self._put_page(folder, name, by_rename=by_rename)

    @rule(pick=PICK)
    @_step
    def delete_page(self, pick) -> None:
        self._sync()
        if not (pages := self._pages()):
            return
        folder, name = pages[pick % len(pages)]
        with contextlib.suppress(FileNotFoundError):
            (self.inbox / folder / name if folder else self.inbox / name).unlink()
        if folder:
            del self.folders[folder][name]
            self._snap(folder)
        else:
            del self.loose[name]
        self._did(f"delete {folder}/{name}")

    # -- rules: folders ----------------------------------------------------------------

    def _mark(self, folder: str) -> None:
        write_new(self.inbox / folder / MARKER, b"")
        self.folders.setdefault(folder, {})
        if folder not in self.history:
            self._snap(folder)
        self.marked.add(folder)
        self._did(f"marker {folder}")

    @rule(folder=st.sampled_from(FOLDERS))
    @_step
    def write_marker(self, folder) -> None:
        """Before pages (a new, empty folder) or after them."""
        self._sync()
        if folder not in self.swapped:
            self._mark(folder)

    @rule(pick=PICK, new=st.sampled_from(FOLDERS))
    @_step
    def rename_folder(self, pick, new) -> None:
        self._sync()
        existing = self._existing()
        if not existing or os.path.lexists(self.inbox / new):
            return
        old = existing[pick % len(existing)]
        carried = os.path.lexists(self.inbox / old / MARKER)
        (self.inbox / new).parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(self.inbox / old, self.inbox / new)
        except FileNotFoundError:  # the daemon removed it (empty) meanwhile
            return
        if carried or os.path.lexists(self.inbox / new / MARKER):
            self.marked.add(new)
        self.folders[new] = self.folders.pop(old)
        self.links[new] = self.links.pop(old, set())
        self._snap(old)
        self._snap(new)
        self._did(f"rename {old} -> {new}")

    def _remove_folder(self, folder: str) -> None:
        """Delete a folder file by file (each state a snapshot), then the rest."""
        files = self.folders.get(folder, {})
        for name in natural(files):
            with contextlib.suppress(FileNotFoundError):
                (self.inbox / folder / name).unlink()
            del files[name]
            self._snap(folder)
        shutil.rmtree(self.inbox / folder, ignore_errors=True)
        self.folders.pop(folder, None)
        self.links.pop(folder, None)
        self._snap(folder)

    @rule(pick=PICK)
    @_step
    def delete_folder(self, pick) -> None:
        self._sync()
        choices = self._existing() + sorted(self.swapped)
        if not choices:
            return
        folder = choices[pick % len(choices)]
        if folder in self.swapped:
            (self.inbox / folder).unlink()
            self.swapped.discard(folder)
        else:
            self._remove_folder(folder)
        self._did(f"delete folder {folder}")

    @rule(
        folder=st.sampled_from(FOLDERS),
        numbers=st.lists(PAGE_NUMBERS, min_size=2, max_size=4, unique=True),
        marker_first=st.booleans(),
        pause=st.sampled_from([0.4, 0.7]),
    )
    @_step
    def slow_copy(self, folder, numbers, marker_first, pause) -> None:
        """A copy or a scanner that pauses longer than ``stable_seconds`` between pages
        (``cp -r`` puts the marker first)."""
        self._sync()
        if folder in self.swapped:
            return
        if marker_first:
            self._mark(folder)
        for n in numbers:
            time.sleep(pause)
            self._sync()
            self._put_page(folder, f"p{n}.png")
        if not marker_first:
            time.sleep(pause)
            self._mark(folder)

    @rule(seconds=st.sampled_from([0.2, 0.5, 1.0, 2.0]))
    @_step
    def pause(self, seconds) -> None:
        """Let the daemon catch up (or not) before the next change."""
        time.sleep(seconds)
        self._did(f"pause {seconds}")

    # -- rules: links ------------------------------------------------------------------

    @rule(
        folder=st.sampled_from(("", *FOLDERS)),
        n=PAGE_NUMBERS,
        to_folder=st.booleans(),
    )
    @_step
    def link_in_document(self, folder, n, to_folder) -> None:
        """A link in a document (or loose in the inbox) to a victim file or folder."""
        self._sync()
        if folder in self.swapped:
            return
        name = f"p{n}.png" if folder else f"l{n}.png"
        if name in (self.folders.get(folder, {}) if folder else self.loose):
            return
        path = self.inbox / folder / name if folder else self.inbox / name
        if os.path.lexists(path):
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(self.victim if to_folder else self.victim / "p1.png", path)
        self.victim_dir_linked |= to_folder
        if folder:
            self.folders.setdefault(folder, {})
            if folder not in self.history:
                self._snap(folder)
        self.links.setdefault(folder, set()).add(name)
        self._did(f"link {folder}/{name} -> victim{'' if to_folder else '/p1.png'}")

    @rule(pick=PICK)
    @_step
    def swap_folder_for_link(self, pick) -> None:
        """The folder's name now names a link to the victim folder, atomically; the
        real folder leaves the inbox."""
        self._sync()
        existing = self._existing()
        if not existing:
            return
        folder = existing[pick % len(existing)]
        path = self.inbox / folder
        link = path.with_name(f".swap-{self.next_vid}")
        try:
            os.symlink(self.victim, link)
        except FileNotFoundError:  # the daemon removed the parent folder (empty)
            return
        self.victim_dir_linked = True
        try:
            exchange(link, path)
        except OSError as exc:
            if exc.errno == errno.ENOENT:  # the daemon removed the folder (empty)
                link.unlink()
                return
            link.unlink()
            os.rename(path, link)  # no renameat2: a rename then a link
            os.symlink(self.victim, path)
        os.rename(link, self.home / "trash" / f"{folder.replace('/', '_')}-{self.next_vid}")
        self.next_vid += 1
        self.folders.pop(folder)
        self.links.pop(folder, None)
        self._snap(folder)
        self.swapped.add(folder)
        self._did(f"swap {folder} for a link to the victim folder")

    @rule(where=st.sampled_from(PLANT))
    @_step
    def plant_output_link(self, where) -> None:
        """A link where the daemon would write: ``outbox/X.pdf``, ``outbox/n`` (a folder
        of outputs), ``failed/X``, ``archive/X``, pointing into victim_out."""
        self._sync()
        path = self.home / where
        if os.path.lexists(path) or any(p in self.planted for p in path.parents):
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError:
            return  # a planted link on the way
        target = self.victim_out / path.name
        os.symlink(target, path)
        self.planted[path] = target
        self._did(f"plant {where} -> {target.relative_to(self.home)}")

    # -- rules: disk and process -------------------------------------------------------

    @precondition(lambda self: self.outbox_tmpfs and not self.disk_full)
    @rule()
    @_step
    def fill_disk(self) -> None:
        """Fill the outbox's file system (a 4 MB tmpfs) to the last byte."""
        fd = os.open(self.outbox / "zz-filler.bin", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * 65536)
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0")
        finally:
            os.close(fd)
        self.disk_full = True
        self._did("fill the outbox")

    @precondition(lambda self: self.disk_full)
    @rule()
    @_step
    def free_disk(self) -> None:
        (self.outbox / "zz-filler.bin").unlink()
        self.disk_full = False
        self._did("free the outbox")

    @rule()
    @_step
    def kill_and_restart(self) -> None:
        code = self.daemon.stop(signal.SIGKILL)
        if code != -signal.SIGKILL:
            self._fail(f"the daemon had exited by itself ({code}) before SIGKILL")
        self.daemon.start()
        self._did("SIGKILL and restart")

    # -- invariants --------------------------------------------------------------------

    @invariant()
    def nothing_outside_is_touched(self) -> None:
        process = self.daemon.process
        if process is not None and process.poll() is not None:
            self._fail(f"the daemon exited ({process.returncode})")
        if self.watcher.problems:
            self._fail(f"a PDF in the outbox was not whole: {self.watcher.problems}")
        if os.listdir(self.victim_out):
            self._fail(f"victim_out received files: {os.listdir(self.victim_out)}")
        if self.atime_checked:
            now = {n: os.stat(self.victim / n) for n in self.victim_files}
            read = [n for n, s in now.items() if s.st_atime_ns != self.victim_stats[n][1]]
            if read:
                self._fail(f"victim files were read: {read}")

    # -- the end -----------------------------------------------------------------------

    def teardown(self) -> None:
        failed = True
        try:
            if not self.broken:
                self._final_checks()
            failed = self.broken
        finally:
            self.watcher.running = False
            self.watcher.join()
            if self.daemon.process is not None and self.daemon.process.poll() is None:
                self.daemon.stop(signal.SIGKILL)
            if failed:
                kept = self.home / "outbox-copy"
                with contextlib.suppress(OSError):
                    shutil.copytree(self.outbox, kept, symlinks=True)
            for path in reversed(self.mounts):
                umount(path)
            global _KEPT
            if failed:  # keep the last failing example's folder only
                if _KEPT is not None:
                    shutil.rmtree(_KEPT, ignore_errors=True)
                _KEPT = self.home
                print(f"model test: kept {self.home}", file=sys.stderr)
            else:
                shutil.rmtree(self.home, ignore_errors=True)

    def _db(self) -> dict[str, dict]:
        db = self.daemon.state / "state.db"
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as c:
            c.row_factory = sqlite3.Row
            rows = c.execute(
                "SELECT d.path, d.kind, d.state, d.complete, d.version, d.output, d.error, "
                "d.cleaned, (SELECT COUNT(*) FROM pages p WHERE p.document_id = d.id AND "
                "p.state IN ('pending', 'queued', 'running')) AS busy FROM documents d"
            ).fetchall()
        return {r["path"]: dict(r) for r in rows}

    def _final_checks(self) -> None:
        self.daemon.wait_ready(timeout=120)
        deadline = time.monotonic() + SETTLE_SECONDS
        time.sleep(0.7)
        while True:
            self._sync()
            try:
                problems = self._unsettled(self._db())
            except sqlite3.Error as exc:
                problems = [f"state database: {exc}"]
            if not problems:
                self._final_docs = self._db()
                break
            if time.monotonic() > deadline:
                self._fail("not settled in time:\n  " + "\n  ".join(problems))
            time.sleep(0.3)
        self.watcher.sample()
        problems = self._pdf_problems()
        code = self.daemon.stop()
        if code != 0:
            problems.append(f"the daemon exited {code} on SIGTERM")
        self.watcher.running = False
        self.watcher.join()
        self.watcher.sample()
        problems += self._pdf_problems()  # what the stop may have finished
        for folder in (self.outbox, self.home / "failed"):
            left = [r for r in regular_files(folder) if Path(r).name.startswith(".scanhopper-")]
            if left:
                problems.append(f"temp files left in {folder.name} after a clean stop: {left}")
        problems += self._inbox_problems()
        problems += self._removed_problems()
        STATS["examples"] += 1
        STATS["PDF contents checked"] += len(self.watcher.seen)
        STATS["PDF pages checked"] += sum(len(p) for p in self.watcher.seen.values())
        for doc in self._final_docs.values():
            STATS[f"final state {doc['state']}"] += 1
            if doc["state"] == "waiting":
                STATS["waiting: " + re.sub(r"/tmp/\S+", "PATH", doc["error"] or "")[:70]] += 1
        problems += self._outside_problems()
        if problems:
            self._fail("\n".join(sorted(set(problems))))
        for line in sorted(set(self.known_defects)):
            STATS["known " + re.sub(r".*\((defect \d)\)$", r"\1", line)] += 1

    def _unsettled(self, docs: dict[str, dict]) -> list[str]:
        """What is not yet as it must end (empty: settled and right)."""
        problems = []
        for path, doc in docs.items():
            if doc["busy"]:
                problems.append(f"{path}: {doc['busy']} page(s) still to read")
        wanted = {f: files for f, files in self.folders.items()}
        wanted |= {name: {name: vid} for name, vid in self.loose.items()}
        for path, doc in docs.items():
            if not wanted.get(path) and doc["state"] in ("complete", "publishing"):
                where = (
                    "a link"
                    if path in self.swapped
                    else "empty"
                    if path in wanted
                    else "not in the inbox"
                )
                problems.append(f"{path}: still {doc['state']}, its folder {where}")
        for path, files in sorted(wanted.items()):
            loose = path in self.loose
            doc = docs.get(path)
            on_disk = self.inbox / path
            marker = not loose and os.path.lexists(on_disk / MARKER)
            if doc is None:
                if files or marker:
                    problems.append(f"{path}: not taken")
                continue
            if not (loose or marker or doc["complete"]) or not files:
                continue
            state, error = doc["state"], doc["error"]
            if state == "gone" and self._came_back(path, files):
                self._known(f"{path}: back under its old name, still gone (defect 4)", problems)
            elif state in ("collecting", "complete", "publishing", "gone"):
                problems.append(f"{path}: still {state}")
            elif state in ("waiting", "failed"):
                if not error:
                    problems.append(f"{path}: {state} without a reason")
            else:
                problems += self._latest_problems(path, files, doc)
        return problems

    def _came_back(self, path: str, files: dict[str, int]) -> bool:
        """The folder left and came back holding only files (same versions) it held
        before it left: what defect 4 leaves ``gone``."""
        history = self.history.get(path, [])
        left = max((i for i, snap in enumerate(history) if not snap), default=-1)
        before = {item for snap in history[:left] for item in snap}
        return left > 0 and set(files.items()) <= before

    def _latest_problems(self, path: str, files: dict[str, int], doc: dict) -> list[str]:
        """The latest PDF of a published document holds every readable file present,
        at its current version, in natural order. It may also hold files deleted since
        it was published: deleting a page does not re-open a published document (the
        PDF is still a snapshot the folder had, checked by :meth:`_check_pdf`)."""
        bad = [n for n, v in files.items() if v in self.bad]
        output = Path(doc["output"]) if doc["output"] else None
        data = read_nofollow(output) if output else None
        if data is None:
            return [f"{path}: {doc['state']} but its output {output} is not there"]
        pages, problem = parse_pdf(data)
        if problem:
            return [f"{path}: latest PDF {output.name}: {problem}"]
        problems = []
        if path in self.loose:
            held = [(path, vid) for _, vid in pages]
        else:
            held = [(f"{text}.png", vid) for text, vid in pages]
        present = {(n, v) for n, v in files.items() if v not in self.bad}
        missing = sorted(present - set(held))
        extra = [(n, v) for n, v in held if (n, v) not in present and n in files]
        if missing or extra:
            problems.append(
                f"{path}: latest PDF {output.name} holds {pages}; missing {missing}, "
                f"stale {extra} (files now {sorted(files.items())})"
            )
        if bad:
            missing = [n for n in bad if f"{path}/{n}" not in (doc["error"] or "")]
            if doc["state"] != "done_with_errors" or missing:
                problems.append(
                    f"{path}: unreadable {bad} not reported ({doc['state']}: {doc['error']})"
                )
        return problems

    def _pdf_problems(self) -> list[str]:
        """Every PDF ever seen in the outbox against the model (safety)."""
        problems = []
        for (rel, _), pages in sorted(list(self.watcher.seen.items())):
            problems += [f"{rel}: {p}" for p in self._check_pdf(rel, pages)]
        return problems

    def _check_pdf(self, rel: str, pages: list[tuple[str, int | None]]) -> list[str]:
        match = _PDF_NAME.match(rel)
        stem = match["stem"] if match else rel
        loose = f"{stem}.png"
        if loose in LOOSE and "/" not in stem:
            folder, history = "", None
            names = [loose]
        elif stem in FOLDERS:
            folder, history = stem, self.history.get(stem, [])
            names = None
            if stem not in self.marked:
                return ["published, but no marker was ever in that folder"]
        else:
            return ["a PDF the model cannot place"]
        problems = []
        got = []
        for text, vid in pages:
            if vid is None:
                problems.append(f"page {text!r}: its image is no page the test wrote")
                continue
            if vid >= VICTIM_IDS:
                problems.append(f"page {text!r} is a victim file (v{vid})")
                continue
            name = f"{text}.png"
            if names is not None and name not in names:
                problems.append(f"page {text!r} is not {loose}")
            if vid not in self.versions.get((folder, name), set()):
                problems.append(f"page {text!r} v{vid}: never a version of {folder}/{name}")
            if vid in self.bad:
                problems.append(f"page {text!r} v{vid} was unreadable")
            got.append((name, vid))
        names_got = [n for n, _ in got]
        if names_got != natural(names_got) or len(set(names_got)) < len(names_got):
            problems.append(f"pages not in natural order, or a file twice: {got}")
        if names is not None and len(got) != 1:
            problems.append(f"a loose file's PDF has {len(pages)} pages")
        if history is not None and self.POLICY == "keep" and not problems:
            snapshots = {
                tuple(
                    sorted(
                        ((n, v) for n, v in s if v not in self.bad), key=lambda t: natural_key(t[0])
                    )
                )
                for s in history
            }
            if tuple(got) not in snapshots:
                problems.append(f"{got} is no snapshot the folder had: {sorted(snapshots)}")
        return problems

    def _inbox_problems(self) -> list[str]:
        """The inbox holds what the model says, and nothing else."""
        problems = []
        expected = {f"{f}/{n}" for f, files in self.folders.items() for n in files}
        expected |= set(self.loose)
        links = {f"{f}/{n}" if f else n for f, names in self.links.items() for n in names}
        for rel in sorted(links | self.swapped):
            if not (self.inbox / rel).is_symlink():
                problems.append(f"inbox: the link {rel} the test made is gone")
        for top, dirs, names in os.walk(self.inbox):
            for name in dirs + names:
                path = Path(top, name)
                rel = path.relative_to(self.inbox).as_posix()
                if path.is_symlink():
                    if rel not in links and rel not in self.swapped:
                        problems.append(f"inbox: a link the test did not make: {rel}")
                elif path.is_file() and name not in (MARKER, ".scanhopper.lock"):
                    if rel in expected:
                        continue
                    if name.startswith(".scanhopper-") and path.read_bytes() in self.blobs.values():
                        self._known(
                            f"{rel}: a source hidden under a temp name (defect 5)", problems
                        )
                    else:
                        problems.append(f"inbox: a file the test did not write: {rel}")
        return problems

    def _removed_problems(self) -> list[str]:
        """Files the daemon removed from the inbox: moved whole to the failed folder, or
        (``delete``) published first and still in some PDF."""
        problems = []
        failed = {
            hashlib.sha256(p.read_bytes()).hexdigest()
            for p in regular_files(self.home / "failed").values()
        }
        published = {vid for pages in self.watcher.seen.values() for _, vid in pages}
        final = {
            vid
            for (rel, digest), pages in self.watcher.seen.items()
            if (data := read_nofollow(self.outbox / rel)) is not None
            and hashlib.sha256(data).hexdigest() == digest
            for _, vid in pages
        }
        hidden = {
            p.read_bytes()
            for rel, p in regular_files(self.inbox).items()
            if Path(rel).name.startswith(".scanhopper-")
        }
        for folder, name, vid in self.removed:
            where = f"{folder}/{name} v{vid}"
            if hashlib.sha256(self.blobs[vid]).hexdigest() in failed:
                continue
            if self.blobs[vid] in hidden:
                continue  # reported by _inbox_problems (defect 5)
            if self.POLICY != "delete":
                problems.append(f"{where}: removed from the inbox and not in the failed folder")
            elif vid in self.bad:
                self._known(f"{where}: an unreadable page, in no PDF, deleted (defect 2)", problems)
            elif vid not in published:
                problems.append(f"{where}: deleted, and never seen published")
            elif vid not in final:
                self._known(
                    f"{where}: published, deleted, then its PDF was replaced (defect 1)", problems
                )
        return problems

    def _known(self, line: str, problems: list[str]) -> None:
        if STRICT:
            problems.append(line)
        else:
            self.known_defects.append(line)

    def _outside_problems(self) -> list[str]:
        problems = []
        if os.listdir(self.victim_out) or self.victim_out.stat().st_mtime_ns != (
            self.victim_out_stat.st_mtime_ns
        ):
            problems.append(f"victim_out changed: {os.listdir(self.victim_out)}")
        now = self._victim_stats()
        for name, (mtime, atime, size) in self.victim_stats.items():
            if now[name][0] != mtime or now[name][2] != size:
                problems.append(f"victim {name}: modified")
            if self.atime_checked and now[name][1] != atime:
                if name != ".":
                    problems.append(f"victim {name}: read (atime changed)")
                elif self.victim_dir_linked:
                    self._known("the victim folder was listed through a link (defect 3)", problems)
                else:
                    problems.append("the victim folder was listed (atime changed)")
        if sorted(os.listdir(self.victim)) != sorted(self.victim_files):
            problems.append(f"victim folder changed: {os.listdir(self.victim)}")
        for name, data in self.victim_files.items():
            if (self.victim / name).read_bytes() != data:
                problems.append(f"victim {name}: other bytes")
        for path, target in self.planted.items():
            if not path.is_symlink() or Path(os.readlink(path)) != target:
                problems.append(f"planted link {path.relative_to(self.home)} was changed")
        return problems


MACHINE_SETTINGS = settings(
    max_examples=EXAMPLES,
    stateful_step_count=STEPS,
    deadline=None,
    database=None,
    phases=(Phase.explicit, Phase.generate, Phase.shrink),
    suppress_health_check=list(HealthCheck),
    print_blob=True,
)


def _interrupt(signum, frame):
    """SIGTERM as Ctrl-C: the example's teardown still stops its daemon and unmounts,
    and the figures are printed."""
    raise KeyboardInterrupt


@pytest.mark.parametrize("policy", ["keep", "delete"])
def test_model_machine(policy):
    started = time.monotonic()
    machine = type(f"{policy.title()}Machine", (ScanhopperMachine,), {"POLICY": policy})
    STATS.clear()
    previous = signal.signal(signal.SIGTERM, _interrupt)  # `timeout` ends a long run
    try:
        run_state_machine_as_test(machine, settings=MACHINE_SETTINGS)
    finally:
        signal.signal(signal.SIGTERM, previous)
        print(
            f"\nmodel test ({policy}): {time.monotonic() - started:.0f} s, "
            + ", ".join(f"{k}: {v}" for k, v in sorted(STATS.items())),
            file=sys.stderr,
        )


# -- the defects the machine found, each reproduced deterministically ------------------


def _published(daemon: Daemon, path: str, timeout: float = 30) -> None:
    daemon.wait_for(
        lambda: daemon.states().get(path) in ("done", "done_with_errors"), timeout, path
    )


def _texts(pdf: Path) -> list[str]:
    with pymupdf.open(pdf) as doc:
        return [page.get_text().strip() for page in doc]


def test_delete_policy_never_replaces_the_pdf_of_an_earlier_version(tmp_path):
    daemon = Daemon(tmp_path, env={"SCANHOPPER_INTAKE__SOURCE_POLICY": "delete"})
    daemon.start()
    daemon.wait_ready()
    try:
        for n in (1, 2, 3):
            folder = daemon.inbox / "d0"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"p{n}.png").write_bytes(page_png(n))
            (folder / MARKER).touch()
            daemon.wait_for(lambda: not (daemon.inbox / "d0").exists(), 30, f"version {n}")
        texts = sorted(_texts(pdf)[0] for pdf in daemon.outbox.glob("*.pdf"))
    finally:
        assert daemon.stop() == 0
    assert texts == ["p1", "p2", "p3"], f"pages left in the outbox: {texts}"


def test_delete_policy_never_deletes_an_unreadable_page(tmp_path):
    daemon = Daemon(tmp_path, env={"SCANHOPPER_INTAKE__SOURCE_POLICY": "delete"})
    folder = daemon.inbox / "d0"
    folder.mkdir(parents=True)
    (folder / "p1.png").write_bytes(page_png(1))
    (folder / "p2.png").write_bytes(bad_page(2))
    (folder / MARKER).touch()
    daemon.start()
    try:
        _published(daemon, "d0")
        daemon.wait_for(lambda: not (folder / "p1.png").exists(), 30, "p1.png deleted")
        time.sleep(0.5)
    finally:
        assert daemon.stop() == 0
    kept = [p for p in (folder / "p2.png", tmp_path / "failed" / "d0" / "p2.png") if p.exists()]
    assert kept, "d0/p2.png was in no PDF, and is neither in the inbox nor in the failed folder"


def test_the_watcher_never_follows_a_folder_link_out_of_the_inbox(tmp_path):
    victim = tmp_path / "victim"
    (victim / "sub").mkdir(parents=True)
    daemon = Daemon(tmp_path)
    daemon.inbox.mkdir()
    os.symlink(victim, daemon.inbox / "d0")
    daemon.start()
    daemon.wait_ready()
    try:
        time.sleep(1.0)
        watched = set()
        for info in Path(f"/proc/{daemon.process.pid}/fdinfo").iterdir():
            for line in info.read_text().splitlines():
                if line.startswith("inotify wd:"):
                    watched.add(int(line.split("ino:")[1].split()[0], 16))
    finally:
        assert daemon.stop() == 0
    assert os.stat(daemon.inbox).st_ino in watched  # the check sees the watches
    outside = [p.name for p in (victim, victim / "sub") if os.stat(p).st_ino in watched]
    assert outside == [], f"folders outside the inbox watched: {outside}"


def test_a_folder_moved_out_and_back_is_published_when_complete(tmp_path):
    daemon = Daemon(tmp_path)
    daemon.start()
    daemon.wait_ready()
    folder = daemon.inbox / "d0"
    folder.mkdir(parents=True)
    (folder / "p1.png").write_bytes(page_png(1))
    try:
        daemon.wait_for(
            lambda: [(r["path"], r["pages_done"]) for r in daemon.status()] == [("d0", 1)],
            30,
            "d0/p1.png read",
        )
        os.rename(folder, tmp_path / "away")
        daemon.wait_for(lambda: daemon.states().get("d0") == "gone", 30, "d0 gone")
        os.rename(tmp_path / "away", folder)
        (folder / MARKER).touch()
        _published(daemon, "d0", timeout=15)
    finally:
        assert daemon.stop() == 0
    assert _texts(daemon.outbox / "d0.pdf") == ["p1"]


def test_a_link_in_the_failed_folder_leaves_the_source_in_place(tmp_path):
    daemon = Daemon(tmp_path)
    (tmp_path / "failed").mkdir()
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere" / "x.png", tmp_path / "failed" / "x.png")
    daemon.inbox.mkdir()
    (daemon.inbox / "x.png").write_bytes(bad_page(1))
    daemon.start()
    try:
        daemon.wait_for(lambda: daemon.states().get("x.png") == "failed", 30, "x.png failed")
        daemon.wait_for(lambda: "source_left_in_place" in daemon.tail(), 30, "cleaned")
    finally:
        assert daemon.stop() == 0
    assert os.listdir(tmp_path / "elsewhere") == []
    assert sorted(os.listdir(daemon.inbox)) == [".scanhopper.lock", "x.png"]
