"""Start-up refusals: one line ``scanhopper: <cause>`` and an exit code, never a traceback."""

from __future__ import annotations

import json
import signal

import pytest
from harness import Daemon


@pytest.fixture
def daemon(tmp_path):
    d = Daemon(tmp_path)
    yield d
    if d.process is not None and d.process.poll() is None:
        d.stop(signal.SIGKILL)


def _one_error_line(stderr: str) -> str:
    """The one line of ``stderr`` that is not a JSON log line; it must say ``scanhopper:``.

    The daemon logs JSON lines to stderr (off a terminal); anything else there is what
    the user reads.
    """
    assert "Traceback" not in stderr, stderr
    others = []
    for line in filter(None, (line.strip() for line in stderr.splitlines())):
        try:
            if isinstance(json.loads(line), dict):
                continue
        except ValueError:
            pass
        others.append(line)
    assert len(others) == 1, stderr
    assert others[0].startswith("scanhopper: "), stderr
    return others[0]


def _refused(daemon: Daemon, code: int) -> str:
    done = daemon.command("run", check=False)
    assert done.returncode == code, done.stderr
    return _one_error_line(done.stderr)


def test_a_bad_configuration_is_one_line_and_exit_9(daemon):
    daemon.config.write_text(daemon.config.read_text() + "speed = 3\n")
    assert "workers.speed" in _refused(daemon, 9)


def test_a_model_folder_that_does_not_exist_is_one_line_and_exit_7(tmp_path):
    daemon = Daemon(
        tmp_path, engine="onnxruntime", env={"SCANHOPPER_OCR__DET_MODEL_DIR": "/nonexistent"}
    )
    assert "/nonexistent does not exist" in _refused(daemon, 7)


def test_an_engine_plugin_that_fails_to_load_is_one_line_and_exit_7(tmp_path):
    daemon = Daemon(tmp_path, env={"FAKE_ENGINE_FAIL": "1"})
    assert "fake engine told to fail at load" in _refused(daemon, 7)


def test_a_state_folder_in_use_is_one_line_and_exit_6(daemon):
    daemon.start()
    daemon.wait_ready()
    assert f"pid {daemon.process.pid}" in _refused(daemon, 6)
    assert daemon.stop() == 0


def test_an_unusable_state_database_is_one_line_and_exit_5(daemon):
    daemon.state.mkdir(parents=True)
    (daemon.state / "state.db").write_bytes(b"not a database, just bytes" * 100)
    assert "is not usable" in _refused(daemon, 5)
