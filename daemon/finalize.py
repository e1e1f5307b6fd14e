"""Finalize: assemble a complete document, publish it atomically, then clean up.

A document is published once it is complete, every page is terminal and its folder
has been quiet for ``intake.settle_seconds``. Every source is read through
:meth:`daemon.pdf.PageSource.open`, which checks it still hashes to what intake
recorded, so the PDF holds exactly the bytes that were read. The publication is
recorded only if the document's pages did not change meanwhile
(:meth:`daemon.store.Store.mark_published`); otherwise it is published again.

Errors are sorted by whose fault they are. The content's (a page that cannot be read,
every page failed) fail the document. The environment's (a full disk, permissions, a
link planted in the outbox, a name too long) leave it ``waiting``, tried again with
backoff. A source that changed or vanished since it was read is forgotten, and intake
reads it again. Nothing a user drops ends the daemon.

Cleaning (temp files, the completion marker, the source policy) runs after that and
again at start for any document a crash interrupted; each step is idempotent, and
touches only the sealed files of the last publication, each checked against its hash
just before it is moved or deleted.
"""

from __future__ import annotations

import errno
import json
import os
import time
from pathlib import Path, PurePosixPath

import anyio
import structlog

from .config import FailedPages, Settings, SourcePolicy
from .engine import OcrResult
from .files import (
    SourceChangedError,
    UnsafePathError,
    fit_name,
    move_verified,
    numbered_paths,
    open_dir,
    remove_verified,
    write_atomically,
)
from .intake import natural_key
from .pdf import PageSource, PageSourceError, PdfPage, assemble_pdf
from .scheduler import document_work_dir, remove_work_dir
from .sidecars import write_sidecars
from .store import Document, DocumentState, Page, PageState, Store

__all__ = ["Finalizer", "OutsideOutboxError", "output_path"]

log = structlog.get_logger(__name__)

RETRY_SECONDS = (5.0, 300.0)
"""Backoff after an error of the environment: first wait, doubling up to the last."""


def output_path(settings: Settings, document: Document) -> PurePosixPath:
    """Where a document's PDF is published, relative to the outbox: its inbox path,
    ``.pdf`` added to a folder's name or put in place of a loose file's suffix (the
    name shortened to fit the file system where it must).

    Raises:
        OutsideOutboxError: the document path is absolute or climbs with ``..``.
    """
    rel = PurePosixPath(document.path)
    if rel.is_absolute() or ".." in rel.parts:
        raise OutsideOutboxError(
            f"{document.path!r} would be published outside {settings.folders.outbox}"
        )
    name = rel.name + ".pdf" if document.kind == "folder" else rel.stem + ".pdf"
    return rel.with_name(fit_name(name))


class OutsideOutboxError(ValueError):
    """A document path that would map outside the outbox (invariant 8)."""


def _ordered(pages: list[Page]) -> list[Page]:
    return sorted(pages, key=lambda p: (natural_key(p.file), p.page_index))


class _Backoff:
    """When each document may next be tried after an error of the environment: the
    wait doubles from the first to the last of :data:`RETRY_SECONDS`, and ends at
    once when the document's pages change."""

    def __init__(self) -> None:
        self._next: dict[int, tuple[float, float, int]] = {}
        """Document id -> (monotonic time of the next try, last wait, generation)."""

    def ready(self, document: Document) -> bool:
        at, _, generation = self._next.get(document.id, (0.0, 0.0, document.generation))
        return at <= time.monotonic() or generation != document.generation

    def failed(self, document: Document) -> float:
        """Record a failure; returns the seconds until the next try."""
        first, most = RETRY_SECONDS
        last = self._next.get(document.id, (0.0, first / 2, 0))[1]
        wait = min(most, last * 2)
        self._next[document.id] = (time.monotonic() + wait, wait, document.generation)
        return wait

    def succeeded(self, document: Document) -> None:
        self._next.pop(document.id, None)


