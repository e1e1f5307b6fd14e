"""The real PaddleOCR engine on the shared corpus, through the worker pool."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from daemon.config import Settings
from daemon.engine import (
    OcrResult,
    PageImage,
    TextLine,
    load_page_image,
    page_rotation,
    read_page,
)
from daemon.layout import lines_in_reading_order
from daemon.workers import open_worker_pool

pytestmark = pytest.mark.anyio

PAGES = ["images/ch_en_num.jpg", "images/typewriter.png", "images/empty_black.jpg"]


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def results(corpus, shared_state, tmp_path_factory) -> dict[str, OcrResult]:
    turned = tmp_path_factory.mktemp("turned") / "typewriter-upside-down.png"
    Image.open(corpus / "images/typewriter.png").rotate(180).save(turned)
    settings = Settings.model_validate({"folders": {"state": str(shared_state)}})
    async with open_worker_pool(settings) as pool:
        found = {page: await pool.ocr(corpus / page) for page in PAGES}
        found["upside-down"] = await pool.ocr(turned)
    return found


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
    for page in PAGES:
        pixels = load_page_image(corpus / page).pixels
        assert (results[page].height, results[page].width) == pixels.shape[:2]


async def test_an_upside_down_page_reads_like_the_upright_one(results):
    upright, turned = results["images/typewriter.png"], results["upside-down"]
    assert (upright.rotation, turned.rotation) == (0, 180)
    assert [line.text for line in lines_in_reading_order(turned)][:5] == [
        line.text for line in lines_in_reading_order(upright)
    ][:5]
    first = lines_in_reading_order(turned)[0]  # polygons in the turned image's pixels
    x0, y0, x1, y1 = lines_in_reading_order(upright)[0].bbox
    expected = (turned.width - x1, turned.height - y1, turned.width - x0, turned.height - y0)
    assert all(abs(a - b) < 8 for a, b in zip(first.bbox, expected, strict=True))


class _OrientationEngine:
    """Reads three confident lines when the dark corner is top left, garbage otherwise."""

    def __init__(self) -> None:
        self.calls = 0

    def recognize(self, image: PageImage) -> list[TextLine]:
        self.calls += 1
        height, width = image.pixels.shape[:2]
        upright = image.pixels[0, 0, 0] < 128
        lines = []
        for n, word in enumerate(("first", "second", "third")):
            y = height * (0.1 + 0.2 * n)
            box = ((10.0, y), (width * 0.6, y), (width * 0.6, y + 20), (10.0, y + 20))
            lines.append(TextLine(word if upright else "~#", 0.95 if upright else 0.4, box))
        return lines


def _page_with_dark_corner(at_top_left: bool) -> PageImage:
    pixels = np.full((200, 300, 3), 255, dtype=np.uint8)
    if at_top_left:
        pixels[:5, :5] = 0
    else:
        pixels[-5:, -5:] = 0
    return PageImage(pixels, 300.0)


def test_a_page_that_reads_well_is_read_once():
    engine = _OrientationEngine()
    result = read_page(engine, _page_with_dark_corner(True), upside_down_confidence=0.8)
    assert (engine.calls, result.rotation) == (1, 0)


def test_an_upside_down_page_is_read_turned_and_mapped_back():
    engine = _OrientationEngine()
    result = read_page(engine, _page_with_dark_corner(False), upside_down_confidence=0.8)
    assert (engine.calls, result.rotation) == (2, 180)
    assert [line.text for line in lines_in_reading_order(result)] == ["first", "second", "third"]
    first = lines_in_reading_order(result)[0]
    assert first.polygon[0] == (290.0, 180.0)  # the text's top left, now at bottom right
    assert first.bbox == (120.0, 160.0, 290.0, 180.0)
    assert OcrResult.from_dict(result.to_dict()) == result


def test_a_poor_page_that_reads_no_better_turned_is_kept_as_read():
    class Poor(_OrientationEngine):
        def recognize(self, image):
            return [TextLine("x", 0.5, line.polygon) for line in super().recognize(image)]

    engine = Poor()
    result = read_page(engine, _page_with_dark_corner(False), upside_down_confidence=0.8)
    assert (engine.calls, result.rotation) == (2, 0)
    off = Poor()
    read_page(off, _page_with_dark_corner(False), upside_down_confidence=0.0)
    assert off.calls == 1


def _lines_running(direction: int, texts: list[str]) -> tuple[TextLine, ...]:
    """Lines of a 300 x 600 px page whose text runs ``direction`` (0, 90, 180, 270
    degrees, y downwards), top edge first, as the engine orders the polygon."""
    lines = []
    for n, text in enumerate(texts):
        a, b = 20.0 + 40 * n, 50.0 + 40 * n  # across the text
        run = {
            0: ((10.0, a), (250.0, a), (250.0, b), (10.0, b)),
            90: ((280.0 - a, 10.0), (280.0 - a, 500.0), (280.0 - b, 500.0), (280.0 - b, 10.0)),
            180: ((250.0, 580.0 - a), (10.0, 580.0 - a), (10.0, 580.0 - b), (250.0, 580.0 - b)),
            270: ((a, 500.0), (a, 10.0), (b, 10.0), (b, 500.0)),
        }[direction]
        lines.append(TextLine(text, 0.95, run))
    return tuple(lines)


@pytest.mark.parametrize(("direction", "rotation"), [(0, 0), (90, 270), (180, 180), (270, 90)])
def test_the_page_rotation_follows_the_way_most_text_runs(direction, rotation):
    texts = ["First line of text", "second line", "third line"]
    lines = _lines_running(direction, texts)
    assert page_rotation(lines) == rotation
    page = OcrResult(300, 600, 300.0, lines, rotation=rotation)
    upright = page.upright_lines()  # on the page turned upright, text runs left to right
    assert page_rotation(upright) == 0
    assert all(_x_span(line) > _y_span(line) for line in upright)
    assert [line.text for line in lines_in_reading_order(page)] == texts
    size = (600, 300) if rotation in (90, 270) else (300, 600)
    for line in upright:
        assert all(0 <= x <= size[0] and 0 <= y <= size[1] for x, y in line.polygon)


def _x_span(line: TextLine) -> float:
    return line.bbox[2] - line.bbox[0]


def _y_span(line: TextLine) -> float:
    return line.bbox[3] - line.bbox[1]


class _Sideways(_OrientationEngine):
    """A 300 x 200 px page whose text runs downwards (turned a quarter clockwise): read
    as it is, four lines running down, of which the engine misses the first; read
    turned upright (200 x 300 px), all four, running left to right, unless
    ``garbled``."""

    garbled = False
    upright = (
        TextLine("Title", 0.9, ((10.0, 30.0), (150.0, 30.0), (150.0, 50.0), (10.0, 50.0))),
        TextLine("second", 0.9, ((10.0, 90.0), (150.0, 90.0), (150.0, 110.0), (10.0, 110.0))),
        TextLine("third", 0.9, ((10.0, 150.0), (150.0, 150.0), (150.0, 170.0), (10.0, 170.0))),
        TextLine("fourth", 0.9, ((10.0, 210.0), (150.0, 210.0), (150.0, 230.0), (10.0, 230.0))),
    )

    def sideways(self, lines):
        return [  # the upright page's (x, y) at (300 - y, x) on the page as given
            TextLine(line.text, line.confidence, tuple((300 - y, x) for x, y in line.polygon))
            for line in lines
        ]

    def recognize(self, image):
        self.calls += 1
        if image.pixels.shape[:2] == (200, 300):  # as given
            return self.sideways(self.upright[1:])
        assert image.pixels.shape[:2] == (300, 200)  # turned upright
        return self.sideways(self.upright) if self.garbled else list(self.upright)


def test_a_page_turned_a_quarter_is_read_again_upright_and_mapped_back():
    engine = _Sideways()
    result = read_page(engine, _page_with_dark_corner(True), upside_down_confidence=0.8)
    assert (engine.calls, result.rotation) == (2, 270)
    assert list(result.lines) == engine.sideways(engine.upright)  # in the image's pixels
    texts = [line.text for line in lines_in_reading_order(result)]
    assert texts == ["Title", "second", "third", "fourth"]
    assert result.upright_lines() == engine.upright


def test_an_upright_reading_that_does_not_run_left_to_right_is_not_kept():
    engine = _Sideways()
    engine.garbled = True
    result = read_page(engine, _page_with_dark_corner(True), upside_down_confidence=0.8)
    assert (engine.calls, result.rotation) == (2, 270)
    assert [line.text for line in result.lines] == ["second", "third", "fourth"]


class _PoorSideways(_Sideways):
    """A page turned a quarter whose sideways reading is poor (confidence 0.4), read by
    an engine that takes every sideways line as running downwards. Its text runs
    ``upright_at`` degrees clockwise from upright: turned that many degrees clockwise
    it reads ``upright_confidence``; turned the other quarter it reads upside down,
    garbage at 0.66 (``pdf/cardinal.pdf``'s upside-down page). The dark corner (top left
    as given) says which turn the engine got."""

    def __init__(self, upright_at: int, upright_confidence: float = 0.95) -> None:
        super().__init__()
        self.upright_at = upright_at
        self.upright_confidence = upright_confidence

    def recognize(self, image):
        self.calls += 1
        if image.pixels.shape[:2] == (200, 300):  # as given
            lines = self.sideways(self.upright[1:])
            return [TextLine(line.text, 0.4, line.polygon) for line in lines]
        turned_by = 90 if image.pixels[0, -1, 0] < 128 else 270  # corner top right: 90
        if turned_by == self.upright_at:
            return [TextLine(ln.text, self.upright_confidence, ln.polygon) for ln in self.upright]
        return [TextLine("~#", 0.66, line.polygon) for line in self.upright]


def test_a_quarter_turned_page_that_reads_badly_sideways_is_read_turned_the_other_way():
    """Text running upwards reads badly sideways: one reading turned 90 degrees, not
    one turned 180 to find the way and another to set it upright."""
    engine = _PoorSideways(upright_at=90)
    result = read_page(engine, _page_with_dark_corner(True), upside_down_confidence=0.8)
    assert (engine.calls, result.rotation) == (2, 90)
    assert [line.text for line in lines_in_reading_order(result)] == [
        "Title",
        "second",
        "third",
        "fourth",
    ]
    assert [line.text for line in result.upright_lines()] == [ln.text for ln in engine.upright]


@pytest.mark.parametrize("upright_confidence", [0.95, 0.75])
def test_a_poor_sideways_page_whose_text_runs_downwards_is_still_set_upright(
    upright_confidence,
):
    """Turned 90 degrees it reads upside down (0.66, better than sideways): the reading
    turned 270 is read too and kept, also when it reads poorly itself (0.75)."""
    engine = _PoorSideways(upright_at=270, upright_confidence=upright_confidence)
    result = read_page(engine, _page_with_dark_corner(True), upside_down_confidence=0.8)
    assert (engine.calls, result.rotation) == (3, 270)
    assert [line.text for line in result.upright_lines()] == [ln.text for ln in engine.upright]


def test_an_engine_that_says_its_sideways_lines_run_upwards_is_read_turned_90():
    """The way a sideways line runs is the engine's to say (a plugin engine may order
    its polygons so): lines running upwards, read well, are read again turned 90."""

    class Upwards(_PoorSideways):
        def recognize(self, image):
            if image.pixels.shape[:2] != (200, 300):
                return super().recognize(image)
            self.calls += 1  # as given: the upright page turned a quarter anticlockwise
            return [
                TextLine(line.text, 0.95, tuple((y, 200 - x) for x, y in line.polygon))
                for line in self.upright[1:]
            ]

    engine = Upwards(upright_at=90)
    result = read_page(engine, _page_with_dark_corner(True), upside_down_confidence=0.8)
    assert (engine.calls, result.rotation) == (2, 90)
    assert [line.text for line in result.upright_lines()] == [ln.text for ln in engine.upright]


def test_vertical_cjk_lines_or_too_few_votes_leave_the_page_as_it_is():
    columns = ["已取之時不參一人見而", "是非不得問之", "有評是是"]  # text_vertical_words.png
    assert page_rotation(_lines_running(90, columns)) == 0  # vertical writing
    assert page_rotation(_lines_running(270, columns)) == 90  # never set upwards
    assert page_rotation(_lines_running(90, ["one", "two"])) == 0  # under 3 lines
    mixed = (
        _lines_running(90, ["aaaa", "bbbb"])
        + _lines_running(0, ["cccc"])
        + _lines_running(270, ["dddd"])
    )
    assert page_rotation(mixed) == 0  # no direction holds more than half the characters
    label = _lines_running(0, ["a long line of text here", "another line", "third"])
    assert page_rotation(label + _lines_running(90, ["axis"])) == 0


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


def test_an_onnx_file_runtime_cannot_load_is_a_model_error_naming_it(tmp_path, shared_state):
    """A recognition directory that passes the file checks but whose ``inference.onnx``
    is no model: the worker's start fails with a ModelError naming the file."""
    import shutil

    from daemon.engine import PaddleEngine
    from daemon.models import ModelError

    rec = tmp_path / "rec"
    shutil.copytree(shared_state / "models" / "PP-OCRv6_small_rec", rec)
    (rec / "inference.onnx").write_bytes(b"not a model, but not empty either")
    settings = Settings.model_validate(
        {"folders": {"state": str(shared_state)}, "ocr": {"rec_model_dir": str(rec)}}
    )
    with pytest.raises(ModelError, match=r"ONNX Runtime cannot load .*rec/inference\.onnx"):
        PaddleEngine(settings, "cpu")


