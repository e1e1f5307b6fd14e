"""Benchmark: pages/s of the bare engine loop against the worker pool, for each way of
splitting the cores into CPU workers x threads.

Pages: the six ground-truth pages of :mod:`bench.groundtruth` and the six pages of the
corpus's ``pdf/multipage.pdf``, rendered at 300 dpi to PNG, and ``images/typewriter.png``
(4000 x 2864 px), each read ``--rounds`` times. Engine settings are the built-in
defaults (``ocr.engine``, detection resize, recognition batch) whatever the split.

Prints, measured side by side in one run, model loading excluded from every figure:

- the bare in-process loop (``read_page`` on one engine with every usable core as its
  threads, pages decoded as a worker decodes them);
- the worker pool for every split W workers x T threads with W x T = the usable cores,
  its ratio to the bare loop and to the best split;
- which split ``workers.devices = "auto"`` chooses (``daemon.config.auto_cpu_workers``)
  and its ratio to the best (target: within 10%).

Usage, from the repository root: ``python -m bench.engine [--rounds N]``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import anyio
import pymupdf

from bench.daemon import CORPUS
from bench.groundtruth import generate
from daemon.config import Settings, auto_cpu_workers, available_cores, available_memory
from daemon.engine import create_engine, load_page_image, read_page
from daemon.logs import configure_logging
from daemon.workers import open_worker_pool


def make_pages(folder: Path) -> list[Path]:
    """Render the ground-truth PDFs and ``multipage.pdf`` at 300 dpi into ``folder``;
    with ``typewriter.png``, the pages every figure reads."""
    pdfs = [found.pdf for found in generate(folder / "groundtruth")]
    pdfs.append(CORPUS / "pdf" / "multipage.pdf")
    pages = []
    for pdf in pdfs:
        with pymupdf.open(pdf) as doc:
            for page in doc:
                pages.append(folder / f"{pdf.stem}-{page.number + 1}.png")
                page.get_pixmap(dpi=300).save(pages[-1])
    return [*pages, CORPUS / "images" / "typewriter.png"]


def bare_loop(settings: Settings, pages: list[Path]) -> float:
    """Seconds for one in-process engine to read the pages (after loading and a
    warm-up page), as a worker reads them."""
    os.environ["PADDLE_PDX_DISABLE_MODEL_SOURCE_CHECK"] = "True"
    engine = create_engine(settings, "cpu")
    confidence = settings.ocr.upside_down_confidence
    read_page(engine, load_page_image(pages[0]), upside_down_confidence=confidence)
    started = time.perf_counter()
    for page in pages:
        read_page(engine, load_page_image(page), upside_down_confidence=confidence)
    return time.perf_counter() - started


async def pool_run(settings: Settings, pages: list[Path]) -> float:
    """Seconds for the worker pool to read the pages (after loading and a warm-up page
    on every worker)."""
    async with open_worker_pool(settings) as pool:
        async with anyio.create_task_group() as tg:
            for _ in settings.workers.devices:
                tg.start_soon(pool.ocr, pages[0])
        started = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for page in pages:
                tg.start_soon(pool.ocr, page)
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1, help="times each page is read")
    rounds = parser.parse_args().rounds
    configure_logging(level="warning")
    work = Path(tempfile.mkdtemp(prefix="scanhopper-bench-engine-"))
    pages = make_pages(work / "pages") * rounds
    cores = available_cores()

    def settings(workers: int) -> Settings:
        return Settings.model_validate(
            {
                "folders": {"state": str(work / "state")},
                "ocr": {"cpu_threads": cores // workers},
                # a split's figure is its own: no worker restarts inside it
                "workers": {"devices": ["cpu"] * workers, "recycle_rss_mb": 0},
            }
        )

    splits = [w for w in range(1, cores + 1) if cores % w == 0]
    bare = bare_loop(settings(1), pages)
    seconds = {w: anyio.run(pool_run, settings(w), pages) for w in splits}
    best = min(seconds.values())
    n = len(pages)
    engine = settings(1).ocr
    print(
        f"{n} pages, {cores} usable cores; engine {engine.engine}, det "
        f"{engine.det_limit_side_len}/{engine.det_limit_type}, rec batch {engine.rec_batch_size}"
    )
    print(f"bare loop, 1 engine x {cores} threads : {n / bare:6.3f} pages/s")
    for w in splits:
        print(
            f"pool {w} worker(s) x {cores // w} thread(s)   : {n / seconds[w]:6.3f} pages/s  "
            f"vs bare {bare / seconds[w]:.3f}  vs best {best / seconds[w]:.3f}"
        )
    auto = auto_cpu_workers(cores, available_memory())
    print(f"auto: {auto} worker(s) x {cores // auto} thread(s), {best / seconds[auto]:.3f} of best")


if __name__ == "__main__":
    main()
