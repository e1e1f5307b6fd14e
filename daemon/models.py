"""Offline OCR models: assemble, locate and check PaddleX model directories."""

from __future__ import annotations

import fcntl
import importlib.util
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import yaml

from .errors import ExitCode, ScanhopperError

__all__ = [
    "DEFAULT_DET_MODEL",
    "DEFAULT_REC_MODEL",
    "ModelError",
    "ModelInfo",
    "check_model_dir",
    "ensure_default_models",
    "list_models",
    "rapidocr_models_dir",
]

DEFAULT_DET_MODEL = "PP-OCRv6_small_det"
"""PaddleX name of the default text detection model."""

DEFAULT_REC_MODEL = "PP-OCRv6_small_rec"
"""PaddleX name of the default text recognition model."""

# PaddleX model name -> file name in the rapidocr wheel's ``models/`` folder.
_RAPIDOCR_FILES = {
    DEFAULT_DET_MODEL: "PP-OCRv6_det_small.onnx",
    DEFAULT_REC_MODEL: "PP-OCRv6_rec_small.onnx",
}
_WEIGHT_FILES = ("inference.onnx", "inference.pdiparams")
_GRAPH_FILES = ("inference.onnx", "inference.json", "inference.pdmodel")


class ModelError(ScanhopperError):
    """A model directory is missing, incomplete or does not match its model name."""

    exit_code = ExitCode.child_process_error


@dataclass(frozen=True)
class ModelInfo:
    """One model scanhopper can use, as listed by ``scanhopper models``."""

    name: str
    """PaddleX model name, e.g. ``PP-OCRv6_small_det``."""
    role: str
    """``det`` (text detection) or ``rec`` (text recognition)."""
    path: Path | None
    """Local model directory, or ``None`` where PaddleX resolves the name itself."""
    source: str
    """Where the files come from: ``rapidocr wheel``, ``local`` or ``paddlex``."""
    ready: bool
    """True when the directory exists and passes :func:`check_model_dir`."""


def rapidocr_models_dir() -> Path:
    """Return the ``models/`` folder inside the installed ``rapidocr`` wheel.

    The package is located without importing it (importing it would load OpenCV and
    onnxruntime for nothing).

    Raises:
        ModelError: rapidocr is not installed.
    """
    spec = importlib.util.find_spec("rapidocr")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "the default OCR models come from the 'rapidocr' package, which is not "
            "installed: pip install rapidocr"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "models"


def _onnx_dictionary(onnx_path: Path) -> list[str]:
    """Read the recognition dictionary from an ONNX model's ``character`` metadata.

    Returns:
        The characters, one per class, in model output order (blank excluded).

    Raises:
        ModelError: the file cannot be read or holds no ``character`` metadata.
    """
    import onnxruntime

    try:
        session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors
        raise ModelError(f"{onnx_path}: not a readable ONNX model ({exc})") from exc
    meta = session.get_modelmeta().custom_metadata_map
    if "character" not in meta:
        raise ModelError(f"{onnx_path}: no 'character' dictionary in the ONNX metadata")
    return meta["character"].splitlines()


def _det_yml(name: str) -> dict:
    """PaddleX ``inference.yml`` contents for a DB text detection model."""
    return {
        "Global": {"model_name": name},
        "PreProcess": {
            "transform_ops": [
                {"DecodeImage": {"channel_first": False, "img_mode": "BGR"}},
                {"DetResizeForTest": {"resize_long": 960}},
                {
                    "NormalizeImage": {
                        "mean": [0.485, 0.456, 0.406],
                        "std": [0.229, 0.224, 0.225],
                        "scale": "1./255.",
                        "order": "hwc",
                    }
                },
                {"ToCHWImage": None},
            ]
        },
        "PostProcess": {
            "name": "DBPostProcess",
            "thresh": 0.3,
            "box_thresh": 0.6,
            "max_candidates": 1000,
            "unclip_ratio": 1.5,
        },
    }


def _rec_yml(name: str, dictionary: list[str]) -> dict:
    """PaddleX ``inference.yml`` contents for a CTC text recognition model."""
    return {
        "Global": {"model_name": name},
        "PreProcess": {
            "transform_ops": [
                {"DecodeImage": {"channel_first": False, "img_mode": "BGR"}},
                {"RecResizeImg": {"image_shape": [3, 48, 320]}},
            ]
        },
        "PostProcess": {"name": "CTCLabelDecode", "character_dict": dictionary},
    }


