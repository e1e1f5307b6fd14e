"""Benchmark: a CPU OCR worker's peak and idle memory on every page of the corpus.

Every page of ``../shared/corpus`` (each image; each page of each PDF, made as the
daemon makes it: rasterised at ``output.render_dpi`` within ``output.max_pixels``,
``enormous.pdf``, ``2400dpi.pdf`` and ``hugemono.pdf`` among them) and a 6000 px
photo-sized page (``typewriter.png`` enlarged to 6000 x 4296 px, JPEG) is read on the
built-in defaults (``workers.devices = "auto"``), with recycling off so each figure is
the page's own. Pages are sent one at a time, so each is read alone: its worker
borrows the other workers' cores (``daemon.engine.threads``), and every worker holds
its models for each thread count, the most a CPU worker holds. Before each page every
worker's peak RSS is reset (``/proc/PID/clear_refs``, 5); after it the script prints
the page's pixels, the worker's seconds, the largest worker peak RSS during the page
(``VmHWM``; the others idled) and the largest RSS once idle (``VmRSS``, after the
worker gave freed heap back), in MiB, then the largest of each. Targets (issue 9): peak under
1536 MiB on every page; an idle worker above ``workers.recycle_rss_mb`` (printed) is
restarted by default after its page.

Usage, from the repository root: ``python -m bench.memory [--pages GLOB]``.
"""

from __future__ import annotations

import argparse
import fnmatch
import tempfile
from pathlib import Path

import anyio
from PIL import Image

from bench.daemon import CORPUS, status_mb
from daemon.config import Settings
from daemon.logs import configure_logging
from daemon.pdf import expand_pages, prepare_page
from daemon.workers import open_worker_pool


def _pages(settings: Settings, work: Path, pattern: str) -> list[tuple[str, Path, int]]:
    """``(label, image file, frame)`` of every corpus page matching ``pattern``, and of
    the 6000 px photo, prepared in ``work`` as the daemon prepares them."""
    work.mkdir(parents=True, exist_ok=True)
    photo = work / "photo-6000px.jpg"
    with Image.open(CORPUS / "images" / "typewriter.png") as im:
        im.convert("RGB").resize((6000, 4296), Image.Resampling.LANCZOS).save(photo, quality=90)
    files = sorted((CORPUS / "images").iterdir()) + sorted((CORPUS / "pdf").glob("*.pdf"))
    pages = []
    for path in [*files, photo]:
        if not fnmatch.fnmatch(path.name, pattern):
            continue
        for source in expand_pages(path):
            image, frame = prepare_page(
                source,
                work,
                dpi=settings.output.render_dpi,
                max_pixels=settings.output.max_pixels,
            )
            pages.append((f"{path.name}:{source.index + 1}", image, frame))
    return pages


async def _measure(settings: Settings, pages: list[tuple[str, Path, int]]) -> None:
    peaks, idles = [], []
    print(f"{'page':28} {'pixels':>13} {'seconds':>8} {'peak MiB':>9} {'idle MiB':>9}")
    async with open_worker_pool(settings) as pool:
        for label, image, frame in pages:
            pids = [pid for pid in pool.pids.values() if pid is not None]
            for pid in pids:
                Path(f"/proc/{pid}/clear_refs").write_text("5")
            with Image.open(image) as im:
                im.seek(frame)
                size = f"{im.width}x{im.height}"
            try:
                result = await pool.ocr(image, frame=frame)
                seconds = f"{result.seconds:8.2f}"
            except Exception as exc:  # a bad page is a figure too
                seconds = type(exc).__name__[:8]
            peaks.append(max(status_mb(pid, "VmHWM") for pid in pids))
            idles.append(max(status_mb(pid, "VmRSS") for pid in pids))
            print(f"{label[:28]:28} {size:>13} {seconds:>8} {peaks[-1]:9.0f} {idles[-1]:9.0f}")
    print(f"largest: peak {max(peaks):.0f} MiB (target < 1536), idle {max(idles):.0f} MiB")
    print(
        f"engine {settings.ocr.engine}, {len(settings.workers.devices)} workers x "
        f"{settings.ocr.cpu_threads} threads, "
        f"det {settings.ocr.det_limit_side_len}/{settings.ocr.det_limit_type}, rec batch "
        f"{settings.ocr.rec_batch_size}; recycle_rss_mb by default "
        f"{Settings().workers.recycle_rss_mb}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", default="*", help="file name pattern (default: all)")
    options = parser.parse_args()
    configure_logging(level="warning")
    work = Path(tempfile.mkdtemp(prefix="scanhopper-bench-memory-"))
    settings = Settings.model_validate(
        {
            "folders": {"state": str(work / "state")},
            "workers": {"recycle_rss_mb": 0, "page_timeout": 1200},
        }
    )
    pages = _pages(settings, work / "pages", options.pages)
    anyio.run(_measure, settings, pages)


if __name__ == "__main__":
    main()
