"""Offline model directories: assembled from the rapidocr wheel, checked on load."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from daemon.models import (
    DEFAULT_DET_MODEL,
    DEFAULT_REC_MODEL,
    ModelError,
    check_model_dir,
    ensure_default_models,
)


@pytest.fixture(scope="module")
def assembled(tmp_path_factory) -> dict[str, Path]:
    return ensure_default_models(tmp_path_factory.mktemp("models"))


def test_default_models_are_paddlex_directories(assembled):
    for role, name in (("det", DEFAULT_DET_MODEL), ("rec", DEFAULT_REC_MODEL)):
        path = assembled[role]
        assert path.name == name
        assert (path / "inference.onnx").stat().st_size > 1_000_000
        config = yaml.safe_load((path / "inference.yml").read_text("utf-8"))
        assert config["Global"]["model_name"] == name


def test_recognition_dictionary_comes_from_the_onnx_metadata(assembled):
    config = yaml.safe_load((assembled["rec"] / "inference.yml").read_text("utf-8"))
    post = config["PostProcess"]
    assert post["name"] == "CTCLabelDecode"
    assert len(post["character_dict"]) > 18_000
    assert "促" in post["character_dict"]


def test_assembling_again_keeps_the_ready_directories(assembled):
    before = (assembled["rec"] / "inference.yml").stat().st_mtime_ns
    ensure_default_models(assembled["rec"].parent)
    assert (assembled["rec"] / "inference.yml").stat().st_mtime_ns == before


def test_a_corrupt_default_directory_is_rebuilt(tmp_path):
    root = tmp_path / "models"
    ensure_default_models(root)
    (root / DEFAULT_DET_MODEL / "inference.yml").write_text("Global: {model_name: other}\n")
    ensure_default_models(root)
    check_model_dir(root / DEFAULT_DET_MODEL, DEFAULT_DET_MODEL)


def test_workers_starting_together_assemble_the_models_once_and_all_succeed(tmp_path):
    code = (
        "import sys; from pathlib import Path; from daemon.models import ensure_default_models;"
        "print(ensure_default_models(Path(sys.argv[1]))['rec'])"
    )
    starts = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(tmp_path / "models")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    outcomes = [(p.wait(timeout=120), p.stderr.read()) for p in starts]
    assert outcomes == [(0, "")] * 4
    check_model_dir(tmp_path / "models" / DEFAULT_REC_MODEL, DEFAULT_REC_MODEL)
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == [
        ".lock",
        DEFAULT_DET_MODEL,
        DEFAULT_REC_MODEL,
    ]


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: None, "does not exist"),
        (lambda d: (d.mkdir(), (d / "inference.yml").write_text("x: 1")), "no model graph"),
        (
            lambda d: (d.mkdir(), (d / "inference.onnx").write_bytes(b"x")),
            "has no inference.yml",
        ),
        (
            lambda d: (
                d.mkdir(),
                (d / "inference.onnx").write_bytes(b"x"),
                (d / "inference.yml").write_text("Global: {model_name: PP-OCRv5_server_det}"),
            ),
            "declares model 'PP-OCRv5_server_det', expected 'PP-OCRv6_small_det'",
        ),
        (
            lambda d: (
                d.mkdir(),
                (d / "inference.onnx").write_bytes(b""),
                (d / "inference.yml").write_text("Global: {model_name: PP-OCRv6_small_det}"),
            ),
            "is empty",
        ),
    ],
)
def test_a_bad_model_directory_is_a_clear_error_naming_the_path(tmp_path, damage, message):
    folder = tmp_path / "det"
    damage(folder)
    with pytest.raises(ModelError, match=message) as error:
        check_model_dir(folder, DEFAULT_DET_MODEL)
    assert str(folder) in str(error.value)


def test_ocr_names_a_broken_configured_model_directory(tmp_path, corpus):
    config = tmp_path / "scanhopper.toml"
    config.write_text(
        f'[folders]\nstate = "{tmp_path / "state"}"\n'
        f'[ocr]\ndet_model_dir = "{tmp_path / "nowhere"}"\n'
    )
    done = subprocess.run(
        [sys.executable, "-m", "daemon", "-c", str(config), "ocr", str(corpus / "images/crom.png")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 7
    assert f"model directory {tmp_path / 'nowhere'} does not exist" in done.stderr


def test_models_command_lists_the_default_models(tmp_path):
    config = tmp_path / "scanhopper.toml"
    config.write_text(f'[folders]\nstate = "{tmp_path}"\n')
    done = subprocess.run(
        [sys.executable, "-m", "daemon", "-c", str(config), "models"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert DEFAULT_DET_MODEL in done.stdout and DEFAULT_REC_MODEL in done.stdout
    assert "rapidocr wheel" in done.stdout
