"""End to end on real input: the daemon subprocess with the real PaddleOCR engine."""

from __future__ import annotations

import shutil

import pymupdf
import pytest
from harness import Daemon

pytestmark = pytest.mark.slow


def _render(pdf, index: int, dest, dpi: int) -> None:
    with pymupdf.open(pdf) as doc:
        doc[index].get_pixmap(dpi=dpi).save(dest)


def test_the_daemon_turns_corpus_scans_into_searchable_pdfs(tmp_path, corpus, shared_state):
    daemon = Daemon(
        tmp_path,
        engine="onnxruntime",
        extra='devices = ["cpu", "cpu"]\n',
    )
    shutil.copytree(shared_state / "models", daemon.state / "models")  # assembled once
    book = daemon.inbox / "book"
    book.mkdir(parents=True)
    shutil.copy(corpus / "images/crom.png", book / "scan1.png")
    _render(corpus / "pdf/francais.pdf", 0, book / "scan2.png", 150)
    _render(corpus / "pdf/multipage.pdf", 0, book / "scan10.png", 150)
    (daemon.inbox / "poster").mkdir()
    shutil.copy(corpus / "images/ch_en_num.jpg", daemon.inbox / "poster" / "front.jpg")
    shutil.copy(corpus / "pdf/multipage.pdf", daemon.inbox / "multipage.pdf")
    daemon.start()
    try:
        daemon.command("complete", str(book))
        daemon.command("complete", str(daemon.inbox / "poster"))
        daemon.wait_for(
            lambda: daemon.states() == {"book": "done", "poster": "done", "multipage.pdf": "done"},
            timeout=600,
            what="all three documents published",
        )
    finally:
        assert daemon.stop() == 0

    with pymupdf.open(daemon.outbox / "book.pdf") as doc:
        texts = [page.get_text() for page in doc]
    assert len(texts) == 3
    assert "cromulent" in texts[0]
    assert "whisky" in texts[1]
    assert "tip-toeing" in texts[2]
    with pymupdf.open(daemon.outbox / "poster.pdf") as doc:
        assert doc.page_count == 1 and "正品促销" in doc[0].get_text()
    with (
        pymupdf.open(daemon.outbox / "multipage.pdf") as doc,
        pymupdf.open(corpus / "pdf/multipage.pdf") as source,
    ):
        assert doc.page_count == 6
        for index, page in enumerate(doc):
            assert page.get_images(full=True)[0][2:4] == source[index].get_images(full=True)[0][2:4]
        assert "Lord" in doc[4].get_text()
    status = {row["path"]: row for row in daemon.status()}
    assert [status[p]["pages_done"] for p in ("book", "poster", "multipage.pdf")] == [3, 1, 6]
    assert list((daemon.state / "cache" / "documents").rglob("*")) == []
    assert list((daemon.state / "cache" / "workers").rglob("*")) == []