def test_the_paddle_engine_refuses_the_builtin_onnx_models(tmp_path, shared_state):
    from daemon.engine import PaddleEngine
    from daemon.models import ModelError

    settings = Settings.model_validate(
        {"folders": {"state": str(shared_state)}, "ocr": {"engine": "paddle"}}
    )
    with pytest.raises(ModelError, match="runs on engine 'openvino' or 'onnxruntime'"):
        PaddleEngine(settings, "gpu:0")


def test_openvino_reads_what_onnxruntime_reads_through_paddlex(corpus, shared_state):
    """The OpenVINO runtime sits inside PaddleX's own engine and binding registries: an
    upgrade that moves them fails here, and the same models give the same lines."""
    from daemon.engine import PaddleEngine

    page = load_page_image(corpus / "images/ch_en_num.jpg")
    read = {}
    for runtime in ("openvino", "onnxruntime"):
        settings = Settings.model_validate(
            {"folders": {"state": str(shared_state)}, "ocr": {"engine": runtime}}
        )
        read[runtime] = PaddleEngine(settings, "cpu").recognize(page)
    assert "正品促销" in [line.text for line in read["openvino"]]
    assert [line.text for line in read["openvino"]] == [line.text for line in read["onnxruntime"]]
    for ov, ort in zip(read["openvino"], read["onnxruntime"], strict=True):
        assert np.allclose(ov.polygon, ort.polygon, atol=2.0)  # pixels


