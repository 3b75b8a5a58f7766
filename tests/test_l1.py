"""A memory L1 over Redis on several instances: every invalidation reaches every L1."""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import anyio
import pytest
import redis

import isr
from isr import Status
from isr.adapters.l1 import L1Adapter
from isr.adapters.redis import RedisAdapter

from .redis_server import Flavour, RedisServer

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # redis-py's asyncio client runs on asyncio only


POLL = 0.2  # the bus's epoch check, short for the tests (1 s by default)


def instance(url: str, namespace: str) -> isr.ISR:
    store = L1Adapter(RedisAdapter(url, namespace=namespace), epoch_poll=POLL)
    assert store.bus.connected.wait(5), "the bus did not subscribe"
    return isr.ISR(store)


class Origin:
    def __init__(self) -> None:
        self.version = 1
        self.calls = 0
        self.down = False

    async def load(self, slug: str) -> str:
        self.calls += 1
        if self.down:
            raise ConnectionError("origin down")
        return f"{slug} v{self.version}"


def page(rt: isr.ISR, origin: Origin) -> isr.AsyncCached[[str], str]:
    @rt.with_revalidate("page:{slug}", ttl=60, swr=None, tags=["pages"])
    async def get(slug: str) -> str:
        return await origin.load(slug)

    return get


@pytest.fixture
async def three(server: RedisServer, namespace: str) -> AsyncIterator[list[isr.ISR]]:
    runtimes = [instance(server.url, namespace) for _ in range(3)]
    yield runtimes
    for rt in runtimes:
        await rt.aclose()


async def until(check: Callable[[], Awaitable[bool]], seconds: float = 3.0) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, "not within the deadline"
        await anyio.sleep(0.002)


async def test_a_hit_is_served_from_the_l1_without_redis(namespace: str, flavour: Flavour) -> None:
    with RedisServer(flavour) as server:
        rt = instance(server.url, namespace)
        origin = Origin()
        get = page(rt, origin)
        await get("home")
        server.stop()  # Redis gone: the L1 still answers, at hot-path speed
        assert (await get.lookup("home")).status is Status.HIT
        assert origin.calls == 1
        await rt.aclose()


@pytest.mark.parametrize("kind", ["key", "tag", "all"])
@pytest.mark.parametrize("mode", ["expire", "revalidate", "purge"])
async def test_every_invalidation_reaches_every_other_instance(
    three: list[isr.ISR], kind: str, mode: str
) -> None:
    origin = Origin()
    gets = [page(rt, origin) for rt in three]
    for get in gets:
        await get("home")
    assert origin.calls == 1  # one fetch, the others read it from Redis into their L1
    origin.version = 2
    m = isr.Mode[mode.upper()]
    if kind == "key":
        await three[0].invalidate("page:home", mode=m)
    elif kind == "tag":
        await three[0].invalidate_tag("pages", mode=m)
    else:
        await three[0].invalidate_all(mode=m)
    for rt, get in zip(three[1:], gets[1:], strict=True):

        async def serves_v2(rt: isr.ISR = rt, get: isr.AsyncCached[[str], str] = get) -> bool:
            result = await get.lookup("home")
            if result.status is Status.STALE:
                assert mode == "revalidate"
                await rt.drain()
            return result.value == "home v2"

        await until(serves_v2)


async def test_a_purge_is_never_served_by_another_instance_even_when_the_origin_fails(
    three: list[isr.ISR],
) -> None:
    origin = Origin()
    gets = [page(rt, origin) for rt in three]
    for get in gets:
        await get("home")
    origin.down = True
    await three[0].invalidate("page:home", mode="purge")

    async def gone() -> bool:
        try:
            await gets[2].lookup("home")
        except ConnectionError:
            return True
        return False

    await until(gone)


async def test_killed_subscriptions_resync_within_the_epoch_poll(
    server: RedisServer, three: list[isr.ISR]
) -> None:
    origin = Origin()
    gets = [page(rt, origin) for rt in three]
    for get in gets:
        await get("home")
    admin = redis.Redis.from_url(server.url)
    assert admin.client_kill_filter(_type="pubsub") >= 3
    origin.version = 2
    await three[0].invalidate("page:home")  # published while the others resubscribe
    started = time.monotonic()
    for get in gets[1:]:

        async def serves_v2(get: isr.AsyncCached[[str], str] = get) -> bool:
            return (await get.lookup("home")).value == "home v2"

        await until(serves_v2)
    assert time.monotonic() - started < POLL + 2.0
    assert sum(rt.stats().store["bus_resyncs"] for rt in three) >= 1
    admin.close()


