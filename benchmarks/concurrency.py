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

Timing a stampede measures the event loop as much as the cache: anyio's ``start_soon`` and
the task group's join cost microseconds a task whatever the task does, so 1000 tasks take
milliseconds before anybody asks anything. Two times are taken for (b), each on a fresh
runtime: the one judged against the target (well under 5 ms for all 1000, who must not wait
for the 50 ms refresh) has 1000 plain asyncio tasks wait on one event and measures from the
event's release to the last answer, so it counts the callers' wake-up and their reads, not
their creation; the other runs the 1000 callers in an anyio task group, from starting the
tasks to the group's end (informational). Each has a floor: the same callers awaiting a bare
coroutine doing a dict lookup, measured alternately with (b); the ratios are paired
repetition by repetition.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from time import perf_counter
from typing import NamedTuple

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


class Timing(NamedTuple):
    """One stampede: seconds from starting the tasks until all were done (``total``), and
    from the first caller asking until the last one had its answer (``answers``)."""

    total: float
    answers: float


async def _stampede(call: Callable[[], Awaitable[None]], callers: int) -> Timing:
    """Start ``callers`` tasks in one task group, each awaiting ``call()``."""
    first = math.inf
    last = 0.0

    async def caller() -> None:
        nonlocal first, last
        first = min(first, perf_counter())
        await call()
        last = perf_counter()

    start = perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(callers):
            tg.start_soon(caller)
    return Timing(perf_counter() - start, last - first)


async def _released(call: Callable[[], Awaitable[None]], callers: int) -> float:
    """Seconds from releasing ``callers`` waiting asyncio tasks to the last one's answer."""
    go = asyncio.Event()
    last = 0.0

    async def caller() -> None:
        nonlocal last
        await go.wait()
        await call()
        last = perf_counter()

    tasks = [asyncio.create_task(caller()) for _ in range(callers)]
    await asyncio.sleep(0)  # every task runs up to go.wait() before this one resumes
    start = perf_counter()
    go.set()
    await asyncio.gather(*tasks)
    return last - start


async def _cold_async() -> tuple[int, Timing]:
    """Loader calls and timing of one cold-key stampede."""
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

        timing = await _stampede(caller, CALLERS)
    if rt.stats().loader_calls != calls:
        raise RuntimeError(f"stats disagree: {rt.stats()} vs {calls} calls")
    return calls, timing


async def _stale_async() -> tuple[Timing, set[isr.Status], int, int]:
    """Timing, the callers' statuses, the most refreshes one stampede started and its loader
    calls (after the runtime drained): one released stampede and one in a task group."""
    released, statuses, refreshes, calls = await _stale_once(released=True)
    grouped, statuses2, refreshes2, calls2 = await _stale_once(released=False)
    return (
        Timing(grouped.total, released.answers),
        statuses | statuses2,
        max(refreshes, refreshes2),
        max(calls, calls2),
    )


async def _stale_once(*, released: bool) -> tuple[Timing, set[isr.Status], int, int]:
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

        if released:
            timing = Timing(math.nan, await _released(caller, CALLERS))
        else:
            timing = await _stampede(caller, CALLERS)
    stats = rt.stats()
    if stats.loader_calls != calls:
        raise RuntimeError(f"stats disagree: {stats} vs {calls} calls")
    return timing, statuses, stats.refreshes, calls


async def _floor_async() -> Timing:
    data = {"stale": 1}

    async def floor(k: str) -> int:
        return data[k]

    async def caller() -> None:
        await floor("stale")

    return Timing((await _stampede(caller, CALLERS)).total, await _released(caller, CALLERS))


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
    floors: list[Timing] = []
    stales: list[Timing] = []
    statuses: set[isr.Status] = set()
    refreshes: list[int] = []
    loader_calls: list[int] = []
    for _ in range(settings.repeats):  # alternate, so both see the same machine
        floors.append(await _floor_async())
        timing, seen, refreshed, calls = await _stale_async()
        stales.append(timing)
        statuses |= seen
        refreshes.append(refreshed)
        loader_calls.append(calls)

    pair = list(zip(stales, floors, strict=True))

    def ms(timings: list[Timing], part: str) -> float:
        return median([getattr(t, part) for t in timings]) * 1e3

    def ratio(part: str) -> float:
        return median(
            [getattr(s, part) / getattr(f, part) for s, f in zip(stales, floors, strict=True)]
        )

    cold_wall = median([t.total for _, t in colds]) * 1e3
    stale_answers = ms(stales, "answers")
    reps = f"median of {len(stales)}"
    return [
        Row(
            f"(a) cold key, {CALLERS} async callers: loader calls",
            max(c for c, _ in colds),
            "",
            target="1",
            passed=all(c == 1 for c, _ in colds),
            note=f"worst of {len(colds)}; all done in {cold_wall:.1f} ms "
            f"({COLD_SLEEP * 1e3:g} ms load)",
        ),
        Row(
            f"    floor: {CALLERS} tasks awaiting a dict lookup",
            ms(floors, "answers"),
            "ms",
            1.0,
            note="asyncio tasks released together: release to last answer",
        ),
        Row(
            "    floor, incl. starting the tasks",
            ms(floors, "total"),
            "ms",
            1.0,
            note="anyio start_soon + task group join",
        ),
        Row(
            f"(b) stale key, {CALLERS} async callers",
            stale_answers,
            "ms",
            ratio("answers"),
            target=f"< {STALE_TARGET_MS:g} ms",
            passed=stale_answers < STALE_TARGET_MS,
            note=f"release to last answer; {reps}; refresh takes {REFRESH_SLEEP * 1e3:g} ms",
        ),
        Row(
            "    isr's share a caller",
            median([(s.answers - f.answers) / CALLERS for s, f in pair]) * 1e6,
            "us",
            note="(b) minus floor, over the callers: the stale read itself",
        ),
        Row(
            "    (b) incl. starting the tasks",
            ms(stales, "total"),
            "ms",
            ratio("total"),
            note=reps,
        ),
        Row(
            "    statuses",
            None,
            "",
            target="all STALE",
            passed=statuses == {isr.Status.STALE},
            note=",".join(sorted(s.value for s in statuses)),
        ),
        Row(
            "    background refreshes",
            max(refreshes),
            "",
            target="1",
            passed=all(r == 1 for r in refreshes) and all(c == 2 for c in loader_calls),
            note=f"worst of {len(refreshes)}; loader calls {max(loader_calls)} "
            "(1 fill + 1 refresh)",
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
            "3. concurrency (memory store; asyncio tasks, anyio task groups; threads)",
            "(b)'s times over the floor's same times, paired repetition by repetition",
            rows,
        )
    ]
