"""Finalize: assemble a complete document, publish it atomically, then clean up.

A document is published once it is complete and every page is terminal. Publishing
writes the PDF (and sidecars) into the outbox at the document's inbox path, then the
document is marked ``done`` / ``done_with_errors`` (or ``failed``) with ``cleaned = 0``;
cleaning (temp files, the completion marker, the source policy) runs after that and
again at start for any document a crash interrupted, so every step is idempotent.
"""

from __future__ import annotations

import errno
import json
import shutil
import time
from pathlib import Path

import anyio
import structlog

from .config import FailedPages, Settings, SourcePolicy
from .engine import OcrResult
from .files import numbered_paths, unused_path, write_atomically
from .intake import natural_key
from .pdf import PageSource, PageSourceError, PdfPage, assemble_pdf
from .scheduler import remove_work_dir
from .sidecars import write_sidecars
from .store import Document, Page, Store

__all__ = ["Finalizer", "OutsideOutboxError", "output_path"]

log = structlog.get_logger(__name__)

PUBLISH_RETRY = 30.0
"""Seconds before a publication that failed on an OS error (full disk, read-only
outbox) is tried again."""


def output_path(settings: Settings, document: Document) -> Path:
    """Where a document's PDF is published: its inbox path under the outbox, ``.pdf``
    added to a folder's name or put in place of a loose file's suffix."""
    rel = Path(document.path)
    name = rel.name + ".pdf" if document.kind == "folder" else rel.stem + ".pdf"
    dest = settings.folders.outbox / rel.parent / name
    outbox = settings.folders.outbox.resolve()
    if rel.is_absolute() or not dest.resolve().is_relative_to(outbox):
        raise OutsideOutboxError(f"{document.path!r} would be published outside {outbox}")
    return dest


class OutsideOutboxError(ValueError):
    """A document path that would map outside the outbox (invariant 8)."""


def _ordered(pages: list[Page]) -> list[Page]:
    return sorted(pages, key=lambda p: (natural_key(p.file), p.page_index))


