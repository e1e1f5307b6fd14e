"""Benchmark: pages/s through the whole daemon against the bare engine loop.

Prints, measured in one run on the same pages and settings (1 CPU worker with every
usable core as its threads, the built-in engine settings), the medians of ``--rounds``
rounds (default 3; each round the bare loop, then a fresh daemon):

- pages/s of the bare in-process engine loop and of the daemon (drop to published PDF,
  model loading excluded), and their ratio (target >= 0.95), each round's too;
- the seconds the worker itself spent reading the pages, against the bare loop's, and
  the CPU seconds the daemon process used meanwhile (preparing pages, the PDF);
- seconds from the completion marker to the published PDF for a 100-page document
  whose pages are already OCR'd (target < 2 s; ``intake.settle_seconds`` is 0 here,
  so this is the publication's own time);
- peak RSS of the daemon and of its worker.

``--big-pdf`` instead drops one 300-page, about 270 MB PDF of scans (made here: noisy
150 dpi JPEG pages) and reads it with the scripted fake engine of ``tests/`` (0.3 s a
page), so the figures are the daemon's own: its peak RSS while the pages are prepared
(target < 300 MB), and the document's ETA once 10% of its pages are read against the
real remaining time (target within 50%).

Usage, from the repository root: ``python -m bench.daemon [--pages N] [--rounds N] | --big-pdf``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pymupdf

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"


def make_pages(folder: Path, count: int) -> list[Path]:
    """Render corpus PDF pages at 200 dpi into PNG scans named scan1.png ... scanN.png."""
    folder.mkdir(parents=True)
    sources = [(CORPUS / "pdf/multipage.pdf", i) for i in range(6)]
    sources += [(CORPUS / "pdf/ccitt.pdf", 0), (CORPUS / "pdf/francais.pdf", 0)]
    pages = []
    for n in range(count):
        path, index = sources[n % len(sources)]
        with pymupdf.open(path) as doc:
            pix = doc[index].get_pixmap(dpi=200 + n // len(sources))  # distinct content
        pages.append(folder / f"scan{n + 1}.png")
        pix.save(pages[-1])
    return pages


def bare_loop(settings, pages: list[Path]) -> float:
    """Seconds for one in-process engine to read the pages (after loading and warm-up),
    as a worker reads them (``read_page``: a poorly read page is read turned too)."""
    from daemon.engine import PaddleEngine, load_page_image, read_page

    os.environ["PADDLE_PDX_DISABLE_MODEL_SOURCE_CHECK"] = "True"
    engine = PaddleEngine(settings, "cpu")
    engine.recognize(load_page_image(pages[0]))
    started = time.perf_counter()
    for page in pages:
        image = load_page_image(page)
        read_page(engine, image, upside_down_confidence=settings.ocr.upside_down_confidence)
    return time.perf_counter() - started


def status_mb(pid: int, field: str) -> float:
    """A memory line of a live process's ``/proc/<pid>/status`` (``VmHWM``, ``VmRSS``),
    in MB (MiB); 0.0 when absent."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return 0.0


def peak_rss_mb(pid: int) -> float:
    """Peak resident set size (``VmHWM``) of a live process, in MB."""
    return status_mb(pid, "VmHWM")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a live process has used (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    """Direct child pids of a process."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise TimeoutError(what)


def worker_seconds(db: Path, document: str) -> float:
    """Seconds the worker spent on a document's pages (decoding and OCR, from the
    ``pages.seconds`` it reports), to tell the engine's speed in the worker from the
    time the daemon adds around it."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        (seconds,) = conn.execute(
            "SELECT SUM(p.seconds) FROM pages p JOIN documents d ON d.id = p.document_id "
            "WHERE d.path = ?",
            [document],
        ).fetchone()
    return seconds


