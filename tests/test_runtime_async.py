"""What only async callers have: cancellation, detached refreshes, closing with work under way.

The semantics shared with sync callers are in ``tests/_async/test_runtime.py`` (and its
generated sync twin).
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest

import isr
from isr import Status

from .conftest import FakeClock

pytestmark = pytest.mark.anyio


class Origin:
    """A loader's origin: counts calls, can fail, can be slowed down by an event."""

    def __init__(self) -> None:
        self.calls = 0
        self.version = 1
        self.fail: Exception | None = None
        self.gate: anyio.Event | None = None
        self.entered = anyio.Event()  # set once a loader call is running

    async def load(self, name: str) -> str:
        self.calls += 1
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        return f"{name} v{self.version}"


def cached(rt: isr.ISR, origin: Origin, **options: Any) -> isr.AsyncCached[[str], str]:
    options.setdefault("ttl", 10)

    @isr.with_revalidate("item:{name}", runtime=rt, **options)
    async def get(name: str) -> str:
        return await origin.load(name)

    return get


async def test_cancelled_fetcher_hands_over_to_a_waiter(rt: isr.ISR) -> None:
    origin = Origin()
    origin.gate = anyio.Event()
    get = cached(rt, origin)
    results: list[str] = []

    async def waiter() -> None:
        results.append(await get("a"))

    async with anyio.create_task_group() as outer:
        async with anyio.create_task_group() as leader:
            leader.start_soon(get, "a")
            await origin.entered.wait()
            outer.start_soon(waiter)
            await anyio.wait_all_tasks_blocked()
            leader.cancel_scope.cancel()
        await anyio.wait_all_tasks_blocked()
        origin.gate.set()
    assert results == ["a v1"]
    assert origin.calls == 2


async def test_aclose_waits_for_running_refreshes(clock: FakeClock) -> None:
    origin = Origin()
    rt = isr.ISR(clock=clock)
    get = cached(rt, origin)
    await get("a")
    clock.advance(10)
    origin.version = 2
    origin.gate = anyio.Event()
    assert (await get.lookup("a")).status is Status.STALE

    async def release() -> None:
        await anyio.sleep(0.01)
        assert origin.gate is not None
        origin.gate.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(release)
        await rt.aclose()
        assert rt.stats().refreshing == 0
    assert rt.adapter.get("item:a").value == "a v2"  # type: ignore[union-attr]


async def test_refresh_without_a_task_group_runs_detached(clock: FakeClock) -> None:
    rt = isr.ISR(clock=clock)  # not entered: refreshes are spawned on the running loop
    origin = Origin()
    get = cached(rt, origin)
    await get("a")
    clock.advance(10)
    origin.version = 2
    assert (await get.lookup("a")).status is Status.STALE
    await rt.drain()
    assert (await get.lookup("a")).value == "a v2"
    await rt.aclose()


async def test_a_loader_dying_with_a_base_exception_hands_over_to_waiters(rt: isr.ISR) -> None:
    """Waiters must never receive a made-up value when the fetch ended without one."""
    calls = 0
    gate = anyio.Event()
    entered = anyio.Event()

    class Stop(BaseException):
        pass

    @isr.with_revalidate("k", ttl=10, runtime=rt)
    async def load() -> str:
        nonlocal calls
        calls += 1
        entered.set()
        await gate.wait()
        if calls == 1:
            raise Stop
        return "value"

    results: list[str] = []

    async def leader() -> None:
        with pytest.raises(Stop):
            await load()

    async def waiter() -> None:
        results.append(await load())

    async with anyio.create_task_group() as tg:
        tg.start_soon(leader)
        await entered.wait()
        tg.start_soon(waiter)
        await anyio.wait_all_tasks_blocked()
        gate.set()
    assert results == ["value"]
    assert calls == 2
