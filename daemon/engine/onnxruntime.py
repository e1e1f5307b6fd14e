"""ONNX Runtime as PaddleX's runtime on the CPU, lending idle cores (``engine =
"onnxruntime"``, the default).

PaddleX's own ``onnxruntime`` engine builds one session with a fixed thread count and
cannot set session configuration entries. :class:`OnnxRuntimeRunner` loads one
session per thread count :func:`~.threads.lent_threads` can choose (at most three;
two for two workers: 31 MB more of PP-OCRv6 small models each) and runs each call on
the one the pool's CPU load allows. Beside other CPU workers its thread pools do not
spin (``session.intra_op.allow_spinning = 0``): two workers' spinning threads on two
cores halved their throughput (0.420 against 0.646 pages/s). A lone CPU worker's
threads spin, ONNX Runtime's default (recognition alone: 21.8 lines/s spinning, 21.6
not, on 2 threads).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime

from .runtimes import CpuRuntimeConfig, CpuRuntimeEngine, model_inputs
from .threads import CpuLoad, lent_threads, thread_counts

__all__ = ["ENGINE", "OnnxRuntimeEngine", "OnnxRuntimeRunner"]

ENGINE = "scanhopper_onnxruntime"
"""The PaddleX engine name this module registers."""


class OnnxRuntimeRunner:
    """An ONNX model run by ONNX Runtime's CPU provider, as a PaddleX runner.

    Called with the model's input arrays (a list, or one array), returns its output
    arrays in the model's output order, as PaddleX's ``ONNXRuntimeRunner`` does. Its
    sessions run without ONNX Runtime's memory arena and memory pattern: a worker then
    idles at half the memory (456 against 914 MiB after ten 300 dpi pages) for 3% of
    speed (README.md, "Speed on the CPU").

    Raises:
        RuntimeError: (when built) the file is no ONNX model ONNX Runtime can load.
    """

    def __init__(self, model_path: Path, config: CpuRuntimeConfig) -> None:
        self._path = str(model_path)
        self._config = config
        self._load = None if config.cpu_load_fd is None else CpuLoad.attach(config.cpu_load_fd)
        counts = thread_counts(config.cpu_threads, config.cpu_workers if self._load else 1)
        self._sessions = {threads: self._session(threads) for threads in counts}
        session = self._sessions[config.cpu_threads]
        self._inputs = [meta.name for meta in session.get_inputs()]
        self._outputs = [meta.name for meta in session.get_outputs()]

    def _session(self, threads: int) -> onnxruntime.InferenceSession:
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.enable_cpu_mem_arena = False
        options.enable_mem_pattern = False
        spinning = "1" if self._config.cpu_workers == 1 else "0"  # no sibling to slow down
        options.add_session_config_entry("session.intra_op.allow_spinning", spinning)
        try:
            return onnxruntime.InferenceSession(
                self._path, options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # ONNX Runtime's own errors derive from Exception only
            raise RuntimeError(f"ONNX Runtime cannot load {self._path}: {exc}") from exc

    def threads(self) -> int:
        """Threads the next call runs on (:func:`~.threads.lent_threads`)."""
        if self._load is None:
            return self._config.cpu_threads
        return lent_threads(self._config.cpu_threads, self._config.cpu_workers, self._load.get())

    def __call__(self, x: Any = None, **kwargs: Any) -> list[np.ndarray]:
        feed = model_inputs(x, kwargs, self._inputs)
        return self._sessions[self.threads()].run(self._outputs, feed)

    def close(self) -> None:
        """Nothing to release beyond what garbage collection frees."""


class OnnxRuntimeEngine(CpuRuntimeEngine):
    """PaddleX inference engine running ONNX models with :class:`OnnxRuntimeRunner`.

    Defining the class registers it under :data:`ENGINE`.
    """

    entities = ENGINE
    runner = OnnxRuntimeRunner
