"""Intake: watch the inbox roots and reconcile what is on disk with the state database.

Events (watchfiles) are hints: each batch triggers a reconcile, and so do a timer
(every ``rescan_interval`` seconds, and every second while some file is not yet stable)
and the start of the daemon. A reconcile walks every root, takes files whose size and
mtime have been stable for ``stable_seconds``, records their pages (with the SHA-256
of the bytes read, through :func:`daemon.files.open_source`: no link is followed),
notices files that changed or left, and marks documents complete. A document whose
folder or file left the inbox before it was published is marked gone.

Errors of the environment on one file (permissions, a file written while it is
hashed) leave that file for the next reconcile; nothing a user drops stops intake.
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import structlog
from natsort import natsort_keygen
from watchfiles import Change, awatch

from .config import Settings, TextPolicy
from .files import open_source
from .pdf import PageSourceError, expand_pages, skipped_pages
from .store import OPEN_STATES, Document, DocumentState, Store

__all__ = ["InboxFilter", "Intake", "natural_key", "scan_root"]

log = structlog.get_logger(__name__)

natural_key = natsort_keygen()
"""Sort key for natural order of file names (``p2`` before ``p10``)."""

SETTLED = (
    DocumentState.done,
    DocumentState.done_with_errors,
    DocumentState.failed,
    DocumentState.gone,
)
"""Document states that new or changed files re-open."""


class InboxFilter:
    """Which inbox names are taken: not temp files, not hidden files (the completion
    marker excepted). Also a ``watchfiles`` filter (``__call__(change, path)``).

    Attributes:
        ignore_prefixes: Name starts that mark temp or hidden files.
        ignore_suffixes: Name ends that mark files still being written.
    """

    ignore_prefixes: tuple[str, ...] = (".", "~")
    ignore_suffixes: tuple[str, ...] = (".part", ".tmp", ".crdownload", ".partial", ".swp")

    def __init__(self, *, marker: str) -> None:
        self.marker = marker

    def accepts(self, name: str) -> bool:
        """True when a file or folder with this name is inbox content."""
        if name == self.marker:
            return True
        return not name.startswith(self.ignore_prefixes) and not name.lower().endswith(
            self.ignore_suffixes
        )

    def __call__(self, change: Change, path: str) -> bool:
        return self.accepts(os.path.basename(path))


@dataclass
class FolderScan:
    """What one reconcile found for one document."""

    kind: str
    """``folder`` or ``file``."""
    files: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Page files: ``{path relative to the root: (size in bytes, mtime in ns)}``."""
    marker: bool = False
    """The completion marker is present."""


def scan_root(
    root: Path, accept: InboxFilter
) -> tuple[dict[str, FolderScan], dict[str, str], set[Path]]:
    """Walk an inbox root.

    A folder directly holding files (or the marker) is a document; a file directly in
    the root is a document of its own. The walk goes through folder descriptors
    (``os.fwalk``) and never follows a link; a symlink to a file is refused (copy the
    file in), one to a folder is not entered. Names that are not valid UTF-8 are
    refused (they cannot be recorded faithfully).

    Returns:
        ``({document path relative to root: FolderScan}, {refused path: reason},
        {every folder walked, the root included})``; a refused path has undecodable
        bytes shown as ``\\xNN``.
    """
    documents: dict[str, FolderScan] = {}
    refused: dict[str, str] = {}
    folders: set[Path] = set()
    for folder, dirs, names, dir_fd in os.fwalk(root, follow_symlinks=False):
        folders.add(Path(folder))
        rel_folder = Path(folder).relative_to(root).as_posix()
        for name in [d for d in dirs if not _utf8(d)]:
            refused[_shown(Path(folder, name).relative_to(root).as_posix())] = _NOT_UTF8
        dirs[:] = [d for d in dirs if accept.accepts(d) and _utf8(d)]
        for name in names:
            if not accept.accepts(name):
                continue
            path = Path(folder, name)
            rel = path.relative_to(root).as_posix()
            if not _utf8(name):
                refused[_shown(rel)] = _NOT_UTF8
                continue
            try:
                info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except (FileNotFoundError, PermissionError):
                continue
            if stat.S_ISLNK(info.st_mode):
                refused[rel] = _LINK
                continue
            if not stat.S_ISREG(info.st_mode):
                continue
            if rel_folder == ".":
                if name != accept.marker:
                    documents[rel] = FolderScan("file", {rel: (info.st_size, info.st_mtime_ns)})
                continue
            scan = documents.setdefault(rel_folder, FolderScan("folder"))
            if name == accept.marker:
                scan.marker = True
            else:
                scan.files[rel] = (info.st_size, info.st_mtime_ns)
    return documents, refused, folders


