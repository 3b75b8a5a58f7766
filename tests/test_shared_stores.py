"""Two runtimes on one shared store, as two replicas or worker processes would be: a disk
cache, Redis, Valkey, and a Redis and a Valkey Cluster (where an invalidation's marker and
the entry it marks live on different slots, and a fetch's write must still see the marker)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

import isr
from isr import Status

from .conftest import FakeClock

# redis-py's asyncio client runs on asyncio only: conftest deselects trio with Redis.
pytestmark = pytest.mark.anyio


@pytest.fixture(params=["disk", "redis", "valkey", "redis-cluster", "valkey-cluster"])
def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "disk":
        return f"disk://{tmp_path / 'cache'}"
    name = request.param.replace("-", "_")
    return str(request.getfixturevalue(name if "cluster" in name else f"{name}_server").url)


@pytest.fixture
async def pair(
    shared_url: str, namespace: str, clock: FakeClock
) -> AsyncIterator[tuple[isr.ISR, isr.ISR]]:
    async with (
        isr.ISR(shared_url, namespace=namespace, clock=clock) as a,
        isr.ISR(shared_url, namespace=namespace, clock=clock) as b,
    ):
        yield a, b


@pytest.mark.parametrize("reader", ["after", "waiting"])
@pytest.mark.parametrize("how", ["key", "tag", "all"])
async def test_a_publish_on_one_replica_wins_over_a_fetch_running_on_another(
    pair: tuple[isr.ISR, isr.ISR], clock: FakeClock, how: str, reader: str
) -> None:
    """Replica a reads after b's old fetch landed, or while it waits for b's fetch (whose
    lock it finds): either way, never the value its own publish made old."""
    a, b = pair
    version = {"n": 1}
    gate = anyio.Event()
    entered = anyio.Event()

    def cached(rt: isr.ISR, wait: bool) -> isr.AsyncCached[[str], str]:
        @rt.with_revalidate("post:{slug}", ttl=60, tags=["posts"])
        async def post(slug: str) -> str:
            seen = version["n"]  # the fetch reads the content now...
            if wait:
                entered.set()
                await gate.wait()  # ...and is slow to come back
            return f"{slug} v{seen}"

        return post

    on_a, on_b = cached(a, wait=False), cached(b, wait=True)
    results: list[isr.Result[str]] = []

    async def read() -> None:
        results.append(await on_a.lookup("x"))

    async with anyio.create_task_group() as tg:
        tg.start_soon(on_b, "x")  # replica b starts fetching v1
        await entered.wait()
        clock.advance(1)
        version["n"] = 2  # the editor publishes; the webhook reaches replica a
        if how == "key":
            await a.invalidate("post:x")
        elif how == "tag":
            await a.invalidate_tag("posts")
        else:
            await a.invalidate_all()
        if reader == "waiting":
            tg.start_soon(read)
            await anyio.sleep(0.05)  # a finds b's fetch under way and waits for it
        gate.set()  # b's fetch of v1 lands after the publish
    if reader == "after":
        await read()
    assert [(r.value, r.status) for r in results] == [("x v2", Status.MISS)]


async def test_a_purge_on_one_replica_is_never_undone_by_another_replicas_fetch(
    pair: tuple[isr.ISR, isr.ISR], clock: FakeClock
) -> None:
    a, b = pair
    gate = anyio.Event()
    entered = anyio.Event()

    @b.with_revalidate("post:{slug}", ttl=60)
    async def slow(slug: str) -> str:
        entered.set()
        await gate.wait()
        return "unpublished content"

    async with anyio.create_task_group() as tg:
        tg.start_soon(slow, "x")
        await entered.wait()
        clock.advance(1)
        await a.invalidate("post:x", mode="purge")
        gate.set()
    assert a.adapter.get("post:x") is None  # the sync call: it works on every backend
