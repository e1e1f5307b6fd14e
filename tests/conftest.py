"""Shared fixtures: the corpus, settings on temp folders, fake engines."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
            "state_dir": str(tmp_path / "state"),
            "ocr": {"engine": FAKE_ENGINE},
            "workers": {
                "page_timeout": 3,
                "start_timeout": 30,
                "stop_grace": 2,
                "health_interval": 0.2,
            },
        }
    )
