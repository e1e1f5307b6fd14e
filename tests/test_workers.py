"""The worker pool with a scripted fake engine: pinning, faults, restarts, shutdown."""

from __future__ import annotations

from pathlib import Path

import anyio
import psutil
import pytest
from fake_engines import engine_calls, engine_finished, engine_loads
from PIL import Image

from daemon.config import Settings
from daemon.workers import (
    DeviceSlot,
    PageFailedError,
    WorkerStartError,
    _Job,
    _SlotQueues,
    open_worker_pool,
)

pytestmark = pytest.mark.anyio


def _page(folder: Path, name: str) -> Path:
    path = folder / name
    Image.new("RGB", (200, 100), "white").save(path)
    return path


def _with_devices(settings: Settings, devices: list[str], **workers) -> Settings:
    return settings.model_copy(
        update={"workers": settings.workers.model_copy(update={"devices": devices, **workers})}
    )


def _no_children_left() -> None:
    assert psutil.Process().children(recursive=True) == []


@pytest.mark.parametrize(
    ("device", "expected"),
    [
        ("cpu", {"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "2"}),
        ("gpu:1", {"CUDA_VISIBLE_DEVICES": "1", "ASCEND_RT_VISIBLE_DEVICES": ""}),
        ("npu:0", {"ASCEND_RT_VISIBLE_DEVICES": "0", "CUDA_VISIBLE_DEVICES": ""}),
        ("xpu:3", {"XPU_VISIBLE_DEVICES": "3", "CUDA_VISIBLE_DEVICES": ""}),
    ],
)
def test_device_slot_environment_pins_only_its_device(device, expected):
    env = DeviceSlot(device).environment(Settings.model_validate({"ocr": {"cpu_threads": 2}}))
    assert {k: env[k] for k in expected} == expected


async def test_each_slot_process_sees_its_pinned_device(fake_settings, tmp_path):
    settings = _with_devices(fake_settings, ["cpu", "gpu:1", "npu:0"])
    async with open_worker_pool(settings) as pool:
        pids = set(pool.pids.values())
    loads = {load["pid"]: load for load in engine_loads(tmp_path / "engine-log")}
    assert set(loads) == pids
    seen = sorted(
        (
            load["device"],
            load["environment"]["CUDA_VISIBLE_DEVICES"],
            load["environment"]["ASCEND_RT_VISIBLE_DEVICES"],
            load["environment"]["OMP_NUM_THREADS"],
            load["cpu_load"],
        )
        for load in loads.values()
    )
    assert seen == [  # one CPU worker: no other's cores to borrow
        ("cpu", "", "", "2", False),
        ("gpu:0", "1", "", None, False),
        ("npu:0", "", "0", None, False),
    ]
    _no_children_left()


async def test_cpu_workers_see_how_many_of_them_are_reading_a_page(fake_settings, tmp_path):
    """The pool's shared count of busy CPU workers (the cores a worker reading alone
    may borrow) reaches the workers, and falls back to 0 when they finish."""
    settings = _with_devices(fake_settings, ["cpu", "cpu"])
    async with open_worker_pool(settings) as pool:
        await pool.ocr(_page(tmp_path, "slow-alone.png"))
        async with anyio.create_task_group() as tg:
            for name in ("slow-a.png", "slow-b.png"):
                tg.start_soon(pool.ocr, _page(tmp_path, name))
        assert pool.cpu_load.get() == 0
        with pytest.raises(PageFailedError):
            await pool.ocr(_page(tmp_path, "crash.png"))  # the worker dies mid-page
        assert pool.cpu_load.get() == 0
    log = tmp_path / "engine-log"
    seen: dict[str, set[int]] = {}
    for call in engine_calls(log) + engine_finished(log):  # at each page's start and end
        seen.setdefault(call["page"], set()).add(call["cpu_load"])
    assert seen["slow-alone.png"] == {1}
    assert 2 in seen["slow-a.png"] | seen["slow-b.png"]  # the later start, the earlier end
    assert seen["slow-a.png"] | seen["slow-b.png"] <= {1, 2}


async def test_pages_are_recognised_by_the_worker(fake_settings, tmp_path):
    async with open_worker_pool(fake_settings) as pool:
        result = await pool.ocr(_page(tmp_path, "p1.png"))
    assert (result.width, result.height) == (200, 100)
    assert [line.text for line in result.lines] == ["p1"]
    assert result.lines[0].polygon[2] == (160.0, 10.0)


@pytest.mark.parametrize(
    ("name", "cause", "reason"),
    [
        ("crash.png", "crash", "exited with code 3"),
        ("segv.png", "crash", "SIGSEGV"),
        ("hang.png", "timeout", "timed out after 3 s on cpu"),
        ("raise.png", "error", "fake engine refuses raise.png"),
        ("nan.png", "error", "bad polygon"),
    ],
)
async def test_a_failing_page_fails_alone_and_the_next_page_succeeds(
    fake_settings, tmp_path, name, cause, reason
):
    async with open_worker_pool(fake_settings) as pool:
        before = pool.pids[0]
        with pytest.raises(PageFailedError) as failure:
            await pool.ocr(_page(tmp_path, name))
        after = await pool.ocr(_page(tmp_path, "next.png"))
        restarted = pool.pids[0] != before
    assert failure.value.cause == cause
    assert reason in failure.value.reason
    assert [line.text for line in after.lines] == ["next"]
    assert restarted == (cause != "error")
    _no_children_left()


@pytest.mark.parametrize(
    ("limits", "names", "workers"),
    [
        ({"recycle_pages": 2}, ["a.png", "b.png", "c.png", "d.png", "e.png"], 3),
        ({"recycle_rss_mb": 1}, ["a.png", "b.png", "c.png"], 3),  # every page is over
        ({"recycle_rss_mb": 0}, ["hog1.png", "hog2.png", "hog3.png"], 1),  # off
    ],
)
async def test_a_worker_is_recycled_after_its_page_without_losing_or_redoing_one(
    fake_settings, tmp_path, limits, names, workers
):
    settings = _with_devices(fake_settings, ["cpu"], **limits)
    async with open_worker_pool(settings) as pool:
        results = [await pool.ocr(_page(tmp_path, name)) for name in names]
    assert [result.lines[0].text for result in results] == [Path(n).stem for n in names]
    calls = engine_calls(tmp_path / "engine-log")
    assert sorted(call["page"] for call in calls) == sorted(names)  # each read once
    assert len({call["pid"] for call in calls}) == workers
    assert len(engine_loads(tmp_path / "engine-log")) == workers
    _no_children_left()


async def test_recycling_after_every_page_mixes_with_crashes_and_page_errors(
    fake_settings, tmp_path
):
    settings = _with_devices(fake_settings, ["cpu"], recycle_pages=1)
    names = ["a.png", "crash.png", "b.png", "raise.png", "c.png"]
    outcomes = {}
    async with open_worker_pool(settings) as pool:
        for name in names:
            try:
                outcomes[name] = (await pool.ocr(_page(tmp_path, name))).lines[0].text
            except PageFailedError as exc:
                outcomes[name] = exc.cause
    assert outcomes == {
        "a.png": "a",
        "crash.png": "crash",
        "b.png": "b",
        "raise.png": "error",
        "c.png": "c",
    }
    calls = engine_calls(tmp_path / "engine-log")
    assert sorted(call["page"] for call in calls) == sorted(names)  # each sent once
    assert len({call["pid"] for call in calls}) == len(names)  # a fresh worker for each
    _no_children_left()


async def test_a_worker_holding_memory_after_a_page_is_recycled(fake_settings, tmp_path):
    settings = _with_devices(fake_settings, ["cpu"], recycle_rss_mb=200)
    async with open_worker_pool(settings) as pool:
        first = pool.pids[0]
        await pool.ocr(_page(tmp_path, "hog1.png"))  # a fresh fake worker: well under 200
        assert pool.pids[0] == first
        for n in range(2, 5):  # 64 MiB kept per page
            await pool.ocr(_page(tmp_path, f"hog{n}.png"))
        with anyio.fail_after(10):
            while pool.pids.get(0) in (first, None):
                await anyio.sleep(0.05)
        after = await pool.ocr(_page(tmp_path, "after.png"))
    assert [line.text for line in after.lines] == ["after"]
    pids = {call["page"]: call["pid"] for call in engine_calls(tmp_path / "engine-log")}
    assert pids["hog1.png"] == pids["hog2.png"] == first != pids["after.png"]


async def test_a_corrupt_image_is_a_page_error_naming_the_file(fake_settings, tmp_path):
    bad = tmp_path / "truncated.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    async with open_worker_pool(fake_settings) as pool:
        with pytest.raises(PageFailedError) as failure:
            await pool.ocr(bad)
    assert failure.value.cause == "error"
    assert "truncated.png" in failure.value.reason


async def test_a_worker_killed_while_idle_is_restarted(fake_settings, tmp_path):
    async with open_worker_pool(fake_settings) as pool:
        victim = pool.pids[0]
        psutil.Process(victim).kill()
        with anyio.fail_after(10):
            while pool.pids.get(0) in (victim, None):
                await anyio.sleep(0.05)
        result = await pool.ocr(_page(tmp_path, "after.png"))
    assert [line.text for line in result.lines] == ["after"]


async def test_pages_spread_over_all_slots(fake_settings, tmp_path):
    settings = _with_devices(fake_settings, ["cpu", "cpu"])
    pages = [_page(tmp_path, f"slow{i}.png") for i in range(6)]
    async with open_worker_pool(settings) as pool, anyio.create_task_group() as tg:
        for page in pages:
            tg.start_soon(pool.ocr, page)
    calls = engine_calls(tmp_path / "engine-log")
    assert sorted(call["page"] for call in calls) == sorted(p.name for p in pages)
    assert len({call["pid"] for call in calls}) == 2


async def test_slot_queues_go_to_the_least_loaded_slot_and_stay_bounded():
    queues = _SlotQueues(2, depth=2)
    jobs = [_Job(Path(f"p{i}.png"), 0, i) for i in range(5)]
    assert [await queues.put(job) for job in jobs[:4]] == [0, 1, 0, 1]
    assert queues.take(0) is jobs[0] and queues.busy == [True, False]
    assert await queues.put(jobs[4]) == 0  # slot 0 has room again
    with anyio.move_on_after(0.2) as blocked:
        await queues.put(_Job(Path("extra.png"), 0, 9))  # both queues full: waits
    assert blocked.cancelled_caught
    queues.release(0)
    assert queues.busy == [False, False]


async def test_an_idle_slot_takes_the_oldest_page_of_the_longest_queue():
    queues = _SlotQueues(3, depth=3)
    jobs = [_Job(Path(f"p{i}.png"), 0, i) for i in range(4)]
    for job in jobs:
        await queues.put(job)  # slots 0, 1, 2, 0
    assert queues.take(1) is jobs[1]
    assert queues.take(1) is jobs[0]  # its own queue is empty: slot 0's oldest
    assert queues.take(2) is jobs[2]
    assert queues.take(2) is jobs[3]
    assert queues.take(0) is None
    queues.close()
    with pytest.raises(anyio.ClosedResourceError):
        await queues.put(jobs[0])


async def test_no_slot_queue_ever_holds_more_than_the_queue_depth(fake_settings, tmp_path):
    settings = _with_devices(fake_settings, ["cpu", "cpu"], queue_depth=1)
    pages = [_page(tmp_path, f"slow{i}.png") for i in range(8)]
    seen: list[dict[str, int]] = []
    async with open_worker_pool(settings) as pool:
        async with anyio.create_task_group() as tg:
            for page in pages:
                tg.start_soon(pool.ocr, page)
            while len(engine_calls(tmp_path / "engine-log")) < len(pages):
                seen.append(pool.queued())
                await anyio.sleep(0.05)
    assert set(seen[0]) == {"cpu#1", "cpu#2"}
    assert max(n for counts in seen for n in counts.values()) == 1
    assert len({call["pid"] for call in engine_calls(tmp_path / "engine-log")}) == 2


async def test_a_result_gives_the_time_the_worker_spent_not_the_time_queued(
    fake_settings, tmp_path
):
    pages = [_page(tmp_path, f"slow{i}.png") for i in range(3)]  # 0.5 s each, one slot
    results = []

    async def ocr(page):
        results.append(await pool.ocr(page))

    started = anyio.current_time()
    async with open_worker_pool(fake_settings) as pool, anyio.create_task_group() as tg:
        for page in pages:
            tg.start_soon(ocr, page)
    assert anyio.current_time() - started >= 1.5
    assert all(0.5 <= r.seconds < 1.0 for r in results), [r.seconds for r in results]


async def test_shutdown_drains_the_page_in_flight(fake_settings, tmp_path):
    results = []

    async def ocr(pool, page):
        results.append(await pool.ocr(page))

    async with anyio.create_task_group() as tg:
        async with open_worker_pool(fake_settings) as pool:
            tg.start_soon(ocr, pool, _page(tmp_path, "slow-last.png"))
            with anyio.fail_after(10):
                while not engine_calls(tmp_path / "engine-log"):
                    await anyio.sleep(0.02)
    assert [line.text for r in results for line in r.lines] == ["slow-last"]
    _no_children_left()


async def test_an_engine_that_cannot_load_is_a_plain_start_error(fake_settings, monkeypatch):
    monkeypatch.setenv("FAKE_ENGINE_FAIL", "1")
    with pytest.raises(WorkerStartError, match="fake engine told to fail at load"):
        async with open_worker_pool(fake_settings):
            pass
    _no_children_left()