async def test_a_skipped_message_makes_the_instance_drop_its_l1(
    server: RedisServer, namespace: str, three: list[isr.ISR]
) -> None:
    origin = Origin()
    get = page(three[1], origin)
    await get("home")
    assert three[1].stats().store["l1_entries"] == 1
    admin = redis.Redis.from_url(server.url)
    admin.incr(f"{namespace}:epoch")  # as if an invalidation's message never arrived
    await three[0].invalidate("page:other")  # the next message shows the gap

    async def dropped() -> bool:
        return three[1].stats().store["l1_entries"] == 0

    await until(dropped)
    assert three[1].stats().store["bus_resyncs"] == 1
    admin.close()


async def test_a_lost_last_message_is_caught_by_the_periodic_check(
    server: RedisServer, namespace: str, three: list[isr.ISR]
) -> None:
    origin = Origin()
    get = page(three[2], origin)
    await get("home")
    admin = redis.Redis.from_url(server.url)
    admin.incr(f"{namespace}:epoch")  # a message lost, and no other comes after it
    started = time.monotonic()

    async def dropped() -> bool:
        return three[2].stats().store["l1_entries"] == 0

    await until(dropped)
    assert time.monotonic() - started < POLL + 1.0
    admin.close()


async def test_with_redis_down_an_instance_serves_from_its_l1(
    namespace: str, flavour: Flavour
) -> None:
    with RedisServer(flavour) as server:
        store = L1Adapter(
            RedisAdapter(server.url, namespace=namespace, breaker_cooldown=60), epoch_poll=POLL
        )
        assert store.bus.connected.wait(5)
        clock = [1000.0]
        rt = isr.ISR(store, clock=lambda: clock[0])
        origin = Origin()

        @rt.with_revalidate("page:{slug}", ttl=10, swr=20, stale_if_error=3600)
        async def get(slug: str) -> str:
            return await origin.load(slug)

        await get("home")
        server.stop()
        assert (await get.lookup("home")).status is Status.HIT
        clock[0] += 15  # stale: served at once, the refresh reaches the origin
        origin.version = 2
        assert (await get.lookup("home")).status is Status.STALE
        await rt.drain()
        assert (await get.lookup("home")).value == "home v2"  # kept in the L1
        clock[0] += 40
        origin.down = True  # past swr, origin down too: the L1's old value
        result = await get.lookup("home")
        assert (result.value, result.status) == ("home v2", Status.STALE_IF_ERROR)
        origin.down = False
        origin.version = 3
        with pytest.raises(isr.StoreUnavailable):  # not reported as done: it is not
            await rt.invalidate("page:home")
        assert rt.stats().outbox == 1  # kept for Redis ...
        assert (await get.lookup("home")).value == "home v3"  # ... and obeyed here at once
        assert rt.stats().store_errors > 0
        await rt.aclose()


def test_sync_code_shares_the_l1_and_the_bus(server: RedisServer, namespace: str) -> None:
    a, b = instance(server.url, namespace), instance(server.url, namespace)
    version = {"n": 1}

    def make(rt: isr.ISR) -> isr.SyncCached[[str], str]:
        @rt.with_revalidate("s:{slug}", ttl=60)
        def get(slug: str) -> str:
            return f"{slug} v{version['n']}"

        return get

    ga, gb = make(a), make(b)
    assert ga("x") == gb("x") == "x v1"
    version["n"] = 2
    a.invalidate_sync("s:x")
    deadline = time.monotonic() + 3
    while gb("x") != "x v2":
        assert time.monotonic() < deadline
        time.sleep(0.002)
    a.close()
    b.close()


def test_an_invalidation_while_redis_hangs_costs_the_stores_timeout_not_more(
    server: RedisServer, namespace: str
) -> None:
    """A Redis that accepts but does not answer (paused, overloaded) holds a sync
    invalidation for the store's command timeout (0.25 s), never for the bus's long
    subscription timeout; the caller hears it was not done (it waits in the outbox)."""
    rt = instance(server.url, namespace)
    admin = redis.Redis.from_url(server.url)
    admin.client_pause(2000, all=True)
    try:
        started = time.monotonic()
        with pytest.raises(isr.StoreUnavailable):
            rt.invalidate_sync("s:x")
        took = time.monotonic() - started
        assert rt.stats().outbox == 1
    finally:
        admin.client_unpause()
        admin.close()
        rt.close()
    assert took < 1.5


