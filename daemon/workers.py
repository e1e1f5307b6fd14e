"""OCR worker processes, one per device slot, and the pool that supervises them.

Each worker is a fresh Python interpreter (``python -m daemon.workers``; never a fork of
a process that holds an engine) whose device is pinned in its environment before
PaddleOCR or paddle is imported. It loads its engine once, then answers one JSON line
per page on its stdout for each JSON line request on its stdin. CPU workers also
inherit the pool's :class:`~daemon.engine.threads.CpuLoad` (the descriptor is their
third argument), through which a worker reading a page alone borrows the idle
workers' cores.

Protocol (one JSON object per line):

- worker -> pool, once: ``{"type": "ready", "pid", "device", "environment"}`` or
  ``{"type": "fatal", "error"}`` (the engine could not load).
- pool -> worker: ``{"id", "path", "frame"}`` (a page reference, never pixels).
- worker -> pool: ``{"type": "result", "id", "result", "seconds"}`` or
  ``{"type": "error", "id", "error"}`` (bad image or engine exception).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from typing import Any

import anyio
import structlog
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream

from .config import Settings
from .engine import OcrEngine, OcrResult, load_page_image, read_page
from .engine.threads import CpuLoad
from .errors import ExitCode, ScanhopperError
from .memory import resident_bytes, trim_heap

__all__ = [
    "DeviceSlot",
    "PageFailedError",
    "WorkerPool",
    "WorkerStartError",
    "open_worker_pool",
]

log = structlog.get_logger(__name__)

_VISIBLE_DEVICES = {
    "gpu": "CUDA_VISIBLE_DEVICES",
    "npu": "ASCEND_RT_VISIBLE_DEVICES",
    "xpu": "XPU_VISIBLE_DEVICES",
}
"""Environment variable that restricts each accelerator kind to the listed devices
(CUDA; Ascend CANN runtime; Kunlun XPU runtime)."""

_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
_MAX_MESSAGE = 64 * 1024 * 1024
"""Longest reply line accepted from a worker, in bytes."""

RESTART_SECONDS = (2.0, 300.0)
"""Backoff between tries to restart a worker that fails to start: first, most."""


class WorkerStartError(ScanhopperError):
    """A worker could not load its engine (bad model, missing package, bad device)."""

    exit_code = ExitCode.child_process_error


class PageFailedError(Exception):
    """OCR of one page failed; the pool and the other pages go on.

    Attributes:
        reason: One line saying what happened, for status and logs.
        cause: ``error`` (bad image or engine exception: retrying will not help),
            ``crash`` (the worker died) or ``timeout`` (it exceeded the page timeout).
    """

    def __init__(self, reason: str, cause: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.cause = cause


@dataclass(frozen=True)
class DeviceSlot:
    """One worker's device: ``cpu``, ``gpu:N``, ``npu:N`` or ``xpu:N``."""

    name: str
    """The configured device name, e.g. ``gpu:1``."""

    @property
    def kind(self) -> str:
        """``cpu``, ``gpu``, ``npu`` or ``xpu``."""
        return self.name.partition(":")[0]

    @property
    def engine_device(self) -> str:
        """The device as the pinned worker sees it: ``cpu`` or ``<kind>:0``."""
        return "cpu" if self.kind == "cpu" else f"{self.kind}:0"

    def environment(self, settings: Settings) -> dict[str, str]:
        """Variables that pin this slot's process to its device, and nothing else.

        Every accelerator kind other than this slot's is hidden (an empty list); a CPU
        slot gets its thread budget in the OpenMP/BLAS thread variables.
        """
        env = {var: "" for var in _VISIBLE_DEVICES.values()}
        if self.kind == "cpu":
            env.update({var: str(settings.ocr.cpu_threads) for var in _THREAD_VARIABLES})
        else:
            env[_VISIBLE_DEVICES[self.kind]] = self.name.partition(":")[2]
        return env


@dataclass(eq=False)
class _Job:
    """A page waiting for OCR, and where its outcome goes."""

    path: Path
    frame: int
    id: int
    done: anyio.Event = field(default_factory=anyio.Event)
    result: OcrResult | None = None
    error: PageFailedError | None = None

    def finish(self, result: OcrResult | None, error: PageFailedError | None) -> None:
        self.result, self.error = result, error
        self.done.set()


