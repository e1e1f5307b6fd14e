"""State in SQLite (sqlite-utils, WAL): documents, pages, events, status views.

All SQL lives here. The daemon is the one writer (guarded by :class:`InstanceLock`);
``scanhopper status`` and plain ``sqlite3`` read the same file at any time.

Times are Unix seconds (REAL). States are :class:`PageState` and
:class:`DocumentState`; a document changes state only through the named methods of
:class:`Store`, each allowed from the states :data:`TRANSITIONS` lists.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from .errors import ExitCode, ScanhopperError

__all__ = [
    "OPEN_STATES",
    "SCHEMA_VERSION",
    "TRANSITIONS",
    "AlreadyRunningError",
    "Document",
    "DocumentState",
    "InstanceLock",
    "Page",
    "PageState",
    "StateDatabaseError",
    "Store",
]

SCHEMA_VERSION = 3
"""Current schema version, kept in ``PRAGMA user_version``."""


class PageState(StrEnum):
    """Where a page stands: ``pending`` -> ``queued`` -> ``running`` -> ``done`` or
    ``failed``; ``skipped`` is a PDF page kept as it is (no OCR)."""

    pending = "pending"
    queued = "queued"
    running = "running"
    done = "done"
    failed = "failed"
    skipped = "skipped"


TERMINAL_PAGE_STATES = (PageState.done, PageState.failed, PageState.skipped)
"""Page states that need no more work."""


class DocumentState(StrEnum):
    """Where a document stands (the ``state`` column and the ``document_status`` view)."""

    collecting = "collecting"
    """Pages are taken and read; not yet complete."""
    complete = "complete"
    """Marked complete: published once every page is read and the folder settled."""
    publishing = "publishing"
    """Its PDF is being written."""
    waiting = "waiting"
    """Cannot be published for now (full disk, permissions, a link in the way, no
    pages yet): ``error`` says why; tried again with backoff."""
    done = "done"
    """Published."""
    done_with_errors = "done_with_errors"
    """Published; some pages failed (listed in ``error``)."""
    failed = "failed"
    """Its content cannot be published (``error``); files moved to the failed folder."""
    gone = "gone"
    """Its folder or file left the inbox before it was published."""


_D = DocumentState
OPEN_STATES = (_D.collecting, _D.complete, _D.publishing, _D.waiting)
"""Document states of work not yet settled (published, failed or gone)."""
_SETTLED = (_D.done, _D.done_with_errors, _D.failed, _D.gone)
TRANSITIONS: dict[DocumentState, tuple[DocumentState, ...]] = {
    _D.collecting: (*_SETTLED, _D.complete, _D.waiting),
    _D.complete: (*OPEN_STATES, *_SETTLED),
    _D.publishing: (_D.complete, _D.waiting),
    _D.waiting: (_D.complete, _D.publishing),
    _D.done: (_D.publishing,),
    _D.done_with_errors: (_D.publishing,),
    _D.failed: (_D.complete, _D.publishing, _D.waiting),
    _D.gone: (_D.collecting, _D.complete, _D.waiting, _D.publishing),
}
"""For each document state, the states it may be entered from."""

_MOVED_SIZE = -1
"""The size recorded for a file that left the inbox when its document was cleaned."""

_FAILED_PAGE = "state = 'failed' AND kind != 'bad'"
"""A page that failed in OCR or preparing it (a ``bad`` file's one row is its file
refused: reading it again cannot help)."""


class StateDatabaseError(ScanhopperError):
    """The state database is unreadable, corrupt or from a newer scanhopper."""

    exit_code = ExitCode.file_access_error


class AlreadyRunningError(ScanhopperError):
    """Another daemon holds this state database."""

    exit_code = ExitCode.already_running


@dataclass(frozen=True)
class Document:
    """One row of ``documents``."""

    id: int
    root: str
    """Inbox root (absolute path) the document lives under."""
    path: str
    """Folder or loose file path relative to the root (POSIX separators)."""
    kind: str
    """``folder`` or ``file`` (a loose file)."""
    state: DocumentState
    complete: bool
    """The completion marker (or quiet time, or stability of a loose file) was seen."""
    version: int
    """How many times it has been published."""
    output: str | None
    error: str | None
    updated_at: float
    cleaned: bool
    """Temp files, marker and source policy are dealt with after the last publication."""
    generation: int
    """Counts changes to the document's pages; a publication is recorded only if it
    did not change meanwhile (:meth:`Store.mark_published`)."""


@dataclass(frozen=True)
class Page:
    """One row of ``pages``."""

    id: int
    document_id: int
    file: str
    """Source file path relative to the inbox root."""
    page_index: int
    """Page or frame index in the file, 0-based."""
    kind: str
    """``image``, ``pdf``, or ``bad`` (the file could not be read at all)."""
    content_hash: str
    """SHA-256 of the file's bytes when intake read it."""
    state: PageState
    attempts: int
    error: str | None
    result: str | None
    """The OCR result as JSON (``OcrResult.to_dict``), once done."""


