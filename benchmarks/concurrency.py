"""Stampedes: many callers asking for one key at the same moment.

Three scenarios, each repeated (``Settings.repeats``) on a fresh runtime:

(a) cold key, async: 1000 tasks of one anyio task group (asyncio) call a function whose loader
    sleeps 10 ms. The origin must be called once (singleflight); the other 999 share its answer.
(b) stale key, async: the entry is made stale by an injected fake clock moved past its ttl
    (``swr=None``: served stale without bound, classic ISR), and the refresh's loader sleeps
    50 ms. 1000 tasks must all get STALE at once, none waiting for the refresh, and exactly one
    refresh must run (counted after the runtime has drained, on leaving ``async with``).
(c) cold key, sync: 64 threads released together by a barrier call a function whose loader
    sleeps 10 ms; the origin must be called once.

Timing a stampede measures the event loop as much as the cache: starting 1000 tasks costs a
few microseconds each whatever they do. So the wall time of (b) is compared with a floor of
the same 1000 tasks in the same task group, each awaiting a bare coroutine doing a dict
lookup, measured alternately with (b). The target for (b) is absolute, though: well under
5 ms for all 1000 answers (against the 50 ms refresh they must not wait for).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from time import perf_counter

import anyio

import isr

from ._harness import Row, Section, Settings, median, progress

__all__ = ["run"]

CALLERS = 1000
THREADS = 64
COLD_SLEEP = 0.010
REFRESH_SLEEP = 0.050
STALE_TARGET_MS = 5.0


class FakeClock:
    """A clock moved by hand: the entry goes stale without anybody sleeping."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def _stampede(call: Callable[[], Awaitable[None]], callers: int) -> float:
    """Seconds from starting ``callers`` tasks that each await ``call()`` to all done."""
    start = perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(callers):
            tg.start_soon(call)
    return perf_counter() - start


async def _cold_async() -> tuple[int, float]:
    """Loader calls and wall seconds for one cold-key stampede."""
    calls = 0
    async with isr.ISR("memory://") as rt:

        @isr.with_revalidate("post:{slug}", ttl=60, runtime=rt)
        async def get_post(slug: str) -> str:
            nonlocal calls
            calls += 1
            await anyio.sleep(COLD_SLEEP)
            return slug

        async def caller() -> None:
            if await get_post("cold") != "cold":
                raise RuntimeError("wrong answer")

        wall = await _stampede(caller, CALLERS)
    if rt.stats().loader_calls != calls:
        raise RuntimeError(f"stats disagree: {rt.stats()} vs {calls} calls")
    return calls, wall


async def _stale_async() -> tuple[float, set[isr.Status], int, int]:
    """Wall seconds until all callers had an answer, their statuses, refreshes started and
    loader calls (after the runtime drained) for one stale-key stampede."""
    clock = FakeClock()
    calls = 0
    statuses: set[isr.Status] = set()
    async with isr.ISR("memory://", clock=clock) as rt:

        @isr.with_revalidate("post:{slug}", ttl=60, swr=None, runtime=rt)
        async def get_post(slug: str) -> int:
            nonlocal calls
            calls += 1
            if calls > 1:
                await anyio.sleep(REFRESH_SLEEP)
            return calls

        await get_post("stale")
        clock.advance(61)

        async def caller() -> None:
            result = await get_post.lookup("stale")
            statuses.add(result.status)

        wall = await _stampede(caller, CALLERS)
    stats = rt.stats()
    if stats.loader_calls != calls:
        raise RuntimeError(f"stats disagree: {stats} vs {calls} calls")
    return wall, statuses, stats.refreshes, calls


async def _floor_async() -> float:
    data = {"stale": 1}

    async def floor(k: str) -> int:
        return data[k]

    async def caller() -> None:
        await floor("stale")

    return await _stampede(caller, CALLERS)


