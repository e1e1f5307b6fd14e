"""Command line: ``scanhopper models | ocr``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from enum import IntEnum
from pathlib import Path

import anyio
import structlog

from . import __version__
from .config import ConfigError, Settings, load_settings
from .engine import OcrResult
from .logs import configure_logging
from .models import ModelError, list_models
from .workers import PageFailedError, WorkerStartError, open_worker_pool

__all__ = ["ExitCode", "main", "run"]

log = structlog.get_logger(__name__)


class ExitCode(IntEnum):
    """Process exit codes (the numbering follows OCRmyPDF's ``ExitCode``)."""

    ok = 0
    bad_args = 1
    input_file = 2
    child_process_error = 7
    invalid_config = 9
    other_error = 15
    ctrl_c = 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scanhopper", description="Turn piles of scanned pages into searchable PDFs."
    )
    parser.add_argument("--version", action="version", version=f"scanhopper {__version__}")
    parser.add_argument(
        "-c", "--config", type=Path, help="TOML configuration file (default: built-in)"
    )
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("models", help="list the OCR models and where they are")
    ocr = commands.add_parser("ocr", help="OCR image files and print their text")
    ocr.add_argument("files", nargs="+", type=Path, metavar="FILE")
    ocr.add_argument("--json", action="store_true", help="print full results as JSON")
    return parser


def _page_refs(files: Sequence[Path]) -> list[tuple[Path, int]]:
    """Expand files into ``(path, frame)`` page references (one per TIFF frame).

    Raises:
        FileNotFoundError: a file does not exist.
    """
    from PIL import Image, UnidentifiedImageError

    refs = []
    for path in files:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file")
        try:
            with Image.open(path) as im:
                frames = getattr(im, "n_frames", 1)
        except (UnidentifiedImageError, OSError):
            frames = 1  # the worker reports what is wrong with it
        refs.extend((path, frame) for frame in range(frames))
    return refs


async def _ocr_files(settings: Settings, files: Sequence[Path], as_json: bool) -> ExitCode:
    refs = _page_refs(files)
    outcomes: list[OcrResult | PageFailedError | None] = [None] * len(refs)

    async def one(index: int, pool) -> None:
        path, frame = refs[index]
        try:
            outcomes[index] = await pool.ocr(path, frame=frame)
        except PageFailedError as exc:
            outcomes[index] = exc

    async with open_worker_pool(settings) as pool, anyio.create_task_group() as tg:
        for index in range(len(refs)):
            tg.start_soon(one, index, pool)

    failed = False
    report = []
    for (path, frame), outcome in zip(refs, outcomes, strict=True):
        if isinstance(outcome, PageFailedError):
            failed = True
            print(f"scanhopper: {path} page {frame + 1}: {outcome.reason}", file=sys.stderr)
            report.append({"file": str(path), "page": frame + 1, "error": outcome.reason})
        elif outcome is not None:
            report.append({"file": str(path), "page": frame + 1, **outcome.to_dict()})
            if not as_json:
                print(f"==> {path} page {frame + 1} <==")
                for line in outcome.lines:
                    print(line.text)
    if as_json:
        print(json.dumps(report, ensure_ascii=False, indent=1))
    return ExitCode.input_file if failed else ExitCode.ok


def _models(settings: Settings) -> ExitCode:
    ocr = settings.ocr
    configured = {
        "det": (ocr.det_model, ocr.det_model_dir),
        "rec": (ocr.rec_model, ocr.rec_model_dir),
    }
    if ocr.textline_orientation:
        configured["textline"] = (
            ocr.textline_orientation_model,
            ocr.textline_orientation_model_dir,
        )
    for info in list_models(settings.models_dir, configured):
        state = (
            "ready"
            if info.ready
            else "assembled on first use"
            if info.source == "rapidocr wheel"
            else "missing"
        )
        if info.source == "paddlex":
            state = "resolved by PaddleX (may download)"
        print(f"{info.role:9} {info.name:28} {state:24} {info.path or '-'} ({info.source})")
    return ExitCode.ok


def run(args: Sequence[str] | None = None) -> ExitCode:
    """Parse arguments, configure logging, load the configuration and run a command.

    This is the one place that maps exceptions to exit codes and messages.

    Returns:
        The process exit code.
    """
    options = _parser().parse_args(args)
    configure_logging(level=options.log_level)
    try:
        settings = load_settings(options.config)
        if options.command == "models":
            return _models(settings)
        return anyio.run(_ocr_files, settings, options.files, options.json)
    except ConfigError as exc:
        print(f"scanhopper: configuration error: {exc}", file=sys.stderr)
        return ExitCode.invalid_config
    except FileNotFoundError as exc:
        print(f"scanhopper: {exc}", file=sys.stderr)
        return ExitCode.input_file
    except (ModelError, WorkerStartError) as exc:
        print(f"scanhopper: {exc}", file=sys.stderr)
        return ExitCode.child_process_error
    except KeyboardInterrupt:
        return ExitCode.ctrl_c


def main() -> None:
    """Console-script entry point."""
    sys.exit(run())
