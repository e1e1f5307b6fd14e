"""Benchmark: pages/s of the bare PaddleOCR loop against the same pages through workers.

Prints, for the same corpus pages and settings, measured side by side in one run:

- the bare ``PaddleOCR.predict`` loop in this process (2 threads),
- the worker pool with 1 worker x 2 threads (target: >= 0.95 of the bare loop),
- the worker pool with 2 workers x 1 thread,

and each pool's ratio to the bare loop. Model loading is excluded from every figure.

Usage, from the repository root: ``python -m bench.engine [--rounds N]``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import anyio

from daemon.config import Settings
from daemon.engine import PaddleEngine, load_page_image
from daemon.logs import configure_logging
from daemon.workers import open_worker_pool

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
PAGES = ["typewriter.png", "ch_en_num.jpg", "baiona.png", "korean.jpg", "japan.jpg", "crom.png"]


def bare_loop(settings: Settings, pages: list[Path]) -> float:
    """Seconds for one in-process engine to read every page once (after loading)."""
    os.environ.update({"PADDLE_PDX_DISABLE_MODEL_SOURCE_CHECK": "True"})
    engine = PaddleEngine(settings, "cpu")
    engine.recognize(load_page_image(pages[0]))  # warm-up, as workers are warm
    started = time.perf_counter()
    for page in pages:
        engine._pipeline.predict(str(page))
    return time.perf_counter() - started


async def pool_run(settings: Settings, pages: list[Path]) -> float:
    """Seconds for the worker pool to read every page once (after loading)."""
    async with open_worker_pool(settings) as pool:
        async with anyio.create_task_group() as tg:  # warm-up every worker
            for _ in settings.workers.devices:
                tg.start_soon(pool.ocr, pages[0])
        started = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for page in pages:
                tg.start_soon(pool.ocr, page)
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="times each page is read")
    rounds = parser.parse_args().rounds
    configure_logging(level="warning")
    pages = [CORPUS / "images" / name for name in PAGES] * rounds
    state = Path(tempfile.mkdtemp(prefix="scanhopper-bench-"))

    def settings(devices: list[str], threads: int) -> Settings:
        return Settings.model_validate(
            {
                "folders": {"state": str(state)},
                # the bare predict loop reads each page once: so do the workers here
                "ocr": {"cpu_threads": threads, "upside_down_confidence": 0.0},
                "workers": {"devices": devices},
            }
        )

    bare = bare_loop(settings(["cpu"], 2), pages)
    one = anyio.run(pool_run, settings(["cpu"], 2), pages)
    two = anyio.run(pool_run, settings(["cpu", "cpu"], 1), pages)
    n = len(pages)
    print(f"pages: {n} ({len(PAGES)} corpus images x {rounds})")
    print(f"bare PaddleOCR loop, 2 threads : {n / bare:6.3f} pages/s")
    print(f"pool 1 worker x 2 threads      : {n / one:6.3f} pages/s  ratio {bare / one:.3f}")
    print(f"pool 2 workers x 1 thread      : {n / two:6.3f} pages/s  ratio {bare / two:.3f}")


if __name__ == "__main__":
    main()