def _cold_sync() -> tuple[int, float]:
    calls = 0
    lock = threading.Lock()
    rt = isr.ISR("memory://")

    @isr.with_revalidate("post:{slug}", ttl=60, runtime=rt)
    def get_post(slug: str) -> str:
        nonlocal calls
        with lock:
            calls += 1
        time.sleep(COLD_SLEEP)
        return slug

    barrier = threading.Barrier(THREADS)
    started = 0.0

    def caller() -> str:
        nonlocal started
        if barrier.wait() == 0:
            started = perf_counter()
        return get_post("cold")

    with ThreadPoolExecutor(THREADS) as pool:
        answers = list(pool.map(lambda _: caller(), range(THREADS)))
    wall = perf_counter() - started
    rt.close()
    if answers != ["cold"] * THREADS:
        raise RuntimeError("wrong answer")
    return calls, wall


async def _async_scenarios(settings: Settings) -> list[Row]:
    colds = [await _cold_async() for _ in range(settings.repeats)]
    floors: list[float] = []
    stales: list[tuple[float, set[isr.Status], int, int]] = []
    for _ in range(settings.repeats):  # alternate, so both see the same machine
        floors.append(await _floor_async())
        stales.append(await _stale_async())
    cold_calls = max(c for c, _ in colds)
    cold_wall = median([w for _, w in colds]) * 1e3
    stale_wall = median([s[0] for s in stales]) * 1e3
    floor_wall = median(floors) * 1e3
    statuses = set().union(*(s[1] for s in stales))
    refreshes = max(s[2] for s in stales)
    loader_calls = max(s[3] for s in stales)
    ratio = median([s[0] / f for s, f in zip(stales, floors, strict=True)])
    all_stale = statuses == {isr.Status.STALE}
    status_names = ",".join(sorted(s.value for s in statuses))
    return [
        Row(
            f"(a) cold key, {CALLERS} async callers: loader calls",
            cold_calls,
            "",
            target="1",
            passed=all(c == 1 for c, _ in colds),
            note=f"worst of {len(colds)}; wall {cold_wall:.1f} ms incl. {COLD_SLEEP * 1e3:g} ms load",
        ),
        Row(
            f"    floor: {CALLERS} tasks awaiting a dict lookup",
            floor_wall,
            "ms",
            1.0,
            note="task group spawn + join",
        ),
        Row(
            f"(b) stale key, {CALLERS} async callers: wall",
            stale_wall,
            "ms",
            ratio,
            target=f"< {STALE_TARGET_MS:g} ms",
            passed=stale_wall < STALE_TARGET_MS,
            note=f"median of {len(stales)}; refresh takes {REFRESH_SLEEP * 1e3:g} ms",
        ),
        Row(
            "    statuses",
            None,
            "",
            target="all STALE",
            passed=all_stale,
            note=status_names,
        ),
        Row(
            "    background refreshes",
            refreshes,
            "",
            target="1",
            passed=all(s[2] == 1 and s[3] == 2 for s in stales),
            note=f"loader calls {loader_calls} (1 fill + 1 refresh)",
        ),
    ]


def run(settings: Settings) -> list[Section]:
    progress("concurrency: async stampedes")
    rows = anyio.run(_async_scenarios, settings, backend="asyncio")
    progress("concurrency: sync stampede")
    colds = [_cold_sync() for _ in range(settings.repeats)]
    rows.append(
        Row(
            f"(c) cold key, {THREADS} threads: loader calls",
            max(c for c, _ in colds),
            "",
            target="1",
            passed=all(c == 1 for c, _ in colds),
            note=(
                f"worst of {len(colds)}; wall {median([w for _, w in colds]) * 1e3:.1f} ms "
                f"incl. {COLD_SLEEP * 1e3:g} ms load"
            ),
        )
    )
    return [
        Section(
            "3. concurrency (memory store; asyncio via anyio task groups; threads)",
            "(b)'s wall time over the floor's, paired repetition by repetition",
            rows,
        )
    ]