def make_big_pdf(path: Path, pages: int = 300) -> None:
    """A PDF of ``pages`` distinct noisy 150 dpi letter-size JPEG scans (about 0.9 MB
    each), like a long scanned book."""
    import io

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    with pymupdf.open() as doc:
        for _ in range(pages):
            pixels = rng.integers(150, 256, size=(1650, 1275, 3), dtype=np.uint8)
            buffer = io.BytesIO()
            Image.fromarray(pixels).save(buffer, format="JPEG", quality=80, dpi=(150, 150))
            page = doc.new_page(width=612, height=792)
            page.insert_image(page.rect, stream=buffer.getvalue())
        doc.save(path)


def big_pdf() -> None:
    """The ``--big-pdf`` run (see the module docstring)."""
    home = Path(tempfile.mkdtemp(prefix="scanhopper-bench-big-"))
    inbox, outbox, state = home / "inbox", home / "outbox", home / "state"
    source = home / "book.pdf"
    make_big_pdf(source)
    config = home / "scanhopper.toml"
    config.write_text(
        f'[folders]\ninbox = ["{inbox}"]\noutbox = "{outbox}"\nstate = "{state}"\n'
        '[intake]\nstable_seconds = 0.2\n[ocr]\nengine = "fake_engines:ScriptedEngine"\n'
    )
    tests = Path(__file__).resolve().parents[1] / "tests"
    env = {**os.environ, "PYTHONPATH": str(tests), "FAKE_ENGINE_DELAY": "0.3"}
    log = (home / "daemon.log").open("w")
    daemon = subprocess.Popen(
        [sys.executable, "-m", "daemon", "-c", str(config), "run"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    db = state / "state.db"

    def progress() -> tuple[int, int, float | None]:
        rows = subprocess.run(
            [sys.executable, "-m", "daemon", "-c", str(config), "status", "--json"],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        )
        (row,) = [r for r in json.loads(rows.stdout) if r["path"] == "book.pdf"] or [None]
        return (
            (row["pages_done"] or 0, row["pages_total"], row["eta_seconds"])
            if row
            else (0, 0, None)
        )

    try:
        wait_for(lambda: "daemon_ready" in (home / "daemon.log").read_text(), 300, "ready")
        shutil.copy(source, inbox / ".book.pdf.part")
        (inbox / ".book.pdf.part").rename(inbox / "book.pdf")
        wait_for(lambda: db.exists() and progress()[0] >= 30, 600, "10% of the pages read")
        done, total, eta = progress()
        at = time.perf_counter()
        wait_for((outbox / "book.pdf").exists, 3600, "book published")
        remaining = time.perf_counter() - at
        rss = peak_rss_mb(daemon.pid)
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=120)
        log.close()
    size = source.stat().st_size / 1e6
    print(f"one PDF of 300 scanned pages, {size:.0f} MB, fake engine 0.3 s a page")
    print(f"daemon peak RSS: {rss:.0f} MB (target < 300)")
    print(
        f"ETA at {done}/{total} pages read: {eta} s; real remaining time to the published"
        f" PDF: {remaining:.1f} s; ratio {(eta or 0) / remaining:.2f} (target 0.5 to 1.5)"
    )


def throughput_round(home: Path, count: int) -> dict[str, float]:
    """One round in a fresh folder: the bare loop, then the daemon (fresh state, so no
    page's OCR is reused) on the same pages; figures in seconds and MB."""
    from daemon.config import Settings

    state, inbox, outbox = home / "state", home / "inbox", home / "outbox"
    cores = len(os.sched_getaffinity(0))
    # one worker with every core as threads, on both sides: the daemon's own cost
    settings = Settings.model_validate(
        {
            "folders": {"inbox": [str(inbox)], "outbox": str(outbox), "state": str(state)},
            "intake": {"stable_seconds": 0.2, "settle_seconds": 0},
            "ocr": {"cpu_threads": cores},
            "workers": {"devices": ["cpu"]},
        }
    )
    pages = make_pages(home / "scans", count)
    bare = bare_loop(settings, pages)

    config = home / "scanhopper.toml"
    config.write_text(
        f'[folders]\ninbox = ["{inbox}"]\noutbox = "{outbox}"\nstate = "{state}"\n'
        f"[intake]\nstable_seconds = 0.2\nsettle_seconds = 0\n[ocr]\ncpu_threads = {cores}\n"
        '[workers]\ndevices = ["cpu"]\n'
    )
    log = (home / "daemon.log").open("w")
    daemon = subprocess.Popen(
        [sys.executable, "-m", "daemon", "-c", str(config), "run"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(lambda: "daemon_ready" in (home / "daemon.log").read_text(), 300, "ready")
        started, daemon_cpu = time.perf_counter(), cpu_seconds(daemon.pid)
        shutil.copytree(home / "scans", inbox / "book")
        (inbox / "book" / ".complete").touch()
        wait_for((outbox / "book.pdf").exists, 3600, "book published")
        through = time.perf_counter() - started
        daemon_cpu = cpu_seconds(daemon.pid) - daemon_cpu
        worker = worker_seconds(state / "state.db", "book")

        # 100 pages whose content was OCR'd above: results are reused by content hash.
        big = inbox / "reprint"
        big.mkdir()
        for n in range(100):
            shutil.copy(pages[n % len(pages)], big / f"p{n + 1}.png")
        db = state / "state.db"

        def all_done() -> bool:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
                row = conn.execute(
                    "SELECT pages_done, pages_total FROM document_status WHERE path = 'reprint'"
                ).fetchone()
            return row == (100, 100)

        wait_for(all_done, 600, "reprint pages recorded")
        started = time.perf_counter()
        (big / ".complete").touch()
        wait_for((outbox / "reprint.pdf").exists, 120, "reprint published")
        publish = time.perf_counter() - started
        rss_daemon = peak_rss_mb(daemon.pid)
        rss_worker = max(peak_rss_mb(pid) for pid in children(daemon.pid))
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=120)
        log.close()
    return {
        "bare": bare,
        "through": through,
        "worker": worker,
        "daemon_cpu": daemon_cpu,
        "publish": publish,
        "rss_daemon": rss_daemon,
        "rss_worker": rss_worker,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=16, help="pages for the throughput run")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; figures are medians")
    parser.add_argument("--big-pdf", action="store_true", help="the 300-page PDF run instead")
    options = parser.parse_args()
    if options.big_pdf:
        big_pdf()
        return
    from daemon.logs import configure_logging

    configure_logging(level="warning")
    home = Path(tempfile.mkdtemp(prefix="scanhopper-bench-daemon-"))
    count = options.pages
    rounds = [throughput_round(home / f"round-{n + 1}", count) for n in range(options.rounds)]

    def median(key: str) -> float:
        return statistics.median(r[key] for r in rounds)

    ratios = [r["bare"] / r["through"] for r in rounds]
    cores = len(os.sched_getaffinity(0))
    print(f"pages: {count} rendered corpus pages (200 dpi), 1 CPU worker x {cores} threads")
    print(f"medians of {options.rounds} rounds (each: bare loop, then a fresh daemon)")
    print(f"bare engine loop      : {count / median('bare'):6.3f} pages/s")
    print(
        f"daemon, drop to PDF   : {count / median('through'):6.3f} pages/s  ratio "
        f"{statistics.median(ratios):.3f} (rounds: {', '.join(f'{r:.3f}' for r in ratios)})"
    )
    print(
        f"worker's own seconds : {median('worker'):6.1f} s (bare loop {median('bare'):.1f} s); "
        f"the daemon process itself used {median('daemon_cpu'):.1f} CPU seconds meanwhile"
    )
    print(f"marker to PDF, 100 already-read pages: {median('publish'):.2f} s")
    print(f"peak RSS: daemon {median('rss_daemon'):.0f} MB, worker {median('rss_worker'):.0f} MB")


if __name__ == "__main__":
    main()
