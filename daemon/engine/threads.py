"""Lending idle cores: how many threads a CPU worker may use for its next model call.

A page read alone on a machine of one single-threaded CPU worker per core leaves the
other cores idle: a one-page document, or the last page of a document, waits on one
core. The worker pool therefore keeps a count of the CPU workers reading a page in a
few bytes of shared memory (:class:`CpuLoad`, a ``memfd`` it hands to each CPU worker);
before each model call, a worker's runner reads it and runs on :func:`lent_threads`
threads. Measured on 2 cores (README.md, "Speed on the CPU"): recognition of 80 line
images ran 11.5 lines/s on one thread and 21.6 on two, while two workers of one thread
each read 22.4 lines/s together.
"""

from __future__ import annotations

import mmap
import os
import struct

__all__ = ["MAX_LENT_FACTOR", "CpuLoad", "lent_threads", "thread_counts"]

MAX_LENT_FACTOR = 4
"""A worker runs on at most this many times its own threads: each thread count is one
more set of loaded models, and scaling past 2 threads was not measured here."""

_COUNT = struct.Struct("=I")


class CpuLoad:
    """The number of CPU workers reading a page now, in shared memory.

    The pool makes one (:meth:`create`), :meth:`set` s it whenever a CPU worker takes or
    finishes a page, and passes :attr:`fd` to its CPU workers, which :meth:`attach` to
    it read-only and :meth:`get` it before each model call. A torn or stale read costs
    one call's speed, never a result.
    """

    def __init__(self, fd: int, *, writable: bool) -> None:
        self.fd = fd
        access = mmap.ACCESS_WRITE if writable else mmap.ACCESS_READ
        self._map = mmap.mmap(fd, _COUNT.size, access=access)

    @classmethod
    def create(cls) -> CpuLoad:
        """A new count of 0 in anonymous shared memory (Linux ``memfd_create``; no file
        is ever named). The descriptor is not inherited unless passed explicitly.

        Raises:
            OSError: the kernel refused the memory.
        """
        fd = os.memfd_create("scanhopper-cpu-load", os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, _COUNT.size)
            return cls(fd, writable=True)
        except BaseException:
            os.close(fd)
            raise

    @classmethod
    def attach(cls, fd: int) -> CpuLoad:
        """The count the pool shares through the inherited descriptor ``fd``.

        Raises:
            OSError, ValueError: ``fd`` is not such shared memory.
        """
        return cls(fd, writable=False)

    def set(self, busy: int) -> None:
        """Say that ``busy`` CPU workers are reading a page."""
        _COUNT.pack_into(self._map, 0, busy)

    def get(self) -> int:
        """How many CPU workers are reading a page (0 before the pool says)."""
        return _COUNT.unpack_from(self._map, 0)[0]

    def close(self) -> None:
        """Unmap, and close the descriptor."""
        self._map.close()
        os.close(self.fd)


def lent_threads(own: int, workers: int, busy: int) -> int:
    """Threads a CPU worker may use for its next model call.

    Its ``own`` threads times the share of the ``workers`` CPU workers' cores left to
    each of the ``busy`` ones, rounded down to a power of two and capped at
    :data:`MAX_LENT_FACTOR`: 2 workers of 1 thread, one busy: 2 threads; both busy: 1.
    Chosen so, the threads of all calls started on one count stay within ``own *
    workers``, the cores configured for CPU workers (a call already running when the
    count rises finishes on the threads it started with).

    Args:
        own: The worker's own threads (``ocr.cpu_threads``), at least 1.
        workers: The pool's CPU workers, at least 1.
        busy: The CPU workers reading a page now (this one included; 0 reads as 1).
    """
    share = workers // max(busy, 1)
    factor = 1
    while factor * 2 <= min(share, MAX_LENT_FACTOR):
        factor *= 2
    return own * factor


def thread_counts(own: int, workers: int) -> list[int]:
    """Every thread count :func:`lent_threads` can give a worker of ``own`` threads
    among ``workers`` CPU workers, smallest first: ``own`` times 1, 2, 4 ... up to
    the cap."""
    return sorted({lent_threads(own, workers, busy) for busy in range(1, workers + 1)})