def test_openvino_missing_is_a_clear_model_error(shared_state, monkeypatch):
    import daemon.engine
    from daemon.engine import PaddleEngine
    from daemon.models import ModelError

    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino raises ImportError
    monkeypatch.delitem(sys.modules, "daemon.engine.openvino", raising=False)
    monkeypatch.delattr(daemon.engine, "openvino", raising=False)
    settings = Settings.model_validate(
        {"folders": {"state": str(shared_state)}, "ocr": {"engine": "openvino"}}
    )
    with pytest.raises(ModelError, match=r"pip install 'scanhopper\[openvino\]'"):
        PaddleEngine(settings, "cpu")


def test_openvino_refuses_an_accelerator(shared_state):
    from daemon.engine import PaddleEngine
    from daemon.models import ModelError

    settings = Settings.model_validate(
        {"folders": {"state": str(shared_state)}, "ocr": {"engine": "openvino"}}
    )
    with pytest.raises(ModelError, match="runs on the CPU only"):
        PaddleEngine(settings, "gpu:0")


@pytest.mark.parametrize(
    ("own", "workers", "busy", "threads"),
    [
        (1, 2, 1, 2),  # a page read alone borrows the idle worker's core
        (1, 2, 2, 1),
        (1, 2, 0, 2),  # before the pool first says: as alone
        (1, 3, 1, 2),  # rounded down to a power of two
        (2, 4, 1, 8),
        (1, 16, 1, 4),  # at most MAX_LENT_FACTOR times its own
        (1, 16, 5, 2),
        (1, 16, 16, 1),
        (2, 1, 1, 2),  # a lone worker keeps its own
    ],
)
def test_lent_threads_share_the_idle_workers_cores(own, workers, busy, threads):
    from daemon.engine.threads import lent_threads, thread_counts

    assert lent_threads(own, workers, busy) == threads
    assert lent_threads(own, workers, busy) <= own * workers
    assert threads in thread_counts(own, workers)


