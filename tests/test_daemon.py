"""The daemon as a real subprocess (fake engine): intake, order, resume, re-open, lock."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pymupdf
import pytest
from fake_engines import engine_calls
from harness import Daemon, page_image, pdf_texts

from daemon.files import remove_stale_temp_files

SCANHOPPER = [sys.executable, "-m", "daemon"]
"""The command line, run with this interpreter (its console script may not be on PATH)."""


def test_a_completed_folder_is_published_in_natural_order(daemon):
    daemon.start()
    for name in ("p10.png", "p2.png", "p1.png"):
        page_image(daemon.inbox / "letters" / name)
    daemon.command("complete", str(daemon.inbox / "letters"))
    daemon.wait_for(lambda: daemon.states().get("letters") == "done", what="letters done")
    assert pdf_texts(daemon.outbox / "letters.pdf") == ["p1", "p2", "p10"]
    assert not (daemon.inbox / "letters" / ".complete").exists()  # the marker is consumed
    assert list((daemon.state / "cache" / "documents").glob("*/*")) == []
    assert daemon.stop() == 0
    lines = daemon.log_path.read_text().splitlines()
    events = [json.loads(line) for line in lines if line.startswith("{")]
    done = [e for e in events if e["event"] == "page_done"]  # JSON lines, each bound
    assert sorted((e["document"], e["page"], e["device"]) for e in done) == [
        ("letters", f"letters/{name}#1", "cpu") for name in ("p1.png", "p10.png", "p2.png")
    ]


def test_a_loose_file_is_its_own_document_once_stable(daemon):
    daemon.start()
    page_image(daemon.inbox / "receipt.png")
    daemon.wait_for(lambda: daemon.states().get("receipt.png") == "done")
    assert pdf_texts(daemon.outbox / "receipt.pdf") == ["receipt"]
    assert daemon.stop() == 0


def test_files_dropped_while_the_daemon_was_down_are_taken_at_start(daemon):
    page_image(daemon.inbox / "box" / "a1.png")
    page_image(daemon.inbox / "box" / "a2.png")
    (daemon.inbox / "box" / ".complete").touch()
    daemon.start()
    daemon.wait_for(lambda: daemon.states().get("box") == "done")
    assert pdf_texts(daemon.outbox / "box.pdf") == ["a1", "a2"]
    assert daemon.stop() == 0


def test_a_republished_document_reuses_the_ocr_of_unchanged_pages(daemon):
    daemon.start()
    page_image(daemon.inbox / "file" / "p1.png")
    daemon.command("complete", str(daemon.inbox / "file"))
    daemon.wait_for(lambda: daemon.states().get("file") == "done")
    page_image(daemon.inbox / "file" / "p2.png")  # published again, with no second marker
    daemon.wait_for(
        lambda: (
            daemon.states().get("file") == "done"
            and pdf_texts(daemon.outbox / "file.pdf") == ["p1", "p2"]
        )
    )
    (row,) = [r for r in daemon.status() if r["path"] == "file"]
    assert row["version"] == 2
    assert sorted(daemon.engine_done()) == ["p1.png", "p2.png"]  # p1 read once
    assert daemon.stop() == 0


@pytest.mark.parametrize("policy", ["archive", "delete"])
def test_source_policy_and_a_folder_name_used_again(tmp_path, policy):
    daemon = Daemon(tmp_path)
    daemon.config.write_text(
        daemon.config.read_text().replace(
            "stable_seconds = 0.3\n", f'stable_seconds = 0.3\nsource_policy = "{policy}"\n'
        )
    )
    daemon.start()
    try:
        for batch, names in enumerate((["p1.png", "p2.png"], ["p1.png"])):
            for name in names:
                page_image(daemon.inbox / "box" / f"{batch}-{name}").rename(
                    daemon.inbox / "box" / name
                )
            daemon.command("complete", str(daemon.inbox / "box"))
            daemon.wait_for(
                lambda: (
                    daemon.states().get("box") == "done" and not (daemon.inbox / "box").exists()
                ),
                what=f"batch {batch} published",
            )
    finally:
        assert daemon.stop() == 0
    # the second batch is a PDF of its own; the first one's PDF is untouched
    assert pdf_texts(daemon.outbox / "box.pdf") == ["p1", "p2"]
    assert pdf_texts(daemon.outbox / "box (2).pdf") == ["p1"]
    archived = sorted(p.name for p in (tmp_path / "archive").rglob("*.png"))
    assert archived == (["p1 (2).png", "p1.png", "p2.png"] if policy == "archive" else [])


def test_kill_9_mid_document_loses_only_the_pages_in_flight(tmp_path):
    daemon = Daemon(tmp_path, env={"FAKE_ENGINE_DELAY": "0.4"})
    names = [f"s{i}.png" for i in range(1, 13)]
    for name in names:
        page_image(daemon.inbox / "batch" / name)
    (daemon.inbox / "batch" / ".complete").touch()
    daemon.start()
    db = daemon.state / "state.db"

    def done_pages() -> set[str]:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            rows = conn.execute("SELECT file FROM pages WHERE state = 'done'").fetchall()
        return {Path(f).name for (f,) in rows}

    daemon.wait_for(lambda: len(done_pages()) >= 4, what="some pages done")
    assert daemon.stop(signal.SIGKILL) == -signal.SIGKILL
    stored = done_pages()
    daemon.start()
    daemon.wait_for(lambda: daemon.states().get("batch") == "done", what="batch done")
    assert daemon.stop() == 0
    assert pdf_texts(daemon.outbox / "batch.pdf") == [n[:-4] for n in names]
    calls = daemon.engine_done()
    for name in stored:  # a stored result is never recomputed
        assert calls.count(name) == 1, name
    assert sorted(set(calls)) == sorted(names)
    again = [name for name in names if calls.count(name) > 1]
    assert len(again) <= 1  # at most the page its one worker was reading
    assert all(calls.count(name) == 2 for name in again)


def test_temp_files_a_killed_run_left_half_written_are_removed_at_start(daemon):
    old = time.time() - 3600
    stale = [
        daemon.outbox / "sub" / ".scanhopper-0123456789ab.part",  # a PDF cut short
        daemon.home / "failed" / ".scanhopper-ba9876543210.part",  # a reason file
        daemon.state / "requests" / ".scanhopper-00000000aaaa.part",  # a retry request
    ]
    kept = [
        daemon.outbox / "report.pdf.part",  # not ours
        daemon.outbox / ".scanhopper-notes.txt",
        daemon.outbox / "sub" / "earlier.pdf",
    ]
    for path in stale + kept:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"%PDF-1.7 cut short")
        os.utime(path, (old, old))
    daemon.start()
    daemon.wait_ready()
    assert daemon.stop() == 0
    assert [p for p in stale if p.exists()] == []
    assert [p for p in kept if not p.exists()] == []
    lines = daemon.log_path.read_text().splitlines()
    events = [json.loads(line) for line in lines if line.startswith("{")]
    removed = {e["path"] for e in events if e["event"] == "stale_temp_file_removed"}
    assert removed == {str(p) for p in stale}


def test_a_temp_file_written_since_the_daemon_started_is_not_removed(tmp_path):
    (tmp_path / "sub").mkdir()
    old, new = tmp_path / "sub" / ".scanhopper-aaaa.part", tmp_path / ".scanhopper-bbbb.part"
    old.write_bytes(b"x")
    new.write_bytes(b"x")
    os.utime(old, (1000.0, 1000.0))
    assert remove_stale_temp_files(tmp_path, before=new.stat().st_mtime) == [old]
    assert new.exists() and not old.exists()
    assert remove_stale_temp_files(tmp_path / "missing", before=time.time()) == []


def test_a_second_daemon_refuses_to_start_and_names_the_first(daemon):
    daemon.start()
    daemon.wait_ready()  # holds the lock and handles SIGTERM
    second = daemon.command("run", check=False)
    assert second.returncode == 6
    assert f"pid {daemon.process.pid}" in second.stderr
    assert daemon.stop() == 0


def test_status_reads_while_the_daemon_runs_and_after(daemon):
    daemon.start()
    page_image(daemon.inbox / "doc" / "x.png")
    daemon.command("complete", str(daemon.inbox / "doc"))
    daemon.wait_for(lambda: daemon.states().get("doc") == "done")
    table = daemon.command("status").stdout
    assert "doc" in table and "1/1" in table
    pages = json.loads(daemon.command("status", "doc", "--json").stdout)
    assert [(p["file"], p["page"], p["state"], p["device"]) for p in pages] == [
        ("doc/x.png", 1, "done", "cpu")
    ]
    assert daemon.stop() == 0
    assert daemon.states() == {"doc": "done"}


def test_a_failed_page_is_retried_on_request(daemon):
    daemon.start()
    page_image(daemon.inbox / "mixed" / "raise.png")
    page_image(daemon.inbox / "mixed" / "ok.png")
    daemon.command("complete", str(daemon.inbox / "mixed"))
    daemon.wait_for(lambda: daemon.states().get("mixed") == "done_with_errors")
    assert pdf_texts(daemon.outbox / "mixed.pdf") == ["ok", ""]  # image-only page kept
    (row,) = daemon.status()
    assert "raise.png page 1: RuntimeError: fake engine refuses raise.png" in row["error"]
    daemon.command("retry", "mixed")
    daemon.wait_for(
        lambda: len([c for c in daemon.engine_log.glob("call-*.json")]) >= 3,
        what="the failed page tried again",
    )
    daemon.wait_for(lambda: daemon.states().get("mixed") == "done_with_errors")
    assert daemon.stop() == 0


@pytest.mark.parametrize(
    ("env", "state", "folder", "output"),
    [
        ({"SCANHOPPER_INTAKE__FAILED_PAGES": "fail"}, "failed", "failed", "mixed.pdf"),
        (
            {"SCANHOPPER_INTAKE__SOURCE_POLICY": "archive"},
            "done_with_errors",
            "archive",
            "mixed (2).pdf",
        ),
    ],
)
def test_files_that_left_the_inbox_are_read_when_they_come_back(
    tmp_path, env, state, folder, output
):
    """A failed document's files are moved to the failed folder; a published one's
    may be archived. Retrying their failed pages is refused, naming the folder, and
    ``retry --failed`` leaves them alone (before: the document sat ``waiting`` for
    ever). A file renamed back into the inbox, size and mtime unchanged, is read
    again: its OCR by content hash."""
    daemon = Daemon(tmp_path, env=env)
    daemon.start()
    page_image(daemon.inbox / "mixed" / "raise.png")
    page_image(daemon.inbox / "mixed" / "ok.png")
    daemon.command("complete", str(daemon.inbox / "mixed"))
    moved = tmp_path / folder / "mixed"
    daemon.wait_for(lambda: (moved / "raise.png").exists() and (moved / "ok.png").exists())
    daemon.wait_for(lambda: not (daemon.inbox / "mixed").exists(), what="cleaned")
    assert daemon.states() == {"mixed": state}
    refused = daemon.command("retry", "mixed", check=False)
    assert refused.returncode == 1 and "move them back into the inbox" in refused.stderr
    assert str(tmp_path / folder) in refused.stderr
    assert daemon.command("retry", "--failed").returncode == 0
    daemon.wait_for(
        lambda: not list((daemon.state / "requests").glob("retry-*.json")),
        what="the retry request taken",
    )
    time.sleep(1)
    assert daemon.states() == {"mixed": state}  # retry --failed left it alone

    (daemon.inbox / "mixed").mkdir()
    (moved / "ok.png").rename(daemon.inbox / "mixed" / "ok.png")
    daemon.wait_for(lambda: daemon.states().get("mixed") == "done")
    assert pdf_texts(daemon.outbox / output) == ["ok"]
    read = sorted(call["page"] for call in engine_calls(daemon.engine_log))
    assert read == ["ok.png", "raise.png"]  # ok.png once: its OCR was reused
    assert daemon.stop() == 0


def test_sd_notify_reports_ready_status_watchdog_and_stopping(tmp_path):
    address = str(tmp_path / "notify.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(address)
    server.settimeout(60)
    daemon = Daemon(tmp_path, env={"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "2000000"})
    daemon.start()
    messages: list[str] = []
    try:
        while not any("READY=1" in m for m in messages):
            messages.append(server.recv(4096).decode())
        while sum("WATCHDOG=1" in m for m in messages) < 2:
            messages.append(server.recv(4096).decode())
        assert any(m.startswith("STATUS=") and "queued per device: cpu=0" in m for m in messages)
        assert daemon.stop() == 0
        server.settimeout(0.5)
        while True:
            try:
                messages.append(server.recv(4096).decode())
            except TimeoutError:
                break
    finally:
        server.close()
    assert any("STOPPING=1" in m for m in messages)


def test_sigterm_drains_the_page_in_flight_and_exits_cleanly(daemon):
    daemon.start()
    page_image(daemon.inbox / "last" / "slow.png")
    daemon.command("complete", str(daemon.inbox / "last"))
    daemon.wait_for(lambda: list(daemon.engine_log.glob("call-*.json")), what="page started")
    assert daemon.stop() == 0
    assert daemon.engine_done() == ["slow.png"]
    with sqlite3.connect(daemon.state / "state.db") as conn:
        assert conn.execute("SELECT state FROM pages").fetchall() == [("done",)]


def test_sigterm_while_the_workers_load_exits_cleanly_and_stops_them(tmp_path):
    daemon = Daemon(tmp_path, env={"FAKE_ENGINE_LOAD_DELAY": "60"})
    daemon.start()
    daemon.wait_for(lambda: list(daemon.engine_log.glob("loading-*.json")), what="loading")
    worker_pid = json.loads(next(daemon.engine_log.glob("loading-*.json")).read_text())["pid"]
    started = time.monotonic()
    assert daemon.stop(timeout=30) == 0, daemon.tail()
    assert time.monotonic() - started < 20
    assert not psutil.pid_exists(worker_pid) or psutil.Process(worker_pid).status() == "zombie"
    assert '"ready": false' in daemon.log_path.read_text()


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("[workers]\ndevices = ['tpu:0']\n", "workers.devices.0"),
        ("[intake]\nsource_policy = 'shred'\n", "intake.source_policy"),
        ("[folders]\noutbox = 3\n", "folders.outbox"),
        ("[colour]\nx = 1\n", "colour: Extra inputs are not permitted"),
    ],
)
def test_a_bad_configuration_stops_the_daemon_with_the_key_named(tmp_path, config, message):
    path = tmp_path / "bad.toml"
    path.write_text(config)
    done = subprocess.run(
        [*SCANHOPPER, "-c", str(path), "run"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 9
    assert message in done.stderr


def test_an_environment_override_is_validated_too(tmp_path):
    done = subprocess.run(
        [*SCANHOPPER, "models"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "SCANHOPPER_OCR__CPU_THREADS": "0"},
    )
    assert done.returncode == 9
    assert "ocr.cpu_threads" in done.stderr


def test_the_shipped_config_file_states_the_defaults():
    from daemon.config import Settings, load_settings

    shipped = Path(__file__).resolve().parents[1] / "configs" / "scanhopper.toml"
    assert load_settings(shipped, environ={}) == Settings()


def test_the_systemd_unit_verifies(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed here")
    unit = (Path(__file__).resolve().parents[1] / "systemd" / "scanhopper.service").read_text()
    script = Path(sys.executable).parent / "scanhopper"  # the console script pip installed
    unit = unit.replace("/opt/scanhopper/bin/scanhopper", str(script))
    (tmp_path / "scanhopper.service").write_text(unit)
    done = subprocess.run(
        [analyze, "verify", str(tmp_path / "scanhopper.service")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    problems = [line for line in done.stderr.splitlines() if "scanhopper.service" in line]
    assert problems == []
    assert "Type=notify" in unit and "WatchdogSec=" in unit and "ProtectSystem=strict" in unit


def test_status_without_a_database_says_so(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(f'[folders]\nstate = "{tmp_path / "none"}"\n')
    done = subprocess.run(
        [*SCANHOPPER, "-c", str(path), "status"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 5
    assert "no state database" in done.stderr


def test_time_from_completion_to_publication_is_short(daemon):
    page_image(daemon.inbox / "quick" / "q.png")
    daemon.start()
    daemon.wait_for(lambda: daemon.states().get("quick") == "collecting")
    daemon.wait_for(lambda: [r for r in daemon.status() if r["pages_done"] == 1])
    started = time.monotonic()
    daemon.command("complete", str(daemon.inbox / "quick"))
    daemon.wait_for(lambda: (daemon.outbox / "quick.pdf").exists(), timeout=30)
    assert time.monotonic() - started < 10
    assert daemon.stop() == 0


def test_faulty_pages_are_retried_then_failed_and_the_rest_is_published(tmp_path):
    daemon = Daemon(tmp_path, extra="max_attempts = 2\n")
    daemon.config.write_text(
        daemon.config.read_text().replace("page_timeout = 30", "page_timeout = 2")
    )
    names = ["a1.png", "segv.png", "hang.png", "raise.png", "nan.png", "outside.png", "z9.png"]
    for name in names:
        page_image(daemon.inbox / "faults" / name)
    (daemon.inbox / "faults" / ".complete").touch()
    daemon.start()
    try:
        daemon.wait_for(lambda: daemon.states().get("faults") == "done_with_errors", timeout=180)
        pages = {
            p["file"]: p for p in json.loads(daemon.command("status", "faults", "--json").stdout)
        }
    finally:
        assert daemon.stop() == 0
    expected = {
        "segv.png": (2, "SIGSEGV"),
        "hang.png": (2, "timed out after 2 s"),
        "raise.png": (1, "fake engine refuses raise.png"),
        "nan.png": (1, "bad polygon"),
    }
    for name, (attempts, reason) in expected.items():
        page = pages[f"faults/{name}"]
        assert (page["state"], page["attempts"]) == ("failed", attempts), page
        assert reason in page["error"], page
    for name in ("a1.png", "outside.png", "z9.png"):
        assert pages[f"faults/{name}"]["state"] == "done"
    with pymupdf.open(daemon.outbox / "faults.pdf") as doc:
        texts = [p.get_text().strip() for p in doc]
        # natural order: a1, hang, nan, outside, raise, segv, z9; failed pages image-only
        assert texts == ["a1", "", "", "outside", "", "", "z9"]
        words = doc[3].get_text("words")
        assert words and all(0 <= w[0] and w[2] <= doc[3].rect.width + 0.5 for w in words)
    loads = [json.loads(p.read_text())["pid"] for p in daemon.engine_log.glob("load-*.json")]
    assert len(loads) >= 4  # restarted after each crash and timeout
    assert not [
        pid
        for pid in loads
        if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    ]
