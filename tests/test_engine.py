"""The real PaddleOCR engine on the shared corpus, through the worker pool."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from daemon.config import Settings
from daemon.engine import OcrResult, load_page_image
from daemon.workers import open_worker_pool

pytestmark = pytest.mark.anyio

PAGES = ["images/ch_en_num.jpg", "images/typewriter.png", "images/empty_black.jpg"]


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def results(corpus, shared_state) -> dict[str, OcrResult]:
    settings = Settings.model_validate({"folders": {"state": str(shared_state)}})
    async with open_worker_pool(settings) as pool:
        return {page: await pool.ocr(corpus / page) for page in PAGES}


def _texts(result: OcrResult) -> list[str]:
    return [line.text for line in result.lines]


async def test_chinese_page_yields_its_chinese_lines(results):
    texts = _texts(results["images/ch_en_num.jpg"])
    assert "正品促销" in texts
    assert "大桶装更划算" in texts


async def test_typewritten_page_yields_latin_text(results):
    text = " ".join(_texts(results["images/typewriter.png"]))
    words = re.findall(r"[A-Za-z]{3,}", text)
    assert len(words) >= 30
    assert sum(len(w) for w in words) / max(len(text), 1) > 0.6


async def test_black_page_yields_no_lines_and_no_error(results):
    result = results["images/empty_black.jpg"]
    assert result.lines == ()
    assert (result.width, result.height) == (756, 448)


async def test_polygons_lie_inside_the_image_and_scores_are_probabilities(results):
    for result in results.values():
        for line in result.lines:
            assert 0.0 <= line.confidence <= 1.0
            for x, y in line.polygon:
                assert 0 <= x <= result.width and 0 <= y <= result.height


async def test_size_matches_the_decoded_page(results, corpus):
    for page, result in results.items():
        pixels = load_page_image(corpus / page).pixels
        assert (result.height, result.width) == pixels.shape[:2]


def test_ocr_command_prints_text_and_json(corpus, shared_state, tmp_path):
    config = tmp_path / "scanhopper.toml"
    config.write_text(f'[folders]\nstate = "{shared_state}"\n')
    image = str(corpus / "images/ch_en_num.jpg")
    plain = subprocess.run(
        [sys.executable, "-m", "daemon", "-c", str(config), "ocr", image],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert "正品促销" in plain.stdout.splitlines()
    as_json = subprocess.run(
        [sys.executable, "-m", "daemon", "-c", str(config), "ocr", "--json", image],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    (page,) = json.loads(as_json.stdout)
    assert page["page"] == 1 and page["width"] == 323
    assert any(line["text"] == "正品促销" for line in page["lines"])


def _paddle_model(folder, name):
    folder.mkdir(parents=True)
    (folder / "inference.json").write_text("{}")
    (folder / "inference.pdiparams").write_bytes(b"\0" * 16)
    (folder / "inference.yml").write_text(f"Global: {{model_name: {name}}}\n")
    return folder


def test_the_paddle_engine_is_built_for_the_pinned_accelerator(tmp_path, monkeypatch):
    import paddleocr

    from daemon.engine import PaddleEngine

    seen = {}
    monkeypatch.setattr(paddleocr, "PaddleOCR", lambda **kwargs: seen.update(kwargs))
    settings = Settings.model_validate(
        {
            "folders": {"state": str(tmp_path / "state")},
            "ocr": {
                "engine": "paddle",
                "rec_batch_size": 16,
                "cpu_threads": 4,
                "det_model_dir": str(_paddle_model(tmp_path / "det", "PP-OCRv6_small_det")),
                "rec_model_dir": str(_paddle_model(tmp_path / "rec", "PP-OCRv6_small_rec")),
            },
        }
    )
    PaddleEngine(settings, "gpu:0")
    assert seen["engine"] == "paddle" and seen["device"] == "gpu:0"
    assert seen["text_recognition_batch_size"] == 16 and seen["cpu_threads"] == 4
    assert seen["use_doc_orientation_classify"] is False and seen["use_doc_unwarping"] is False
    assert seen["text_detection_model_dir"] == str(tmp_path / "det")


def test_the_paddle_engine_refuses_the_builtin_onnx_models(tmp_path, shared_state):
    from daemon.engine import PaddleEngine
    from daemon.models import ModelError

    settings = Settings.model_validate(
        {"folders": {"state": str(shared_state)}, "ocr": {"engine": "paddle"}}
    )
    with pytest.raises(ModelError, match="runs on engine 'onnxruntime'"):
        PaddleEngine(settings, "gpu:0")
