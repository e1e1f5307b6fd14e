"""Bad input: each case gets a clear error in status, a known fate, and the daemon goes on."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import anyio
import pymupdf
import pytest
from harness import Daemon
from PIL import Image

from daemon.config import Settings
from daemon.finalize import Finalizer, OutsideOutboxError, output_path
from daemon.store import Document, Store


def _png(path: Path, seed: int = 0, size=(120, 80)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", size, "white")
    image.putpixel((seed % size[0], seed // size[0] % size[1]), (0, 0, 0))
    image.save(path, format="PNG")
    return path


def _bomb_png(path: Path) -> None:
    """A valid PNG header claiming 100000 x 100000 pixels (a decompression bomb)."""
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    data = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk
    data += struct.pack(">I", zlib.crc32(chunk)) + struct.pack(">I", 0) + b"IEND"
    path.write_bytes(data + struct.pack(">I", zlib.crc32(b"IEND")))


def _encrypted_pdf(path: Path) -> None:
    doc = pymupdf.open()
    doc.new_page().insert_text((72, 72), "secret")
    doc.save(path, encryption=pymupdf.PDF_ENCRYPT_AES_256, user_pw="u", owner_pw="o")


ZERO_PAGE_PDF = (
    b"%PDF-1.4\n1 0 obj <</Type /Catalog /Pages 2 0 R>> endobj\n"
    b"2 0 obj <</Type /Pages /Kids [] /Count 0>> endobj\n"
    b"trailer <</Root 1 0 R /Size 3>>\n%%EOF\n"
)

# name -> (expected state, error text, fate: "failed" folder, "kept" in place, "published")
LOOSE_CASES = {
    "empty.png": ("failed", "not a readable image", "failed"),
    "truncated.jpg": ("failed", "truncated", "failed"),
    "truncated.png": ("failed", "not a readable image", "failed"),
    "random.jpg": ("failed", "cannot identify image file", "failed"),
    "invalid.pdf": ("failed", "not a readable PDF", "failed"),
    "encrypted.pdf": ("failed", "the PDF is encrypted and needs a password", "failed"),
    "zero-pages.pdf": ("failed", "PDF", "failed"),
    "empty.pdf": ("failed", "not a readable PDF", "failed"),
    "bomb.png": ("failed", "decompression bomb", "failed"),
    "notes.docx": ("failed", "unsupported file type '.docx'", "failed"),
    "readme.txt": ("failed", "unsupported file type '.txt'", "failed"),
    "anim.gif": ("failed", "unsupported file type '.gif'", "failed"),
    "mislabelled.jpg": ("done", None, "published"),
    "a" * 240 + ".png": ("done", None, "published"),
    "dup1.png": ("done", None, "published"),
}


def _drop_cases(inbox: Path, corpus: Path) -> None:
    inbox.mkdir(parents=True, exist_ok=True)
    (inbox / "empty.png").write_bytes(b"")
    (inbox / "truncated.jpg").write_bytes((corpus / "images/ch_en_num.jpg").read_bytes()[:3000])
    (inbox / "truncated.png").write_bytes((corpus / "images/baiona.png").read_bytes()[:3000])
    (inbox / "random.jpg").write_bytes(os.urandom(5000))
    shutil.copy(corpus / "bad/invalid.pdf", inbox / "invalid.pdf")
    _encrypted_pdf(inbox / "encrypted.pdf")
    (inbox / "zero-pages.pdf").write_bytes(ZERO_PAGE_PDF)
    (inbox / "empty.pdf").write_bytes(b"")
    _bomb_png(inbox / "bomb.png")
    (inbox / "notes.docx").write_bytes(b"PK\x03\x04" + os.urandom(100))
    (inbox / "readme.txt").write_text("not a scan")
    Image.new("RGB", (10, 10)).save(inbox / "anim.gif")
    _png(inbox / "mislabelled.jpg", seed=5)  # PNG data under a .jpg name: still read
    _png(inbox / ("a" * 240 + ".png"), seed=6)
    _png(inbox / "dup1.png", seed=7)
    # Folders.
    (inbox / "empty-folder").mkdir()
    (inbox / "empty-folder" / ".complete").touch()
    _png(inbox / "mixed" / "p1.png", seed=8)
    (inbox / "mixed" / "p2.jpg").write_bytes(os.urandom(3000))
    (inbox / "mixed" / ".complete").touch()
    os.symlink(corpus / "images/crom.png", inbox / "escape.png")
    os.symlink("dup1.png", inbox / "inside-link.png")  # inside the inbox: refused too
    with open(os.fsencode(inbox) + b"/caf\xe9.png", "wb") as f:
        f.write((inbox / "dup1.png").read_bytes())


def test_bad_input_is_reported_and_set_aside_while_good_input_goes_on(tmp_path, corpus):
    daemon = Daemon(tmp_path)
    _drop_cases(daemon.inbox, corpus)
    daemon.start()
    try:
        daemon.wait_for(
            lambda: (
                len(daemon.states()) >= len(LOOSE_CASES) + 5
                and all(
                    s in ("done", "done_with_errors", "failed")
                    for path, s in daemon.states().items()
                    if path != "empty-folder"
                )
            ),
            timeout=180,
            what="every case settled",
        )
        _png(daemon.inbox / "late" / "q1.png", seed=9)  # the daemon still serves
        daemon.command("complete", str(daemon.inbox / "late"))
        shutil.copy(daemon.inbox / "dup1.png", daemon.inbox / "dup2.png")  # dropped again
        daemon.wait_for(lambda: daemon.states().get("late") == "done", what="late document")
        daemon.wait_for(lambda: daemon.states().get("dup2.png") == "done", what="dup2")
        rows = {row["path"]: row for row in daemon.status()}
    finally:
        assert daemon.stop() == 0

    failed_dir = tmp_path / "failed"
    for name, (state, error, fate) in LOOSE_CASES.items():
        row = rows[name]
        assert row["state"] == state, (name, row)
        if error:
            assert error in row["error"], (name, row["error"])
            assert name in (failed_dir / f"{name}.reason.txt").read_text()
        if fate == "failed":
            assert (failed_dir / name).exists() and not (daemon.inbox / name).exists(), name
        if fate == "published":
            assert (daemon.outbox / (Path(name).stem + ".pdf")).exists(), name
            assert (daemon.inbox / name).exists(), name
    assert "dup2.png" not in daemon.engine_done()  # the same content is read once
    assert (daemon.outbox / "dup2.pdf").exists()
    assert rows["empty-folder"]["state"] == "waiting"  # for pages; nothing deleted
    assert rows["empty-folder"]["error"] == "the folder holds no pages yet"
    assert (daemon.inbox / "empty-folder" / ".complete").exists()
    assert rows["mixed"]["state"] == "done_with_errors"
    assert "mixed/p2.jpg page 1: not a readable image" in rows["mixed"]["error"]
    assert (daemon.inbox / "mixed" / "p2.jpg").exists()  # left in place, recorded
    with pymupdf.open(daemon.outbox / "mixed.pdf") as doc:
        assert doc.page_count == 1
    assert rows["escape.png"]["state"] == "failed"
    assert "never follows links" in rows["escape.png"]["error"]
    assert not (daemon.outbox / "escape.pdf").exists()
    assert rows["inside-link.png"]["state"] == "failed"
    assert (daemon.inbox / "inside-link.png").is_symlink()  # left in place
    assert rows["caf\\xe9.png"]["state"] == "failed"
    assert "not valid UTF-8" in rows["caf\\xe9.png"]["error"]
    assert os.path.exists(os.fsencode(daemon.inbox) + b"/caf\xe9.png")
    assert list(daemon.outbox.rglob(".*")) == []  # no temp files left behind


def test_a_file_still_being_written_is_taken_once_it_stops_growing(tmp_path):
    daemon = Daemon(tmp_path)
    daemon.config.write_text(
        daemon.config.read_text().replace("stable_seconds = 0.3", "stable_seconds = 1.5")
    )
    daemon.start()
    try:
        daemon.wait_ready()
        data = _png(tmp_path / "src.png", seed=3, size=(400, 300)).read_bytes()
        target = daemon.inbox / "growing.png"
        with target.open("wb") as f:
            for start in range(0, len(data), len(data) // 4 + 1):
                f.write(data[start : start + len(data) // 4 + 1])
                f.flush()
                time.sleep(0.5)
        daemon.wait_for(lambda: daemon.states().get("growing.png") == "done")
    finally:
        assert daemon.stop() == 0
    assert daemon.engine_done() == ["growing.png"]  # read once, whole


def test_a_file_deleted_after_it_was_seen_is_forgotten(tmp_path):
    daemon = Daemon(tmp_path)
    _png(daemon.inbox / "vanish" / "a.png", seed=1)
    _png(daemon.inbox / "vanish" / "b.png", seed=2)
    daemon.start()
    try:
        daemon.wait_for(lambda: [r for r in daemon.status() if r["pages_total"] == 2])
        (daemon.inbox / "vanish" / "b.png").unlink()
        daemon.wait_for(lambda: [r for r in daemon.status() if r["pages_total"] == 1])
        daemon.command("complete", str(daemon.inbox / "vanish"))
        daemon.wait_for(lambda: daemon.states().get("vanish") == "done")
    finally:
        assert daemon.stop() == 0
    with pymupdf.open(daemon.outbox / "vanish.pdf") as doc:
        assert [p.get_text().strip() for p in doc] == ["a"]


def test_a_corrupt_state_database_stops_the_daemon_and_is_left_alone(tmp_path):
    daemon = Daemon(tmp_path)
    daemon.state.mkdir(parents=True)
    junk = b"SQLite format 3\x00" + os.urandom(4096)
    (daemon.state / "state.db").write_bytes(junk)
    done = daemon.command("run", check=False)
    assert done.returncode == 5
    assert "state database" in done.stderr and "state.db" in done.stderr
    assert (daemon.state / "state.db").read_bytes() == junk


def test_hugemono_is_rasterised_within_the_pixel_cap(corpus, tmp_path):
    """A 35000 x 35000 px page renders at a lower DPI in a child process whose memory
    is capped at 1.5 GB (an OOM would kill it)."""
    code = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_AS, (1_500_000_000, 1_500_000_000))\n"
        "from pathlib import Path\n"
        "from daemon.pdf import PageSource, render_page\n"
        f"dpi = render_page(PageSource(Path({str(corpus / 'pdf/hugemono.pdf')!r}), 'pdf', 0),"
        f" Path({str(tmp_path / 'page.tif')!r}), dpi=300, max_pixels=50_000_000)\n"
        "print(dpi)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    dpi = float(done.stdout.split()[-1])
    assert dpi < 300
    with Image.open(tmp_path / "page.tif") as im:
        assert im.size[0] * im.size[1] <= 50_000_000


def _ready_to_publish(tmp_path: Path) -> tuple[Finalizer, Store, Document]:
    """A one-page document ``doc`` whose page is read and which is marked complete."""
    settings = Settings.model_validate(
        {
            "folders": {
                "inbox": [str(tmp_path / "inbox")],
                "outbox": str(tmp_path / "outbox"),
                "failed": str(tmp_path / "failed"),
                "state": str(tmp_path / "state"),
            }
        }
    )
    page = _png(tmp_path / "inbox" / "doc" / "p1.png")
    store = Store.open(settings.database)
    root = str((tmp_path / "inbox").resolve())
    document = store.add_document(root, "doc", "folder")
    digest = hashlib.sha256(page.read_bytes()).hexdigest()
    store.add_file(
        document.id, "doc/p1.png", kind="image", pages=1, size=1, mtime_ns=1, content_hash=digest
    )
    (page,) = store.pages(document.id)
    store.page_done(
        page.id, {"width": 120, "height": 80, "dpi": 300.0, "lines": []}, 0.1, device="cpu"
    )
    store.mark_complete(document.id)
    return Finalizer(settings, store), store, document


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EACCES])
def test_a_publication_that_hits_a_full_or_read_only_outbox_is_retried(tmp_path, monkeypatch, code):
    finalizer, store, document = _ready_to_publish(tmp_path)
    real = Finalizer._write
    calls = []

    def full_once(self, doc, pages, dest):
        calls.append(1)
        if len(calls) == 1:
            raise OSError(code, os.strerror(code))
        return real(self, doc, pages, dest)

    monkeypatch.setattr(Finalizer, "_write", full_once)
    anyio.run(finalizer.publish, store.documents_to_publish(time.time())[0])
    after_failure = store.document_by_id(document.id)
    assert after_failure.state == "waiting"
    assert os.strerror(code) in after_failure.error
    assert not (tmp_path / "outbox" / "doc.pdf").exists()
    anyio.run(finalizer.publish, store.documents_to_publish(time.time())[0])
    assert store.document_by_id(document.id).state == "done"
    assert (tmp_path / "outbox" / "doc.pdf").exists()


def test_an_unforeseen_assembly_error_fails_the_document_and_not_the_daemon(tmp_path, monkeypatch):
    finalizer, store, document = _ready_to_publish(tmp_path)

    def broken(self, doc, pages, dest):
        raise RuntimeError("code=7: cannot find object in xref (12 0 R)")  # as MuPDF says

    monkeypatch.setattr(Finalizer, "_write", broken)
    anyio.run(finalizer.publish, store.documents_to_publish(time.time())[0])
    failed = store.document_by_id(document.id)
    assert failed.state == "failed"
    assert failed.error == (
        "cannot assemble the PDF (RuntimeError: code=7: cannot find object in xref (12 0 R))"
    )
    assert not (tmp_path / "outbox").exists() or list((tmp_path / "outbox").iterdir()) == []
    assert (tmp_path / "failed" / "doc" / "p1.png").exists()  # the scan kept, with why
    assert failed.error in (tmp_path / "failed" / "doc.reason.txt").read_text()


def test_a_document_path_that_would_leave_the_outbox_is_refused(tmp_path):
    settings = Settings.model_validate({"folders": {"outbox": str(tmp_path / "outbox")}})
    for path in ("../../etc/evil", "/etc/evil"):
        document = Document(
            1, str(tmp_path), path, "folder", "complete", True, 0, None, None, 0.0, True, 0
        )
        with pytest.raises(OutsideOutboxError):
            output_path(settings, document)


def test_documents_that_map_to_one_output_path_never_overwrite_each_other(tmp_path):
    daemon = Daemon(tmp_path)
    second_root = tmp_path / "inbox2"
    daemon.config.write_text(
        daemon.config.read_text().replace(
            f'inbox = ["{daemon.inbox}"]', f'inbox = ["{daemon.inbox}", "{second_root}"]'
        )
    )
    # three documents whose natural output is outbox/scan.pdf, told apart by page width
    _png(daemon.inbox / "scan.png", seed=1, size=(120, 80))
    Image.new("RGB", (150, 80), "white").save(daemon.inbox / "scan.jpg", format="JPEG")
    _png(second_root / "scan" / "p1.png", seed=3, size=(180, 80))
    (second_root / "scan" / ".complete").touch()
    for root in (daemon.inbox, second_root):  # and two failures with one name
        root.joinpath("blank.png").write_bytes(b"")
    daemon.start()
    try:
        daemon.wait_for(
            lambda: sorted(r["state"] for r in daemon.status()) == ["done"] * 3 + ["failed"] * 2
        )
        first = {(Path(r["root"]).name, r["path"]): r["output"] for r in daemon.status()}
        del first[("inbox", "blank.png")], first[("inbox2", "blank.png")]
        _png(second_root / "scan" / "p2.png", seed=4, size=(180, 80))  # a new version
        daemon.wait_for(  # a marked folder is published again by itself
            lambda: any(r["path"] == "scan" and r["version"] == 2 for r in daemon.status())
        )
        outputs = {
            (Path(r["root"]).name, r["path"]): r["output"]
            for r in daemon.status()
            if r["state"] == "done"
        }
    finally:
        assert daemon.stop() == 0
    assert outputs == first  # the new version replaced its own output
    assert sorted(Path(o).name for o in outputs.values()) == [
        "scan (2).pdf",
        "scan (3).pdf",
        "scan.pdf",
    ]
    expected = {
        ("inbox", "scan.png"): [120],
        ("inbox", "scan.jpg"): [150],
        ("inbox2", "scan"): [180, 180],
    }
    for key, widths_px in expected.items():
        with pymupdf.open(outputs[key]) as doc:
            assert [round(p.rect.width * 300 / 72) for p in doc] == widths_px, key
    assert "output_name_taken" in daemon.log_path.read_text()
    failed = sorted(p.name for p in (tmp_path / "failed").iterdir())
    assert failed == [
        "blank (2).png",
        "blank.png",
        "blank.png.reason (2).txt",
        "blank.png.reason.txt",
    ]


def test_files_written_follow_the_umask_and_the_database_is_private(tmp_path):
    daemon = Daemon(tmp_path)
    _png(daemon.inbox / "perm.png")
    old = os.umask(0o027)
    try:
        daemon.start()
        daemon.wait_for(lambda: daemon.states().get("perm.png") == "done")
        assert daemon.stop() == 0
    finally:
        os.umask(old)
    assert (daemon.outbox / "perm.pdf").stat().st_mode & 0o777 == 0o640
    for name in ("state.db", "daemon.lock"):
        assert (daemon.state / name).stat().st_mode & 0o077 == 0, name


def test_no_subprocess_is_started_through_a_shell():
    package = Path(__file__).resolve().parents[1] / "daemon"
    source = "\n".join(p.read_text() for p in package.glob("*.py"))
    assert "shell=True" not in source
    assert "os.system(" not in source and "os.popen(" not in source
    assert "create_subprocess_shell" not in source


def test_sigkill_of_the_daemon_leaves_no_worker_behind(tmp_path):
    daemon = Daemon(tmp_path)
    daemon.start()
    daemon.wait_for(lambda: "worker_ready" in daemon.tail())
    import psutil

    workers = psutil.Process(daemon.process.pid).children(recursive=True)
    assert workers
    assert daemon.stop(signal.SIGKILL) == -signal.SIGKILL
    _, alive = psutil.wait_procs(workers, timeout=30)
    assert alive == []
