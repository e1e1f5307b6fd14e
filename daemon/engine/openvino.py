"""OpenVINO as PaddleX's runtime on the CPU (``engine = "openvino"``).

PaddleX keeps each runtime as an *inference engine* class, registered by its
``entities`` name (``paddlex/inference/models/engines/``), that builds a *runner*: a
callable taking the model's input arrays and returning its output arrays. Which
predictor (pre- and post-processing) serves a model under an engine is a *binding*
(``paddlex/inference/models/bindings/registry.py``). :func:`register` adds an
``openvino`` engine whose runner is an OpenVINO compiled model, and binds the given
models to the same predictors they have under ``onnxruntime``, so PaddleX's own
resizing, normalisation, DB post-processing and CTC decoding run unchanged, on the
same ONNX files, with OpenVINO doing the arithmetic.

Measured on 2 cores with AVX-512 VNNI (ARCHITECTURE.md): OpenVINO runs PP-OCRv6 small
detection and recognition 1.6 times as fast per call as ONNX Runtime.

This reaches into PaddleX 3.7's engine and binding registries (pinned ``<3.8``);
``tests/test_engine.py`` builds this engine on a real page, so an upgrade that moves
them fails there, loudly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import openvino
from paddlex.inference.models.bindings import (
    get_binding,
    register_predictor_binding_map,
    try_get_binding,
)
from paddlex.inference.models.engines import RunnerEngine
from paddlex.inference.models.runners.inference_runner import InferenceRunner
from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ENGINE", "OpenVINOEngine", "OpenVINORunner", "register"]

ENGINE = "openvino"
"""The PaddleX engine name this module registers."""

_MODEL_FILE = "inference.onnx"


class OpenVINOConfig(BaseModel):
    """``engine_config`` of the ``openvino`` engine: ``cpu_threads``, plus the
    ``device_type`` / ``device_id`` PaddleX fills in from the device."""

    model_config = ConfigDict(extra="forbid")
    device_type: str | None = None
    device_id: int | None = None
    cpu_threads: int = Field(1, ge=1)


class OpenVINORunner(InferenceRunner):
    """An ONNX model compiled by OpenVINO for the CPU, as a PaddleX runner.

    Called with the model's input arrays (a list, or one array), returns its output
    arrays in the model's output order, as PaddleX's ``ONNXRuntimeRunner`` does.
    Compiled for one request at a time (``LATENCY``, one stream) on ``threads``
    inference threads: a worker reads one page at once.
    """

    def __init__(self, model_path: Path, threads: int) -> None:
        core = openvino.Core()
        self._compiled = core.compile_model(
            core.read_model(str(model_path)),
            "CPU",
            {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1},
        )
        self._request = self._compiled.create_infer_request()

    def __call__(self, x: Any = None, **kwargs: Any) -> list[np.ndarray]:
        inputs = kwargs["x"] if x is None else x
        if isinstance(inputs, np.ndarray):
            inputs = [inputs]
        results = self._request.infer([np.ascontiguousarray(a) for a in inputs])
        return [results[output] for output in self._compiled.outputs]

    def close(self) -> None:
        """Nothing to release beyond what garbage collection frees."""


class OpenVINOEngine(RunnerEngine):
    """PaddleX inference engine running ONNX models with OpenVINO on the CPU.

    Defining the class registers it under :data:`ENGINE` (PaddleX's
    ``AutoRegisterABCMetaClass`` keys engines by ``entities``).
    """

    entities = ENGINE

    @property
    def name(self) -> str:
        return ENGINE

    @property
    def engine_config_model(self) -> type[BaseModel]:
        return OpenVINOConfig

    def get_supported_model_formats(self) -> tuple[str, ...]:
        return ("onnx",)

    def prepare_config_dict(
        self, raw: dict[str, Any], *, model_name: str | None = None, device: str | None = None
    ) -> dict[str, Any]:
        self._apply_device(raw, device)
        if raw.get("device_type") not in (None, "cpu"):
            raise ValueError(f"engine {ENGINE!r} runs on the CPU only, not {device!r}")
        return raw

    def get_default_runner_builder(self) -> Any:
        def build(
            *, model_name: str, model_dir: Path | None, engine_config: dict, **_: Any
        ) -> OpenVINORunner:
            if model_dir is None:
                raise ValueError(f"{model_name}: engine {ENGINE!r} needs a model directory")
            return OpenVINORunner(Path(model_dir) / _MODEL_FILE, engine_config["cpu_threads"])

        return build

    def validate_runner(self, runner: Any) -> None:
        if not isinstance(runner, OpenVINORunner):
            raise TypeError(f"engine {ENGINE!r} built a {type(runner).__name__}")


def register(model_names: list[str]) -> None:
    """Bind ``model_names`` to the ``openvino`` engine, each with the predictor
    (pre- and post-processing) it has under ``onnxruntime``. Idempotent.

    Args:
        model_names: PaddleX model names, e.g. ``["PP-OCRv6_small_det"]``.

    Raises:
        ValueError: a model has no ``onnxruntime`` binding in PaddleX.
    """
    for name in model_names:
        if try_get_binding(name, ENGINE) is not None:
            continue
        try:
            predictor = get_binding(name, "onnxruntime").predictor
        except LookupError as exc:
            raise ValueError(f"model {name!r} cannot run on OpenVINO: {exc}") from exc
        register_predictor_binding_map(predictor, {ENGINE: [name]})
