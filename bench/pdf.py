"""Benchmark: assembling a long searchable PDF in bounded memory.

OCRs a few corpus pages once (real engine), then, each in a fresh process, assembles a
synthetic document of 50 and of 500 pages (the corpus pages repeated) and prints the
time and the peak RSS of each, and their ratio. Targets: peak RSS under 400 MB for 500
pages, and no more than 20% above the 50-page figure. (The repeated pages' images are
identical, and the final whole save writes each once: the output size here is not a
per-page figure.)

Then copies born-digital PDFs of 500 and 2,000 pages (``pdf/tagged.pdf`` repeated, its
fonts shared by every page; no OCR) and prints the time per page of each, their ratio
(near 1 when copying is linear in the page count), and input and output sizes (the
output should not be larger: shared fonts are written once).

Usage, from the repository root:
``python -m bench.pdf [--pages 50 500] [--born-digital 500 2000]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
SOURCES = ["pdf/multipage.pdf", "images/ch_en_num.jpg", "pdf/ccitt.pdf", "images/baiona.png"]


def ocr_corpus(cache: Path, state: Path) -> None:
    """OCR every page of ``SOURCES`` once and store the results as JSON."""
    import anyio

    from daemon.config import Settings
    from daemon.pdf import expand_pages, prepare_page
    from daemon.workers import open_worker_pool

    settings = Settings.model_validate(
        {
            "folders": {"state": str(state)},
            "ocr": {"cpu_threads": 1},
            "workers": {"devices": ["cpu", "cpu"]},
        }
    )
    results: dict[str, dict] = {}

    async def one(pool, source) -> None:
        image, frame = prepare_page(source, state, dpi=300, max_pixels=50_000_000)
        result = await pool.ocr(image, frame=frame)
        results[f"{source.path}|{source.kind}|{source.index}"] = result.to_dict()

    async def run() -> None:
        async with open_worker_pool(settings) as pool, anyio.create_task_group() as tg:
            for name in SOURCES:
                for source in expand_pages(CORPUS / name):
                    tg.start_soon(one, pool, source)

    anyio.run(run)
    cache.write_text(json.dumps(results))


def peak_rss_mb() -> float:
    """This process's peak resident set size in MB (``VmHWM``; unlike ``ru_maxrss`` it
    is not inherited from the parent across fork and exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def assemble(cache: Path, pages: int, dest: Path) -> None:
    """Child process: assemble ``pages`` pages and print seconds and peak RSS (MB)."""
    from daemon.engine import OcrResult
    from daemon.pdf import PageSource, PdfPage, assemble_pdf

    results = json.loads(cache.read_text())
    base = [
        PdfPage(PageSource(Path(p), kind, int(i)), OcrResult.from_dict(r))
        for (p, kind, i), r in ((k.split("|"), v) for k, v in sorted(results.items()))
    ]
    stream = (base[n % len(base)] for n in range(pages))  # a generator: nothing held
    started = time.perf_counter()
    assemble_pdf(stream, dest, title="bench")
    seconds = time.perf_counter() - started
    peak = peak_rss_mb()
    print(
        json.dumps(
            {"pages": pages, "seconds": seconds, "peak_mb": peak, "bytes": dest.stat().st_size}
        )
    )


def born_digital(pages: int, work: Path) -> dict[str, float]:
    """Assemble a ``pages``-page born-digital PDF as it is; its seconds and sizes."""
    import pymupdf

    from daemon.pdf import PdfPage, assemble_pdf, expand_pages

    source = work / f"born-digital-{pages}.pdf"
    with pymupdf.open(CORPUS / "pdf/tagged.pdf") as tagged, pymupdf.open() as doc:
        copies = pages // tagged.page_count
        for n in range(copies):
            doc.insert_pdf(tagged, final=int(n == copies - 1))  # one graft map: shared fonts
        doc.save(source, garbage=4)
    started = time.perf_counter()
    assemble_pdf([PdfPage(s, None) for s in expand_pages(source)], work / "out.pdf", title="b")
    return {
        "pages": pages,
        "seconds": time.perf_counter() - started,
        "in_bytes": source.stat().st_size,
        "out_bytes": (work / "out.pdf").stat().st_size,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, nargs="+", default=[50, 500])
    parser.add_argument("--born-digital", type=int, nargs="+", default=[500, 2000])
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        assemble(Path(args.child[0]), int(args.child[1]), Path(args.child[2]))
        return
    work = Path(tempfile.mkdtemp(prefix="scanhopper-bench-pdf-"))
    cache = work / "ocr.json"
    ocr_corpus(cache, work)
    figures = []
    for pages in args.pages:
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.pdf",
                "--child",
                str(cache),
                str(pages),
                str(work / "out.pdf"),
            ],
            cwd=Path(__file__).resolve().parents[1],
            capture_output=True,
            text=True,
            check=True,
        )
        figures.append(json.loads(out.stdout.splitlines()[-1]))
    for f in figures:
        print(
            f"{f['pages']:5d} pages: {f['seconds']:7.2f} s  {f['pages'] / f['seconds']:6.1f} "
            f"pages/s  peak RSS {f['peak_mb']:6.1f} MB  output {f['bytes'] / 1e6:7.1f} MB"
        )
    if len(figures) > 1:
        print(
            f"peak RSS ratio {figures[-1]['pages']}/{figures[0]['pages']} pages: "
            f"{figures[-1]['peak_mb'] / figures[0]['peak_mb']:.3f}"
        )
    copied = [born_digital(pages, work) for pages in args.born_digital]
    for f in copied:
        print(
            f"born-digital {f['pages']:5d} pages: {f['seconds']:7.2f} s  "
            f"{1000 * f['seconds'] / f['pages']:6.2f} ms/page  input {f['in_bytes'] / 1e3:8.1f} kB"
            f"  output {f['out_bytes'] / 1e3:8.1f} kB"
        )
    if len(copied) > 1:
        per_page = [f["seconds"] / f["pages"] for f in copied]
        print(
            f"time per page ratio {copied[-1]['pages']}/{copied[0]['pages']} pages: "
            f"{per_page[-1] / per_page[0]:.2f}"
        )


if __name__ == "__main__":
    main()