class Finalizer:
    """Publishes ready documents and cleans up after them."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self._retry_at: dict[int, float] = {}
        """Document id -> monotonic time before which a failed publication is not retried."""

    async def run(self, *, stop: anyio.Event, idle: float = 0.25) -> None:
        """Publish and clean documents as they become ready, until ``stop`` is set."""
        await self.clean_all()
        while not stop.is_set():
            for document in self.store.documents_to_publish():
                if self._retry_at.get(document.id, 0.0) > time.monotonic():
                    continue
                with anyio.CancelScope(shield=True):  # a started publication finishes
                    await self.publish(document)
            with anyio.move_on_after(idle):
                await stop.wait()

    async def clean_all(self) -> None:
        """Finish cleaning documents whose cleaning a crash interrupted."""
        for document in self.store.documents(("done", "done_with_errors", "failed")):
            if not document.cleaned:
                await self._clean_up(document.id)

    async def publish(self, document: Document) -> None:
        """Assemble and publish one document, or fail it, then clean up."""
        with structlog.contextvars.bound_contextvars(document=document.path):
            self.store.set_document(document.id, state="publishing")
            pages = _ordered(self.store.pages(document.id))
            failed = [p for p in pages if p.state == "failed"]
            usable = [p for p in pages if p.kind != "bad"]
            reason = self._refusal(pages, failed, usable)
            if reason is not None:
                await self._fail(document, reason)
                return
            started = time.perf_counter()
            try:
                dest = self._destination(document)
                await anyio.to_thread.run_sync(self._write, document, usable, dest)
            except (PageSourceError, OutsideOutboxError) as exc:
                await self._fail(document, str(exc))
                return
            except OSError as exc:
                if exc.errno == errno.ENAMETOOLONG:
                    await self._fail(document, f"the output name is too long ({exc})")
                    return
                # e.g. ENOSPC or a read-only outbox: published once it is writable again
                self.store.set_document(document.id, state="complete", error=f"publish: {exc}")
                self.store.log(document.id, None, "error", "publish_failed", str(exc))
                log.error("publish_failed", error=str(exc), retry_seconds=PUBLISH_RETRY)
                self._retry_at[document.id] = time.monotonic() + PUBLISH_RETRY
                return
            except Exception as exc:
                # A page MuPDF cannot copy must not stop the daemon: restarted by systemd,
                # it would meet the same page again. The document fails with the reason.
                log.exception("assembly_failed")
                await self._fail(document, f"cannot assemble the PDF ({type(exc).__name__}: {exc})")
                return
            state = "done_with_errors" if failed else "done"
            errors = "; ".join(f"{p.file} page {p.page_index + 1}: {p.error}" for p in failed)
            self.store.set_document(
                document.id,
                state=state,
                output=str(dest),
                error=errors or None,
                version=document.version + 1,
                published_at=time.time(),
                cleaned=0,
            )
            self.store.log(document.id, None, "info", "document_published", str(dest))
            log.info(
                "document_published",
                output=str(dest),
                state=state,
                pages=len(usable),
                seconds=round(time.perf_counter() - started, 2),
            )
            await self._clean_up(document.id)

    def _refusal(self, pages: list[Page], failed: list[Page], usable: list[Page]) -> str | None:
        """Why the document cannot be published, or ``None``."""
        if not pages:
            return "the folder holds no pages"
        if len(failed) == len(pages):
            return "every page failed: " + "; ".join(
                f"{p.file} page {p.page_index + 1}: {p.error}" for p in failed
            )
        if failed and self.settings.intake.failed_pages is FailedPages.fail:
            return f"{len(failed)} page(s) failed and failed_pages = 'fail'"
        if not usable:
            return "no readable pages"
        return None

    def _destination(self, document: Document) -> Path:
        """Where this document is published.

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
        own = Path(document.output) if document.output else None
        outbox = self.settings.folders.outbox.resolve()
        if (
            own is not None
            and self.settings.intake.source_policy is SourcePolicy.keep
            and own.resolve().is_relative_to(outbox)
        ):
            return own
        dest = next(
            p
            for p in numbered_paths(natural)
            if p != own and not self.store.output_taken(str(p), document.id)
        )
        if dest != natural:
            log.warning("output_name_taken", wanted=str(natural), output=str(dest))
        return dest

    def _write(self, document: Document, pages: list[Page], dest: Path) -> None:
        """Assemble the PDF and sidecars at ``dest`` in the outbox (blocking)."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        root = Path(document.root)
        results = [OcrResult.from_dict(json.loads(p.result)) if p.result else None for p in pages]
        items = (
            PdfPage(PageSource(root / p.file, p.kind, p.page_index), result)
            for p, result in zip(pages, results, strict=True)
        )
        output = self.settings.output
        assemble_pdf(
            items,
            dest,
            title=Path(document.path).stem,
            policy=output.text_policy,
            chunk_pages=output.chunk_pages,
            image_dpi=output.image_dpi,
        )
        write_sidecars(dest, output.sidecars, results, title=Path(document.path).stem)

    async def _fail(self, document: Document, reason: str) -> None:
        self.store.set_document(document.id, state="failed", error=reason, cleaned=0)
        self.store.log(document.id, None, "error", "document_failed", reason)
        log.error("document_failed", reason=reason)
        await self._clean_up(document.id)

    async def _clean_up(self, document_id: int) -> None:
        """Clean a published or failed document, then record that it is clean."""
        document = self.store.document_by_id(document_id)
        files = sorted({p.file for p in self.store.pages(document_id)})
        await anyio.to_thread.run_sync(self._clean, document, files)
        self.store.set_document(document_id, cleaned=1)

    def _clean(self, document: Document, files: list[str]) -> None:
        """Remove temp files and the marker; apply the source policy or move a failed
        document's files to the failed folder with a reason file (blocking,
        idempotent)."""
        remove_work_dir(self.settings, document.id)
        root = Path(document.root)
        folder = root / document.path if document.kind == "folder" else None
        if folder is not None:
            (folder / self.settings.intake.completion_marker).unlink(missing_ok=True)
        if document.state == "failed":
            self._move_to(self.settings.folders.failed, root, files)
            reason_file = unused_path(self.settings.folders.failed / f"{document.path}.reason.txt")
            reason_file.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(
                reason_file,
                lambda tmp: tmp.write_text(f"{document.path}: {document.error}\n", "utf-8"),
            )
        elif self.settings.intake.source_policy is SourcePolicy.archive:
            self._move_to(self.settings.folders.archive, root, files)
        elif self.settings.intake.source_policy is SourcePolicy.delete:
            for file in files:
                (root / file).unlink(missing_ok=True)
        if folder is not None and (
            document.state == "failed"
            or self.settings.intake.source_policy is not SourcePolicy.keep
        ):
            _remove_empty_dirs(folder, root)

    @staticmethod
    def _move_to(target_root: Path, root: Path, files: list[str]) -> None:
        for file in files:
            source = root / file
            if not source.exists():
                continue
            dest = unused_path(target_root / file)  # never replaces an earlier original
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(source, dest)


def _remove_empty_dirs(folder: Path | None, root: Path) -> None:
    """Remove ``folder`` and its parents up to (not including) ``root`` while empty."""
    while folder is not None and folder != root and folder.is_relative_to(root):
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent
