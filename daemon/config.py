"""Configuration: one typed, validated model, read from TOML."""

from __future__ import annotations

import math
import os
import re
import tomllib
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from .errors import ExitCode, ScanhopperError
from .models import DEFAULT_DET_MODEL, DEFAULT_REC_MODEL

__all__ = [
    "ConfigError",
    "FailedPages",
    "FolderSettings",
    "IntakeSettings",
    "OcrSettings",
    "OutputSettings",
    "Settings",
    "Sidecar",
    "SourcePolicy",
    "TextPolicy",
    "WorkerSettings",
    "load_settings",
]

_DEVICE = re.compile(r"^(cpu|(gpu|npu|xpu):\d+)$")
_ENGINES = ("openvino", "onnxruntime", "paddle")


class ConfigError(ScanhopperError):
    """The configuration file is unreadable or holds a bad key or value."""

    exit_code = ExitCode.invalid_config


def _check_device(value: str) -> str:
    if not _DEVICE.match(value):
        raise ValueError(f"device {value!r} is not one of cpu, gpu:N, npu:N, xpu:N")
    return value


def _check_engine(value: str) -> str:
    if value not in _ENGINES and not re.match(r"^[\w.]+:\w+$", value):
        raise ValueError(
            f"engine {value!r} is not 'openvino', 'onnxruntime', 'paddle' "
            "or a 'module:Class' plugin"
        )
    return value


Device = Annotated[str, AfterValidator(_check_device)]
"""A device slot name: ``cpu``, ``gpu:N``, ``npu:N`` or ``xpu:N`` (N is 0-based)."""


class TextPolicy(StrEnum):
    """What to do with a PDF page that already has text (OCRmyPDF's three modes)."""

    skip = "skip"
    """Keep the page as it is, no OCR (``--skip-text``)."""
    redo = "redo"
    """Remove the page's invisible text (an earlier OCR layer) and OCR it again; a page
    with visible text is kept as it is (``--redo-ocr``)."""
    force = "force"
    """OCR every page; an earlier invisible layer is replaced as under ``redo``, and
    visible text is kept, the new layer on top (``--force-ocr``, but the page's own
    content is kept, not rasterised: its visible text then extracts twice)."""


class Sidecar(StrEnum):
    """A sidecar file written beside the PDF, named by its suffix."""

    txt = "txt"
    """UTF-8 text, lines in reading order, pages separated by form feed (U+000C)."""
    json = "json"
    """Per page: ``width``/``height`` (pixels), ``dpi`` and ``lines`` (text, confidence,
    polygon in pixels), in reading order; ``null`` for a page without OCR."""
    hocr = "hocr"
    """hOCR 1.2 (http://kba.github.io/hocr-spec/1.2/): XHTML, bboxes in pixels."""
    alto = "alto.xml"
    """ALTO v4 (https://www.loc.gov/standards/alto/v4/alto-4-4.xsd), pixel units."""


class SourcePolicy(StrEnum):
    """What happens to a document's source files once its PDF is published."""

    keep = "keep"
    """Leave them in the inbox (new pages added later re-open the document)."""
    archive = "archive"
    """Move them under the archive folder, mirroring their inbox path."""
    delete = "delete"
    """Delete them (and their folder, once empty)."""


class FailedPages(StrEnum):
    """What a document with some failed pages becomes."""

    publish = "publish"
    """Publish it with those pages as image-only pages (or left out where the file
    cannot be read at all), state ``done_with_errors``."""
    fail = "fail"
    """Fail the whole document: its files go to the failed folder with a reason file."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class FolderSettings(_Strict):
    """Where scanhopper reads and writes; nothing is written anywhere else."""

    inbox: list[Path] = Field(default_factory=lambda: [Path("scanhopper/inbox")], min_length=1)
    """Watched inbox roots; each document's output mirrors its path under its root."""
    outbox: Path = Path("scanhopper/outbox")
    """Where searchable PDFs (and sidecars) are published."""
    archive: Path = Path("scanhopper/archive")
    """Where sources go after publishing when ``intake.source_policy = "archive"``."""
    failed: Path = Path("scanhopper/failed")
    """Where the files of a failed document go, with a ``.reason.txt`` beside them."""
    state: Path = Path("scanhopper/state")
    """State database, model directories and temp caches."""

    @model_validator(mode="after")
    def _no_overlap(self) -> FolderSettings:
        """Refuse two folders where one is the same as or inside the other.

        Paths are compared absolute and resolved (symlinks followed; a folder that does
        not exist yet resolves through its nearest existing parent), so an outbox inside
        an inbox, or one folder under two names, is found before anything is written.

        Raises:
            ValueError: the first overlap, both keys and folders named.
        """
        named = [(f"inbox[{i}]", root) for i, root in enumerate(self.inbox)]
        named += [(key, getattr(self, key)) for key in ("outbox", "archive", "failed", "state")]
        resolved = [(f"folders.{key}", folder, folder.resolve()) for key, folder in named]
        for i, (key_a, folder_a, a) in enumerate(resolved):
            for key_b, folder_b, b in resolved[i + 1 :]:
                if a == b:
                    raise ValueError(
                        f"{key_a} ({folder_a}) and {key_b} ({folder_b}) are the same folder"
                    )
                if a.is_relative_to(b):
                    raise ValueError(f"{key_a} ({folder_a}) is inside {key_b} ({folder_b})")
                if b.is_relative_to(a):
                    raise ValueError(f"{key_b} ({folder_b}) is inside {key_a} ({folder_a})")
        return self