_MIGRATIONS = [
    """
    CREATE TABLE documents (
        id INTEGER PRIMARY KEY,
        root TEXT NOT NULL,
        path TEXT NOT NULL,
        kind TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'collecting',
        complete INTEGER NOT NULL DEFAULT 0,
        version INTEGER NOT NULL DEFAULT 0,
        output TEXT,
        error TEXT,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        completed_at REAL,
        published_at REAL,
        cleaned INTEGER NOT NULL DEFAULT 1,
        UNIQUE (root, path)
    );
    CREATE TABLE pages (
        id INTEGER PRIMARY KEY,
        document_id INTEGER NOT NULL REFERENCES documents(id),
        file TEXT NOT NULL,
        page_index INTEGER NOT NULL,
        kind TEXT NOT NULL,
        size INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        content_hash TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending',
        attempts INTEGER NOT NULL DEFAULT 0,
        device TEXT,
        queued_at REAL,
        started_at REAL,
        finished_at REAL,
        seconds REAL,
        error TEXT,
        result TEXT,
        UNIQUE (document_id, file, page_index)
    );
    CREATE INDEX pages_state ON pages (state, document_id);
    CREATE INDEX pages_hash ON pages (content_hash, page_index);
    CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        at REAL NOT NULL,
        document_id INTEGER,
        page_id INTEGER,
        level TEXT NOT NULL,
        event TEXT NOT NULL,
        message TEXT
    );
    CREATE INDEX events_document ON events (document_id, at);
    """,
    """
    ALTER TABLE documents ADD COLUMN generation INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE documents ADD COLUMN changed_at REAL;
    ALTER TABLE pages ADD COLUMN sealed INTEGER NOT NULL DEFAULT 0;
    """,
    """
    UPDATE pages SET size = -1 WHERE sealed = 1 AND document_id IN
        (SELECT id FROM documents WHERE state = 'failed' AND cleaned = 1);
    """,
]
"""Migration ``n`` brings the schema from version ``n`` to ``n + 1``."""

_VIEWS = {
    "document_status": """
        SELECT d.id, d.root, d.path, d.kind, d.state, d.version,
               COUNT(p.id) AS pages_total,
               SUM(p.state IN ('done', 'skipped')) AS pages_done,
               SUM(p.state = 'failed') AS pages_failed,
               SUM(p.state IN ('pending', 'queued', 'running')) AS pages_waiting,
               d.output, d.error,
               datetime(d.created_at, 'unixepoch') AS created,
               datetime(d.updated_at, 'unixepoch') AS updated,
               datetime(d.published_at, 'unixepoch') AS published
        FROM documents d LEFT JOIN pages p ON p.document_id = d.id
        GROUP BY d.id
    """,
    "page_status": """
        SELECT d.path AS document, p.file, p.page_index + 1 AS page, p.kind, p.state,
               p.attempts, p.device, p.seconds, p.error
        FROM pages p JOIN documents d ON d.id = p.document_id
    """,
    "failures": """
        SELECT d.path AS document, p.file, p.page_index + 1 AS page, p.error,
               datetime(p.finished_at, 'unixepoch') AS at
        FROM pages p JOIN documents d ON d.id = p.document_id
        WHERE p.state = 'failed'
        UNION ALL
        SELECT d.path, NULL, NULL, d.error, datetime(d.updated_at, 'unixepoch')
        FROM documents d WHERE d.state = 'failed'
    """,
    "recent_events": """
        SELECT datetime(e.at, 'unixepoch') AS at, e.level, e.event, d.path AS document,
               e.message
        FROM events e LEFT JOIN documents d ON d.id = e.document_id
        ORDER BY e.id DESC LIMIT 200
    """,
}
"""Views documented in the README as a stable interface."""