class _SlotQueues:
    """One bounded FIFO of pages per device slot.

    A page goes to the slot with the fewest pages queued or being read (ties: the first
    slot), waiting while every slot's queue holds ``depth`` pages (backpressure). A slot
    whose own queue is empty takes the oldest page of the longest other queue, so a free
    device never idles while pages wait for a busy one.
    """

    def __init__(self, slots: int, depth: int) -> None:
        self.queues: list[deque[_Job]] = [deque() for _ in range(slots)]
        self.busy = [False] * slots
        """Whether each slot is reading a page it took."""
        self.depth = depth
        self.closed = False
        self._changed = anyio.Event()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def changed(self) -> None:
        """Wait for the next put, take, release or close."""
        await self._changed.wait()

    async def put(self, job: _Job) -> int:
        """Queue ``job`` for the least loaded slot with room; returns that slot's index.

        Raises:
            anyio.ClosedResourceError: the queues are closed.
        """
        while True:
            if self.closed:
                raise anyio.ClosedResourceError
            room = [i for i, queue in enumerate(self.queues) if len(queue) < self.depth]
            if room:
                index = min(room, key=lambda i: (len(self.queues[i]) + self.busy[i], i))
                self.queues[index].append(job)
                self._notify()
                return index
            await self.changed()

    def take(self, index: int) -> _Job | None:
        """The next page for slot ``index`` (its own, else the oldest of the longest
        other queue), or ``None`` when every queue is empty."""
        queue = self.queues[index] or max(self.queues, key=len)
        if not queue:
            return None
        self.busy[index] = True
        self._notify()
        return queue.popleft()

    def release(self, index: int) -> None:
        """Slot ``index`` finished the page it took."""
        self.busy[index] = False
        self._notify()

    def close(self) -> None:
        """Take no more pages; the queued ones are still handed out."""
        self.closed = True
        self._notify()


class _WorkerLostError(Exception):
    """The worker process died or had to be killed."""


@dataclass
class _Worker:
    """One running worker process and its reply stream."""

    slot: DeviceSlot
    process: Process
    replies: BufferedByteReceiveStream
    tmpdir: Path
    recycling: str | None = None
    """Why the worker stops by itself after its last reply (``workers.recycle_*``)."""

    async def receive(self) -> dict[str, Any]:
        """Next message from the worker.

        Raises:
            _WorkerLostError: the worker closed its output (it died).
        """
        try:
            line = await self.replies.receive_until(b"\n", _MAX_MESSAGE)
        except (anyio.IncompleteRead, anyio.EndOfStream, anyio.DelimiterNotFound) as exc:
            raise _WorkerLostError(await self._death()) from exc
        return json.loads(line)

    async def send(self, message: dict[str, Any]) -> None:
        """Write one request line.

        Raises:
            _WorkerLostError: the worker's input is closed (it died).
        """
        assert self.process.stdin is not None
        try:
            await self.process.stdin.send(json.dumps(message).encode() + b"\n")
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
            raise _WorkerLostError(await self._death()) from exc

    def alive(self) -> bool:
        """True while the process has not exited."""
        return self.process.returncode is None

    async def _death(self) -> str:
        """Wait (briefly) for the exit status and describe it."""
        with anyio.move_on_after(5):
            await self.process.wait()
        code = self.process.returncode
        if code is None:
            return f"worker on {self.slot.name} stopped answering"
        if code < 0:
            return f"worker on {self.slot.name} died from {signal.Signals(-code).name}"
        return f"worker on {self.slot.name} exited with code {code}"

    async def stop(self, grace: float) -> None:
        """Close its input, then SIGTERM, then SIGKILL, each after ``grace`` seconds.

        Shielded from cancellation, so a worker is never left behind.
        """
        with anyio.CancelScope(shield=True):
            assert self.process.stdin is not None
            await self.process.stdin.aclose()
            for escalate in (self.process.terminate, self.process.kill):
                with anyio.move_on_after(grace):
                    await self.process.wait()
                if not self.alive():
                    break
                try:
                    escalate()
                except ProcessLookupError:
                    break
            await self.process.wait()
            await self.process.aclose()
            shutil.rmtree(self.tmpdir, ignore_errors=True)