class IntakeSettings(_Strict):
    """How the inbox is watched and when a document is taken and complete."""

    completion_marker: str = Field(".complete", min_length=1, pattern=r"^[^/\\]+$")
    """File name that marks a folder complete (``scanhopper complete`` creates it)."""
    quiet_seconds: float = Field(0.0, ge=0)
    """Auto-complete a folder when none of its files changed for this long; ``0``: off."""
    stable_seconds: float = Field(2.0, ge=0)
    """A file is taken only once its size and mtime stayed the same this long."""
    settle_seconds: float = Field(10.0, ge=0)
    """A complete folder is published only once nothing in it changed for this long, so
    a copy that puts the marker first (``cp -r``) or a scanner pausing between pages
    ends up in one PDF. Pages that still arrive after a publication publish the
    folder again, as a new version, without a second marker."""
    force_polling: bool = False
    """Poll instead of using native events (network shares, some containers)."""
    poll_interval: float = Field(2.0, gt=0)
    """Seconds between polls when polling."""
    rescan_interval: float = Field(300.0, gt=0)
    """Seconds between full reconciles of disk with the database (events are hints)."""
    source_policy: SourcePolicy = SourcePolicy.keep
    """What happens to sources after publishing: ``keep``, ``archive`` or ``delete``."""
    failed_pages: FailedPages = FailedPages.publish
    """A document with failed pages: ``publish`` (``done_with_errors``) or ``fail``."""


class OcrSettings(_Strict):
    """What the OCR engine runs and how (PaddleOCR 3.x pipeline arguments)."""

    engine: Annotated[str, AfterValidator(_check_engine)] = "onnxruntime"
    """``onnxruntime`` (CPU, or GPU with onnxruntime-gpu), ``openvino`` (CPU; PaddleX's
    pipeline with OpenVINO running the same ONNX models: ``pip install
    'scanhopper[openvino]'``; no faster than ONNX Runtime on an AVX2 CPU, README.md,
    "Speed on the CPU"), ``paddle`` (Paddle Inference, for gpu/npu/xpu devices), or
    ``module:Class`` naming an engine plugin class."""
    det_model: str = DEFAULT_DET_MODEL
    """PaddleX name of the text detection model."""
    det_model_dir: Path | None = None
    """Local directory of the detection model; ``None``: the built-in offline model for
    the default name, otherwise PaddleX resolves the name (it may download)."""
    rec_model: str = DEFAULT_REC_MODEL
    """PaddleX name of the text recognition model."""
    rec_model_dir: Path | None = None
    """Local directory of the recognition model; ``None`` as for ``det_model_dir``."""
    textline_orientation: bool = False
    """Classify each text line as upright or upside down (needs its own model)."""
    textline_orientation_model: str = "PP-LCNet_x1_0_textline_ori"
    """PaddleX name of the text line orientation model."""
    textline_orientation_model_dir: Path | None = None
    """Local directory of the text line orientation model."""
    upside_down_confidence: float = Field(0.8, ge=0.0, le=1.0)
    """A page of at least 3 lines whose mean line confidence is below this is read again
    turned 180 degrees, and kept turned when that reads clearly better (feeders put
    pages in upside down); ``0`` turns the check off. See ``engine.read_page``."""
    rec_batch_size: int = Field(1, ge=1, le=256)
    """Text lines recognised per batch. On the CPU one at a time is fastest (a batch is
    padded to its widest line) and needs least memory; accelerators want more."""
    det_limit_side_len: int = Field(1280, ge=32, le=8192)
    """Side length, in pixels, to which text detection resizes the page (see
    ``det_limit_type``). ``64`` with ``min`` is PaddleX's own default: nearly full
    resolution (at most 4000 pixels a side), several times slower on a 300 dpi page and
    no more accurate (README.md, "Speed on the CPU")."""
    det_limit_type: Literal["min", "max"] = "max"
    """``max``: the longest side is scaled down to ``det_limit_side_len``; ``min``: the
    shortest side is scaled up to it."""
    cpu_threads: int = Field(ge=1, le=256)
    """Threads each CPU worker uses for inference. Unset: the machine's usable cores
    shared evenly among the CPU workers (:func:`available_cores`). Under
    ``onnxruntime``, a worker reading a page while other CPU workers idle borrows their
    threads, up to four times its own (:mod:`daemon.engine.threads`)."""


