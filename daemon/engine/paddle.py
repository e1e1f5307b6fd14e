"""The PaddleOCR 3.x pipeline as an engine (``engine`` ``openvino``, ``onnxruntime`` or
``paddle``)."""

from __future__ import annotations

import importlib
import math
from typing import Any

from ..config import Settings
from ..models import ModelError, check_model_dir, ensure_default_models
from .images import PageImage
from .results import Point, TextLine

__all__ = ["PaddleEngine"]


class PaddleEngine:
    """The PaddleOCR 3.x pipeline (``paddleocr.PaddleOCR``), loaded once.

    Not thread-safe: one instance per process (ARCHITECTURE.md, engine facts).
    Document orientation and unwarping are always off, since they move coordinates off
    the source pixels.

    Args:
        settings: The configuration.
        device: PaddleOCR device string as the pinned process sees it (``cpu``,
            ``gpu:0``, ``npu:0``, ``xpu:0``).
        cpu_load_fd: Descriptor of the worker pool's shared CPU load
            (:class:`~.threads.CpuLoad`), through which an ``onnxruntime`` engine
            borrows idle cores; ``None``: it runs on ``ocr.cpu_threads``.

    Raises:
        ModelError: a model directory is missing or corrupt, or the engine cannot run
            the configured model format.
    """

    def __init__(self, settings: Settings, device: str, *, cpu_load_fd: int | None = None) -> None:
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
            "device": device,
        }
        if ocr.textline_orientation:
            kwargs["textline_orientation_model_name"] = ocr.textline_orientation_model
            kwargs["textline_orientation_model_dir"] = _model_dir(settings, "textline")
        kwargs.update(_runtime_arguments(settings, device, cpu_load_fd))
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


def _runtime_arguments(settings: Settings, device: str, cpu_load_fd: int | None) -> dict[str, Any]:
    """PaddleOCR arguments choosing the runtime of every model and its CPU threads.

    ``paddle`` is PaddleOCR's own engine, and so is ``onnxruntime`` on an accelerator
    (``onnxruntime-gpu``; ``openvino`` refuses one). The CPU runtimes (``onnxruntime``,
    ``openvino``) are PaddleX engines scanhopper registers (:mod:`.runtimes`), no
    engines PaddleOCR accepts by name (``SUPPORTED_INFERENCE_ENGINE_LIST``), so they are
    set per model in the PaddleX pipeline configuration, where a model's own ``engine``
    wins over the pipeline's (PaddleX ``BasePipeline._resolve_child_engine``).
    """
    ocr = settings.ocr
    if ocr.engine == "paddle":
        return {"engine": "paddle", "cpu_threads": ocr.cpu_threads}
    if ocr.engine == "onnxruntime" and device != "cpu":  # PaddleX picks onnxruntime-gpu
        return {
            "engine": "onnxruntime",
            "engine_config": {
                "intra_op_num_threads": ocr.cpu_threads,
                "inter_op_num_threads": 1,
                "enable_cpu_mem_arena": False,
                "enable_mem_pattern": False,
            },
        }
    from paddlex.inference import load_pipeline_config

    from .runtimes import bind

    try:
        runtime = importlib.import_module(f".{ocr.engine}", __package__)
    except ImportError as exc:
        extra = "'scanhopper[openvino]'" if ocr.engine == "openvino" else "scanhopper"
        raise ModelError(
            f"engine {ocr.engine!r} needs {exc.name or exc}: pip install {extra}"
        ) from exc
    models = {"TextDetection": ocr.det_model, "TextRecognition": ocr.rec_model}
    if ocr.textline_orientation:
        models["TextLineOrientation"] = ocr.textline_orientation_model
    bind(runtime.ENGINE, list(models.values()))
    engine_config = {
        "cpu_threads": ocr.cpu_threads,
        "cpu_workers": max(settings.workers.devices.count("cpu"), 1),
        "cpu_load_fd": cpu_load_fd,
    }
    config = load_pipeline_config("OCR")
    for role in models:
        config["SubModules"][role]["engine"] = runtime.ENGINE
        config["SubModules"][role]["engine_config"] = engine_config
    # an empty pipeline-wide config, merged under each model's own, keeps PaddleOCR's
    # Paddle defaults out of them
    return {"paddlex_config": config, "engine_config": {}}


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
                    f"the built-in {name} model is ONNX and runs on engine 'openvino' "
                    "or 'onnxruntime'; "
                    "engine 'paddle' needs a Paddle model directory "
                    f"(ocr.{role}_model_dir) or an official PaddleX model name"
                )
            return str(defaults[role])
        return None
    check_model_dir(path, name)
    return str(path)