class InstanceLock:
    """An exclusive ``flock`` on ``<state>/daemon.lock``, holding the owner's pid.

    Raises:
        AlreadyRunningError: from :meth:`acquire` when another process holds it.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or say which process has it."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise AlreadyRunningError(
                f"another scanhopper daemon (pid {holder}) is using {self.path.parent}"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        """Drop the lock."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class Store:
    """The state database. Open with :meth:`open` (the daemon) or :meth:`open_readonly`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    @classmethod
    def open(cls, path: Path) -> Store:
        """Open (creating if needed) and migrate the database, in WAL mode.

        The file is created readable by its owner only.

        Raises:
            StateDatabaseError: the file is not a SQLite database, is corrupt, or its
                schema is newer than this scanhopper.
        """
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        try:
            db = Database(path)
            check = db.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise StateDatabaseError(f"state database {path}: corrupt ({check})")
            db.enable_wal()
            store = cls(db)
            store._migrate(path)
        except sqlite3.DatabaseError as exc:
            raise StateDatabaseError(
                f"state database {path} is not usable ({exc}); it was left as it is: "
                "move it away to start afresh"
            ) from exc
        return store

    @classmethod
    def open_readonly(cls, path: Path) -> Store:
        """Open for reading only; never blocks or changes the daemon's database.

        Raises:
            StateDatabaseError: it does not exist or cannot be read.
        """
        if not path.is_file():
            raise StateDatabaseError(f"{path}: no state database (has the daemon run?)")
        try:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            conn.execute("SELECT 1 FROM documents LIMIT 1")
        except sqlite3.DatabaseError as exc:
            raise StateDatabaseError(f"state database {path}: cannot read ({exc})") from exc
        return cls(Database(conn))

    def _migrate(self, path: Path) -> None:
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StateDatabaseError(
                f"state database {path}: schema version {version} is newer than this "
                "scanhopper's "
                f"({SCHEMA_VERSION})"
            )
        for number in range(version, SCHEMA_VERSION):
            with self.db.atomic():
                self.db.executescript(_MIGRATIONS[number])
                self.db.execute(f"PRAGMA user_version = {number + 1}")
        for name, sql in _VIEWS.items():
            self.db.create_view(name, sql, replace=True)

    def close(self) -> None:
        """Close the connection."""
        self.db.close()

    # -- documents -------------------------------------------------------------

    def document(self, root: str, path: str) -> Document | None:
        """The document at ``path`` under ``root``, if known."""
        rows = list(
            self.db.query("SELECT * FROM documents WHERE root = ? AND path = ?", [root, path])
        )
        return _document(rows[0]) if rows else None

    def document_by_id(self, document_id: int) -> Document:
        """The document with this id."""
        return _document(self.db.table("documents").get(document_id))

    def output_taken(self, output: str, document_id: int) -> bool:
        """Whether a document other than ``document_id`` was published to ``output``."""
        rows = self.db.execute(
            "SELECT 1 FROM documents WHERE output = ? AND id != ? LIMIT 1", [output, document_id]
        )
        return rows.fetchone() is not None

    def add_document(self, root: str, path: str, kind: str) -> Document:
        """Create a document in state ``collecting``."""
        now = time.time()
        self.db.table("documents").insert(
            {
                "root": root,
                "path": path,
                "kind": kind,
                "state": "collecting",
                "created_at": now,
                "updated_at": now,
            }
        )
        document = self.document(root, path)
        assert document is not None
        self.log(document.id, None, "info", "document_seen", f"{kind} {path}")
        return document

    def refuse(self, root: str, path: str, reason: str) -> None:
        """Record an inbox entry that is not taken at all (left in place), as a failed
        document so that status shows why."""
        now = time.time()
        self.db.table("documents").insert(
            {
                "root": root,
                "path": path,
                "kind": "file",
                "state": "failed",
                "complete": 1,
                "error": reason,
                "created_at": now,
                "updated_at": now,
                "cleaned": 1,
            },
            ignore=True,
        )
        self.log(None, None, "error", "file_refused", f"{path}: {reason}")

    def documents(self, states: tuple[str, ...] | None = None) -> list[Document]:
        """All documents, or those in ``states``, oldest first."""
        sql = "SELECT * FROM documents"
        params: list[Any] = []
        if states:
            sql += f" WHERE state IN ({', '.join('?' for _ in states)})"
            params = list(states)
        return [_document(r) for r in self.db.query(sql + " ORDER BY id", params)]

    def _move(self, document_id: int, to: DocumentState, **values: Any) -> bool:
        """Put a document in state ``to`` if :data:`TRANSITIONS` allows it from its
        current state, setting ``values`` too. Returns whether it moved."""
        allowed = TRANSITIONS[to]
        columns = {**values, "state": to.value, "updated_at": time.time()}
        assignments = ", ".join(f"{name} = ?" for name in columns)
        cursor = self.db.execute(
            f"UPDATE documents SET {assignments} WHERE id = ? "
            f"AND state IN ({', '.join('?' for _ in allowed)})",
            [*columns.values(), document_id, *allowed],
        )
        return cursor.rowcount == 1

    def mark_complete(self, document_id: int) -> None:
        """Record that the document is complete (idempotent); it stays complete, so
        pages that arrive after a publication publish it again."""
        with self.db.atomic():
            self.db.execute(
                "UPDATE documents SET complete = 1, completed_at = ?, updated_at = ?, "
                "state = CASE WHEN state = 'collecting' THEN 'complete' ELSE state END "
                "WHERE id = ? AND complete = 0",
                [time.time(), time.time(), document_id],
            )

    def touch(self, document_id: int) -> None:
        """Something under the document is still being written: it is not settled."""
        self.db.execute(
            "UPDATE documents SET changed_at = ? WHERE id = ?", [time.time(), document_id]
        )

    def reopen(self, document_id: int) -> None:
        """A published, failed or gone document got new or changed pages: read them,
        then publish again (at once if it was marked complete before)."""
        document = self.document_by_id(document_id)
        to = DocumentState.complete if document.complete else DocumentState.collecting
        if self._move(document_id, to, error=None):
            self.log(document_id, None, "info", "document_reopened", None)

    def start_publishing(self, document_id: int) -> int:
        """The document's PDF is about to be written.

        Returns:
            Its generation now, for :meth:`mark_published`.
        """
        self._move(document_id, DocumentState.publishing)
        return self.document_by_id(document_id).generation

    def mark_published(
        self, document_id: int, generation: int, *, output: str, errors: str | None
    ) -> bool:
        """Record a publication, unless the document's pages changed since
        :meth:`start_publishing` returned ``generation`` (then it goes back to
        ``complete`` to be published again, and its sources are not touched).

        The pages published are sealed: only they may be archived or deleted (a file
        that could not be read at all is in no PDF, and stays where it is).

        Returns:
            Whether the publication was recorded.
        """
        state = DocumentState.done_with_errors if errors else DocumentState.done
        with self.db.atomic():
            if self.document_by_id(document_id).generation != generation:
                self._move(document_id, DocumentState.complete)
                return False
            self.db.execute(
                "UPDATE documents SET version = version + 1, published_at = ? WHERE id = ?",
                [time.time(), document_id],
            )
            self._move(document_id, state, output=output, error=errors, cleaned=0)
            self.db.execute(  # a file that could not be read at all is in no PDF
                "UPDATE pages SET sealed = 1 WHERE document_id = ? AND kind != 'bad'",
                [document_id],
            )
        return True

    def mark_waiting(self, document_id: int, reason: str) -> None:
        """The document cannot be published for now (the environment's fault)."""
        self._move(document_id, DocumentState.waiting, error=reason)

    def mark_failed(self, document_id: int, reason: str) -> None:
        """The document's content cannot be published; its pages are sealed so that
        cleaning moves exactly those files to the failed folder."""
        with self.db.atomic():
            self._move(document_id, DocumentState.failed, error=reason, cleaned=0)
            self.db.execute("UPDATE pages SET sealed = 1 WHERE document_id = ?", [document_id])

    def mark_gone(self, document_id: int) -> None:
        """The document's folder or file left the inbox before it was published."""
        if self._move(document_id, DocumentState.gone, error=None):
            self.log(document_id, None, "info", "document_gone", None)

    def mark_cleaned(self, document_id: int) -> None:
        """Temp files, marker and source policy are dealt with."""
        self.db.execute("UPDATE documents SET cleaned = 1 WHERE id = ?", [document_id])

    def mark_moved(self, document_id: int, moved: Mapping[str, str]) -> None:
        """Sealed files that left the inbox at cleaning (archived, deleted, or moved to
        the failed folder): ``{file: SHA-256}``.

        Their recorded size becomes :data:`_MOVED_SIZE`, which no file has, so a file
        that comes back to the same path, even renamed back with its old mtime, is a
        change: intake re-opens the document and reads it (pages read before are
        not read again: their results are reused by content hash). Rows intake wrote
        meanwhile (a file replaced while its old one was archived) are not sealed
        with that hash, and keep their size."""
        with self.db.atomic():
            for file, content_hash in moved.items():
                self.db.execute(
                    "UPDATE pages SET size = ? WHERE document_id = ? AND file = ? "
                    "AND sealed = 1 AND content_hash = ?",
                    [_MOVED_SIZE, document_id, file, content_hash],
                )

    def documents_to_clean(self) -> list[Document]:
        """Published or failed documents whose cleaning is still to do."""
        rows = self.db.query(
            "SELECT * FROM documents WHERE cleaned = 0 "
            "AND state IN ('done', 'done_with_errors', 'failed') ORDER BY id"
        )
        return [_document(r) for r in rows]

    def documents_to_publish(self, settled_before: float) -> list[Document]:
        """Documents to publish now: complete or waiting ones whose every page is
        terminal and, for folders, that did not change since ``settled_before`` (Unix
        seconds; a loose file is one page source, settled once stable), and those a
        crash left mid-publish."""
        placeholders = ", ".join("?" for _ in TERMINAL_PAGE_STATES)
        rows = self.db.query(
            "SELECT * FROM documents d WHERE (d.state IN ('complete', 'waiting') "
            "AND (d.kind = 'file' OR COALESCE(d.changed_at, 0) <= ?) AND NOT EXISTS ("
            f" SELECT 1 FROM pages p WHERE p.document_id = d.id AND p.state NOT IN "
            f"({placeholders}))) OR d.state = 'publishing' ORDER BY d.completed_at, d.id",
            [settled_before, *TERMINAL_PAGE_STATES],
        )
        return [_document(r) for r in rows]

    def _changed(self, document_id: int) -> None:
        """The document's set of pages changed: bump its generation; a waiting document
        is tried again."""
        self.db.execute(
            "UPDATE documents SET generation = generation + 1, changed_at = ?, updated_at = ?, "
            "error = CASE WHEN state = 'waiting' THEN NULL ELSE error END, "
            "state = CASE WHEN state = 'waiting' THEN 'complete' ELSE state END WHERE id = ?",
            [time.time(), time.time(), document_id],
        )

    # -- pages -----------------------------------------------------------------

    def files(self, document_id: int) -> dict[str, tuple[int, int, str]]:
        """The document's files: ``{file: (size, mtime_ns, content_hash)}``."""
        rows = self.db.query(
            "SELECT DISTINCT file, size, mtime_ns, content_hash FROM pages WHERE document_id = ?",
            [document_id],
        )
        return {r["file"]: (r["size"], r["mtime_ns"], r["content_hash"]) for r in rows}

    def add_file(
        self,
        document_id: int,
        file: str,
        *,
        kind: str,
        pages: int,
        size: int,
        mtime_ns: int,
        content_hash: str,
        error: str | None = None,
        skipped: frozenset[int] = frozenset(),
    ) -> int:
        """Record a file's pages, replacing any earlier rows for the same file.

        A page whose content (hash and index) was OCR'd before, in any document, gets
        that result at once instead of being OCR'd again. A ``bad`` file gets one
        ``failed`` row with ``error``. Pages in ``skipped`` need no OCR.

        Returns:
            How many pages still need OCR.
        """
        now = time.time()
        waiting = 0
        with self.db.atomic():
            # Before the file's own rows go: a file read again unchanged (renamed back,
            # touched) finds its results there.
            earlier = [self._earlier_result(content_hash, index) for index in range(pages)]
            self.db.execute(
                "DELETE FROM pages WHERE document_id = ? AND file = ?", [document_id, file]
            )
            for index in range(pages):
                row: dict[str, Any] = {
                    "document_id": document_id,
                    "file": file,
                    "page_index": index,
                    "kind": kind,
                    "size": size,
                    "mtime_ns": mtime_ns,
                    "content_hash": content_hash,
                    "state": "pending",
                    "queued_at": now,
                }
                if error is not None:
                    row.update(state="failed", error=error, finished_at=now)
                elif index in skipped:
                    row.update(state="skipped", finished_at=now)
                elif (result := earlier[index]) is not None:
                    row.update(state="done", result=result, finished_at=now, device="reused")
                else:
                    waiting += 1
                self.db.table("pages").insert(row)
            self._changed(document_id)
        return waiting

    def _earlier_result(self, content_hash: str, page_index: int) -> str | None:
        rows = list(
            self.db.query(
                "SELECT result FROM pages WHERE content_hash = ? AND page_index = ? AND "
                "state = 'done' AND result IS NOT NULL LIMIT 1",
                [content_hash, page_index],
            )
        )
        return rows[0]["result"] if rows else None

    def failed_pages(self, path: str) -> tuple[int, int]:
        """Failed pages of the documents at ``path`` (under any inbox root): how many
        :meth:`retry` reads again, and how many wait for their file to come back to
        the inbox (:meth:`mark_moved`)."""
        row = self.db.execute(
            f"SELECT COALESCE(SUM(size != {_MOVED_SIZE}), 0), "
            f"COALESCE(SUM(size = {_MOVED_SIZE}), 0) FROM pages WHERE {_FAILED_PAGE} "
            "AND document_id IN (SELECT id FROM documents WHERE path = ?)",
            [path],
        ).fetchone()
        return row[0], row[1]

    def remove_file(self, document_id: int, file: str) -> None:
        """Forget a file: it left the inbox before its document was published, or it
        changed since it was read (intake reads it again)."""
        with self.db.atomic():
            self.db.execute(
                "DELETE FROM pages WHERE document_id = ? AND file = ?", [document_id, file]
            )
            self._changed(document_id)

    def sealed_files(self, document_id: int) -> dict[str, str]:
        """Files of the document's last publication (or failure): ``{file: SHA-256}``."""
        rows = self.db.query(
            "SELECT DISTINCT file, content_hash FROM pages WHERE document_id = ? AND sealed = 1",
            [document_id],
        )
        return {r["file"]: r["content_hash"] for r in rows}

    def pages(self, document_id: int) -> list[Page]:
        """The document's pages (order them with natural sort of ``file``, then index)."""
        rows = self.db.query("SELECT * FROM pages WHERE document_id = ?", [document_id])
        return [_page(r) for r in rows]

    def reset_in_flight(self) -> int:
        """After a restart: pages that were queued or running go back to pending.

        Returns:
            How many pages were reset.
        """
        with self.db.atomic():
            cursor = self.db.execute(
                "UPDATE pages SET state = 'pending', device = NULL, started_at = NULL "
                "WHERE state IN ('queued', 'running')"
            )
        return cursor.rowcount

    def claim_pending(self, limit: int) -> list[Page]:
        """Take up to ``limit`` pending pages and mark them ``queued``.

        Pages of complete documents go first, then the oldest documents, then the order
        the pages were found in (intake adds a folder's files in natural order).
        """
        rows = list(
            self.db.query(
                "SELECT p.* FROM pages p JOIN documents d ON d.id = p.document_id "
                "WHERE p.state = 'pending' ORDER BY d.complete DESC, d.id, p.id "
                "LIMIT ?",
                [limit],
            )
        )
        with self.db.atomic():
            for row in rows:
                self.db.execute("UPDATE pages SET state = 'queued' WHERE id = ?", [row["id"]])
        return [_page(r) for r in rows]

    def page_started(self, page_id: int) -> None:
        """The page was handed to the worker pool."""
        self.db.execute(
            "UPDATE pages SET state = 'running', started_at = ?, attempts = attempts + 1 "
            "WHERE id = ?",
            [time.time(), page_id],
        )

    def page_done(
        self, page_id: int, result: dict[str, Any], seconds: float | None, *, device: str | None
    ) -> None:
        """Store a page's OCR result durably; the page is never OCR'd again.

        Args:
            seconds: What the worker spent on the page (see ``OcrResult.seconds``).
        """
        with self.db.atomic():
            self.db.execute(
                "UPDATE pages SET state = 'done', result = ?, seconds = ?, finished_at = ?, "
                "device = ?, error = NULL WHERE id = ?",
                [json.dumps(result, ensure_ascii=False), seconds, time.time(), device, page_id],
            )

    def page_attempt_failed(self, page_id: int, reason: str, *, final: bool) -> None:
        """Record a failed attempt: back to ``pending``, or ``failed`` when ``final``."""
        self.db.execute(
            "UPDATE pages SET state = ?, error = ?, finished_at = ? WHERE id = ?",
            ["failed" if final else "pending", reason, time.time(), page_id],
        )

    def retry(self, document_id: int | None = None) -> int:
        """Failed pages (of one document, or all) whose file is still in the inbox go
        back to pending with no attempts; their ``failed`` or ``done_with_errors``
        documents back to ``complete``.

        A page whose file left the inbox at cleaning (:meth:`mark_moved`: a failed
        document's files are in the failed folder, a published one's may be archived
        or deleted) is left alone: there is nothing to read again until the file
        comes back to the inbox, which re-opens its document.

        Returns:
            How many pages will be retried.
        """
        where, params = ("AND document_id = ?", [document_id]) if document_id else ("", [])
        pages = f"{_FAILED_PAGE} AND size != {_MOVED_SIZE} {where}"
        with self.db.atomic():
            self.db.execute(
                "UPDATE documents SET state = 'complete', error = NULL, complete = 1 "
                "WHERE state IN ('failed', 'done_with_errors') AND id IN "
                f"(SELECT document_id FROM pages WHERE {pages})",
                params,
            )
            cursor = self.db.execute(
                f"UPDATE pages SET state = 'pending', attempts = 0, error = NULL WHERE {pages}",
                params,
            )
        return cursor.rowcount

    # -- events and status -------------------------------------------------------

    def log(
        self,
        document_id: int | None,
        page_id: int | None,
        level: str,
        event: str,
        message: str | None,
    ) -> None:
        """Append to the event log."""
        self.db.table("events").insert(
            {
                "at": time.time(),
                "document_id": document_id,
                "page_id": page_id,
                "level": level,
                "event": event,
                "message": message,
            }
        )

    def status(self) -> list[dict[str, Any]]:
        """Rows of the ``document_status`` view, oldest first."""
        return list(self.db.query("SELECT * FROM document_status ORDER BY id"))

    def page_seconds(self) -> float | None:
        """Mean OCR seconds per page over the last 100 pages (the worker's own time)."""
        row = next(
            self.db.query(
                "SELECT AVG(seconds) AS s FROM (SELECT seconds FROM pages "
                "WHERE seconds IS NOT NULL ORDER BY finished_at DESC LIMIT 100)"
            )
        )
        return row["s"]

    def pages_per_second(self, window: float = 300.0, pages: int = 20) -> float | None:
        """Pages read per second lately: over the last ``pages`` pages read within the
        last ``window`` seconds, the whole pipeline (preparing, queueing, every
        device), from the pages' finishing times.

        Returns:
            ``None`` when fewer than 10 pages finished in the window.
        """
        times = [
            row["finished_at"]
            for row in self.db.query(
                "SELECT finished_at FROM pages WHERE state = 'done' AND seconds IS NOT NULL "
                "AND finished_at >= ? ORDER BY finished_at DESC LIMIT ?",
                [time.time() - window, pages],
            )
        ]
        if len(times) < 10 or times[0] <= times[-1]:
            return None
        return (len(times) - 1) / (times[0] - times[-1])


def _document(row: dict[str, Any]) -> Document:
    return Document(
        row["id"],
        row["root"],
        row["path"],
        row["kind"],
        DocumentState(row["state"]),
        bool(row["complete"]),
        row["version"],
        row["output"],
        row["error"],
        row["updated_at"],
        bool(row["cleaned"]),
        row["generation"],
    )


def _page(row: dict[str, Any]) -> Page:
    return Page(
        row["id"],
        row["document_id"],
        row["file"],
        row["page_index"],
        row["kind"],
        row["content_hash"],
        PageState(row["state"]),
        row["attempts"],
        row["error"],
        row["result"],
    )
