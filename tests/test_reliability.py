"""Reliability under crashes and load: the invariants of ARCHITECTURE.md, measured."""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import sys
import threading
import time
from pathlib import Path

import psutil
import pymupdf
import pytest
from harness import Daemon
from PIL import Image

pytestmark = pytest.mark.slow


def _tiny_page(path: Path, n: int) -> None:
    """A small distinct page image (its pixels encode ``n``)."""
    image = Image.new("L", (48, 32), 255)
    for bit in range(16):
        if n >> bit & 1:
            image.putpixel((bit * 3, 5), 0)
    image.save(path, format="PNG")


class OutputWatcher(threading.Thread):
    """Opens every visible PDF in the outbox, over and over, and records any that is
    not a whole, valid PDF (invariant 2)."""

    def __init__(self, outbox: Path) -> None:
        super().__init__(daemon=True)
        self.outbox = outbox
        self.problems: list[str] = []
        self.checks = 0
        self.running = True

    def run(self) -> None:
        while self.running:
            for pdf in self.outbox.rglob("*.pdf"):
                if pdf.name.startswith("."):
                    continue
                try:
                    with pymupdf.open(pdf) as doc:
                        if doc.page_count == 0 or doc.is_repaired:
                            self.problems.append(f"{pdf.name}: damaged")
                        doc[-1].get_text()
                    self.checks += 1
                except FileNotFoundError:
                    pass
                except Exception as exc:  # any failure to read is a partial output
                    self.problems.append(f"{pdf.name}: {exc}")
            time.sleep(0.01)


def _done_pages(db: Path) -> set[str]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT file FROM pages WHERE state = 'done'").fetchall()
    return {file for (file,) in rows}


def test_random_sigkills_lose_nothing_and_never_redo_a_stored_page(tmp_path):
    daemon = Daemon(
        tmp_path, env={"FAKE_ENGINE_DELAY": "0.04"}, extra="[output]\nchunk_pages = 3\n"
    )
    documents = {f"box{d}": [f"p{n}.png" for n in range(1, 17)] for d in range(1, 5)}
    for index, (name, pages) in enumerate(documents.items()):
        (daemon.inbox / name).mkdir(parents=True)
        for n, page in enumerate(pages):
            _tiny_page(daemon.inbox / name / page, index * 100 + n)
        if index < 2:
            (daemon.inbox / name / ".complete").touch()
    watcher = OutputWatcher(daemon.outbox)
    daemon.outbox.mkdir(parents=True)
    watcher.start()
    rng = random.Random(20261121)
    db = daemon.state / "state.db"
    stored_before: list[tuple[float, set[str]]] = []  # (restart time, pages stored then)
    kills = 0
    for round_ in range(12):
        daemon.start()
        if stored_before:
            stored_before[-1] = (time.time(), stored_before[-1][1])
        time.sleep(rng.uniform(0.4, 2.5))
        if round_ == 5:
            for name in ("box3", "box4"):
                (daemon.inbox / name / ".complete").touch()
        assert daemon.stop(signal.SIGKILL) == -signal.SIGKILL
        kills += 1
        stored = _done_pages(db) if db.exists() else set()
        stored_before.append((float("inf"), stored))
    daemon.start()
    stored_before[-1] = (time.time(), stored_before[-1][1])
    daemon.wait_ready()  # every document may be published already: stop only once ready
    try:
        daemon.wait_for(
            lambda: set(daemon.states().values()) == {"done"} and len(daemon.states()) == 4,
            timeout=300,
            what="all published",
        )
    finally:
        assert daemon.stop() == 0
        watcher.running = False
        watcher.join()

    assert kills >= 10
    assert watcher.problems == [] and watcher.checks > 0
    for name, pages in documents.items():
        with pymupdf.open(daemon.outbox / f"{name}.pdf") as doc:
            assert [p.get_text().strip() for p in doc] == [Path(p).stem for p in pages], name
    records = [json.loads(p.read_text()) for p in daemon.engine_log.glob("done-*.json")]
    for restarted_at, stored in stored_before:
        again = [
            r["path"] for r in records if r["at"] > restarted_at and _relative(r["path"]) in stored
        ]
        assert again == [], f"read again after their result was stored: {again}"
    rows = {row["path"]: row for row in daemon.status()}
    assert {p: (r["pages_done"], r["pages_total"]) for p, r in rows.items()} == {
        name: (16, 16) for name in documents
    }
    assert list((daemon.state / "cache" / "documents").rglob("*")) == []
    assert [p for p in tmp_path.rglob("*.part")] == []


def _relative(path: str) -> str:
    """``.../inbox/box1/p3.png`` -> ``box1/p3.png`` (the store's file column)."""
    return "/".join(Path(path).parts[-2:])


def test_5000_small_pages_in_bounded_memory_with_status_answering(tmp_path):
    daemon = Daemon(tmp_path, extra='devices = ["cpu", "cpu"]\nqueue_depth = 4\n')
    for d in range(10):
        folder = daemon.inbox / f"batch{d:02d}"
        folder.mkdir(parents=True)
        for n in range(500):
            _tiny_page(folder / f"page{n + 1}.png", d * 1000 + n)
        (folder / ".complete").touch()
    daemon.start()
    process = psutil.Process(daemon.process.pid)
    peak_rss = peak_fds = 0
    status_seconds: list[float] = []
    deadline = time.monotonic() + 900
    try:
        while time.monotonic() < deadline:
            assert daemon.process.poll() is None, daemon.tail()
            peak_rss = max(peak_rss, process.memory_info().rss)
            peak_fds = max(peak_fds, process.num_fds())
            started = time.perf_counter()
            rows = (
                json.loads(daemon.command("status", "--json").stdout or "[]")
                if (daemon.state / "state.db").exists()
                else []
            )
            status_seconds.append(time.perf_counter() - started)
            if len(rows) == 10 and all(r["state"] == "done" for r in rows):
                break
            time.sleep(1.0)
        else:
            raise AssertionError(f"not all published in time:\n{daemon.tail()}")
    finally:
        assert daemon.stop() == 0
    report = {
        "pages": 5000,
        "peak_rss_mb": round(peak_rss / 2**20),
        "peak_fds": peak_fds,
        "status_seconds_max": round(max(status_seconds), 3),
        "status_seconds_median": round(sorted(status_seconds)[len(status_seconds) // 2], 3),
    }
    print(json.dumps(report), file=sys.stderr)
    (tmp_path / "load.json").write_text(json.dumps(report))
    assert sum(r["pages_done"] for r in rows) == 5000
    for d in range(10):
        with pymupdf.open(daemon.outbox / f"batch{d:02d}.pdf") as doc:
            assert doc.page_count == 500
            assert doc[499].get_text().strip() == "page500"
    assert peak_rss < 500 * 2**20
    assert peak_fds < 100
    assert report["status_seconds_median"] < 1.0
