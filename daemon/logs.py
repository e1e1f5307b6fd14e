"""Logging: structlog configured once, JSON lines off a terminal, console on one."""

from __future__ import annotations

import logging
import sys

import structlog

__all__ = ["configure_logging"]


def configure_logging(*, level: str = "info", json: bool | None = None) -> None:
    """Configure structlog (and the stdlib root logger) for this process.

    Every event carries the context bound with ``structlog.contextvars``
    (``document``, ``page``, ``device``), a level and an ISO timestamp. Output goes to
    stderr.

    Args:
        level: Lowest level logged: ``debug``, ``info``, ``warning`` or ``error``.
        json: JSON lines when true, coloured console lines when false; ``None`` picks
            console output only when stderr is a terminal.
    """
    if json is None:
        json = not sys.stderr.isatty()
    renderer = (
        structlog.processors.JSONRenderer(ensure_ascii=False)
        if json
        else structlog.dev.ConsoleRenderer()
    )
    numeric = logging.getLevelNamesMapping()[level.upper()]
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=sys.stderr, force=True)
