"""Start-up refusals: one line ``scanhopper: <cause>`` and an exit code, never a traceback."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import psutil
import pytest
from harness import Daemon

from daemon.config import ConfigError, FolderSettings, load_settings


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


def _folders(tmp_path, **folders) -> str:
    """A configuration file of ``[folders]``; the others sit apart under ``tmp_path``."""
    values = {
        "inbox": [str(tmp_path / "in")],
        "outbox": str(tmp_path / "out"),
        "archive": str(tmp_path / "archive"),
        "failed": str(tmp_path / "failed"),
        "state": str(tmp_path / "state"),
        **folders,
    }
    path = tmp_path / "folders.toml"
    path.write_text("[folders]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items()))
    return path


@pytest.mark.parametrize(
    ("folders", "message"),
    [
        (
            {"outbox": "{t}/in"},
            "folders.inbox[0] ({t}/in) and folders.outbox ({t}/in) are the same folder",
        ),
        ({"state": "{t}/in/.state"}, "folders.state ({t}/in/.state) is inside folders.inbox[0]"),
        (
            {"inbox": ["{t}/in", "{t}/in/scans"]},
            "folders.inbox[1] ({t}/in/scans) is inside folders.inbox[0] ({t}/in)",
        ),
        (
            {"archive": "{t}/done", "failed": "{t}/done"},
            "folders.archive ({t}/done) and folders.failed ({t}/done) are the same folder",
        ),
        ({"inbox": ["{t}"]}, "folders.outbox ({t}/out) is inside folders.inbox[0] ({t})"),
        ({"outbox": "{t}/link/in/out"}, "folders.outbox ({t}/link/in/out) is inside folders.inbox"),
    ],
)
def test_overlapping_folders_are_refused_naming_both(tmp_path, folders, message):
    (tmp_path / "link").symlink_to(tmp_path)  # .../link/in/out does not exist: via its parent
    folders = {
        key: [v.format(t=tmp_path) for v in value]
        if isinstance(value, list)
        else value.format(t=tmp_path)
        for key, value in folders.items()
    }
    with pytest.raises(ConfigError, match=re.escape(message.format(t=tmp_path))):
        load_settings(_folders(tmp_path, **folders), environ={})


def test_the_default_folders_and_apart_folders_are_accepted(tmp_path):
    assert load_settings(None, environ={}).folders == FolderSettings()
    folders = _folders(tmp_path, inbox=[str(tmp_path / "a"), str(tmp_path / "b")])
    settings = load_settings(folders, environ={})
    assert settings.folders.outbox == tmp_path / "out"


def test_scanhopper_run_refuses_an_outbox_inside_the_inbox_in_one_line(daemon):
    daemon.config.write_text(
        daemon.config.read_text().replace(
            f'outbox = "{daemon.outbox}"', f'outbox = "{daemon.inbox}/out"'
        )
    )
    line = _refused(daemon, 9)
    assert (
        f"folders.outbox ({daemon.inbox}/out) is inside folders.inbox[0] ({daemon.inbox})" in line
    )
    assert not daemon.inbox.exists()  # refused before anything was made


def test_a_second_daemon_on_the_same_inbox_with_its_own_state_is_refused(daemon, tmp_path):
    daemon.start()
    daemon.wait_ready()
    assert (daemon.inbox / ".scanhopper.lock").read_text().strip() == str(daemon.process.pid)
    other = Daemon(tmp_path / "other", state=tmp_path / "other-state")
    other.inbox = daemon.inbox
    other.config.write_text(
        other.config.read_text().replace(str(tmp_path / "other" / "inbox"), str(daemon.inbox))
    )
    line = _refused(other, 6)
    assert f"pid {daemon.process.pid}" in line and str(daemon.inbox) in line
    assert not (tmp_path / "other-state" / "state.db").exists()
    assert daemon.stop() == 0
    assert daemon.states() == {}  # the lock file is not taken as a document


def test_a_folder_that_cannot_be_made_is_one_line_and_exit_5(daemon):
    (daemon.home / "file").write_text("in the way")
    daemon.config.write_text(
        daemon.config.read_text().replace(str(daemon.inbox), str(daemon.home / "file" / "in"))
    )
    assert "not a directory" in _refused(daemon, 5).lower()


@pytest.mark.parametrize("change", ["replaced", "deleted"])
def test_a_state_database_replaced_or_deleted_under_the_daemon_stops_it_with_exit_5(daemon, change):
    daemon.start()
    daemon.wait_ready()
    worker = json.loads(next(daemon.engine_log.glob("load-*.json")).read_text())["pid"]
    database = daemon.state / "state.db"
    if change == "replaced":
        (daemon.state / "new.db").write_bytes(b"")
        os.replace(daemon.state / "new.db", database)
    else:
        database.unlink()
    started = time.monotonic()
    code = daemon.process.wait(timeout=60)
    print(f"daemon stopped {time.monotonic() - started:.1f} s after the database was {change}")
    daemon.log.close()
    assert code == 5, daemon.tail()
    log = daemon.log_path.read_text()
    line = _one_error_line(log)
    assert line.startswith(f"scanhopper: state database {database} was {change}")
    assert not psutil.pid_exists(worker) or psutil.Process(worker).status() == "zombie"
    if change == "replaced":
        assert database.stat().st_size == 0  # the new file is left as it was put there


@pytest.fixture
def known(daemon):
    """The daemon, stopped after reading the one page of document ``doc``."""
    _page(daemon.inbox / "doc" / "x.png")
    daemon.start()
    daemon.wait_for(lambda: [r for r in daemon.status() if r["pages_done"]], what="page read")
    assert daemon.stop() == 0
    return daemon


def _page(path):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (200, 100), 255).save(path)


def test_retry_of_an_unknown_document_fails_and_writes_no_request(known):
    done = known.command("retry", "nope", check=False)
    assert done.returncode == 1, done.stderr
    assert _one_error_line(done.stderr).startswith("scanhopper: no document 'nope'")
    assert list((known.state / "requests").glob("retry-*")) == []


def test_retry_of_a_known_document_by_either_path_leaves_a_request(known):
    for path in ("doc", str(known.inbox / "doc")):
        done = known.command("retry", path)
        assert "retry requested" in done.stdout
    requests = sorted((known.state / "requests").glob("retry-*.json"))
    assert [json.loads(p.read_text()) for p in requests] == [{"retry": "doc"}] * 2
    assert known.command("retry", "--failed").returncode == 0


def test_status_of_an_unknown_document_fails_and_of_a_known_one_lists_its_pages(known):
    done = known.command("status", "nope", check=False)
    assert done.returncode == 1, done.stderr
    assert _one_error_line(done.stderr).startswith("scanhopper: no document 'nope'")
    pages = json.loads(known.command("status", "doc", "--json").stdout)
    assert [(p["file"], p["state"]) for p in pages] == [("doc/x.png", "done")]


RESTART_CANNOT_FIX = {
    "AlreadyRunningError": True,  # another daemon holds the state folder or an inbox
    "ConfigError": True,  # the configuration file or environment
    "FolderError": True,  # a folder cannot be made or locked: permissions, a file
    "ModelError": True,  # a model directory missing or incomplete
    "NotFoundError": False,  # status/retry of an unknown document; not a daemon error
    "RetryRefusedError": False,  # retry of a failed document; not a daemon error
    "StateDatabaseError": True,  # corrupt, newer schema, deleted or replaced
    "WorkerStartError": True,  # the engine cannot load: package, model, device
}
"""Every ScanhopperError subclass: is it a configuration or installation error, which
the daemon started again with the same configuration and files meets again?"""


def test_systemd_does_not_restart_into_a_configuration_or_installation_error():
    import daemon.cli
    import daemon.models
    import daemon.service
    import daemon.status
    import daemon.workers  # noqa: F401  (every module that defines a ScanhopperError)
    from daemon.errors import ScanhopperError

    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    errors = {cls.__name__: cls for cls in subclasses(ScanhopperError)}
    assert sorted(errors) == sorted(RESTART_CANNOT_FIX), "classify each error below"
    permanent = {int(errors[n].exit_code) for n, fatal in RESTART_CANNOT_FIX.items() if fatal}
    others = {int(errors[n].exit_code) for n, fatal in RESTART_CANNOT_FIX.items() if not fatal}
    assert not permanent & others  # systemd only sees the code
    unit = (Path(__file__).resolve().parents[1] / "systemd" / "scanhopper.service").read_text()
    (listed,) = re.findall(r"^RestartPreventExitStatus=(.*)$", unit, re.MULTILINE)
    assert {int(code) for code in listed.split()} == permanent == {5, 6, 7, 9}
    assert re.search(r"^Restart=on-failure$", unit, re.MULTILINE)


def test_schema_3_records_the_files_failed_documents_moved_out(tmp_path):
    """A database of schema 2 cleaned failed documents without recording that their
    files left the inbox: the migration records it, so they are read when they come
    back. Other documents keep their sizes (whether a published one's files were
    archived or deleted is not in the database)."""
    from daemon.store import Store

    path = tmp_path / "state.db"
    store = Store.open(path)
    for name in ("failed", "complete"):
        document = store.add_document("/inbox", name, "folder")
        store.add_file(
            document.id,
            f"{name}/p.png",
            kind="image",
            pages=1,
            size=10,
            mtime_ns=5,
            content_hash=name,
        )
        store.mark_complete(document.id)
        if name == "failed":
            store.mark_failed(document.id, "1 page(s) failed")
        store.mark_cleaned(document.id)
    store.db.execute("PRAGMA user_version = 2")
    store.close()
    store = Store.open(path)
    try:
        failed, complete = (store.document("/inbox", n) for n in ("failed", "complete"))
        assert store.files(failed.id) == {"failed/p.png": (-1, 5, "failed")}
        assert store.files(complete.id) == {"complete/p.png": (10, 5, "complete")}
    finally:
        store.close()
