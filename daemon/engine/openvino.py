"""OpenVINO as PaddleX's runtime on the CPU (``engine = "openvino"``).

:class:`OpenVINORunner` is an OpenVINO compiled model behind the seam of
:mod:`.runtimes`: PaddleX's own pre- and post-processing, on the same ONNX files.
Measured on 2 cores with AVX-512 VNNI (ARCHITECTURE.md): OpenVINO runs PP-OCRv6 small
detection and recognition 1.6 times as fast per call as ONNX Runtime; on an AVX2 CPU
it was no faster (README.md, "Speed on the CPU"). It runs on the worker's own
``ocr.cpu_threads`` (it borrows no idle cores: :mod:`.threads`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import openvino

from .runtimes import CpuRuntimeConfig, CpuRuntimeEngine, model_inputs

__all__ = ["ENGINE", "OpenVINOEngine", "OpenVINORunner"]

ENGINE = "openvino"
"""The PaddleX engine name this module registers."""


class OpenVINORunner:
    """An ONNX model compiled by OpenVINO for the CPU, as a PaddleX runner.

    Called with the model's input arrays (a list, or one array), returns its output
    arrays in the model's output order, as PaddleX's ``ONNXRuntimeRunner`` does.
    Compiled for one request at a time (``LATENCY``, one stream) on ``cpu_threads``
    inference threads: a worker reads one page at once.
    """

    def __init__(self, model_path: Path, config: CpuRuntimeConfig) -> None:
        core = openvino.Core()
        self._compiled = core.compile_model(
            core.read_model(str(model_path)),
            "CPU",
            {
                "INFERENCE_NUM_THREADS": config.cpu_threads,
                "PERFORMANCE_HINT": "LATENCY",
                "NUM_STREAMS": 1,
            },
        )
        self._request = self._compiled.create_infer_request()
        self._inputs = [port.any_name for port in self._compiled.inputs]

    def __call__(self, x: Any = None, **kwargs: Any) -> list[np.ndarray]:
        results = self._request.infer(model_inputs(x, kwargs, self._inputs))
        return [results[output] for output in self._compiled.outputs]

    def close(self) -> None:
        """Nothing to release beyond what garbage collection frees."""


class OpenVINOEngine(CpuRuntimeEngine):
    """PaddleX inference engine running ONNX models with OpenVINO on the CPU.

    Defining the class registers it under :data:`ENGINE`.
    """

    entities = ENGINE
    runner = OpenVINORunner
