"""The OCR engine: page images in, text lines with polygons out (PaddleOCR 3.x).

This is the only module that imports PaddleOCR, and it does so only inside
:class:`PaddleEngine`, so the data types here are cheap to import anywhere.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import re
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .config import Settings
from .models import ModelError, check_model_dir, ensure_default_models

__all__ = [
    "EngineOutputError",
    "ImageError",
    "OcrEngine",
    "OcrResult",
    "PaddleEngine",
    "PageImage",
    "TextLine",
    "create_engine",
    "image_dpi",
    "limit_image_pixels",
    "load_page_image",
    "make_result",
    "page_rotation",
    "read_page",
]

Point = tuple[float, float]
"""A point in source-image pixels: ``(x, y)``, origin top-left, y downwards."""


class ImageError(Exception):
    """A page image cannot be decoded (corrupt, truncated, unsupported or too large)."""


class EngineOutputError(Exception):
    """The engine returned data that cannot be a text line (NaN or degenerate polygon)."""


@dataclass(frozen=True)
class TextLine:
    """One recognised text line."""

    text: str
    """The recognised text."""
    confidence: float
    """Recognition score, 0.0 to 1.0."""
    polygon: tuple[Point, Point, Point, Point]
    """Four corners in source-image pixels: top-left, top-right, bottom-right,
    bottom-left as the text reads (PaddleOCR's order)."""

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        """Axis-aligned bounding box of the polygon: ``(x0, y0, x1, y1)`` in pixels."""
        xs = [p[0] for p in self.polygon]
        ys = [p[1] for p in self.polygon]
        return min(xs), min(ys), max(xs), max(ys)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready form: ``{"text", "confidence", "polygon": [[x, y] * 4]}``."""
        return {
            "text": self.text,
            "confidence": self.confidence,
            "polygon": [list(p) for p in self.polygon],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TextLine:
        """Inverse of :meth:`to_dict`."""
        polygon = tuple((float(x), float(y)) for x, y in data["polygon"])
        return cls(data["text"], float(data["confidence"]), polygon)  # type: ignore[arg-type]


@dataclass(frozen=True)
class OcrResult:
    """The OCR of one page image."""

    width: int
    """Image width in pixels (after EXIF orientation)."""
    height: int
    """Image height in pixels (after EXIF orientation)."""
    dpi: float
    """Resolution of the image in dots per inch (the configured default when the file
    states none)."""
    lines: tuple[TextLine, ...]
    """Text lines in the engine's reading order (top to bottom)."""
    device: str | None = None
    """The device slot that read the page (``gpu:1``), when read by a worker pool."""
    seconds: float | None = None
    """Seconds the worker spent on the page (decoding and OCR, not the time it waited
    in a queue), when read by a worker pool."""
    rotation: int = 0
    """Degrees clockwise the page must be turned to read upright: ``0``, ``90``, ``180``
    or ``270`` (see :func:`page_rotation`). Polygons stay in the image's own pixels."""

    def upright_lines(self) -> tuple[TextLine, ...]:
        """The lines with their polygons on the page turned upright (``rotation``), for
        laying them out as a person reads them."""
        if not self.rotation:
            return self.lines
        return _turned(self.lines, self.width, self.height, self.rotation)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready form, as stored in the state database and sidecars."""
        return {
            "width": self.width,
            "height": self.height,
            "dpi": self.dpi,
            "lines": [line.to_dict() for line in self.lines],
            "device": self.device,
            "seconds": self.seconds,
            "rotation": self.rotation,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OcrResult:
        """Inverse of :meth:`to_dict`."""
        lines = tuple(TextLine.from_dict(d) for d in data["lines"])
        return cls(
            int(data["width"]),
            int(data["height"]),
            float(data["dpi"]),
            lines,
            data.get("device"),
            data.get("seconds"),
            int(data.get("rotation", 0)),
        )


def _turned(
    lines: tuple[TextLine, ...], width: int, height: int, degrees: int
) -> tuple[TextLine, ...]:
    """``lines`` of a ``width`` x ``height`` pixel page, on that page turned ``degrees``
    (90, 180 or 270) clockwise: ``(x, y)`` goes to ``(height - y, x)``, ``(width - x,
    height - y)`` or ``(y, width - x)``. Each polygon keeps its corner order, so its first
    edge stays the text's top edge."""
    turn = {
        90: lambda x, y: (height - y, x),
        180: lambda x, y: (width - x, height - y),
        270: lambda x, y: (y, width - x),
    }[degrees]
    return tuple(
        TextLine(
            line.text,
            line.confidence,
            tuple(turn(x, y) for x, y in line.polygon),  # type: ignore[arg-type]
        )
        for line in lines
    )


@dataclass(frozen=True)
class PageImage:
    """Decoded pixels of one page, ready for the engine."""

    pixels: np.ndarray
    """``(height, width, 3)`` uint8 array, BGR channel order (OpenCV's)."""
    dpi: float
    """Resolution in dots per inch."""
    source: Path | None = None
    """The file the pixels came from, for messages."""


class OcrEngine(Protocol):
    """What a worker needs from an engine: pixels in, text lines out."""

    def recognize(self, image: PageImage) -> list[TextLine]:
        """Return the text lines of ``image`` in reading order."""
        ...


def limit_image_pixels(max_pixels: int) -> None:
    """Refuse to decode images of more than ``max_pixels`` pixels (decompression bombs).

    Sets Pillow's ``Image.MAX_IMAGE_PIXELS`` and turns its ``DecompressionBombWarning``
    (between 1x and 2x the limit) into an error, for this process.
    """
    Image.MAX_IMAGE_PIXELS = max_pixels
    warnings.simplefilter("error", Image.DecompressionBombWarning)


def load_page_image(path: Path, *, frame: int = 0, default_dpi: float = 300.0) -> PageImage:
    """Decode one page image file, EXIF orientation applied.

    Args:
        path: JPEG, PNG, TIFF, BMP, WebP or any format Pillow reads.
        frame: Frame of a multi-page TIFF, 0-based.
        default_dpi: DPI to assume when the file states none.

    Returns:
        The page, in BGR pixels, with the file's DPI or ``default_dpi``.

    Raises:
        ImageError: the file is missing, not an image, truncated, has no such frame,
            or exceeds Pillow's decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``).
    """
    try:
        with Image.open(path) as im:
            im.seek(frame)
            dpi = image_dpi(im, default_dpi)
            upright = ImageOps.exif_transpose(im)
            rgb = np.asarray(upright.convert("RGB"))
    except EOFError as exc:
        raise ImageError(f"{path}: has no frame {frame}") from exc
    except (
        UnidentifiedImageError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
        OSError,
        ValueError,
    ) as exc:
        raise ImageError(f"{path}: cannot read image ({exc})") from exc
    return PageImage(np.ascontiguousarray(rgb[:, :, ::-1]), dpi, path)


def image_dpi(im: Image.Image, default: float) -> float:
    """The horizontal DPI an image file states, or ``default``."""
    dpi = im.info.get("dpi")
    try:
        value = float(dpi[0]) if dpi else 0.0
    except (TypeError, ValueError):
        value = 0.0
    return value if 1.0 <= value <= 100_000.0 else default


def make_result(image: PageImage, lines: list[TextLine]) -> OcrResult:
    """Check an engine's lines and bind them to the image size.

    Polygon corners are clamped to the image; text is stripped of leading and trailing
    spaces, and a line left empty is dropped.

    Raises:
        EngineOutputError: a corner or confidence is NaN or infinite.
    """
    height, width = image.pixels.shape[:2]
    kept = []
    for line in lines:
        values = [c for p in line.polygon for c in p] + [line.confidence]
        if len(line.polygon) != 4 or not all(math.isfinite(v) for v in values):
            raise EngineOutputError(f"engine returned a bad polygon or score: {line!r}")
        text = line.text.strip()
        if not text:
            continue
        polygon = tuple(
            (min(max(x, 0.0), float(width)), min(max(y, 0.0), float(height)))
            for x, y in line.polygon
        )
        kept.append(TextLine(text, line.confidence, polygon))  # type: ignore[arg-type]
    return OcrResult(width, height, image.dpi, tuple(kept))


_ORIENTATION_MIN_LINES = 3
"""Lines a page needs before their confidence or direction says anything about the
page's orientation."""
_UPSIDE_DOWN_MARGIN = 0.1
"""How much higher the turned reading's mean confidence must be to be kept."""


def _mean_confidence(result: OcrResult) -> float:
    return sum(line.confidence for line in result.lines) / max(len(result.lines), 1)


def read_page(engine: OcrEngine, image: PageImage, *, upside_down_confidence: float) -> OcrResult:
    """OCR one page, reading it again turned 180 degrees when it reads poorly, and say
    how the page must be turned to read upright (:func:`page_rotation`).

    An upside-down page reads as garbage with a low mean line confidence (measured on
    ``pdf/cardinal.pdf``: 0.99 on its upright pages, 0.66 on its upside-down ones). A
    page of at least 3 lines whose mean confidence is below ``upside_down_confidence``
    is read again turned; the turned reading is kept when its mean confidence is at
    least 0.1 higher, its polygons mapped back to the image's own pixels. Pages that
    read well are read once. (Text turned 90 degrees either way reads without this: the
    engine turns tall line crops before recognition, and one of the two ways comes out
    upside down and is read again turned.)

    Raises:
        EngineOutputError: as :func:`make_result`.
    """
    result = make_result(image, engine.recognize(image))
    if (
        len(result.lines) >= _ORIENTATION_MIN_LINES
        and _mean_confidence(result) < upside_down_confidence
    ):
        turned_image = dataclasses.replace(
            image, pixels=np.ascontiguousarray(image.pixels[::-1, ::-1])
        )
        turned = make_result(turned_image, engine.recognize(turned_image))
        if _mean_confidence(turned) >= _mean_confidence(result) + _UPSIDE_DOWN_MARGIN:
            lines = _turned(turned.lines, result.width, result.height, 180)
            result = dataclasses.replace(result, lines=lines)
    return dataclasses.replace(result, rotation=page_rotation(result.lines))


_CJK = re.compile("[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")
"""Kana, CJK ideographs and Hangul syllables: scripts also set in vertical lines."""


def _direction(line: TextLine) -> int:
    """The way the line's text runs, to the nearest quarter turn: 0 (left to right), 90
    (downwards), 180 (right to left, upside down) or 270 (upwards), in image pixels
    with y downwards, taken from the polygon's first (top) edge."""
    (x0, y0), (x1, y1) = line.polygon[0], line.polygon[1]
    return round(math.degrees(math.atan2(y1 - y0, x1 - x0)) / 90) % 4 * 90


def page_rotation(lines: tuple[TextLine, ...]) -> int:
    """Degrees clockwise (0, 90, 180, 270) to turn a page so its text reads left to right.

    The lines vote with their characters for the way their text runs
    (:func:`_direction`); a direction held by more than half the characters of a page of
    at least 3 lines decides: text running downwards (a page turned a quarter clockwise)
    needs 270, upwards 90, upside down 180. Lines running downwards that are mostly
    CJK are vertical writing on an upright page, and decide nothing (a CJK page of
    horizontal lines turned a quarter clockwise therefore stays as it is).

    Args:
        lines: Text lines, polygons in image pixels with their first edge the text's top
            edge (as the engine gives them).
    """
    if len(lines) < _ORIENTATION_MIN_LINES:
        return 0
    votes: Counter[int] = Counter()
    for line in lines:
        votes[_direction(line)] += len(line.text)
    direction, count = votes.most_common(1)[0]
    if count * 2 <= sum(votes.values()):
        return 0
    if direction == 90:
        text = "".join(line.text for line in lines if _direction(line) == 90)
        if len(_CJK.findall(text)) * 2 > len(text):
            return 0
    return (360 - direction) % 360


class PaddleEngine:
    """The PaddleOCR 3.x pipeline (``paddleocr.PaddleOCR``), loaded once.

    Not thread-safe: one instance per process (ARCHITECTURE.md, engine facts).
    Document orientation and unwarping are always off, since they move coordinates off
    the source pixels.

    Args:
        settings: The configuration.
        device: PaddleOCR device string as the pinned process sees it (``cpu``,
            ``gpu:0``, ``npu:0``, ``xpu:0``).

    Raises:
        ModelError: a model directory is missing or corrupt, or the engine cannot run
            the configured model format.
    """

    def __init__(self, settings: Settings, device: str) -> None:
        from paddleocr import PaddleOCR

        ocr = settings.ocr
        kwargs: dict[str, Any] = {
            "use_doc_orientation_classify": False,
            "use_doc_unwarping": False,
            "use_textline_orientation": ocr.textline_orientation,
            "text_detection_model_name": ocr.det_model,
            "text_detection_model_dir": _model_dir(settings, "det"),
            "text_recognition_model_name": ocr.rec_model,
            "text_recognition_model_dir": _model_dir(settings, "rec"),
            "text_recognition_batch_size": ocr.rec_batch_size,
            "text_det_limit_side_len": ocr.det_limit_side_len,
            "text_det_limit_type": ocr.det_limit_type,
            "engine": ocr.engine,
            "device": device,
        }
        if ocr.textline_orientation:
            kwargs["textline_orientation_model_name"] = ocr.textline_orientation_model
            kwargs["textline_orientation_model_dir"] = _model_dir(settings, "textline")
        if ocr.engine == "onnxruntime":
            kwargs["engine_config"] = {
                "intra_op_num_threads": ocr.cpu_threads,
                "inter_op_num_threads": 1,
            }
        else:
            kwargs["cpu_threads"] = ocr.cpu_threads
        try:
            self._pipeline = PaddleOCR(**kwargs)
        except (FileNotFoundError, ValueError, RuntimeError) as exc:
            raise ModelError(f"PaddleOCR could not load its models: {exc}") from exc

    def recognize(self, image: PageImage) -> list[TextLine]:
        """Run detection and recognition on one page.

        Returns:
            Text lines in PaddleOCR's order, polygons in ``image`` pixels.
        """
        (result,) = self._pipeline.predict(image.pixels)
        return [
            TextLine(str(text), float(score), _text_polygon(poly))
            for text, score, poly in zip(
                result["rec_texts"], result["rec_scores"], result["rec_polys"], strict=True
            )
        ]


def _text_polygon(poly: Any) -> tuple[Point, Point, Point, Point]:
    """Reorder a PaddleOCR box so its first edge is the top of the text.

    PaddleOCR gives boxes clockwise from the image's top-left, and reads a box at least
    1.5 times taller than wide as text running top to bottom (it turns such crops by
    90 degrees before recognition: PaddleX ``get_rotate_crop_image``). For those, the
    text's top edge is the box's right side.
    """
    p0, p1, p2, p3 = ((float(x), float(y)) for x, y in poly)
    across = max(math.dist(p0, p1), math.dist(p2, p3))
    down = max(math.dist(p0, p3), math.dist(p1, p2))
    return (p1, p2, p3, p0) if down >= 1.5 * across else (p0, p1, p2, p3)


def _model_dir(settings: Settings, role: str) -> str | None:
    """The local directory for a model role, assembling defaults; ``None`` for PaddleX."""
    ocr = settings.ocr
    name, path = {
        "det": (ocr.det_model, ocr.det_model_dir),
        "rec": (ocr.rec_model, ocr.rec_model_dir),
        "textline": (ocr.textline_orientation_model, ocr.textline_orientation_model_dir),
    }[role]
    if path is None:
        defaults = ensure_default_models(settings.models_dir) if role != "textline" else {}
        if role in defaults and defaults[role].name == name:
            if ocr.engine == "paddle":
                raise ModelError(
                    f"the built-in {name} model is ONNX and runs on engine 'onnxruntime'; "
                    "engine 'paddle' needs a Paddle model directory "
                    f"(ocr.{role}_model_dir) or an official PaddleX model name"
                )
            return str(defaults[role])
        return None
    check_model_dir(path, name)
    return str(path)


def create_engine(settings: Settings, device: str) -> OcrEngine:
    """Build the configured engine, in the calling (worker) process.

    ``ocr.engine`` is ``onnxruntime`` or ``paddle`` for :class:`PaddleEngine`, or
    ``module:Class`` for a plugin class taking the same ``(settings, device)``
    arguments (tests use this for scripted fake engines).

    Raises:
        ModelError: the models cannot be found or loaded.
        ImportError: a plugin module or class cannot be imported.
    """
    name = settings.ocr.engine
    if name in ("onnxruntime", "paddle"):
        return PaddleEngine(settings, device)
    module_name, _, class_name = name.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(settings, device)
