"""CPU runtimes as PaddleX inference engines: the seam ONNX Runtime and OpenVINO share.

PaddleX keeps each runtime as an *inference engine* class, registered by its
``entities`` name (``paddlex/inference/models/engines/``), that builds a *runner*: a
callable taking the model's input arrays and returning its output arrays. Which
predictor (pre- and post-processing) serves a model under an engine is a *binding*
(``paddlex/inference/models/bindings/registry.py``). A :class:`CpuRuntimeEngine`
subclass names its engine and runner class; :func:`bind` gives the models the
predictors they have under PaddleX's own ``onnxruntime`` engine, so PaddleX's resizing,
normalisation, DB post-processing and CTC decoding run unchanged, on the same ONNX
files, with the runner doing the arithmetic.

This reaches into PaddleX 3.7's engine and binding registries (pinned ``<3.8``);
``tests/test_engine.py`` reads a real page through each runtime, so an upgrade that
moves them fails there, loudly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
from paddlex.inference.models.bindings import (
    get_binding,
    register_predictor_binding_map,
    try_get_binding,
)
from paddlex.inference.models.engines import RunnerEngine
from pydantic import BaseModel, ConfigDict, Field

__all__ = ["CpuRunner", "CpuRuntimeConfig", "CpuRuntimeEngine", "bind", "model_inputs"]

MODEL_FILE = "inference.onnx"
"""The ONNX file of a PaddleX model directory."""


class CpuRuntimeConfig(BaseModel):
    """``engine_config`` of a CPU runtime: its threads, the pool's shared CPU load,
    plus the ``device_type`` / ``device_id`` PaddleX fills in from the device."""

    model_config = ConfigDict(extra="forbid")
    device_type: str | None = None
    device_id: int | None = None
    cpu_threads: int = Field(1, ge=1)
    """The worker's own threads (``ocr.cpu_threads``)."""
    cpu_workers: int = Field(1, ge=1)
    """The pool's CPU workers, among which idle cores are lent (:mod:`.threads`)."""
    cpu_load_fd: int | None = None
    """Descriptor of the pool's :class:`~daemon.engine.threads.CpuLoad`; ``None``: the
    runner always uses ``cpu_threads``."""


class CpuRunner(Protocol):
    """What a CPU runtime's runner is: built from an ONNX file and its config, called
    as PaddleX calls runners."""

    def __init__(self, model_path: Path, config: CpuRuntimeConfig) -> None: ...

    def __call__(self, x: Any = None, **kwargs: Any) -> list[np.ndarray]: ...

    def close(self) -> None: ...


def model_inputs(x: Any, kwargs: dict[str, Any], names: list[str]) -> dict[str, np.ndarray]:
    """The feed of a runner call: PaddleX passes the input arrays as ``x`` (a list, or
    one array), positionally or by keyword, in the order of the model's sorted input
    ``names`` (PaddleX ``runners.utils.sort_inputs``).

    Raises:
        ValueError: not one array per model input.
    """
    inputs = kwargs.get("x") if x is None else x
    if isinstance(inputs, np.ndarray):
        inputs = [inputs]
    if inputs is None or len(inputs) != len(names):
        raise ValueError(f"the model takes {len(names)} inputs ({names}), not {inputs!r:.60}")
    return {name: np.ascontiguousarray(inputs[rank]) for rank, name in enumerate(sorted(names))}


class CpuRuntimeEngine(RunnerEngine):
    """A PaddleX inference engine that runs ONNX models on the CPU with ``runner``.

    Not registered itself (it has no ``entities``); a subclass that sets ``entities``
    is registered under that name by PaddleX's ``AutoRegisterABCMetaClass``.
    """

    entities: ClassVar[str]
    runner: ClassVar[type[CpuRunner]]

    @property
    def name(self) -> str:
        return self.entities

    @property
    def engine_config_model(self) -> type[BaseModel]:
        return CpuRuntimeConfig

    def get_supported_model_formats(self) -> tuple[str, ...]:
        return ("onnx",)

    def prepare_config_dict(
        self, raw: dict[str, Any], *, model_name: str | None = None, device: str | None = None
    ) -> dict[str, Any]:
        self._apply_device(raw, device)
        if raw.get("device_type") not in (None, "cpu"):
            raise ValueError(f"engine {self.name!r} runs on the CPU only, not {device!r}")
        return raw

    def get_default_runner_builder(self) -> Any:
        def build(
            *, model_name: str, model_dir: Path | None, engine_config: dict, **_: Any
        ) -> CpuRunner:
            if model_dir is None:
                raise ValueError(f"{model_name}: engine {self.name!r} needs a model directory")
            config = CpuRuntimeConfig.model_validate(engine_config)
            return self.runner(Path(model_dir) / MODEL_FILE, config)

        return build

    def validate_runner(self, runner: Any) -> None:
        if not isinstance(runner, self.runner):
            raise TypeError(f"engine {self.name!r} built a {type(runner).__name__}")


def bind(engine: str, model_names: list[str]) -> None:
    """Bind ``model_names`` to ``engine``, each with the predictor (pre- and
    post-processing) it has under PaddleX's ``onnxruntime``. Idempotent.

    Args:
        engine: A registered :class:`CpuRuntimeEngine`'s name.
        model_names: PaddleX model names, e.g. ``["PP-OCRv6_small_det"]``.

    Raises:
        ValueError: a model has no ``onnxruntime`` binding in PaddleX.
    """
    for name in model_names:
        if try_get_binding(name, engine) is not None:
            continue
        try:
            predictor = get_binding(name, "onnxruntime").predictor
        except LookupError as exc:
            raise ValueError(f"model {name!r} cannot run on {engine}: {exc}") from exc
        register_predictor_binding_map(predictor, {engine: [name]})