def test_thread_counts_are_the_sessions_a_runner_loads():
    from daemon.engine.threads import thread_counts

    assert thread_counts(1, 1) == [1]
    assert thread_counts(1, 2) == [1, 2]
    assert thread_counts(2, 8) == [2, 4, 8]
    assert thread_counts(1, 64) == [1, 2, 4]


def test_the_onnxruntime_runner_follows_the_shared_cpu_load(shared_state):
    """Each call runs on the threads the pool's count allows, each thread count its own
    session, and the results do not depend on it."""
    from daemon.engine.onnxruntime import OnnxRuntimeRunner
    from daemon.engine.runtimes import CpuRuntimeConfig
    from daemon.engine.threads import CpuLoad

    load = CpuLoad.create()
    try:
        config = CpuRuntimeConfig(cpu_threads=1, cpu_workers=2, cpu_load_fd=load.fd)
        model = shared_state / "models" / "PP-OCRv6_small_rec" / "inference.onnx"
        runner = OnnxRuntimeRunner(model, config)
        line = np.random.default_rng(7).random((1, 3, 48, 320), dtype=np.float32)
        outputs = {}
        for busy, threads in ((2, 1), (1, 2)):
            load.set(busy)
            assert runner.threads() == threads
            outputs[threads] = runner([line])
        assert sorted(runner._sessions) == [1, 2]
        assert np.allclose(outputs[1][0], outputs[2][0], atol=1e-5)
        spinning = "session.intra_op.allow_spinning"
        for session in runner._sessions.values():  # beside another worker: no spinning
            assert session.get_session_options().get_session_config_entry(spinning) == "0"
        alone = OnnxRuntimeRunner(model, CpuRuntimeConfig(cpu_threads=2))
        assert list(alone._sessions) == [2]
        options = alone._sessions[2].get_session_options()
        assert options.get_session_config_entry(spinning) == "1"
        with pytest.raises(ValueError, match="takes 1 inputs"):
            runner([line, line])
    finally:
        load.close()