class OutputSettings(_Strict):
    """How pages are read and the searchable PDF is written."""

    image_dpi: float = Field(300.0, ge=1, le=100_000)
    """DPI assumed for an image that does not state one (sets its page size)."""
    render_dpi: float = Field(300.0, ge=50, le=1200)
    """DPI at which PDF pages are rasterised for OCR."""
    max_pixels: int = Field(100_000_000, ge=1_000_000)
    """Most pixels of a page image: a larger image file is refused as a decompression
    bomb, a larger PDF page is rasterised at a lower DPI, so memory stays bounded
    (3 bytes per pixel when decoded)."""
    text_policy: TextPolicy = TextPolicy.skip
    """PDF pages that already have text: ``skip``, ``redo`` or ``force``."""
    chunk_pages: int = Field(25, ge=1, le=1000)
    """Pages assembled in memory at once; memory grows with this, not the page count."""
    sidecars: list[Sidecar] = Field(default_factory=list)
    """Sidecar files beside each PDF: any of ``txt``, ``json``, ``hocr``, ``alto.xml``."""


class WorkerSettings(_Strict):
    """The OCR worker processes: one per device slot."""

    devices: list[Device] = Field(min_length=1)
    """One worker per entry; repeat ``cpu`` for several CPU workers. ``"auto"`` (the
    default): as many CPU workers as :func:`auto_cpu_workers` gives for the usable
    cores. Accelerators are always listed explicitly."""
    page_timeout: float = Field(300.0, gt=0)
    """Seconds one page may take before its worker is killed and restarted."""
    start_timeout: float = Field(180.0, gt=0)
    """Seconds a worker may take to load its models and report ready."""
    stop_grace: float = Field(10.0, ge=0)
    """Seconds a worker gets to exit after its input is closed, then SIGTERM, then the
    same again before SIGKILL."""
    health_interval: float = Field(5.0, gt=0)
    """Seconds between liveness checks of an idle worker."""
    queue_depth: int = Field(2, ge=1, le=64)
    """Length of each device slot's queue: pages prepared (PDF pages rasterised) and
    waiting, beyond the one the slot is reading."""
    max_attempts: int = Field(3, ge=1, le=20)
    """Times a page is tried when its worker crashes or times out, before it fails."""
    recycle_rss_mb: int = Field(1024, ge=0)
    """A worker still holding more than this many MiB of resident memory after a page
    (freed heap given back first) is restarted once the page's result is delivered, so
    an idle worker never keeps what one huge page needed; ``0``: never."""
    recycle_pages: int = Field(0, ge=0)
    """A worker is restarted after this many pages, its last page's result delivered
    first; ``0``: never."""