async def test_an_instance_that_started_while_redis_was_down_misses_nothing(
    namespace: str,
    flavour: Flavour,
) -> None:
    with RedisServer(flavour) as server:
        server.stop()
        late = isr.ISR(L1Adapter(RedisAdapter(server.url, namespace=namespace), epoch_poll=POLL))
        origin = Origin()
        get_late = page(late, origin)
        assert await get_late("home") == "home v1"  # from the origin, kept in its L1 only
        server.start()
        other = instance(server.url, namespace)
        origin.version = 2
        await other.invalidate("page:home")  # may be published before `late` subscribes
        assert await late.wait_ready(10)

        async def serves_v2() -> bool:
            return (await get_late.lookup("home")).value == "home v2"

        await until(serves_v2)
        await late.aclose()
        await other.aclose()


async def test_hits_stay_on_the_fast_path_past_generation_256(
    server: RedisServer, namespace: str
) -> None:
    rt = instance(server.url, namespace)
    for _ in range(300):
        await rt.invalidate_all()
    get = page(rt, Origin())
    await get("home")
    loader = get.__isr_loader__  # type: ignore[attr-defined]
    before = loader.fast_hits()
    for _ in range(10):
        await get("home")
    assert loader.fast_hits() - before == 10  # served by the generated wrapper itself
    await rt.aclose()


def test_a_key_redis_no_longer_holds_leaves_the_l1_while_other_reads_fail(
    server: RedisServer, namespace: str
) -> None:
    """Redis evicted a record this instance still holds: the instance's next read of it
    from Redis drops its copy, even while other threads' reads fail at that moment (here on
    a record the codec refuses). Whether Redis answered is each read's own."""
    store = L1Adapter(RedisAdapter(server.url, namespace=namespace), epoch_poll=POLL)
    assert store.bus.connected.wait(5)
    rt = isr.ISR(store)

    @rt.with_revalidate("p:{slug}", ttl=60)
    def get(slug: str) -> str:
        return f"{slug} v1"

    assert get("home") == "home v1"
    held = store.l1.get("p:home")
    assert held is not None
    raw = redis.Redis.from_url(server.url)
    raw.delete(f"{namespace}:e:p:home")  # evicted, say: no message tells the instances
    raw.set(f"{namespace}:e:bad", b"not a record")
    stop = threading.Event()

    def failing_reads() -> None:
        while not stop.is_set():
            assert store.l2.get("bad") is None

    other = threading.Thread(target=failing_reads)
    other.start()
    try:
        kept = 0
        for _ in range(200):
            store.l1.set("p:home", held)
            kept += store.get("p:home") is not None or store.l1.get("p:home") is not None
    finally:
        stop.set()
        other.join()
    assert kept == 0
    assert store.errors > 0  # the other thread's reads did fail meanwhile
    raw.close()
    rt.close()


async def test_a_tag_invalidation_heard_from_another_instance_spares_the_rest_of_the_l1(
    server: RedisServer, namespace: str
) -> None:
    """Another instance invalidates one tag: this instance's copies of its entries are not
    served again, and its other copies still are, from the L1, without a round trip."""
    a, b = instance(server.url, namespace), instance(server.url, namespace)
    origin = Origin()

    def tagged(rt: isr.ISR, tag: str) -> isr.AsyncCached[[str], str]:
        @rt.with_revalidate(f"{tag}:{{slug}}", ttl=60, tags=[tag])
        async def get(slug: str) -> str:
            return await origin.load(slug)

        return get

    posts_a, pages_a = tagged(a, "posts"), tagged(a, "pages")
    posts_b = tagged(b, "posts")
    assert await posts_a("x") == "x v1"
    assert await pages_a("y") == "y v1"
    origin.version = 2
    assert await b.invalidate_tag("posts", mode="expire") == 1
    await until(lambda: _seen(a))
    with redis.Redis.from_url(server.url) as admin:
        before = admin.info("commandstats").get("cmdstat_get", {}).get("calls", 0)
        assert (await pages_a.lookup("y")).status is Status.HIT  # from the L1
        after = admin.info("commandstats").get("cmdstat_get", {}).get("calls", 0)
    assert after == before
    copy = a.adapter.peek("pages:y")  # and from then on, the hot path's: its rule holds
    assert copy is not None
    assert copy.gen is a.adapter.gen
    assert (await posts_a.lookup("x")).value == "x v2"
    assert await posts_b("x") == "x v2"
    await a.aclose()
    await b.aclose()


async def _seen(rt: isr.ISR) -> bool:
    return rt.stats().store.get("bus_received", 0) >= 1
