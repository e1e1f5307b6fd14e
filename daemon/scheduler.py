"""Scheduler: pending pages from the store, prepared and fed to the worker pool.

At most ``devices x (queue_depth + 1)`` pages are in flight at once (claimed, being
prepared, in a device slot's queue or being read): each slot reads one page while up to
``queue_depth`` wait prepared for it. That caps the pages prepared ahead (backpressure),
whatever the backlog. Pages of complete documents go first, then the oldest documents.
Page preparation (rasterising PDF pages, copying image files) runs in a thread,
overlapping with OCR, one page at a time: PyMuPDF holds the GIL while it renders, so
more threads gain nothing, and each render holds a full-resolution pixmap (three at
once took the daemon from 285 to 400 MB on a 267 MB PDF of 300 scans). Workers read
only those prepared files, each made from the source's bytes checked against the hash
intake recorded.

A page whose source changed, vanished or became a link since intake read it is
forgotten (intake reads the file again); one that meets an error of the environment
(a full state disk, permissions) waits ``ENVIRONMENT_RETRY`` seconds and goes back to
pending without counting an attempt.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import anyio
import structlog

from .config import Settings
from .files import SourceChangedError, UnsafePathError
from .pdf import PageSource, PageSourceError, prepare_page
from .store import Page, Store
from .workers import PageFailedError, WorkerPool

__all__ = ["Scheduler", "document_work_dir"]

log = structlog.get_logger(__name__)

ENVIRONMENT_RETRY = 10.0
"""Seconds a page that met an error of the environment waits before it is pending again."""


def document_work_dir(settings: Settings, document_id: int) -> Path:
    """A document's temp folder (rasterised pages); removed once it is published."""
    return settings.cache_dir / "documents" / str(document_id)


class Scheduler:
    """Feeds pending pages to the pool and records each outcome durably."""

    def __init__(self, settings: Settings, store: Store, pool: WorkerPool) -> None:
        self.settings = settings
        self.store = store
        self.pool = pool
        self.capacity = len(settings.workers.devices) * (settings.workers.queue_depth + 1)
        self.in_flight = 0
        self._preparing = anyio.CapacityLimiter(1)

    async def run(self, *, stop: anyio.Event, idle: float = 0.25) -> None:
        """Claim and process pages until ``stop`` is set, then finish those in flight.

        Args:
            stop: Set to stop claiming pages (the pages in flight are drained).
            idle: Seconds between looks at the store when nothing is pending.
        """
        async with anyio.create_task_group() as tg:
            while not stop.is_set():
                free = self.capacity - self.in_flight
                pages = self.store.claim_pending(free) if free > 0 else []
                for page in pages:
                    self.in_flight += 1
                    tg.start_soon(self._process, page)
                with anyio.move_on_after(idle if not pages else 0.01):
                    await stop.wait()

    async def _process(self, page: Page) -> None:
        document = self.store.document_by_id(page.document_id)
        root = Path(document.root)
        source = PageSource(root / page.file, page.kind, page.page_index, root, page.content_hash)
        work = document_work_dir(self.settings, document.id)
        output = self.settings.output
        with structlog.contextvars.bound_contextvars(
            document=document.path, page=f"{page.file}#{page.page_index + 1}"
        ):
            try:
                try:
                    image, frame = await anyio.to_thread.run_sync(
                        lambda: prepare_page(
                            source, work, dpi=output.render_dpi, max_pixels=output.max_pixels
                        ),
                        limiter=self._preparing,
                    )
                except PageSourceError as exc:
                    self._failed(page, str(exc), final=True)
                    return
                except (SourceChangedError, UnsafePathError, FileNotFoundError) as exc:
                    self.store.remove_file(page.document_id, page.file)
                    log.warning("source_changed", reason=str(exc))
                    return
                except OSError as exc:
                    log.error("page_waiting", reason=str(exc), retry_seconds=ENVIRONMENT_RETRY)
                    await anyio.sleep(ENVIRONMENT_RETRY)
                    self.store.page_attempt_failed(page.id, str(exc), final=False)
                    return
                try:
                    await self._ocr(page, image, frame)
                finally:
                    shutil.rmtree(image.parent, ignore_errors=True)
            finally:
                self.in_flight -= 1

    async def _ocr(self, page: Page, image: Path, frame: int) -> None:
        self.store.page_started(page.id)
        try:
            result = await self.pool.ocr(image, frame=frame)
        except PageFailedError as exc:
            attempts = page.attempts + 1
            final = exc.cause == "error" or attempts >= self.settings.workers.max_attempts
            reason = exc.reason.replace(str(image), page.file)  # name the source, not the copy
            self._failed(page, reason, final=final, attempts=attempts)
            return
        self.store.page_done(page.id, result.to_dict(), result.seconds, device=result.device)
        log.info("page_done", device=result.device, seconds=result.seconds, lines=len(result.lines))

    def _failed(self, page: Page, reason: str, *, final: bool, attempts: int = 1) -> None:
        self.store.page_attempt_failed(page.id, reason, final=final)
        if final:
            log.error("page_failed", reason=reason, attempts=attempts)
            self.store.log(page.document_id, page.id, "error", "page_failed", reason)
        else:
            log.warning("page_retry", reason=reason, attempts=attempts)


def remove_work_dir(settings: Settings, document_id: int) -> None:
    """Delete a document's temp folder (idempotent)."""
    shutil.rmtree(document_work_dir(settings, document_id), ignore_errors=True)
