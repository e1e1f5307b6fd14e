"""The daemon: lock, store, workers, intake, scheduler and finalizer, under systemd.

``run_daemon`` holds the locks of the state folder and inbox roots, resets pages a crash
left in flight, starts the workers (READY=1 once their models are loaded), then runs
intake, scheduler and finalizer until SIGTERM or SIGINT, when it stops taking pages,
drains those in flight, finishes a publication under way and exits.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import time
import uuid
from contextlib import ExitStack
from functools import partial
from pathlib import Path

import anyio
import structlog

from .config import Settings, SourcePolicy
from .engine import limit_image_pixels
from .errors import ExitCode, ScanhopperError
from .files import remove_stale_temp_files, write_atomically
from .finalize import Finalizer
from .intake import Intake
from .scheduler import Scheduler
from .status import failed_pages, known_document
from .store import OPEN_STATES, InstanceLock, StateDatabaseError, Store
from .workers import WorkerPool, open_worker_pool

__all__ = [
    "INBOX_LOCK",
    "FolderError",
    "RetryRefusedError",
    "SystemdNotifier",
    "request_retry",
    "run_daemon",
]

log = structlog.get_logger(__name__)

INBOX_LOCK = ".scanhopper.lock"
"""Lock file the daemon holds in each inbox root while it runs (holding its pid)."""


class FolderError(ScanhopperError):
    """A configured folder cannot be made, locked or cleaned (permissions, a file in
    the way)."""

    exit_code = ExitCode.file_access_error


class SystemdNotifier:
    """Sends ``sd_notify`` messages (READY, STATUS, WATCHDOG, STOPPING) to systemd.

    The protocol is a datagram of ``KEY=value`` lines to the Unix socket named by
    ``$NOTIFY_SOCKET`` (a leading ``@`` means the abstract namespace): sd_notify(3).
    Without ``$NOTIFY_SOCKET`` every call does nothing.
    """

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        self.address = "\0" + address[1:] if address.startswith("@") else address
        usec = env.get("WATCHDOG_USEC", "")
        self.watchdog_seconds = int(usec) / 1e6 if usec.isdigit() else None
        """The watchdog timeout, if systemd set one (ping at least twice within it)."""

    def notify(self, **fields: str | int) -> None:
        """Send ``KEY=value`` fields, e.g. ``notify(READY=1, STATUS="...")``."""
        if not self.address:
            return
        message = "\n".join(f"{key}={value}" for key, value in fields.items()).encode()
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            try:
                sock.sendto(message, self.address)
            except OSError as exc:
                log.warning("sd_notify_failed", error=str(exc))


class RetryRefusedError(ScanhopperError):
    """The document's failed pages have no file in the inbox to read again."""

    exit_code = ExitCode.bad_args


def request_retry(settings: Settings, target: str | None) -> Path:
    """Leave a retry request for the daemon (picked up while running or at start).

    A document is first looked up in the state database (read-only): a path that
    names no document is refused and no request is written, and so is a document whose
    failed pages' files all left the inbox when it was cleaned (a failed document's
    are in the failed folder): moving them back into the inbox reads them again, and
    :meth:`~.store.Store.retry` skips them too.

    Args:
        target: A document path relative to its inbox root (or a path inside an inbox
            root), or ``None`` for every failed page.

    Returns:
        The request file written.

    Raises:
        NotFoundError: the state database knows no document at ``target``.
        RetryRefusedError: ``target``'s failed pages all wait for their files.
        StateDatabaseError: ``target`` is given and there is no readable state database.
    """
    if target is not None:
        target = known_document(settings, target)
        retriable, moved = failed_pages(settings, target)
        if moved and not retriable:
            raise RetryRefusedError(
                f"the files of {target!r}'s {moved} failed page(s) left the inbox when it "
                f"was cleaned ({_moved_to(settings)}): move them back into the inbox to "
                "read them again"
            )
    rel = f"requests/retry-{uuid.uuid4().hex}.json"
    write_atomically(
        settings.folders.state, rel, lambda tmp: tmp.write_text(json.dumps({"retry": target}))
    )
    return settings.folders.state / rel


def _moved_to(settings: Settings) -> str:
    """Where cleaning puts the files of a failed, and of a published, document."""
    published = {
        SourcePolicy.keep: "",
        SourcePolicy.archive: f", a published one's in {settings.folders.archive}",
        SourcePolicy.delete: ", a published one's are deleted",
    }[settings.intake.source_policy]
    return f"a failed document's are in {settings.folders.failed}{published}"


def _take_requests(settings: Settings, store: Store) -> None:
    folder = settings.folders.state / "requests"
    if not folder.is_dir():
        return
    for path in sorted(folder.glob("retry-*.json")):
        try:
            target = json.loads(path.read_text())["retry"]
        except (OSError, ValueError, KeyError):
            target = False
        path.unlink(missing_ok=True)
        if target is False:
            continue
        documents = [d for d in store.documents() if target is None or d.path == target]
        count = sum(store.retry(d.id) for d in documents) if target else store.retry()
        log.info("retry_requested", target=target or "all failed pages", pages=count)


def _status_line(store: Store, pool: WorkerPool) -> str:
    rows = store.status()
    waiting = sum(r["pages_waiting"] or 0 for r in rows)
    done = sum(r["pages_done"] or 0 for r in rows)
    failed = sum(r["pages_failed"] or 0 for r in rows)
    open_docs = sum(r["state"] in OPEN_STATES for r in rows)
    queued = " ".join(f"{slot}={n}" for slot, n in pool.queued().items())
    return (
        f"{open_docs} documents open, {waiting} pages waiting, {done} done, {failed} failed;"
        f" queued per device: {queued}"
    )