class Finalizer:
    """Publishes ready documents and cleans up after them."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self._publish_backoff = _Backoff()
        self._clean_backoff = _Backoff()

    async def run(self, *, stop: anyio.Event, idle: float = 0.25) -> None:
        """Publish and clean documents as they become ready, until ``stop`` is set."""
        while not stop.is_set():
            await self.clean_all()
            settled = time.time() - self.settings.intake.settle_seconds
            for document in self.store.documents_to_publish(settled):
                if not self._publish_backoff.ready(document):
                    continue
                with anyio.CancelScope(shield=True):  # a started publication finishes
                    await self.publish(document)
            with anyio.move_on_after(idle):
                await stop.wait()

    async def clean_all(self) -> None:
        """Clean documents published or failed since, or whose cleaning a crash or an
        error of the environment interrupted."""
        for document in self.store.documents_to_clean():
            if self._clean_backoff.ready(document):
                await self._clean_up(document)

    async def publish(self, document: Document) -> None:
        """Assemble and publish one document; or fail it, or leave it waiting."""
        with structlog.contextvars.bound_contextvars(document=document.path):
            generation = self.store.start_publishing(document.id)
            pages = _ordered(self.store.pages(document.id))
            if not pages:
                self._wait(document, "the folder holds no pages yet")
                return
            failed = [p for p in pages if p.state == PageState.failed]
            usable = [p for p in pages if p.kind != "bad"]
            reason = self._refusal(pages, failed, usable)
            if reason is not None:
                await self._fail(document, reason)
                return
            started = time.perf_counter()
            try:
                wanted = self._destination(document)
                dest = await anyio.to_thread.run_sync(self._write, document, usable, wanted)
            except (SourceChangedError, UnsafePathError, FileNotFoundError) as exc:
                if not self._forget_changed_source(document, exc):
                    self._wait(document, f"publish: {exc}")
                return
            except (PageSourceError, OutsideOutboxError) as exc:
                await self._fail(document, str(exc))
                return
            except OSError as exc:  # ENOSPC, EROFS, EACCES, ENAMETOOLONG, a link in the outbox
                self._wait(document, f"publish: {exc}")
                return
            except Exception as exc:
                # A page MuPDF cannot copy must not stop the daemon: restarted by systemd,
                # it would meet the same page again. The document fails with the reason.
                log.exception("assembly_failed")
                await self._fail(document, f"cannot assemble the PDF ({type(exc).__name__}: {exc})")
                return
            self._publish_backoff.succeeded(document)
            errors = "; ".join(f"{p.file} page {p.page_index + 1}: {p.error}" for p in failed)
            output = str(self.settings.folders.outbox / dest)
            if not self.store.mark_published(
                document.id, generation, output=output, errors=errors or None
            ):
                log.warning("document_changed_while_publishing", output=output)
                return
            self.store.log(document.id, None, "info", "document_published", output)
            log.info(
                "document_published",
                output=output,
                state="done_with_errors" if failed else "done",
                pages=len(usable),
                seconds=round(time.perf_counter() - started, 2),
            )
            await self._clean_up(self.store.document_by_id(document.id))

    def _forget_changed_source(self, document: Document, exc: OSError) -> bool:
        """A source changed, vanished or became a link since it was read: forget its
        pages (intake reads the file again, or the document is gone) and put the
        document back. Returns False when the error was not about a source."""
        root = Path(document.root)
        path = getattr(exc, "path", None) or exc.filename
        try:
            file = Path(path).relative_to(root).as_posix() if path else None
        except ValueError:
            file = None
        known = {p.file for p in self.store.pages(document.id)}
        if file not in known:
            return False
        self.store.remove_file(document.id, file)
        self.store.reopen(document.id)
        self.store.log(document.id, None, "warning", "source_changed", str(exc))
        log.warning("source_changed", file=file, reason=str(exc))
        return True

    def _refusal(self, pages: list[Page], failed: list[Page], usable: list[Page]) -> str | None:
        """Why the document's content cannot be published, or ``None``."""
        if len(failed) == len(pages):
            return "every page failed: " + "; ".join(
                f"{p.file} page {p.page_index + 1}: {p.error}" for p in failed
            )
        if failed and self.settings.intake.failed_pages is FailedPages.fail:
            return f"{len(failed)} page(s) failed and failed_pages = 'fail'"
        if not usable:
            return "no readable pages"
        return None

    def _destination(self, document: Document) -> PurePosixPath:
        """Where this document is published, relative to the outbox.

        A new version of a published document replaces its output when the source
        policy is ``keep`` (the new version holds every page of the old one). Under
        ``archive`` or ``delete`` the old version's pages have left the inbox, so the new
        version holds only the pages added since and must not replace the old PDF.
        Otherwise the document gets its :func:`output_path`, unless another document (or
        its own earlier version) holds that: ``a.jpg`` and ``a.png``, one path under two
        inbox roots; then that path with `` (2)``, `` (3)``... before ``.pdf``.

        Raises:
            OutsideOutboxError: the document's path maps outside the outbox.
        """
        natural = output_path(self.settings, document)
        outbox = self.settings.folders.outbox
        own = Path(document.output) if document.output else None
        if (
            own is not None
            and self.settings.intake.source_policy is SourcePolicy.keep
            and own.is_relative_to(outbox)
        ):
            return PurePosixPath(own.relative_to(outbox))
        dest = next(
            p
            for p in numbered_paths(natural)
            if outbox / p != own and not self.store.output_taken(str(outbox / p), document.id)
        )
        if dest != natural:
            log.warning("output_name_taken", wanted=str(natural), output=str(dest))
        return dest

    def _write(self, document: Document, pages: list[Page], dest: PurePosixPath) -> PurePosixPath:
        """Assemble the PDF and sidecars at ``dest`` under the outbox (blocking).

        Only the document's own output is ever replaced; any other file found at
        ``dest`` (an earlier version whose sources were archived or deleted, a file
        someone put there) is kept, and the PDF gets the next free ``name (N).pdf``.

        Returns:
            Where the PDF was written, relative to the outbox.
        """
        root = Path(document.root)
        results = [OcrResult.from_dict(json.loads(p.result)) if p.result else None for p in pages]
        items = (
            PdfPage(PageSource(root / p.file, p.kind, p.page_index, root, p.content_hash), result)
            for p, result in zip(pages, results, strict=True)
        )
        output = self.settings.output
        scratch = document_work_dir(self.settings, document.id)
        scratch.mkdir(parents=True, exist_ok=True)
        title = Path(document.path).stem
        own = document.output is not None and Path(document.output) == (
            self.settings.folders.outbox / dest
        )
        written = write_atomically(
            self.settings.folders.outbox,
            dest,
            lambda tmp: assemble_pdf(
                items,
                tmp,
                title=title,
                policy=output.text_policy,
                chunk_pages=output.chunk_pages,
                image_dpi=output.image_dpi,
                scratch=scratch,
            ),
            replace=own,
        )
        write_sidecars(self.settings.folders.outbox, written, output.sidecars, results, title=title)
        return written

    def _wait(self, document: Document, reason: str) -> None:
        wait = self._publish_backoff.failed(document)
        self.store.mark_waiting(document.id, reason)
        self.store.log(document.id, None, "warning", "document_waiting", reason)
        log.warning("document_waiting", reason=reason, retry_seconds=wait)

    async def _fail(self, document: Document, reason: str) -> None:
        self.store.mark_failed(document.id, reason)
        self.store.log(document.id, None, "error", "document_failed", reason)
        log.error("document_failed", reason=reason)
        await self._clean_up(self.store.document_by_id(document.id))

    async def _clean_up(self, document: Document) -> None:
        """Clean a published or failed document, then record that it is clean; an
        error of the environment leaves it for a later try."""
        files = self.store.sealed_files(document.id)
        moved: dict[str, str] = {}
        try:
            await anyio.to_thread.run_sync(self._clean, document, files, moved)
        except OSError as exc:
            wait = self._clean_backoff.failed(document)
            log.error("cleanup_failed", document=document.path, error=str(exc), retry_seconds=wait)
            return
        finally:
            self.store.mark_moved(document.id, moved)  # those moved before an error too
        self._clean_backoff.succeeded(document)
        self.store.mark_cleaned(document.id)

    def _clean(self, document: Document, files: dict[str, str], moved: dict[str, str]) -> None:
        """Remove temp files and the marker; apply the source policy, or move a failed
        document's files to the failed folder with a reason file (blocking,
        idempotent). Each source is moved or deleted only while it still hashes to
        what was published (or judged); one that changed is left in place. ``moved``
        gains each file of ``files`` that is no longer in the inbox (moved, deleted,
        or already gone), as it goes.

        Raises:
            OSError: the environment's (a full failed folder, permissions); the caller
                tries again later.
        """
        remove_work_dir(self.settings, document.id)
        root = Path(document.root)
        is_folder = document.kind == "folder"
        if is_folder:
            _remove_marker(root, document.path, self.settings.intake.completion_marker)
        policy = self.settings.intake.source_policy
        if document.state == DocumentState.failed:
            self._apply(root, files, self.settings.folders.failed, moved)
            write_atomically(
                self.settings.folders.failed,
                f"{document.path}.reason.txt",
                lambda tmp: tmp.write_text(f"{document.path}: {document.error}\n", "utf-8"),
                replace=False,
            )
        elif policy is SourcePolicy.archive:
            self._apply(root, files, self.settings.folders.archive, moved)
        elif policy is SourcePolicy.delete:
            self._apply(root, files, None, moved)
        if is_folder and (
            document.state == DocumentState.failed or policy is not SourcePolicy.keep
        ):
            _remove_empty_dirs(root, document.path)

    @staticmethod
    def _apply(
        root: Path, files: dict[str, str], target: Path | None, moved: dict[str, str]
    ) -> None:
        """Move each file under ``target`` (never replacing an earlier one), or delete
        it when ``target`` is ``None``; only while it holds the bytes sealed. ``moved``
        gains each file no longer in the inbox afterwards."""
        for file, content_hash in sorted(files.items()):
            try:
                if target is None:
                    remove_verified(root, file, content_hash)
                else:
                    move_verified(root, file, content_hash, target)
            except FileNotFoundError:
                # already moved (a second run) or removed by the user; or the target
                # folder vanished and the file was put back
                if not _absent(root, file):
                    raise
            except (SourceChangedError, UnsafePathError) as exc:
                log.warning("source_left_in_place", file=file, reason=str(exc))
                continue
            moved[file] = content_hash


