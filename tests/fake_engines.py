"""Scripted fake OCR engines, loaded by worker processes as ``fake_engines:ScriptedEngine``.

The page's file name says what the engine does with it:

- ``crash``: the process exits at once (``os._exit(3)``), mid-page.
- ``segv``: the process kills itself with SIGSEGV.
- ``hang``: the engine never returns.
- ``raise``: the engine raises ``RuntimeError``.
- ``nan``: a line with a NaN polygon.
- ``outside``: a line whose polygon reaches past the page.
- ``slow``: takes 0.5 s (``FAKE_ENGINE_DELAY`` seconds, when set, for every page).
- anything else: one text line, the file stem, across the top of the page.

``FAKE_ENGINE_FAIL`` makes loading fail, and so does ``FAKE_ENGINE_FAIL_IF`` while the
file it names exists (a device lost after the start); ``FAKE_ENGINE_LOAD_DELAY`` makes it take that
many seconds (recorded as ``loading`` before the wait, ``load`` after).

Every construction and every call is recorded as a JSON file in ``$FAKE_ENGINE_LOG`` so
tests can count engine calls and see the environment each worker really had. A call's
start and end also record ``cpu_load``, the pool's shared count of busy CPU workers as
the worker read it then (``None`` in a worker given no count).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import uuid
from pathlib import Path

from daemon.engine import PageImage, TextLine
from daemon.engine.threads import CpuLoad

PINNED = (
    "CUDA_VISIBLE_DEVICES",
    "ASCEND_RT_VISIBLE_DEVICES",
    "XPU_VISIBLE_DEVICES",
    "OMP_NUM_THREADS",
)


def _record(kind: str, **data) -> None:
    folder = os.environ.get("FAKE_ENGINE_LOG")
    if folder:
        path = Path(folder) / f"{kind}-{os.getpid()}-{uuid.uuid4().hex}.json"
        record = {"kind": kind, "pid": os.getpid(), "at": time.time(), **data}
        tmp = path.with_suffix(".tmp")  # readers glob *.json: never see half a record
        tmp.write_text(json.dumps(record))
        tmp.rename(path)


_HOARD: list[bytearray] = []


class ScriptedEngine:
    """A fake engine whose behaviour per page is chosen by the page's file name."""

    def __init__(self, settings, device: str) -> None:
        if os.environ.get("FAKE_ENGINE_FAIL"):
            raise RuntimeError("fake engine told to fail at load")
        if Path(os.environ.get("FAKE_ENGINE_FAIL_IF", "/nonexistent")).exists():
            raise RuntimeError("fake engine: the device is lost")
        _record("loading", device=device)
        time.sleep(float(os.environ.get("FAKE_ENGINE_LOAD_DELAY", "0")))
        self.device = device
        fd = int(sys.argv[3])  # the worker's argument: the pool's CpuLoad, or -1
        self.cpu_load = CpuLoad.attach(fd) if fd >= 0 else None
        environment = {k: os.environ.get(k) for k in PINNED}
        _record("load", device=device, environment=environment, cpu_load=self.cpu_load is not None)

    def recognize(self, image: PageImage) -> list[TextLine]:
        name = image.source.name if image.source else ""
        load = self.cpu_load.get() if self.cpu_load else None
        _record("call", page=name, device=self.device, cpu_load=load)
        if "crash" in name:
            os._exit(3)
        if "segv" in name:
            os.kill(os.getpid(), signal.SIGSEGV)
        if "hang" in name:
            time.sleep(3600)
        if "raise" in name:
            raise RuntimeError(f"fake engine refuses {name}")
        height, width = image.pixels.shape[:2]
        if "nan" in name:
            return [TextLine("bad", 0.5, ((float("nan"), 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)))]
        if "outside" in name:  # a line reaching past the page: clamped, not fatal
            box = ((-50.0, -20.0), (width + 90.0, -20.0), (width + 90.0, 30.0), (-50.0, 30.0))
            return [TextLine("outside", 0.8, box)]
        if "slow" in name:
            time.sleep(0.5)
        if "hog" in name:  # memory the worker keeps after the page
            _HOARD.append(bytearray(64 * 2**20))
        time.sleep(float(os.environ.get("FAKE_ENGINE_DELAY", "0")))
        box = ((0.0, 0.0), (width * 0.8, 0.0), (width * 0.8, height * 0.1), (0.0, height * 0.1))
        load = self.cpu_load.get() if self.cpu_load else None
        _record("done", page=name, path=str(image.source), cpu_load=load)
        return [TextLine(Path(name).stem, 0.99, box)]


def engine_calls(log_dir: Path) -> list[dict]:
    """Every recognize call recorded in ``log_dir``."""
    return [json.loads(p.read_text()) for p in log_dir.glob("call-*.json")]


def engine_done(log_dir: Path) -> list[str]:
    """Page names whose recognition finished, one entry per finished call."""
    return [call["page"] for call in engine_finished(log_dir)]


def engine_finished(log_dir: Path) -> list[dict]:
    """Every finished recognize call recorded in ``log_dir``."""
    return [json.loads(p.read_text()) for p in log_dir.glob("done-*.json")]


def engine_loads(log_dir: Path) -> list[dict]:
    """Every engine construction recorded in ``log_dir``."""
    return [json.loads(p.read_text()) for p in log_dir.glob("load-*.json")]
