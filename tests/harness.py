"""Run the real daemon as a subprocess against temp folders, and read its state."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pymupdf
from PIL import Image

TESTS = Path(__file__).resolve().parent


class Daemon:
    """``scanhopper run`` in a subprocess, configured by a TOML file under ``home``."""

    def __init__(
        self,
        home: Path,
        *,
        engine: str = "fake_engines:ScriptedEngine",
        extra: str = "",
        state: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.home = home
        self.inbox = home / "inbox"
        self.outbox = home / "outbox"
        self.state = state or home / "state"
        self.log_path = home / "daemon.log"
        self.engine_log = home / "engine-log"
        self.engine_log.mkdir(parents=True, exist_ok=True)
        self.config = home / "scanhopper.toml"
        self.config.write_text(
            f'[folders]\ninbox = ["{self.inbox}"]\noutbox = "{self.outbox}"\n'
            f'archive = "{home / "archive"}"\nfailed = "{home / "failed"}"\n'
            f'state = "{self.state}"\n'
            "[intake]\nstable_seconds = 0.3\nsettle_seconds = 0.3\n"
            f'[ocr]\nengine = "{engine}"\ncpu_threads = 1\n'
            "[workers]\npage_timeout = 30\nhealth_interval = 0.5\nstop_grace = 5\n"
            + ("" if "devices" in extra else 'devices = ["cpu"]\n')
            + extra
        )
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
            "FAKE_ENGINE_LOG": str(self.engine_log),
            **(env or {}),
        }
        self.process: subprocess.Popen | None = None
        self.log_offset = 0

    def command(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run another ``scanhopper`` command with the same configuration."""
        return subprocess.run(
            [sys.executable, "-m", "daemon", "-c", str(self.config), *args],
            capture_output=True,
            text=True,
            timeout=120,
            env=self.env,
            check=check,
        )

    def start(self) -> Daemon:
        """Start ``scanhopper run`` (its output appended to ``log_path``)."""
        self.log = self.log_path.open("a")
        self.log_offset = self.log.tell()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "daemon", "-c", str(self.config), "run"],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=self.env,
        )
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        """Signal the daemon and wait for it; returns its exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        code = self.process.wait(timeout=timeout)
        self.log.close()
        return code

    def wait_ready(self, timeout: float = 120) -> None:
        """Wait until the daemon started last logs ``daemon_ready`` (workers loaded,
        intake starting); a signal sent before may find it without its handlers."""

        def ready() -> bool:
            with self.log_path.open("rb") as log:
                log.seek(self.log_offset)
                return b"daemon_ready" in log.read()

        self.wait_for(ready, timeout, "ready")

    def status(self) -> list[dict[str, Any]]:
        """``scanhopper status --json``."""
        return json.loads(self.command("status", "--json").stdout)

    def wait_for(
        self, predicate: Callable[[], bool], timeout: float = 120, what: str = "condition"
    ) -> None:
        """Poll ``predicate`` until true; fail with the daemon's log otherwise."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"daemon exited ({self.process.returncode}):\n{self.tail()}")
            try:
                if predicate():
                    return
            except (subprocess.CalledProcessError, json.JSONDecodeError, OSError, sqlite3.Error):
                pass
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}:\n{self.tail()}")

    def states(self) -> dict[str, str]:
        """``{document path: state}``."""
        return {row["path"]: row["state"] for row in self.status()}

    def tail(self, lines: int = 40) -> str:
        """The end of the daemon's log."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def engine_done(self) -> list[str]:
        """Page file names the fake engine finished reading, one entry per call."""
        return [json.loads(p.read_text())["page"] for p in self.engine_log.glob("done-*.json")]


def page_image(path: Path, size: tuple[int, int] = (300, 200), seed: str | None = None) -> Path:
    """A distinct page image (its pixels differ with ``seed``, default its name; the
    fake engine reads its stem), written under a temp name and renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    image = Image.new("RGB", size, "white")
    crc = zlib.crc32((seed or path.name).encode())
    image.putpixel((crc % size[0], (crc >> 8) % size[1]), (0, 0, 0))
    image.save(tmp, format="PNG")
    tmp.rename(path)
    return path


def pdf_texts(path: Path) -> list[str]:
    """The text of each page of a PDF, stripped."""
    with pymupdf.open(path) as doc:
        return [p.get_text().strip() for p in doc]