class WorkerPool:
    """Feeds pages to the device slots' worker processes. Use :func:`open_worker_pool`.

    Each slot has a bounded queue of ``queue_depth`` pages (see :class:`_SlotQueues`
    for who gets which page). A worker that dies or exceeds the page timeout is killed
    and restarted; the page it held fails with a :class:`PageFailedError`.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.slots = [DeviceSlot(name) for name in settings.workers.devices]
        self.fatal: WorkerStartError | None = None
        self.pids: dict[int, int | None] = {}
        """Current worker process id per slot index (``None`` while restarting)."""
        self._ids = count()
        self._queues = _SlotQueues(len(self.slots), settings.workers.queue_depth)
        self.cpu_load = _share_cpu_load(sum(slot.kind == "cpu" for slot in self.slots))
        """How many CPU workers are reading a page, shared with them (``None`` with
        fewer than two CPU workers: no core to lend; closed by
        :func:`open_worker_pool`)."""
        self._cpu_reading = 0

    @contextmanager
    def _reading(self, worker: _Worker) -> Iterator[None]:
        """Count ``worker`` among the CPU workers reading a page (:attr:`cpu_load`)
        while the block runs."""
        counted = self.cpu_load is not None and worker.slot.kind == "cpu"
        if counted:
            self._cpu_reading += 1
            self.cpu_load.set(self._cpu_reading)
        try:
            yield
        finally:
            if counted:
                self._cpu_reading -= 1
                self.cpu_load.set(self._cpu_reading)

    def queued(self) -> dict[str, int]:
        """Pages waiting in each slot's queue, by slot (``gpu:0``, or ``cpu#2`` for the
        second of several slots on one device)."""
        names = [slot.name for slot in self.slots]
        labels = [
            name if names.count(name) == 1 else f"{name}#{names[:i].count(name) + 1}"
            for i, name in enumerate(names)
        ]
        return {label: len(queue) for label, queue in zip(labels, self._queues.queues, strict=True)}

    async def ocr(self, path: Path, *, frame: int = 0) -> OcrResult:
        """OCR one page image file on whichever device slot is free first.

        Waits while every slot's queue is full (backpressure).

        Args:
            path: An image file the workers can read.
            frame: Frame of a multi-page TIFF, 0-based.

        Returns:
            The page's text lines and size.

        Raises:
            PageFailedError: the image is bad, the engine raised, or the worker died or
                timed out on this page.
        """
        job = _Job(Path(path).resolve(), frame, next(self._ids))
        await self._queues.put(job)
        await job.done.wait()
        if job.error is not None:
            raise job.error
        assert job.result is not None
        return job.result

    async def _start_worker(self, index: int) -> _Worker:
        """Spawn the slot's worker and wait until its engine is loaded.

        Raises:
            WorkerStartError: it reported a fatal error, died or timed out loading.
        """
        slot = self.slots[index]
        tmpdir = self.settings.cache_dir / "workers" / f"{index}-{slot.name.replace(':', '')}"
        tmpdir.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            **slot.environment(self.settings),
            "TMPDIR": str(tmpdir),
            "PADDLE_PDX_CACHE_HOME": str(self.settings.cache_dir / "paddlex"),
            "PADDLE_PDX_DISABLE_MODEL_SOURCE_CHECK": "True",
        }
        load_fd = self.cpu_load.fd if self.cpu_load and slot.kind == "cpu" else -1
        process = await anyio.open_process(
            [
                sys.executable,
                "-m",
                "daemon.workers",
                slot.name,
                self.settings.model_dump_json(),
                str(load_fd),
            ],
            env=env,
            stderr=None,
            pass_fds=[load_fd] if load_fd >= 0 else [],
        )
        assert process.stdout is not None
        worker = _Worker(slot, process, BufferedByteReceiveStream(process.stdout), tmpdir)
        try:
            with anyio.fail_after(self.settings.workers.start_timeout):
                hello = await worker.receive()
        except (TimeoutError, _WorkerLostError) as exc:
            await worker.stop(0)
            raise WorkerStartError(
                f"worker on {slot.name} did not start: {exc or 'timeout'}"
            ) from exc
        except BaseException:  # cancelled while loading (the daemon is stopping)
            await worker.stop(0)
            raise
        if hello.get("type") != "ready":
            await worker.stop(0)
            raise WorkerStartError(f"worker on {slot.name}: {hello.get('error', hello)}")
        self.pids[index] = process.pid
        log.info("worker_ready", device=slot.name, pid=process.pid)
        return worker

    async def _next_job(self, index: int, worker: _Worker) -> _Job | None:
        """Wait for a page for slot ``index``, checking the idle worker's health meanwhile.

        Returns:
            The next job, or ``None`` when the queues are closed and empty, or when the
            worker died while idle (the caller restarts it).
        """
        while (job := self._queues.take(index)) is None:
            if self._queues.closed:
                return None
            with anyio.move_on_after(self.settings.workers.health_interval):
                await self._queues.changed()
            if not worker.alive():
                return None
        return job

    async def _run_job(self, worker: _Worker, job: _Job) -> bool:
        """Send one page to the worker and deliver its outcome.

        Returns:
            True if the worker is still usable.

        Raises:
            _WorkerLostError: the worker was already dead before it got the page (the
                page is not to blame and must be sent again).
        """
        await worker.send({"id": job.id, "path": str(job.path), "frame": job.frame})
        try:
            with anyio.fail_after(self.settings.workers.page_timeout):
                reply = await worker.receive()
        except TimeoutError:
            reason = (
                f"OCR timed out after {self.settings.workers.page_timeout:g} s "
                f"on {worker.slot.name}"
            )
            job.finish(None, PageFailedError(reason, "timeout"))
            return False
        except _WorkerLostError as exc:
            job.finish(None, PageFailedError(str(exc), "crash"))
            return False
        if reply.get("type") == "result" and reply.get("id") == job.id:
            result = OcrResult.from_dict(reply["result"])
            result = dataclasses.replace(
                result, device=worker.slot.name, seconds=round(reply["seconds"], 3)
            )
            job.finish(result, None)
        else:
            job.finish(None, PageFailedError(str(reply.get("error", reply)), "error"))
        worker.recycling = reply.get("recycle")
        return worker.recycling is None

    async def _serve_slot(self, index: int, ready: anyio.Event) -> None:
        """Run one slot until the queue closes: start, feed and restart its worker.

        A worker that cannot start when the pool opens ends the pool
        (:class:`WorkerStartError`: a bad model or device, which the user must fix).
        One that cannot be restarted later (a device lost, memory short) is tried
        again with backoff (:data:`RESTART_SECONDS`) while the other slots take this
        slot's pages; the daemon goes on.
        """
        worker: _Worker | None = None
        job: _Job | None = None
        wait = RESTART_SECONDS[0]
        try:
            while True:
                if worker is None:
                    if self._queues.closed and job is None:
                        return
                    try:
                        worker = await self._start_worker(index)
                    except WorkerStartError as exc:
                        if not ready.is_set():
                            raise
                        log.error("worker_start_failed", error=str(exc), retry_seconds=wait)
                        await self._pause(wait)
                        wait = min(wait * 2, RESTART_SECONDS[1])
                        continue
                    ready.set()
                    wait = RESTART_SECONDS[0]
                if job is None:
                    job = await self._next_job(index, worker)
                if job is None and worker.alive():
                    return
                usable = job is not None and await self._try_job(worker, job)
                if job is not None and job.done.is_set():
                    job = None
                    self._queues.release(index)
                if usable:
                    continue
                self.pids[index] = None
                if worker.recycling:
                    log.info(
                        "worker_recycled",
                        device=worker.slot.name,
                        pid=worker.process.pid,
                        reason=worker.recycling,
                    )
                    await worker.stop(self.settings.workers.stop_grace)
                else:
                    log.warning("worker_restart", device=worker.slot.name, pid=worker.process.pid)
                    await worker.stop(0)
                worker = None
        except WorkerStartError as exc:
            self.fatal = exc
            if job is not None:
                job.finish(None, PageFailedError(str(exc), "crash"))
            raise
        finally:
            if worker is not None:
                await worker.stop(self.settings.workers.stop_grace)

    async def _pause(self, seconds: float) -> None:
        """Wait ``seconds``, or less once the queues close (the daemon stops)."""
        with anyio.move_on_after(seconds):
            while not self._queues.closed:
                await self._queues.changed()

    async def _try_job(self, worker: _Worker, job: _Job) -> bool:
        """Run ``job`` on ``worker``; mark it done unless the worker was already dead.

        Returns:
            True when the job is finished and the worker still usable; False when the
            worker must be restarted (the job is finished too, unless it never reached
            the worker, in which case it is kept for the next worker).
        """
        with structlog.contextvars.bound_contextvars(device=worker.slot.name, page=str(job.path)):
            try:
                with self._reading(worker):
                    return await self._run_job(worker, job)
            except _WorkerLostError as exc:
                log.warning("worker_lost_before_page", reason=str(exc))
                return False

    def close(self) -> None:
        """Take no more pages; the workers finish the queued ones, then stop."""
        self._queues.close()


def _share_cpu_load(cpu_workers: int) -> CpuLoad | None:
    """The count through which CPU workers lend each other idle cores, or ``None``
    when there is no other CPU worker to lend one, or the kernel refuses the shared
    memory (the workers then keep their own threads; logged)."""
    if cpu_workers < 2:
        return None
    try:
        return CpuLoad.create()
    except OSError as exc:
        log.warning("cpu_load_unavailable", error=str(exc), effect="no core lending")
        return None


@asynccontextmanager
async def open_worker_pool(settings: Settings) -> AsyncIterator[WorkerPool]:
    """Start one worker per configured device and yield the pool once all are ready.

    On exit the queue is closed, queued and in-flight pages are finished (drained), and
    every worker process is stopped and reaped.

    Raises:
        WorkerStartError: a worker could not load its engine; raised here, outside the
            task group, so it is not wrapped in an ``ExceptionGroup``.
    """
    pool = WorkerPool(settings)
    try:
        async with anyio.create_task_group() as tg:
            ready = [anyio.Event() for _ in pool.slots]
            for index, event in enumerate(ready):
                tg.start_soon(pool._serve_slot, index, event)
            for event in ready:
                await event.wait()
            try:
                yield pool
            finally:
                pool.close()
    except BaseExceptionGroup:
        if pool.fatal is not None:
            raise pool.fatal from None
        raise
    finally:
        if pool.cpu_load is not None:
            pool.cpu_load.close()


def _read_request(engine: OcrEngine, settings: Settings, request: dict[str, Any]) -> dict:
    """Read the page a request names; the reply to send, a result or an error."""
    started = time.perf_counter()
    try:
        image = load_page_image(
            Path(request["path"]), frame=request["frame"], default_dpi=settings.output.image_dpi
        )
        result = read_page(
            engine, image, upside_down_confidence=settings.ocr.upside_down_confidence
        )
    except Exception as exc:  # reported per page; the worker goes on
        return {"type": "error", "id": request["id"], "error": f"{type(exc).__name__}: {exc}"}
    seconds = time.perf_counter() - started
    return {"type": "result", "id": request["id"], "result": result.to_dict(), "seconds": seconds}


def _recycle_reason(settings: Settings, pages: int) -> str | None:
    """Why the worker should stop after its ``pages``-th page, or ``None``: too many
    pages (``workers.recycle_pages``), or more than ``workers.recycle_rss_mb`` MiB
    resident even once freed heap is given back (given back only then: trimming after
    every page made the next page fault its memory in again, 1.2% slower)."""
    limits = settings.workers
    if limits.recycle_pages and pages >= limits.recycle_pages:
        return f"{pages} pages read"
    if not limits.recycle_rss_mb or resident_bytes() <= limits.recycle_rss_mb * 2**20:
        return None
    trim_heap()
    resident_mb = resident_bytes() / 2**20
    if resident_mb > limits.recycle_rss_mb:
        return f"{resident_mb:.0f} MiB resident after a page"
    return None


def _worker_main(device: str, settings_json: str, cpu_load_fd: int) -> int:
    """Body of a worker process: load the engine once, answer requests until EOF.
    ``cpu_load_fd``: the pool's :class:`CpuLoad` descriptor, or -1 (not a CPU worker)."""
    from .engine import create_engine, limit_image_pixels

    protocol = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    os.dup2(2, 1)  # whatever PaddleOCR prints goes to stderr, not into the protocol

    def send(message: dict[str, Any]) -> None:
        protocol.write(json.dumps(message, ensure_ascii=False) + "\n")

    slot = DeviceSlot(device)
    settings = Settings.model_validate_json(settings_json)
    limit_image_pixels(settings.output.max_pixels)
    try:
        engine = create_engine(
            settings, slot.engine_device, cpu_load_fd=cpu_load_fd if cpu_load_fd >= 0 else None
        )
    except Exception as exc:  # any load failure is reported, not raised
        send({"type": "fatal", "error": f"{type(exc).__name__}: {exc}"})
        return 1
    pinned = slot.environment(settings)
    send(
        {
            "type": "ready",
            "pid": os.getpid(),
            "device": slot.engine_device,
            "environment": {k: os.environ.get(k) for k in pinned},
        }
    )
    for pages, line in enumerate(sys.stdin, start=1):
        reply = _read_request(engine, settings, json.loads(line))
        recycle = _recycle_reason(settings, pages)  # the page's pixels are freed by now
        send({**reply, "recycle": recycle})
        if recycle:
            break
    return 0


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