class Settings(_Strict):
    """Everything scanhopper reads from its configuration file."""

    folders: FolderSettings = Field(default_factory=FolderSettings)
    """Inbox roots, outbox, archive, failed and state folders."""
    intake: IntakeSettings = Field(default_factory=IntakeSettings)
    """Watching and completion."""
    ocr: OcrSettings
    """The OCR engine (always given: see :meth:`_split_the_cores`)."""
    workers: WorkerSettings
    """The OCR worker processes (always given: see :meth:`_split_the_cores`)."""
    output: OutputSettings = Field(default_factory=OutputSettings)
    """Page reading and PDF writing."""

    @model_validator(mode="before")
    @classmethod
    def _split_the_cores(cls, data: Any) -> Any:
        """Resolve ``workers.devices = "auto"`` (or unset) and an unset
        ``ocr.cpu_threads`` from the usable cores, before validation."""
        if not isinstance(data, dict):
            return data
        workers = dict(data.get("workers") or {})
        ocr = dict(data.get("ocr") or {})
        cores = available_cores()
        if workers.get("devices", "auto") == "auto":
            slots = max(1, cores // (ocr.get("cpu_threads") or 1))  # cores per thread budget
            workers["devices"] = ["cpu"] * auto_cpu_workers(slots, available_memory())
        if ocr.get("cpu_threads") is None:
            cpu_slots = sum(device == "cpu" for device in workers["devices"])
            ocr["cpu_threads"] = max(1, cores // max(cpu_slots, 1))
        return {**data, "workers": workers, "ocr": ocr}

    @property
    def models_dir(self) -> Path:
        """Folder holding the assembled offline model directories."""
        return self.folders.state / "models"

    @property
    def cache_dir(self) -> Path:
        """Folder for PaddleX's cache, per-worker and per-document temp files."""
        return self.folders.state / "cache"

    @property
    def database(self) -> Path:
        """The SQLite state database."""
        return self.folders.state / "state.db"


def available_cores(cpu_max: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """CPU cores this process may use: its CPU affinity (``taskset``, cpusets), capped
    by a cgroup v2 CPU quota (``cpu_max``: ``"<quota> <period>"`` in microseconds, or
    ``"max <period>"``; set by systemd's ``CPUQuota=`` and containers), rounded up, at
    least 1."""
    cores = len(os.sched_getaffinity(0))
    try:
        quota, period = (int(n) for n in cpu_max.read_text().split())
    except (OSError, ValueError):  # absent, "max <period>", or not two numbers
        return cores
    return max(1, min(cores, math.ceil(quota / max(period, 1))))


WORKER_MEMORY = 1536 * 2**20
"""Bytes of memory ``workers.devices = "auto"`` sets aside for each CPU worker: the
peak a worker may reach on one page (``bench.memory``; issue 9's bound)."""


def available_memory(memory_max: Path = Path("/sys/fs/cgroup/memory.max")) -> int:
    """Bytes of memory this process may use: physical memory, capped by a cgroup v2
    limit (``memory_max``: bytes or ``"max"``; systemd ``MemoryMax=``, containers)."""
    physical = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    try:
        limit = int(memory_max.read_text())
    except (OSError, ValueError):  # absent, or "max"
        return physical
    return min(physical, limit)


def auto_cpu_workers(cores: int, memory: int) -> int:
    """CPU workers for ``workers.devices = "auto"``: one per usable core, as many as
    ``memory`` bytes hold at :data:`WORKER_MEMORY` each, at least one.

    One single-threaded worker per core reads more pages per second than fewer workers
    with more threads: pages read side by side keep every core busy, where one page's
    threads wait on each other (``bench.engine`` on 2 cores: 2 workers x 1 thread 1.14
    times the bare 2-thread loop, 1 worker x 2 threads 0.98; README.md, "How many
    workers").
    """
    return max(1, min(cores, memory // WORKER_MEMORY))


ENV_PREFIX = "SCANHOPPER_"
"""Environment variables ``SCANHOPPER_<SECTION>__<KEY>`` override file keys."""


def _environment_overrides(environ: dict[str, str]) -> dict[str, dict[str, object]]:
    """Collect ``SCANHOPPER_<SECTION>__<KEY>=value`` overrides.

    The value is read as a TOML value when it parses as one (``["gpu:0"]``, ``4``,
    ``true``), otherwise taken as a plain string (a path).

    Raises:
        ConfigError: a variable does not name ``SECTION__KEY``.
    """
    overrides: dict[str, dict[str, object]] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name == f"{ENV_PREFIX}CONFIG":
            continue
        section, sep, key = name[len(ENV_PREFIX) :].lower().partition("__")
        if not sep or not key:
            raise ConfigError(f"{name}: expected {ENV_PREFIX}<SECTION>__<KEY>")
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        overrides.setdefault(section, {})[key] = value
    return overrides


def load_settings(path: Path | None, environ: dict[str, str] | None = None) -> Settings:
    """Read and validate the configuration: built-in defaults, then the TOML file, then
    environment overrides.

    Args:
        path: A TOML file, or ``None`` for the built-in defaults.
        environ: Environment to read overrides from (default: ``os.environ``).

    Returns:
        The validated settings.

    Raises:
        ConfigError: the file cannot be read or parsed, or a key is unknown or has a
            bad value; the message names each bad key.
    """
    data: dict = {}
    where = "built-in defaults"
    if path is not None:
        where = str(path)
        try:
            data = tomllib.loads(path.read_text("utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{path}: {exc}") from exc
    overrides = _environment_overrides(dict(os.environ if environ is None else environ))
    for section, values in overrides.items():
        if not isinstance(data.get(section, {}), dict):
            raise ConfigError(f"{ENV_PREFIX}{section.upper()}: {section} is not a section")
        data.setdefault(section, {}).update(values)
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"{where}: {problems}") from exc