def _absent(root: Path, rel: str) -> bool:
    """True when nothing is at ``rel`` under ``root`` (looked up through folder
    descriptors, no link followed); False when something is, or when that cannot be
    told."""
    path = PurePosixPath(rel)
    try:
        dir_fd = open_dir(root, path.parent if str(path.parent) != "." else "")
    except FileNotFoundError:
        return True
    except (OSError, UnsafePathError):
        return False
    try:
        os.stat(path.name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    finally:
        os.close(dir_fd)
    return False


def _remove_marker(root: Path, folder: str, marker: str) -> None:
    try:
        dir_fd = open_dir(root, folder)
    except (FileNotFoundError, UnsafePathError):
        return
    try:
        os.unlink(marker, dir_fd=dir_fd)
    except FileNotFoundError:
        pass
    finally:
        os.close(dir_fd)


def _remove_empty_dirs(root: Path, folder: str) -> None:
    """Remove ``folder`` and its parents up to (not including) ``root`` while empty,
    through folder descriptors (a link is never followed)."""
    rel = PurePosixPath(folder)
    while rel.name:
        try:
            parent = open_dir(root, rel.parent if str(rel.parent) != "." else "")
        except (OSError, UnsafePathError):
            return
        try:
            os.rmdir(rel.name, dir_fd=parent)
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT, errno.ENOTDIR):
                log.warning("folder_not_removed", folder=str(rel), error=str(exc))
            return
        finally:
            os.close(parent)
        rel = rel.parent
