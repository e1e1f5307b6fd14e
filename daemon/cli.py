"""Command line: ``scanhopper run | status | complete | retry | models | ocr``."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import anyio

from . import __version__
from .config import Settings, load_settings
from .errors import ExitCode, ScanhopperError
from .logs import configure_logging

__all__ = ["main", "run"]

# sqlite-utils imports pandas whenever it is installed (paddlex brings it) for DataFrame
# support scanhopper never uses: about 0.3 s and 33 MB in every command and in the daemon
# (measured with `/usr/bin/time scanhopper status`). The OCR workers, which need pandas
# for PaddleX, are interpreters of their own and keep it.
sys.modules.setdefault("pandas", None)  # type: ignore[assignment]


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
    commands.add_parser("run", help="run the daemon (watch, OCR, publish) until SIGTERM")
    status = commands.add_parser("status", help="how documents stand (read-only)")
    status.add_argument("path", nargs="?", help="one document: list its pages")
    status.add_argument("--json", action="store_true", help="print JSON")
    complete = commands.add_parser("complete", help="mark a document folder complete")
    complete.add_argument("path", type=Path)
    retry = commands.add_parser("retry", help="retry the failed pages of a document")
    target = retry.add_mutually_exclusive_group(required=True)
    target.add_argument("path", nargs="?", help="document path (relative to its inbox root)")
    target.add_argument("--failed", action="store_true", help="every failed page")
    ocr = commands.add_parser("ocr", help="OCR images and PDFs and print their text")
    ocr.add_argument("files", nargs="+", type=Path, metavar="FILE")
    ocr.add_argument("--json", action="store_true", help="print full results as JSON")
    return parser


async def _ocr_files(settings: Settings, files: Sequence[Path], as_json: bool) -> ExitCode:
    """OCR every page of ``files`` through the worker pool and print the results."""
    from .engine import OcrResult
    from .layout import lines_in_reading_order
    from .pdf import PageSource, PageSourceError, expand_pages, prepare_page
    from .workers import PageFailedError, WorkerPool, open_worker_pool

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
                print("\n".join(line.text for line in lines_in_reading_order(outcome)))
        else:
            print(f"scanhopper: {source.path} page {source.index + 1}: {outcome}", file=sys.stderr)
            report.append({**where, "error": str(outcome)})
    if as_json:
        print(json.dumps(report, ensure_ascii=False, indent=1))
    return ExitCode.input_file if any("error" in page for page in report) else ExitCode.ok


def _models(settings: Settings) -> ExitCode:
    from .models import list_models

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


def _status(settings: Settings, path: str | None, as_json: bool) -> ExitCode:
    from .status import document_pages, render_table, status_rows

    if path is not None:
        rows = document_pages(settings, path)
        columns = ["file", "page", "state", "attempts", "device", "seconds", "error"]
    else:
        rows = status_rows(settings)
        for row in rows:
            row["pages"] = f"{row['pages_done'] or 0}/{row['pages_total']}"
        columns = ["path", "state", "pages", "pages_failed", "eta_seconds", "error"]
    print(
        json.dumps(rows, ensure_ascii=False, indent=1) if as_json else render_table(rows, columns)
    )
    return ExitCode.ok


def _complete(settings: Settings, path: Path) -> ExitCode:
    folder = path.resolve()
    roots = [root.resolve() for root in settings.folders.inbox]
    if not folder.is_dir() or not any(folder.is_relative_to(r) and folder != r for r in roots):
        print(
            f"scanhopper: {path} is not a document folder inside an inbox root "
            f"({', '.join(map(str, roots))})",
            file=sys.stderr,
        )
        return ExitCode.bad_args
    (folder / settings.intake.completion_marker).touch()
    print(f"{path}: marked complete")
    return ExitCode.ok


def _command(settings: Settings, options: argparse.Namespace) -> ExitCode:
    if options.command == "models":
        return _models(settings)
    if options.command == "run":
        from .service import run_daemon

        anyio.run(run_daemon, settings)
        return ExitCode.ok
    if options.command == "status":
        return _status(settings, options.path, options.json)
    if options.command == "complete":
        return _complete(settings, options.path)
    if options.command == "retry":
        from .service import request_retry

        written = request_retry(settings, None if options.failed else options.path)
        print(f"retry requested ({written.name}); the daemon picks it up within seconds")
        return ExitCode.ok
    return anyio.run(_ocr_files, settings, options.files, options.json)


def run(args: Sequence[str] | None = None) -> ExitCode:
    """Parse arguments, configure logging, load the configuration and run a command.

    This is the one place that maps exceptions to exit codes and messages: an error a
    user can cause ends the command with one line ``scanhopper: <cause>`` on stderr and
    its exit code, also when it comes wrapped in an ``ExceptionGroup`` (the daemon's
    task groups wrap whatever ends them, e.g. a worker that cannot load its model).

    Returns:
        The process exit code.
    """
    options = _parser().parse_args(args)
    configure_logging(level=options.log_level)
    try:
        settings = load_settings(options.config or _default_config())
        return _command(settings, options)
    except (ScanhopperError, FileNotFoundError, BaseExceptionGroup) as exc:
        cause = _user_error(exc)
        if cause is None:
            raise
        print(f"scanhopper: {cause}", file=sys.stderr)
        return cause.exit_code if isinstance(cause, ScanhopperError) else ExitCode.input_file
    except KeyboardInterrupt:
        return ExitCode.ctrl_c


def _user_error(exc: BaseException) -> ScanhopperError | FileNotFoundError | None:
    """The error to report for ``exc``, or ``None`` for a bug (shown as a traceback).

    A group is reported by its first :class:`ScanhopperError` when every error in it
    (nested groups flattened) is one; a group holding anything else is a bug.
    """
    if not isinstance(exc, BaseExceptionGroup):
        return exc if isinstance(exc, ScanhopperError | FileNotFoundError) else None
    leaves: list[BaseException] = []
    pending: list[BaseException] = [exc]
    while pending:
        item = pending.pop(0)
        if isinstance(item, BaseExceptionGroup):
            pending[:0] = item.exceptions
        else:
            leaves.append(item)
    if leaves and all(isinstance(leaf, ScanhopperError) for leaf in leaves):
        return leaves[0]  # type: ignore[return-value]
    return None


def _default_config() -> Path | None:
    """``$SCANHOPPER_CONFIG`` if set, else ``None`` (built-in defaults)."""
    value = os.environ.get("SCANHOPPER_CONFIG")
    return Path(value) if value else None


def main() -> None:
    """Console-script entry point."""
    sys.exit(run())
