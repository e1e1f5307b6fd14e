"""Errors a user sees, each with its process exit code (one place maps them: cli.run)."""

from __future__ import annotations

from enum import IntEnum

__all__ = ["ExitCode", "ScanhopperError"]


class ExitCode(IntEnum):
    """Process exit codes (the numbering follows OCRmyPDF's ``ExitCode``)."""

    ok = 0
    bad_args = 1
    input_file = 2
    file_access_error = 5
    already_running = 6
    child_process_error = 7
    invalid_config = 9
    other_error = 15
    ctrl_c = 130


class ScanhopperError(Exception):
    """Base of the errors that end a command with a message and an exit code."""

    exit_code: ExitCode = ExitCode.other_error
