"""The fault suite, seen from one process: a fetch-lock holder SIGKILLed in another process, a
burst of readers on a cold process, an invalidation Redis cannot take.

Real servers (redis-server, child processes running ``tests/_mp_child.py``), default
timeouts. What is asserted is what the caller sees: how long it waited and what it got, how
often the origin was called, whether the store failed, whether an invalidation was refused
and then applied (the README's "Redis down" promises; the replicas' side of them is
tests/test_faults.py).
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest
import redis

import isr

from .redis_server import RedisServer
from .test_multiprocess import calls, spawn

#: A Redis command's default timeout, and slack for a loaded 2-core machine.
STORE_TIMEOUT = 0.25
SLACK = 0.75
#: Once Redis answers again, a process applies what it could not before within this long:
#: the circuit breaker's cooldown (2 s), and slack.
CATCHUP = 4.0
#: The key the lock holder (``tests/_mp_child.py``) fetches.
KEY = "page:home"


@pytest.fixture
def anyio_backend() -> str:
    """asyncio: about Redis's asyncio client (on trio the store runs its sync twin in
    threads, whose waits tests/test_redis_adapter.py covers)."""
    return "asyncio"


def kill_the_lock_holder(url: str, namespace: str, work: Path, lock_ttl: float) -> None:
    """Start a process whose loader (timeout 1 s) takes ``KEY``'s fetch lock, calls the
    origin and hangs; SIGKILL it there, its lock left behind in Redis."""
    args = ["--loader-sleep", "60", "--timeout", "1.0", "--lock-ttl", str(lock_ttl)]
    holder = spawn(url, namespace, work, 1, *args)
    (work / "go").touch()
    deadline = time.monotonic() + 20
    while calls(work) < 1:  # it holds the lock and waits on the origin
        assert holder.poll() is None, holder.communicate()
        assert time.monotonic() < deadline, "the holder never fetched"
        time.sleep(0.005)
    os.kill(holder.pid, signal.SIGKILL)
    holder.communicate()
    with redis.Redis.from_url(url) as client:
        left = client.pttl(f"{namespace}:l:{KEY}")
    assert left > 0, f"the killed holder's lock is not in Redis (PTTL {left})"


@pytest.mark.anyio
@pytest.mark.parametrize("fallback", [False, True], ids=["cold", "expired"])
async def test_a_dead_lock_holder_delays_a_caller_with_a_timeout_by_no_more_than_it(
    redis_server: RedisServer, namespace: str, tmp_path: Path, fallback: bool
) -> None:
    fetches = Counter[str]()
    # The lock outlives both timeouts: a caller that waits for it is seen to.
    async with isr.ISR(redis_server.url, namespace=namespace, lock_ttl=5) as rt:

        @rt.with_revalidate("page:{slug}", ttl=60, swr=None, timeout=1.0)
        async def page(slug: str) -> dict[str, Any]:
            fetches[slug] += 1
            return {"slug": slug, "fetch": fetches[slug]}

        if fallback:  # an old value to fall back on, expired: the next read must fetch
            assert await page("home") == {"slug": "home", "fetch": 1}
            await rt.invalidate(KEY)
        await anyio.to_thread.run_sync(
            lambda: kill_the_lock_holder(redis_server.url, namespace, tmp_path, 5)
        )
        started = time.monotonic()
        try:
            result = await page.lookup("home")
        except TimeoutError:
            got = "TimeoutError"
        else:
            got = f"{result.status.value} {result.value}"
        took = time.monotonic() - started
    bound = 1.0 + STORE_TIMEOUT + SLACK
    assert took <= bound, (
        f"behind a dead lock holder, a caller with timeout=1.0 waited {took:.2f} s "
        f"(bound {bound} s: its timeout, a store timeout, slack), then got {got}"
    )
    if fallback:
        assert got in ("STALE-IF-ERROR {'slug': 'home', 'fetch': 1}", f"MISS {result.value}")
    else:
        assert got == "TimeoutError" or got.startswith("MISS"), got


@pytest.mark.anyio
async def test_a_dead_lock_holder_delays_a_caller_without_a_timeout_by_the_lock_ttl(
    redis_server: RedisServer, namespace: str, tmp_path: Path
) -> None:
    async with isr.ISR(redis_server.url, namespace=namespace, lock_ttl=2) as rt:

        @rt.with_revalidate("page:{slug}", ttl=60, swr=None)
        async def page(slug: str) -> str:
            return f"{slug} by the survivor"

        await anyio.to_thread.run_sync(
            lambda: kill_the_lock_holder(redis_server.url, namespace, tmp_path, 2)
        )
        started = time.monotonic()
        result = await page.lookup("home")
        took = time.monotonic() - started
    assert result.value == "home by the survivor"
    assert took <= 2 + SLACK, f"behind a dead lock holder (lock_ttl=2) a caller waited {took} s"


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("callers", "keys", "stall"), [(200, 1, None), (1000, 100, None), (1000, 100, 0.4)]
)
async def test_a_burst_on_a_cold_process_is_absorbed(
    redis_server: RedisServer,
    namespace: str,
    caplog: pytest.LogCaptureFixture,
    callers: int,
    keys: int,
    stall: float | None,
) -> None:
    """``stall``: the loop is held up that long early in the burst (blocking code on the
    loop, a long garbage collection, a pause of the machine): not Redis's slowness, so no
    command fails for it and the breaker stays closed."""
    fetches = Counter[int]()
    answers: list[tuple[int, isr.Result[dict[str, int]]]] = []
    # A fresh runtime on redis:// with its default timeouts (0.25 s), no connection yet.
    async with isr.ISR(redis_server.url, namespace=namespace) as rt:

        @rt.with_revalidate("burst:{n}", ttl=60)
        async def item(n: int) -> dict[str, int]:
            fetches[n] += 1
            await anyio.sleep(0.05)  # an origin takes a while
            return {"n": n}

        async def read(n: int) -> None:
            answers.append((n, await item.lookup(n)))

        async def hold_up_the_loop() -> None:
            await anyio.sleep(0.01)  # commands in flight, connections opening
            assert stall is not None
            time.sleep(stall)  # noqa: ASYNC251 (the stall under test)

        with caplog.at_level(logging.WARNING, logger="isr"):
            async with anyio.create_task_group() as tg:
                if stall:
                    tg.start_soon(hold_up_the_loop)
                for i in range(callers):
                    tg.start_soon(read, i % keys)
        stats = rt.stats()
    logged = [r.getMessage() for r in caplog.records]
    opened = [message for message in logged if "not using it" in message]
    assert stats.store_errors == 0, (
        f"{stats.store_errors} store errors in a burst of {callers} readers; logged: "
        + "; ".join(logged[:3])
    )
    assert not opened, f"the breaker opened in a burst of {callers} readers: {opened[0]}"
    extra = {n: count for n, count in fetches.items() if count != 1}
    assert len(fetches) == keys
    assert not extra, f"origin calls per key, where not one: {extra}"
    assert len(answers) == callers
    assert all(result.value == {"n": n} for n, result in answers)


@pytest.mark.anyio
@pytest.mark.parametrize("l1", [False, True], ids=["redis", "redis-l1"])
async def test_an_invalidation_redis_cannot_take_is_refused_and_applied_when_it_is_back(
    l1: bool,
) -> None:
    versions = dict.fromkeys("abc", 1)
    with RedisServer() as server:
        async with isr.ISR(server.url, namespace="outbox", l1=l1) as rt:
            assert await rt.wait_ready(10)

            @rt.with_revalidate("item:{name}", ttl=60, tags=["item:{name}"])
            async def item(name: str) -> dict[str, Any]:
                return {"name": name, "version": versions[name]}

            for name in "abc":
                assert (await item(name))["version"] == 1
            dump = server.save()  # Redis keeps its data across the outage (RDB, AOF)
            server.kill()
            versions.update(dict.fromkeys("abc", 2))
            with pytest.raises(isr.StoreUnavailable):
                await rt.invalidate("item:a", "purge")
            with pytest.raises(isr.StoreUnavailable):
                await rt.invalidate_tag("item:b", "purge")
            with pytest.raises(isr.StoreUnavailable):
                await rt.invalidate_all("expire")
            assert rt.stats().outbox == 3
            # Applied in this process at once (its L1, if any; without, reads go to the origin).
            assert [(await item(name))["version"] for name in "abc"] == [2, 2, 2]
            server.restart(dump)  # back, with the data it had: every item at v1
            deadline = time.monotonic() + CATCHUP
            while rt.stats().outbox:
                assert time.monotonic() < deadline, f"outbox still {rt.stats().outbox}"
                got = [(await item(name))["version"] for name in "abc"]
                assert got == [2, 2, 2], f"served from Redis before the outbox was applied: {got}"
                await anyio.sleep(0.05)
        # What any other process now finds in Redis: none of the three at v1.
        async with isr.ISR(server.url, namespace="outbox") as other:

            @other.with_revalidate("item:{name}", ttl=60, tags=["item:{name}"])
            async def fresh(name: str) -> dict[str, Any]:
                return {"name": name, "version": versions[name]}

            assert [(await fresh(name))["version"] for name in "abc"] == [2, 2, 2]


def test_the_sync_spellings_refuse_an_invalidation_redis_cannot_take() -> None:
    with RedisServer() as server, isr.ISR(server.url, namespace="outbox-sync") as rt:
        assert rt.wait_ready_sync(10)
        server.kill()
        with pytest.raises(isr.StoreUnavailable):
            rt.invalidate_sync("item:a", "purge")
        with pytest.raises(isr.StoreUnavailable):
            rt.invalidate_tag_sync("item:b")
        with pytest.raises(isr.StoreUnavailable):
            rt.invalidate_all_sync()
        assert rt.stats().outbox == 3