class _DatabaseFile:
    """The state database file the daemon opened, known by its (st_dev, st_ino).

    SQLite goes on writing to a database file deleted or replaced under it (the writes
    land in the unlinked file and are lost); :meth:`check` notices it.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        opened = os.stat(path)
        self.identity = (opened.st_dev, opened.st_ino)

    def check(self) -> None:
        """Do nothing while ``path`` still names the file opened.

        Raises:
            StateDatabaseError: the file was deleted, or another file put in its place.
        """
        try:
            now = os.stat(self.path)
        except FileNotFoundError:
            change = "deleted"
        else:
            if (now.st_dev, now.st_ino) == self.identity:
                return
            change = "replaced"
        raise StateDatabaseError(
            f"state database {self.path} was {change} while the daemon ran; "
            "stopped rather than go on writing to the old file"
        )


async def _housekeeping(
    settings: Settings,
    store: Store,
    database: _DatabaseFile,
    pool: WorkerPool,
    notifier: SystemdNotifier,
    stop: anyio.Event,
) -> None:
    """The state database checked, STATUS lines, WATCHDOG pings and retry requests,
    every few seconds.

    Raises:
        StateDatabaseError: the state database was deleted or replaced (this ends the
            daemon: its task group stops intake, scheduler, finalizer and workers).
    """
    interval = min(5.0, (notifier.watchdog_seconds or 10.0) / 2)
    while not stop.is_set():
        database.check()
        _take_requests(settings, store)
        notifier.notify(STATUS=_status_line(store, pool), WATCHDOG=1)
        with anyio.move_on_after(interval):
            await stop.wait()


async def _on_signals(
    stop: anyio.Event, notifier: SystemdNotifier, ready: anyio.Event, startup: anyio.CancelScope
) -> None:
    """Set ``stop`` on SIGTERM/SIGINT; before the workers are ready, cancel ``startup``."""
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info("stopping", signal=signal.Signals(signum).name, ready=ready.is_set())
            notifier.notify(STOPPING=1, STATUS="draining pages in flight")
            stop.set()
            if not ready.is_set():
                startup.cancel()
            return


def _prepare_folders(settings: Settings, started: float) -> None:
    """Make the folders and remove what a previous run left half-written."""
    folders = settings.folders
    for folder in (*folders.inbox, folders.outbox, folders.state):
        folder.mkdir(parents=True, exist_ok=True)
    for leftovers in ("documents", "workers"):  # temp files of a previous run
        shutil.rmtree(settings.cache_dir / leftovers, ignore_errors=True)
    for folder in (folders.outbox, folders.failed, folders.state / "requests"):
        for path in remove_stale_temp_files(folder, before=started):
            log.info("stale_temp_file_removed", path=str(path))


def _take_locks(settings: Settings, held: ExitStack) -> None:
    """Lock the state folder (``daemon.lock``) and each inbox root (``.scanhopper.lock``,
    a dotfile intake ignores), released when ``held`` closes: a second daemon on either,
    even with a state folder of its own, is refused before it reads or writes anything.

    Raises:
        AlreadyRunningError: another daemon holds one of them (its pid and folder named).
        OSError: a folder cannot be made or its lock file opened.
    """
    settings.folders.state.mkdir(parents=True, exist_ok=True)
    paths = [settings.folders.state / "daemon.lock"]
    for root in settings.folders.inbox:
        root.mkdir(parents=True, exist_ok=True)
        paths.append(root / INBOX_LOCK)
    for path in paths:
        lock = InstanceLock(path)
        lock.acquire()
        held.callback(lock.release)


async def run_daemon(settings: Settings) -> None:
    """Run until SIGTERM/SIGINT.

    Raises:
        AlreadyRunningError: another daemon uses the state folder or an inbox root.
        FolderError: a configured folder cannot be made, locked or cleaned.
        StateDatabaseError: the state database is unusable, or was deleted or replaced
            while the daemon ran (noticed within 5 s).
        WorkerStartError, ModelError: the OCR workers cannot start.
    """
    started = time.time()
    limit_image_pixels(settings.output.max_pixels)
    with ExitStack() as held:
        try:
            _take_locks(settings, held)
            _prepare_folders(settings, started)
        except OSError as exc:
            where = exc.filename or "a configured folder"
            raise FolderError(f"cannot use {where}: {exc.strerror or exc}") from exc
        store = Store.open(settings.database)
        try:
            database = _DatabaseFile(settings.database)
            reset = store.reset_in_flight()
            log.info("daemon_starting", pages_reset=reset, devices=settings.workers.devices)
            await _run(settings, store, database)
        finally:
            store.close()
        log.info("daemon_stopped")


async def _run(settings: Settings, store: Store, database: _DatabaseFile) -> None:
    notifier = SystemdNotifier()
    stop = anyio.Event()
    ready = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(_on_signals, stop, notifier, ready, tg.cancel_scope)
        async with open_worker_pool(settings) as pool:
            ready.set()
            notifier.notify(READY=1, STATUS="workers ready")
            log.info("daemon_ready")
            await _serve(settings, store, database, pool, notifier, stop)
        tg.cancel_scope.cancel()


async def _serve(settings, store, database, pool, notifier, stop) -> None:
    intake = Intake(settings, store)
    scheduler = Scheduler(settings, store, pool)
    finalizer = Finalizer(settings, store)
    async with anyio.create_task_group() as tg:
        tg.start_soon(partial(intake.run, stop=stop))
        tg.start_soon(partial(finalizer.run, stop=stop))
        tg.start_soon(_housekeeping, settings, store, database, pool, notifier, stop)
        await scheduler.run(stop=stop)
        tg.cancel_scope.cancel()