def _assemble(name: str, source: Path, target: Path) -> None:
    """Build one PaddleX model directory from an ONNX file, atomically.

    The directory is built under a temporary name beside ``target`` and renamed into
    place, so a crash never leaves a half-built model directory behind.
    """
    if not source.is_file():
        raise ModelError(f"{source}: model file missing from the rapidocr wheel")
    work = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        shutil.copyfile(source, work / "inference.onnx")
        config = (
            _rec_yml(name, _onnx_dictionary(source)) if name.endswith("_rec") else _det_yml(name)
        )
        (work / "inference.yml").write_text(
            yaml.safe_dump(config, allow_unicode=True, sort_keys=False), "utf-8"
        )
        shutil.rmtree(target, ignore_errors=True)
        work.rename(target)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def check_model_dir(path: Path, name: str) -> None:
    """Check that ``path`` is a usable PaddleX model directory for model ``name``.

    Args:
        path: The model directory.
        name: The PaddleX model name the directory must declare in
            ``inference.yml`` (``Global.model_name``).

    Raises:
        ModelError: naming the path and what is missing or wrong.
    """
    if not path.is_dir():
        raise ModelError(f"model directory {path} does not exist")
    if not any((path / f).is_file() for f in _GRAPH_FILES):
        raise ModelError(
            f"model directory {path} holds no model graph (one of {', '.join(_GRAPH_FILES)})"
        )
    if (
        not any((path / f).is_file() for f in _WEIGHT_FILES)
        and not (path / "inference.json").is_file()
    ):
        raise ModelError(f"model directory {path} holds no weights (inference.pdiparams)")
    yml = path / "inference.yml"
    if not yml.is_file():
        raise ModelError(f"model directory {path} has no inference.yml")
    try:
        config = yaml.safe_load(yml.read_text("utf-8"))
        declared = config["Global"]["model_name"]
    except (yaml.YAMLError, UnicodeDecodeError, TypeError, KeyError) as exc:
        raise ModelError(f"{yml}: unreadable or without Global.model_name ({exc})") from exc
    if declared != name:
        raise ModelError(f"{yml}: declares model {declared!r}, expected {name!r}")
    onnx = path / "inference.onnx"
    if onnx.is_file() and onnx.stat().st_size == 0:
        raise ModelError(f"{onnx} is empty")


def ensure_default_models(models_root: Path) -> dict[str, Path]:
    """Return the default model directories, assembling them offline on first use.

    Each directory is ``models_root/<model name>`` with ``inference.onnx`` copied from
    the rapidocr wheel and a generated ``inference.yml``; for recognition the
    dictionary is taken from the ONNX ``character`` metadata. Nothing is downloaded.

    Args:
        models_root: Folder under the state folder that holds model directories.

    Returns:
        ``{"det": path, "rec": path}``.

    Raises:
        ModelError: the rapidocr wheel is missing or its files are unusable.
    """
    found = {}
    models_root.mkdir(parents=True, exist_ok=True)
    # Workers start together: the lock makes one assemble while the others wait, so
    # none replaces a directory another has just built and is loading.
    with (models_root / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for name, role in ((DEFAULT_DET_MODEL, "det"), (DEFAULT_REC_MODEL, "rec")):
            target = models_root / name
            try:
                check_model_dir(target, name)
            except ModelError:
                _assemble(name, rapidocr_models_dir() / _RAPIDOCR_FILES[name], target)
                check_model_dir(target, name)
            found[role] = target
    return found


def list_models(
    models_root: Path, configured: dict[str, tuple[str, Path | None]]
) -> list[ModelInfo]:
    """Describe the models scanhopper would use, without assembling anything.

    Args:
        models_root: Folder that holds assembled default model directories.
        configured: ``{"det": (name, dir or None), "rec": (name, dir or None)}``; a
            ``None`` directory means the default model (assembled under
            ``models_root``) for the default names, or PaddleX's own resolution
            for other names.

    Returns:
        One :class:`ModelInfo` per role.
    """
    infos = []
    for role, (name, path) in configured.items():
        if path is None and name in _RAPIDOCR_FILES:
            path, source = models_root / name, "rapidocr wheel"
        elif path is None:
            infos.append(ModelInfo(name, role, None, "paddlex", False))
            continue
        else:
            source = "local"
        try:
            check_model_dir(path, name)
            ready = True
        except ModelError:
            ready = False
        infos.append(ModelInfo(name, role, path, source, ready))
    return infos
