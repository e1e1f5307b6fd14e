"""Configuration: defaults, validation, clear errors."""

from __future__ import annotations

import pytest

from daemon.config import ConfigError, Settings, load_settings


def test_defaults_run_on_one_cpu_worker_under_a_local_folder():
    settings = load_settings(None)
    assert settings.workers.devices == ["cpu"]
    assert settings.ocr.engine == "onnxruntime"
    assert str(settings.folders.state).startswith("scanhopper")


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