_NOT_UTF8 = "the file name is not valid UTF-8; rename it to have it read"
_LINK = "a symlink: scanhopper never follows links; copy the file in instead"


def _utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes, kept by os as surrogates
        return False
    return True


def _shown(rel: str) -> str:
    return os.fsencode(rel).decode("utf-8", "backslashreplace")


@dataclass(frozen=True)
class _FileInfo:
    kind: str
    pages: int
    content_hash: str
    error: str | None
    skipped: frozenset[int]


def _inspect(root: Path, file: str, policy: TextPolicy) -> _FileInfo:
    """Hash a file and list its pages, all from the same bytes (blocking; run in a
    thread).

    Raises:
        daemon.files.SourceChangedError: it was written meanwhile.
        OSError: it cannot be read (gone, a link, permissions).
    """
    with open_source(root, file) as opened:
        content_hash = opened.sha256()
        try:
            sources = expand_pages(root / file, root=root, content_hash=content_hash)
            skipped = skipped_pages(sources[0], policy)
        except PageSourceError as exc:
            return _FileInfo("bad", 1, content_hash, exc.reason, frozenset())
    return _FileInfo(sources[0].kind, len(sources), content_hash, None, skipped)


class Intake:
    """Reconciles the inbox roots with the store; owns file stability tracking."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.filter = InboxFilter(marker=settings.intake.completion_marker)
        self._seen: dict[Path, tuple[int, int, float]] = {}
        self._folders: set[Path] = set(settings.folders.inbox)
        """The real folders of the last walk: what the watcher watches."""
        self._rewatch = anyio.Event()
        """Set when the watcher must start again (the folders changed, or stop)."""

    def _stable(self, path: Path, size: int, mtime_ns: int, now: float) -> bool:
        seen = self._seen.get(path)
        if seen is None or seen[:2] != (size, mtime_ns):
            self._seen[path] = (size, mtime_ns, now)
            return self.settings.intake.stable_seconds == 0
        return now - seen[2] >= self.settings.intake.stable_seconds

    async def reconcile(self) -> bool:
        """Bring the store in line with the inbox roots.

        Returns:
            True while some file is still unstable (call again soon).
        """
        waiting = False
        now = time.time()
        present: set[Path] = set()
        folders: set[Path] = set()
        for root in self.settings.folders.inbox:
            root.mkdir(parents=True, exist_ok=True)
            found, refused, walked = await anyio.to_thread.run_sync(scan_root, root, self.filter)
            folders |= walked
            root_key = str(root.resolve())
            for rel, reason in refused.items():
                if self.store.document(root_key, rel) is None:
                    log.warning("file_refused", file=rel, reason=reason)
                    self.store.refuse(root_key, rel, reason)
            for rel, scan in sorted(found.items()):
                present.update(root / f for f in scan.files)
                with structlog.contextvars.bound_contextvars(document=rel):
                    waiting |= await self._reconcile_document(root, rel, scan, now)
            self._mark_gone(root_key, found)
        self._seen = {p: v for p, v in self._seen.items() if p in present}
        if folders != self._folders:
            self._folders = folders
            self._rewatch.set()
        return waiting

    def _mark_gone(self, root_key: str, found: dict[str, FolderScan]) -> None:
        """Documents of this root not on disk any more, and not yet published, are gone
        (a renamed folder is a new document, whose pages reuse the OCR by hash)."""
        for document in self.store.documents(OPEN_STATES):
            if document.root == root_key and document.path not in found:
                self.store.mark_gone(document.id)
                log.info("document_gone", document=document.path)

    async def _reconcile_document(self, root: Path, rel: str, scan: FolderScan, now: float) -> bool:
        root_key = str(root.resolve())
        stable = {f: v for f, v in scan.files.items() if self._stable(root / f, *v, now)}
        unstable = len(stable) < len(scan.files)
        document = self.store.document(root_key, rel)
        if document is None:
            if not stable and not scan.marker:
                return unstable
            document = self.store.add_document(root_key, rel, scan.kind)
        if unstable:
            self.store.touch(document.id)  # still being written: not settled
        known = self.store.files(document.id)
        changed = {f: v for f, v in stable.items() if known.get(f, (None, None))[:2] != v}
        if (changed and document.state in SETTLED) or document.state == DocumentState.gone:
            self.store.reopen(document.id)  # changed since it was settled, or back
            document = self.store.document_by_id(document.id)
        if document.state not in SETTLED:
            for file in set(known) - set(scan.files):
                self.store.remove_file(document.id, file)
                log.info("file_gone", file=file)
        for file, (size, mtime_ns) in sorted(changed.items(), key=lambda kv: natural_key(kv[0])):
            await self._add_file(document, root, file, size, mtime_ns)
        document = self.store.document_by_id(document.id)
        if not unstable and document.state == "collecting" and self._complete(scan, document):
            self.store.mark_complete(document.id)
            self.store.log(document.id, None, "info", "document_complete", None)
            log.info("document_complete", document=rel)
        return unstable

    async def _add_file(
        self, document: Document, root: Path, file: str, size: int, mtime_ns: int
    ) -> None:
        try:
            info = await anyio.to_thread.run_sync(
                _inspect, root, file, self.settings.output.text_policy
            )
        except OSError as exc:  # vanished, a link, written meanwhile, permissions...
            log.warning("file_not_taken", file=file, reason=str(exc))
            self._seen.pop(root / file, None)  # looked at again once stable
            return
        waiting = self.store.add_file(
            document.id,
            file,
            kind=info.kind,
            pages=info.pages,
            size=size,
            mtime_ns=mtime_ns,
            content_hash=info.content_hash,
            error=info.error,
            skipped=info.skipped,
        )
        if info.error:
            log.warning("file_refused", file=file, reason=info.error)
            self.store.log(document.id, None, "error", "file_refused", f"{file}: {info.error}")
        else:
            log.info("file_taken", file=file, pages=info.pages, to_ocr=waiting)

    def _complete(self, scan: FolderScan, document: Document) -> bool:
        if scan.kind == "file" or scan.marker:
            return True
        quiet = self.settings.intake.quiet_seconds
        if quiet <= 0 or not scan.files:
            return False
        # Quiet since the last change intake saw (a file taken, replaced or removed),
        # not since the files' mtimes: a copy keeps old mtimes, a clock ahead sets future
        # ones, and neither may hurry or block completion.
        return time.time() - document.updated_at >= quiet

    async def run(self, *, stop: anyio.Event) -> None:
        """Reconcile now, then after each batch of events, every half
        ``stable_seconds`` (0.1 to 1 s) while files are unstable or quiet-time
        completion is on, and every ``rescan_interval`` seconds, until ``stop`` is set.

        The watcher watches each real folder of the last walk on its own
        (``recursive=False``) and starts again when they change: watchfiles' recursive
        mode (notify) follows folder links out of the inbox and watches what they point
        to. A folder that vanished before its watch began only delays the next start.
        """
        intake = self.settings.intake
        roots = self.settings.folders.inbox
        for root in roots:
            root.mkdir(parents=True, exist_ok=True)
        send, receive = anyio.create_memory_object_stream[None](1)

        def wake() -> None:
            with contextlib.suppress(anyio.WouldBlock):
                send.send_nowait(None)  # one pending wake-up is enough

        async def watch() -> None:
            while not stop.is_set():
                self._rewatch = anyio.Event()
                settled = False
                try:
                    async for changes in awatch(
                        *sorted(self._folders),
                        watch_filter=self.filter,
                        stop_event=self._rewatch,
                        force_polling=intake.force_polling,
                        poll_delay_ms=int(intake.poll_interval * 1000),
                        debounce=300,
                        step=50,
                        rust_timeout=1000,
                        yield_on_timeout=True,
                        recursive=False,
                        ignore_permission_denied=True,
                    ):
                        if changes or not settled:
                            wake()  # the first timeout: the watches are in place, so a
                        settled = True  # walk now sees what came before them
                except OSError as exc:  # a folder vanished meanwhile: walk again
                    log.debug("watch_restart", reason=str(exc))
                    wake()
                    await anyio.sleep(0.5)

        async with anyio.create_task_group() as tg:
            tg.start_soon(watch)
            waiting = await self.reconcile()
            while not stop.is_set():
                fast = waiting or intake.quiet_seconds > 0
                recheck = min(1.0, max(0.1, intake.stable_seconds / 2))
                with anyio.move_on_after(recheck if fast else intake.rescan_interval):
                    await receive.receive()
                if not stop.is_set():
                    waiting = await self.reconcile()
            self._rewatch.set()
            tg.cancel_scope.cancel()
