"""Configuration: defaults, validation, clear errors."""

from __future__ import annotations

import pytest

from daemon import config
from daemon.config import ConfigError, Settings, available_cores, load_settings


def test_defaults_run_onnxruntime_on_cpu_workers_under_a_local_folder():
    settings = load_settings(None)
    cores = available_cores()
    workers = config.auto_cpu_workers(cores, config.available_memory())
    assert settings.workers.devices == ["cpu"] * workers
    assert settings.ocr.cpu_threads == max(1, cores // workers)
    assert (settings.ocr.engine, settings.ocr.rec_batch_size) == ("onnxruntime", 1)
    assert (settings.ocr.det_limit_side_len, settings.ocr.det_limit_type) == (1280, "max")
    assert str(settings.folders.state).startswith("scanhopper")


@pytest.mark.parametrize(
    ("cores", "gib", "devices", "threads"),
    [
        (1, 24, ["cpu"], 1),
        (2, 24, ["cpu"] * 2, 1),
        (16, 24, ["cpu"] * 16, 1),
        (16, 6, ["cpu"] * 4, 4),
    ],
)
def test_auto_devices_give_each_core_a_worker_as_memory_allows(
    monkeypatch, cores, gib, devices, threads
):
    monkeypatch.setattr(config, "available_cores", lambda: cores)
    monkeypatch.setattr(config, "available_memory", lambda: gib * 2**30)
    for data in ({}, {"workers": {"devices": "auto"}}):
        settings = Settings.model_validate(data)
        assert (settings.workers.devices, settings.ocr.cpu_threads) == (devices, threads)
    assert config.auto_cpu_workers(4, 2**30) == 1  # always one


def test_explicit_devices_and_threads_are_kept(monkeypatch):
    monkeypatch.setattr(config, "available_cores", lambda: 8)
    monkeypatch.setattr(config, "available_memory", lambda: 6 * 2**30)
    shared = Settings.model_validate({"workers": {"devices": ["cpu", "cpu", "gpu:0"]}})
    assert (shared.workers.devices, shared.ocr.cpu_threads) == (["cpu", "cpu", "gpu:0"], 4)
    fixed = Settings.model_validate({"workers": {"devices": "auto"}, "ocr": {"cpu_threads": 1}})
    assert (fixed.workers.devices, fixed.ocr.cpu_threads) == (["cpu"] * 4, 1)
    assert Settings.model_validate_json(fixed.model_dump_json()) == fixed  # as workers get it
    wide = Settings.model_validate({"ocr": {"cpu_threads": 2}})
    assert (wide.workers.devices, wide.ocr.cpu_threads) == (["cpu"] * 4, 2)


@pytest.mark.parametrize(
    ("cpu_max", "cores"),
    [("max 100000", 4), ("150000 100000", 2), ("50000 100000", 1), ("junk", 4), ("1 2 3", 4)],
)
def test_a_cgroup_cpu_quota_caps_the_usable_cores(monkeypatch, tmp_path, cpu_max, cores):
    monkeypatch.setattr(config.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    (tmp_path / "cpu.max").write_text(cpu_max + "\n")
    assert available_cores(tmp_path / "cpu.max") == cores
    assert available_cores(tmp_path / "absent") == 4


def test_a_cgroup_memory_limit_caps_the_memory(tmp_path):
    physical = config.available_memory(tmp_path / "absent")
    (tmp_path / "memory.max").write_text("max\n")
    assert config.available_memory(tmp_path / "memory.max") == physical
    (tmp_path / "memory.max").write_text("garbage\n")
    assert config.available_memory(tmp_path / "memory.max") == physical
    (tmp_path / "memory.max").write_text(f"{2**30}\n")
    assert config.available_memory(tmp_path / "memory.max") == 2**30


def test_a_file_sets_devices_and_engine(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[ocr]\nengine = "paddle"\n[workers]\ndevices = ["gpu:0", "gpu:1"]\n')
    settings = load_settings(path)
    assert settings.workers.devices == ["gpu:0", "gpu:1"]
    assert settings.ocr.engine == "paddle"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[workers]\ndevices = ["tpu:0"]\n', "workers.devices.0: Value error, device 'tpu:0'"),
        ("[ocr]\nrec_batch_size = 0\n", "ocr.rec_batch_size"),
        ("[ocr]\nspeed = 3\n", "ocr.speed: Extra inputs are not permitted"),
        ('[ocr]\nengine = "tesseract"\n', "engine 'tesseract' is not"),
        ("[ocr\n", "c.toml"),
    ],
)
def test_a_bad_key_is_named_in_the_error(tmp_path, text, message):
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("(", r"\(")):
        load_settings(path)


def test_a_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.toml"):
        load_settings(tmp_path / "nope.toml")


def test_settings_round_trip_through_json_for_workers():
    settings = Settings.model_validate({"workers": {"devices": ["cpu", "xpu:2"]}})
    assert Settings.model_validate_json(settings.model_dump_json()) == settings
