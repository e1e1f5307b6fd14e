"""Command line: ``scanhopper models | ocr``."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Sequence
from enum import IntEnum
from pathlib import Path

import anyio
import structlog

from . import __version__
from .config import ConfigError, Settings, load_settings
from .engine import OcrResult
from .layout import reading_order
from .logs import configure_logging
from .models import ModelError, list_models
from .pdf import PageSource, PageSourceError, expand_pages, prepare_page
from .workers import PageFailedError, WorkerPool, WorkerStartError, open_worker_pool

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
    ocr = commands.add_parser("ocr", help="OCR images and PDFs and print their text")
    ocr.add_argument("files", nargs="+", type=Path, metavar="FILE")
    ocr.add_argument("--json", action="store_true", help="print full results as JSON")
    return parser


async def _ocr_files(settings: Settings, files: Sequence[Path], as_json: bool) -> ExitCode:
    """OCR every page of ``files`` through the worker pool and print the results."""
    sources: list[PageSource] = []
    unreadable: list[PageSourceError] = []
    for path in files:
        try:
            sources.extend(expand_pages(path))
        except PageSourceError as exc:
            unreadable.append(exc)
    outcomes: list[OcrResult | PageFailedError | PageSourceError | None] = [None] * len(sources)
    settings.cache_dir.mkdir(parents=True, exist_ok=True)

    async def one(index: int, pool: WorkerPool, work_dir: Path) -> None:
        output = settings.output
        try:
            image, frame = await anyio.to_thread.run_sync(
                lambda: prepare_page(
                    sources[index], work_dir, dpi=output.render_dpi, max_pixels=output.max_pixels
                )
            )
            outcomes[index] = await pool.ocr(image, frame=frame)
        except (PageFailedError, PageSourceError) as exc:
            outcomes[index] = exc

    with tempfile.TemporaryDirectory(dir=settings.cache_dir, prefix="ocr-") as work_dir:
        async with open_worker_pool(settings) as pool, anyio.create_task_group() as tg:
            for index in range(len(sources)):
                tg.start_soon(one, index, pool, Path(work_dir))

    report: list[dict] = []
    for exc in unreadable:
        print(f"scanhopper: {exc}", file=sys.stderr)
        report.append({"file": str(exc.path), "page": None, "error": exc.reason})
    for source, outcome in zip(sources, outcomes, strict=True):
        where = {"file": str(source.path), "page": source.index + 1}
        if isinstance(outcome, OcrResult):
            report.append({**where, **outcome.to_dict()})
            if not as_json:
                print(f"==> {source.path} page {source.index + 1} <==")
                print("\n".join(outcome.lines[i].text for i in reading_order(outcome.lines)))
        else:
            print(f"scanhopper: {source.path} page {source.index + 1}: {outcome}", file=sys.stderr)
            report.append({**where, "error": str(outcome)})
    if as_json:
        print(json.dumps(report, ensure_ascii=False, indent=1))
    return ExitCode.input_file if any("error" in page for page in report) else ExitCode.ok


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
