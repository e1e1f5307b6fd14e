"""Shared fixtures: the corpus, settings on temp folders, fake engines."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from harness import Daemon

from daemon.config import Settings
from daemon.models import ensure_default_models

TESTS = Path(__file__).resolve().parent
CORPUS = TESTS.parent.parent / "shared" / "corpus"
FAKE_ENGINE = "fake_engines:ScriptedEngine"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def corpus() -> Path:
    """The shared corpus of real scans (../shared/corpus beside the checkout)."""
    if not (CORPUS / "SOURCES.md").is_file():
        pytest.skip(f"the shared corpus is absent: expected it at {CORPUS}")
    return CORPUS


@pytest.fixture(scope="session")
def shared_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A state folder whose default models are assembled once per test session."""
    state = tmp_path_factory.mktemp("state")
    ensure_default_models(state / "models")
    return state


@pytest.fixture
def fake_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings that run the scripted fake engine (tests/fake_engines.py) in workers."""
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])
    )
    monkeypatch.setenv("FAKE_ENGINE_LOG", str(tmp_path / "engine-log"))
    (tmp_path / "engine-log").mkdir()
    return Settings.model_validate(
        {
            "folders": {"state": str(tmp_path / "state")},
            "ocr": {"engine": FAKE_ENGINE, "cpu_threads": 2},
            "workers": {
                "devices": ["cpu"],
                "page_timeout": 3,
                "start_timeout": 30,
                "stop_grace": 2,
                "health_interval": 0.2,
            },
        }
    )


OCR_PAGES = {
    "images/ch_en_num.jpg": 1,
    "images/img_exif_orientation.jpg": 1,
    "pdf/cardinal.pdf": 4,
    "pdf/multipage.pdf": 6,
    "pdf/ccitt.pdf": 1,
    "pdf/jbig2.pdf": 1,
}
"""Corpus pages the PDF tests need OCR'd (file: page count)."""


@pytest.fixture(scope="session")
def corpus_ocr(corpus, shared_state, tmp_path_factory):
    """OCR of ``OCR_PAGES`` with the real engine, computed once per session.

    Returns a function ``(relative path, page index) -> OcrResult``.
    """
    import anyio

    from daemon.pdf import expand_pages, prepare_page
    from daemon.workers import open_worker_pool

    work = tmp_path_factory.mktemp("renders")
    settings = Settings.model_validate(
        {
            "folders": {"state": str(shared_state)},
            "ocr": {"cpu_threads": 1},
            "workers": {"devices": ["cpu", "cpu"]},
        }
    )
    results = {}

    async def run():
        async with open_worker_pool(settings) as pool, anyio.create_task_group() as tg:
            for name in OCR_PAGES:
                for source in expand_pages(corpus / name):
                    tg.start_soon(one, pool, name, source)

    async def one(pool, name, source):
        image, frame = prepare_page(source, work, dpi=300, max_pixels=50_000_000)
        results[name, source.index] = await pool.ocr(image, frame=frame)

    anyio.run(run)
    return lambda name, index=0: results[name, index]


@pytest.fixture
def daemon(tmp_path: Path):
    """A daemon on temp folders (not started); killed if a test leaves it running."""
    d = Daemon(tmp_path)
    yield d
    if d.process is not None and d.process.poll() is None:
        d.stop(signal.SIGKILL)
