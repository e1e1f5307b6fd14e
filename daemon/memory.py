"""Process memory: how much is resident, and giving freed heap back to the system."""

from __future__ import annotations

import ctypes
import ctypes.util
import os

__all__ = ["resident_bytes", "trim_heap"]

_LIBC = ctypes.CDLL(ctypes.util.find_library("c")) if ctypes.util.find_library("c") else None
if _LIBC is not None and not hasattr(_LIBC, "malloc_trim"):  # not glibc (musl)
    _LIBC = None


def trim_heap() -> None:
    """Return the free pages of every malloc arena to the system (glibc's
    ``malloc_trim(0)``); a no-op where the C library has no such call."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def resident_bytes() -> int:
    """This process's resident set size now, in bytes (``/proc/self/statm``, field 2,
    in pages; Linux)."""
    with open("/proc/self/statm", "rb") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
