"""Data safety: the defects a hostile afternoon found (issue 8), one test each, and the
mechanisms that rule out their class (links never followed, sources checked against
their hash, a publication recorded only for the pages it holds, environment errors
waiting instead of failing)."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import time
from pathlib import Path

import anyio
import pytest
from harness import Daemon, page_image, pdf_texts
from PIL import Image

from bench.daemon import make_big_pdf
from daemon.config import Settings, TextPolicy
from daemon.files import (
    SourceChangedError,
    UnsafePathError,
    fit_name,
    move_verified,
    open_source,
    remove_verified,
    write_atomically,
)
from daemon.finalize import Finalizer
from daemon.pdf import expand_pages, skipped_pages
from daemon.status import status_rows
from daemon.store import DocumentState, Store


def _tree(folder: Path) -> dict[str, tuple[int, bytes]]:
    """Every file under ``folder`` with its mtime and bytes."""
    return {
        str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _policy(daemon: Daemon, policy: str) -> None:
    text = daemon.config.read_text()
    daemon.config.write_text(text.replace("[intake]\n", f'[intake]\nsource_policy = "{policy}"\n'))


# -- files.py: the mechanisms --------------------------------------------------------


def test_no_open_follows_a_link_anywhere_on_the_path(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    page_image(outside / "p1.png")
    (root / "real").mkdir(parents=True)
    os.symlink(outside, root / "dir-link")
    os.symlink(outside / "p1.png", root / "real" / "file-link.png")
    for rel in ("dir-link/p1.png", "real/file-link.png", "../outside/p1.png", "/etc/passwd"):
        with pytest.raises(UnsafePathError), open_source(root, rel):
            pass
    with pytest.raises(UnsafePathError):
        write_atomically(root, "dir-link/new.pdf", lambda tmp: tmp.write_bytes(b"x"))
    assert sorted(p.name for p in outside.iterdir()) == ["p1.png"]


def test_a_source_that_changed_since_it_was_read_is_refused(tmp_path):
    path = page_image(tmp_path / "p.png")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    with open_source(tmp_path, "p.png", digest) as opened:
        assert opened.path.read_bytes() == path.read_bytes()
    page_image(tmp_path / "p.png", seed="other")  # new bytes under the old name
    with pytest.raises(SourceChangedError), open_source(tmp_path, "p.png", digest):
        pass
    with pytest.raises(SourceChangedError), open_source(tmp_path, "p.png") as opened:
        with path.open("ab") as f:  # written while open
            f.write(b"more")
    with pytest.raises(SourceChangedError):
        remove_verified(tmp_path, "p.png", digest)
    assert path.exists()  # never deleted: it is not what was published
    with pytest.raises(SourceChangedError):
        move_verified(tmp_path, "p.png", digest, tmp_path / "archive")
    assert path.exists() and not (tmp_path / "archive" / "p.png").exists()


def test_a_verified_file_is_moved_or_removed_and_nothing_else(tmp_path):
    first = page_image(tmp_path / "in" / "d" / "p.png")
    digest = hashlib.sha256(first.read_bytes()).hexdigest()
    page_image(tmp_path / "archive" / "d" / "p.png", seed="older")  # an earlier original
    assert str(move_verified(tmp_path / "in", "d/p.png", digest, tmp_path / "archive")) == (
        "d/p (2).png"
    )
    assert not first.exists()
    second = page_image(tmp_path / "in" / "q.png")
    remove_verified(tmp_path / "in", "q.png", hashlib.sha256(second.read_bytes()).hexdigest())
    assert not second.exists()


def test_derived_names_always_fit_the_file_system():
    name = fit_name("é" * 200 + ".reason.txt")
    assert len(name.encode()) <= 255 and name.endswith(".reason.txt")
    assert fit_name("short.pdf") == "short.pdf"


# -- the finalizer: a publication records exactly the pages it holds ----------------


def _one_page_document(tmp_path: Path) -> tuple[Finalizer, Store, int, Path]:
    settings = Settings.model_validate(
        {
            "folders": {
                "inbox": [str(tmp_path / "inbox")],
                "outbox": str(tmp_path / "outbox"),
                "failed": str(tmp_path / "failed"),
                "state": str(tmp_path / "state"),
            },
            "intake": {"settle_seconds": 0},
        }
    )
    store = Store.open(settings.database)
    root = str((tmp_path / "inbox").resolve())
    document = store.add_document(root, "doc", "folder")
    for name in ("p1.png", "p2.png"):
        path = page_image(tmp_path / "inbox" / "doc" / name)
        store.add_file(
            document.id,
            f"doc/{name}",
            kind="image",
            pages=1,
            size=path.stat().st_size,
            mtime_ns=path.stat().st_mtime_ns,
            content_hash=hashlib.sha256(path.read_bytes()).hexdigest(),
        )
    for page in store.pages(document.id):
        result = {"width": 300, "height": 200, "dpi": 300.0, "lines": []}
        store.page_done(page.id, result, 0.1, device="cpu")
    store.mark_complete(document.id)
    return Finalizer(settings, store), store, document.id, tmp_path / "inbox" / "doc"


def test_a_page_added_while_publishing_reopens_the_document(tmp_path, monkeypatch):
    finalizer, store, doc_id, folder = _one_page_document(tmp_path)
    real = Finalizer._write

    def add_meanwhile(self, document, pages, dest):
        written = real(self, document, pages, dest)
        late = page_image(folder / "zz-new.png")  # intake takes it while the PDF is written
        digest = hashlib.sha256(late.read_bytes()).hexdigest()
        anyio.from_thread.run_sync(
            lambda: store.add_file(
                doc_id,
                "doc/zz-new.png",
                kind="image",
                pages=1,
                size=1,
                mtime_ns=1,
                content_hash=digest,
            )
        )
        return written

    monkeypatch.setattr(Finalizer, "_write", add_meanwhile)
    anyio.run(finalizer.publish, store.documents_to_publish(time.time())[0])
    document = store.document_by_id(doc_id)
    assert document.state == DocumentState.complete  # not done 3/3 with 2 pages
    assert document.version == 0 and store.sealed_files(doc_id) == {}


def test_a_page_replaced_while_publishing_never_gets_the_old_text(tmp_path, monkeypatch):
    finalizer, store, doc_id, folder = _one_page_document(tmp_path)
    real = Finalizer._write

    def replace_first(self, document, pages, dest):
        page_image(folder / "p1.png", seed="new scan")
        return real(self, document, pages, dest)

    monkeypatch.setattr(Finalizer, "_write", replace_first)
    anyio.run(finalizer.publish, store.documents_to_publish(time.time())[0])
    document = store.document_by_id(doc_id)
    assert document.state == DocumentState.complete
    assert sorted(p.file for p in store.pages(doc_id)) == ["doc/p2.png"]  # p1 is read again
    assert not (tmp_path / "outbox" / "doc.pdf").exists()
    assert list((tmp_path / "outbox").rglob("*")) == []  # no temp file left


def test_a_full_disk_at_publishing_waits_and_never_fails_the_document(tmp_path, monkeypatch):
    finalizer, store, doc_id, _ = _one_page_document(tmp_path)

    def full(self, document, pages, dest):
        raise OSError(28, "cannot write /x: code=2: cannot fwrite: No space left on device")

    monkeypatch.setattr(Finalizer, "_write", full)
    anyio.run(finalizer.publish, store.documents_to_publish(time.time())[0])
    document = store.document_by_id(doc_id)
    assert document.state == DocumentState.waiting
    assert "No space left" in document.error
    assert not (tmp_path / "failed").exists()  # sources stay in the inbox


# -- the daemon: each defect as it was found -------------------------------------------


@pytest.mark.slow
def test_a_folder_swapped_for_a_link_is_never_read_published_or_deleted(daemon, tmp_path):
    """Defect 1: ``mv d x; ln -s /victim d`` while ``d`` is read, source_policy delete."""
    _policy(daemon, "delete")
    daemon.env["FAKE_ENGINE_DELAY"] = "0.7"
    victim = tmp_path / "victim"
    for name in ("p1.png", "p2.png", "p3.png", "p4.png"):
        page_image(daemon.inbox / "d" / name)
        page_image(victim / name, seed="victim " + name)
    before = _tree(victim)
    (daemon.inbox / "d" / ".complete").touch()
    daemon.start()
    daemon.wait_for(lambda: len(daemon.engine_done()) >= 1, what="the first page read")
    (daemon.inbox / "d").rename(daemon.inbox / "x")
    os.symlink(victim, daemon.inbox / "d")
    daemon.command("complete", str(daemon.inbox / "x"))
    daemon.wait_for(lambda: daemon.states().get("x") == "done", what="x published")
    daemon.wait_for(lambda: daemon.states().get("d") == "gone", what="d gone")
    assert daemon.stop() == 0
    assert _tree(victim) == before  # nothing read into a PDF, nothing deleted
    assert pdf_texts(daemon.outbox / "x.pdf") == ["p1", "p2", "p3", "p4"]
    assert not (daemon.outbox / "d.pdf").exists()
    assert not (tmp_path / "failed").exists() or not list((tmp_path / "failed").rglob("*"))


def test_a_file_name_too_long_for_its_reason_file_does_not_stop_the_daemon(daemon, tmp_path):
    """Defect 3: a 250-character name fails, its reason file is named to fit."""
    name = "a" * 250 + ".jpg"
    daemon.inbox.mkdir(parents=True)
    (daemon.inbox / name).write_bytes(os.urandom(3000))
    daemon.start()
    daemon.wait_for(lambda: daemon.states().get(name) == "failed", what="the bad file failed")
    page_image(daemon.inbox / "good.png")
    daemon.wait_for(lambda: daemon.states().get("good.png") == "done", what="a good file")
    assert daemon.stop() == 0
    reasons = list((tmp_path / "failed").glob("*.reason.txt"))
    assert len(reasons) == 1 and name in reasons[0].read_text()
    assert (tmp_path / "failed" / name).exists()


def test_a_link_planted_in_the_failed_folder_is_never_written_through(daemon, tmp_path):
    """Defect 4: ``ln -s /dir failed/sub``, then a bad document ``inbox/sub/inner``."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "failed").mkdir()
    os.symlink(elsewhere, tmp_path / "failed" / "sub")
    (daemon.inbox / "sub" / "inner").mkdir(parents=True)
    (daemon.inbox / "sub" / "inner" / "bad.png").write_bytes(b"not a png")
    (daemon.inbox / "sub" / "inner" / ".complete").touch()
    daemon.start()
    daemon.wait_for(lambda: daemon.states().get("sub/inner") == "failed")
    time.sleep(1)
    page_image(daemon.inbox / "after.png")
    daemon.wait_for(lambda: daemon.states().get("after.png") == "done", what="daemon alive")
    assert daemon.stop() == 0
    assert list(elsewhere.iterdir()) == []
    assert (daemon.inbox / "sub" / "inner" / "bad.png").exists()  # kept where it was
    assert "cleanup_failed" in daemon.log_path.read_text()


