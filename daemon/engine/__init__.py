"""The OCR engine: page images in, text lines with polygons out (PaddleOCR 3.x).

One module per concern: :mod:`.results` (the plain data), :mod:`.images` (decoding),
:mod:`.orientation` (which way up a page reads), :mod:`.paddle` (the PaddleOCR
pipeline), :mod:`.runtimes` (the PaddleX seam for CPU runtimes), :mod:`.onnxruntime`
and :mod:`.openvino` (the two CPU runtimes) and :mod:`.threads` (lending idle cores).
Only :mod:`.paddle` and the runtime modules import PaddleOCR, PaddleX, ONNX Runtime or
OpenVINO, and only when an engine is built, so this package is cheap to import
anywhere.
"""

from __future__ import annotations

import importlib

from ..config import Settings
from .images import ImageError, PageImage, image_dpi, limit_image_pixels, load_page_image
from .orientation import page_rotation, read_page
from .paddle import PaddleEngine
from .results import EngineOutputError, OcrEngine, OcrResult, TextLine, make_result

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


def create_engine(settings: Settings, device: str, *, cpu_load_fd: int | None = None) -> OcrEngine:
    """Build the configured engine, in the calling (worker) process.

    ``ocr.engine`` is ``openvino``, ``onnxruntime`` or ``paddle`` for
    :class:`PaddleEngine`, or
    ``module:Class`` for a plugin class taking the same ``(settings, device)``
    arguments (tests use this for scripted fake engines). ``cpu_load_fd``: see
    :class:`PaddleEngine`.

    Raises:
        ModelError: the models cannot be found or loaded.
        ImportError: a plugin module or class cannot be imported.
    """
    name = settings.ocr.engine
    if name in ("openvino", "onnxruntime", "paddle"):
        return PaddleEngine(settings, device, cpu_load_fd=cpu_load_fd)
    module_name, _, class_name = name.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(settings, device)
