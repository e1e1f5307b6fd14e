"""Status: how things stand, read from the state database (read-only)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from .config import Settings
from .errors import ExitCode, ScanhopperError
from .store import Store

__all__ = [
    "NotFoundError",
    "document_pages",
    "failed_pages",
    "known_document",
    "render_table",
    "status_rows",
]


class NotFoundError(ScanhopperError):
    """No document at the path given."""

    exit_code = ExitCode.bad_args


def status_rows(settings: Settings) -> list[dict[str, Any]]:
    """One dict per document (the ``document_status`` view) with an ``eta_seconds``.

    ETA: the pages still waiting in this document and in those read before it
    (complete documents first, then the oldest), divided by the pages per second the
    daemon read lately (its last 20 pages within 5 minutes,
    :meth:`Store.pages_per_second`: preparing and queueing included); before 10 pages
    were read in that window, by the mean
    worker seconds per page spread over the devices. ``None`` when nothing waits or
    nothing has been timed yet.

    Raises:
        StateDatabaseError: no readable state database.
    """
    store = Store.open_readonly(settings.database)
    try:
        rows = store.status()
        rate = store.pages_per_second()
        mean = store.page_seconds()
    finally:
        store.close()
    if rate is None and mean:
        rate = len(settings.workers.devices) / mean
    ahead = 0
    for row in sorted(rows, key=lambda r: (r["state"] == "collecting", r["id"])):
        waiting = row["pages_waiting"] or 0
        ahead += waiting
        row["eta_seconds"] = round(ahead / rate, 1) if waiting and rate else None
    return rows


def document_pages(settings: Settings, path: str) -> list[dict[str, Any]]:
    """The pages of the document at ``path`` (relative to its inbox root, or a path
    inside an inbox root), from the ``page_status`` view, in page order.

    Raises:
        StateDatabaseError: no readable state database.
        NotFoundError: no such document.
    """
    from .intake import natural_key

    rel = known_document(settings, path)
    rows = _query(settings, "SELECT * FROM page_status WHERE document = ?", [rel])
    return sorted(rows, key=lambda r: (natural_key(r["file"]), r["page"]))


def known_document(settings: Settings, path: str) -> str:
    """Check that the state database knows the document at ``path`` (relative to its
    inbox root, or a path inside an inbox root), reading it read-only.

    Returns:
        The document's path relative to its inbox root, as the database holds it.

    Raises:
        StateDatabaseError: no readable state database.
        NotFoundError: no such document.
    """
    rel = _relative(settings, path)
    if not _query(settings, "SELECT 1 FROM documents WHERE path = ? LIMIT 1", [rel]):
        raise NotFoundError(f"no document {path!r} in {settings.database}")
    return rel


def failed_pages(settings: Settings, rel: str) -> tuple[int, int]:
    """Failed pages of the documents at ``rel`` (a path relative to its inbox root),
    read read-only: how many ``retry`` reads again, and how many wait for their file
    to come back to the inbox (:meth:`~.store.Store.failed_pages`).

    Raises:
        StateDatabaseError: no readable state database.
    """
    return _read(settings, lambda store: store.failed_pages(rel))


def _relative(settings: Settings, path: str) -> str:
    """A document path relative to its inbox root, given either form."""
    candidate = Path(path).resolve()
    for root in settings.folders.inbox:
        if candidate.is_relative_to(root.resolve()):
            return candidate.relative_to(root.resolve()).as_posix()
    return Path(path).as_posix()


def render_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """A plain text table with a header row; ``None`` shows as ``-``."""
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(line.rstrip() for line in lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _query(settings: Settings, sql: str, params: list[Any]) -> list[dict[str, Any]]:
    """Rows of one query on the state database, opened read-only."""
    return _read(settings, lambda store: list(store.db.query(sql, params)))


_T = TypeVar("_T")


def _read(settings: Settings, read: Callable[[Store], _T]) -> _T:
    """``read`` on the state database, opened read-only, then closed."""
    store = Store.open_readonly(settings.database)
    try:
        return read(store)
    finally:
        store.close()