def test_a_link_planted_in_the_outbox_keeps_the_document_waiting(daemon, tmp_path):
    """Defect 9: the link is refused, the document waits with the reason, and is
    published once the link is gone; its sources never leave the inbox meanwhile."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    daemon.outbox.mkdir(parents=True)
    os.symlink(elsewhere, daemon.outbox / "sub")
    page_image(daemon.inbox / "sub" / "doc" / "p1.png")
    (daemon.inbox / "sub" / "doc" / ".complete").touch()
    daemon.start()
    daemon.wait_for(lambda: daemon.states().get("sub/doc") == "waiting")
    (row,) = [r for r in daemon.status() if r["path"] == "sub/doc"]
    assert "link" in row["error"]
    assert (daemon.inbox / "sub" / "doc" / "p1.png").exists()
    (daemon.outbox / "sub").unlink()
    daemon.wait_for(lambda: daemon.states().get("sub/doc") == "done", timeout=60)
    assert daemon.stop() == 0
    assert list(elsewhere.iterdir()) == []
    assert pdf_texts(daemon.outbox / "sub" / "doc.pdf") == ["p1"]


def _mount_tmpfs(path: Path, size: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs for a real full disk: {done.stderr.strip()}")


@pytest.mark.slow
def test_a_really_full_outbox_waits_and_publishes_once_there_is_room(daemon, tmp_path):
    """Defect 6: MuPDF's 'cannot fwrite: No space left on device' is the environment's."""
    _mount_tmpfs(daemon.outbox, "3m")
    try:
        filler = daemon.outbox / "filler"
        filler.write_bytes(b"\0" * (3 * 1024 * 1024 - 64 * 1024))
        (daemon.inbox / "big").mkdir(parents=True)
        for name in ("p1.png", "p2.png"):  # noise: about 0.75 MB each, even as PNG
            noise = Image.frombytes("RGB", (500, 500), os.urandom(500 * 500 * 3))
            noise.save(daemon.inbox / "big" / name)
        (daemon.inbox / "big" / ".complete").touch()
        daemon.start()
        daemon.wait_for(lambda: daemon.states().get("big") == "waiting", what="waiting")
        (row,) = [r for r in daemon.status() if r["path"] == "big"]
        assert "no space left on device" in row["error"], row
        filler.unlink()
        daemon.wait_for(lambda: daemon.states().get("big") == "done", timeout=90)
        assert daemon.stop() == 0
        assert pdf_texts(daemon.outbox / "big.pdf") == ["p1", "p2"]
        assert not (tmp_path / "failed").exists() or not list((tmp_path / "failed").rglob("*"))
    finally:
        if daemon.process is not None and daemon.process.poll() is None:
            daemon.stop(signal.SIGKILL)
        subprocess.run(["umount", str(daemon.outbox)], check=False)


@pytest.mark.slow
def test_a_marker_first_copy_ends_in_one_pdf_of_every_page(daemon):
    """Defect 7, ``cp -r`` with the marker first: pages keep coming for longer than
    stable_seconds; the folder is published once settled."""
    text = daemon.config.read_text().replace("settle_seconds = 0.3", "settle_seconds = 2")
    daemon.config.write_text(text)
    daemon.start()
    daemon.wait_ready()
    folder = daemon.inbox / "scan"
    folder.mkdir(parents=True)
    (folder / ".complete").touch()
    for n in range(1, 5):
        time.sleep(0.8)  # longer than stable_seconds (0.3), shorter than settling
        page_image(folder / f"p{n}.png")
    daemon.wait_for(lambda: daemon.states().get("scan") == "done")
    (row,) = [r for r in daemon.status() if r["path"] == "scan"]
    assert daemon.stop() == 0
    assert row["version"] == 1
    assert pdf_texts(daemon.outbox / "scan.pdf") == ["p1", "p2", "p3", "p4"]


@pytest.mark.slow
def test_a_scanner_pausing_between_pages_republishes_with_no_second_marker(daemon):
    """Defect 7, a scanner pausing longer than settling: each pause publishes, and
    the last version holds every page; an empty marked folder only waits."""
    daemon.start()
    daemon.wait_ready()
    folder = daemon.inbox / "scanner"
    folder.mkdir(parents=True)
    (folder / ".complete").touch()
    daemon.wait_for(lambda: daemon.states().get("scanner") == "waiting", what="waits for pages")
    assert folder.is_dir()  # never deleted while the scanner may write into it
    for n in range(1, 4):
        page_image(folder / f"p{n}.png")
        daemon.wait_for(
            lambda n=n: _published(daemon, "scanner") == [f"p{i}" for i in range(1, n + 1)],
            what=f"version with {n} pages",
        )
    assert daemon.stop() == 0


def _published(daemon: Daemon, path: str) -> list[str] | None:
    rows = [r for r in daemon.status() if r["path"] == path and r["state"] == "done"]
    return pdf_texts(Path(rows[0]["output"])) if rows else None


def test_a_file_with_an_mtime_in_the_future_does_not_block_quiet_completion(tmp_path):
    """Defect 10."""
    daemon = Daemon(tmp_path)
    text = daemon.config.read_text().replace("[intake]\n", "[intake]\nquiet_seconds = 1\n")
    daemon.config.write_text(text)
    page = page_image(daemon.inbox / "future" / "p1.png")
    os.utime(page, (time.time() + 86400, time.time() + 86400))
    daemon.start()
    try:
        daemon.wait_for(lambda: daemon.states().get("future") == "done", timeout=30)
    finally:
        assert daemon.stop() == 0


def test_a_renamed_folder_reuses_its_ocr_and_a_deleted_one_is_gone(daemon, tmp_path):
    """Defect 11: no false failed document, no reason file, nothing read twice."""
    for name in ("p1.png", "p2.png"):
        page_image(daemon.inbox / "before" / name)
    page_image(daemon.inbox / "doomed" / "q1.png")
    daemon.start()
    daemon.wait_for(lambda: len(daemon.engine_done()) == 3, what="three pages read")
    (daemon.inbox / "before").rename(daemon.inbox / "after")
    for path in (daemon.inbox / "doomed").iterdir():
        path.unlink()
    (daemon.inbox / "doomed").rmdir()
    daemon.command("complete", str(daemon.inbox / "after"))
    daemon.wait_for(lambda: daemon.states().get("after") == "done")
    daemon.wait_for(
        lambda: daemon.states().get("before") == "gone" and daemon.states().get("doomed") == "gone"
    )
    assert daemon.stop() == 0
    assert sorted(daemon.engine_done()) == ["p1.png", "p2.png", "q1.png"]  # read once
    assert pdf_texts(daemon.outbox / "after.pdf") == ["p1", "p2"]
    assert not (tmp_path / "failed").exists() or not list((tmp_path / "failed").rglob("*"))


# -- defect 8: memory of a long PDF, and an ETA that holds ---------------------------


def test_listing_the_pages_of_a_long_pdf_does_not_keep_its_images(tmp_path):
    """MuPDF's store kept every image it loaded (up to 256 MB): 300 scanned pages
    took the daemon from 150 to 400 MB while intake listed them."""
    make_big_pdf(tmp_path / "long.pdf", pages=30)  # 27 MB: it grew 9 MB, and 250 of 267

    def rss() -> float:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGESIZE")

    (first,) = expand_pages(tmp_path / "long.pdf")[:1]
    before = rss()
    assert skipped_pages(first, TextPolicy.skip) == set()
    grown = rss() - before
    size = (tmp_path / "long.pdf").stat().st_size
    assert grown < size / 10, (grown, size)  # the images are not kept


def test_the_eta_counts_the_pages_ahead_at_the_pace_the_daemon_reads(tmp_path):
    settings = Settings.model_validate({"folders": {"state": str(tmp_path / "state")}})
    store = Store.open(settings.database)
    now = time.time()
    first = store.add_document("/in", "first", "folder")
    second = store.add_document("/in", "second", "folder")
    store.add_file(
        first.id, "first/a.pdf", kind="pdf", pages=40, size=1, mtime_ns=1, content_hash="a"
    )
    store.add_file(
        second.id, "second/b.pdf", kind="pdf", pages=10, size=1, mtime_ns=1, content_hash="b"
    )
    store.mark_complete(first.id)
    result = {"width": 10, "height": 10, "dpi": 300.0, "lines": []}
    for n, page in enumerate(store.pages(first.id)[:20]):  # one page every 2 s
        store.page_done(page.id, result, 0.1, device="cpu")
        store.db.execute(
            "UPDATE pages SET finished_at = ? WHERE id = ?", [now - 40 + 2 * n, page.id]
        )
    store.close()

    rows = {r["path"]: r for r in status_rows(settings)}
    assert rows["first"]["eta_seconds"] == pytest.approx(20 * 2, rel=0.1)  # 20 pages left
    assert rows["second"]["eta_seconds"] == pytest.approx(30 * 2, rel=0.1)  # after first's


@pytest.mark.slow
def test_a_worker_that_cannot_restart_makes_pages_wait_and_never_ends_the_daemon(tmp_path):
    """Invariant 11: a device lost after the start (the engine fails to load on
    restart) is tried again with backoff; the daemon lives and reads on once it is back."""
    lost = tmp_path / "device-lost"
    daemon = Daemon(tmp_path, extra="max_attempts = 1\n", env={"FAKE_ENGINE_FAIL_IF": str(lost)})
    daemon.start()
    try:
        daemon.wait_ready()
        lost.touch()
        page_image(daemon.inbox / "crash.png")  # the worker dies; its restart fails
        daemon.wait_for(lambda: "worker_start_failed" in daemon.log_path.read_text())
        page_image(daemon.inbox / "after.png")
        time.sleep(1)
        assert daemon.process.poll() is None
        assert daemon.states().get("after.png") != "done"  # waits for the device
        lost.unlink()
        daemon.wait_for(lambda: daemon.states().get("after.png") == "done", timeout=60)
        assert daemon.states()["crash.png"] == "failed"
    finally:
        assert daemon.stop() == 0
