"""The Redis store in ``cluster=true`` mode on a real three-node Redis Cluster: the runtime's
core behaviour, with entries, tag sets, locks and markers landing on different nodes.

The adapter sends no multi-key command and uses no hash tags (see adapters/redis.py), so
the keys of one tag are spread over every node; these tests check that they are, and that
nothing breaks because of it. Every runtime here must end with no store error: the adapter
absorbs failures (a caller is answered from the origin instead), so a command the cluster
refused would otherwise go unnoticed.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis
from redis.cluster import RedisCluster as ClusterClient

import isr
from isr import Status
from isr.adapters.redis import RedisAdapter

from .conftest import FakeClock
from .redis_cluster import RedisCluster
from .redis_server import FLAVOURS, free_port
from .test_multiprocess import calls, finish, spawn, start_together

MODES = ("expire", "revalidate", "purge")


@pytest.fixture
def anyio_backend() -> str:
    # redis-py's asyncio client (and so its asyncio RedisCluster) runs on asyncio only: the
    # async tests here run on asyncio, not trio (the conftest's trio deselection keys on a
    # "redis" store parameter, which these tests do not have).
    return "asyncio"


@pytest.fixture(scope="module", params=FLAVOURS)
def cluster(request: pytest.FixtureRequest) -> RedisCluster:
    """The session's Redis Cluster, then its Valkey one: every test here runs on both (the
    tests of two replicas on one shared store run on them too: tests/test_shared_stores.py)."""
    found: RedisCluster = request.getfixturevalue(f"{request.param}_cluster")
    return found


@pytest.fixture(scope="module")
def raw(cluster: RedisCluster) -> Iterator[ClusterClient]:
    """A plain cluster client, to look at what the store wrote."""
    client = ClusterClient.from_url(cluster.url.partition("?")[0])
    yield client
    client.close()


@pytest.fixture(scope="module")
def nodes(cluster: RedisCluster) -> Iterator[dict[int, redis.Redis]]:
    """A plain (non-cluster) client per node, by port, to ask each node what it holds."""
    clients = {port: redis.Redis(port=port) for port in cluster.ports}
    yield clients
    for client in clients.values():
        client.close()


def no_store_errors(*runtimes: isr.ISR) -> None:
    for runtime in runtimes:
        assert runtime.stats().store_errors == 0, runtime.stats()


@pytest.fixture
async def crt(cluster: RedisCluster, clock: FakeClock, namespace: str) -> AsyncIterator[isr.ISR]:
    async with isr.ISR(cluster.url, clock=clock, namespace=namespace) as runtime:
        assert isinstance(runtime.adapter, RedisAdapter)
        assert runtime.adapter.cluster
        yield runtime
        no_store_errors(runtime)


@pytest.fixture
def csrt(cluster: RedisCluster, clock: FakeClock, namespace: str) -> Iterator[isr.ISR]:
    runtime = isr.ISR(cluster.url, clock=clock, namespace=namespace)
    yield runtime
    runtime.close()
    no_store_errors(runtime)


@pytest.fixture
async def pair(
    cluster: RedisCluster, clock: FakeClock, namespace: str
) -> AsyncIterator[tuple[isr.ISR, isr.ISR]]:
    """Two runtimes on the cluster and one namespace, as two replicas would be."""
    url = f"{cluster.url}&generation_poll=0.05"
    async with (
        isr.ISR(url, namespace=namespace, clock=clock) as a,
        isr.ISR(url, namespace=namespace, clock=clock) as b,
    ):
        yield a, b
        no_store_errors(a, b)


class Origin:
    """Counts its calls (thread-safe); answers ``"<name> v<version>"``; can fail."""

    def __init__(self) -> None:
        self.calls = 0
        self.version = 1
        self.fail: Exception | None = None
        self._lock = threading.Lock()

    def load(self, name: str) -> str:
        with self._lock:
            self.calls += 1
        if self.fail is not None:
            raise self.fail
        return f"{name} v{self.version}"


def async_cached(rt: isr.ISR, origin: Origin, **options: Any) -> isr.AsyncCached[[str], str]:
    options.setdefault("ttl", 10)

    @isr.with_revalidate("item:{name}", runtime=rt, **options)
    async def get(name: str) -> str:
        return origin.load(name)

    return get


def sync_cached(rt: isr.ISR, origin: Origin, **options: Any) -> isr.SyncCached[[str], str]:
    options.setdefault("ttl", 10)

    @isr.with_revalidate("item:{name}", runtime=rt, **options)
    def get(name: str) -> str:
        return origin.load(name)

    return get


def owner(raw: ClusterClient, nodes: dict[int, redis.Redis], key: str) -> int:
    """The port of the node that holds ``key``: its slot (CLUSTER KEYSLOT, asked of the
    server), then the one node that has keys in that slot (CLUSTER COUNTKEYSINSLOT, asked
    of each node: a node counts only the keys it holds)."""
    assert raw.exists(key) == 1, key
    slot = raw.cluster_keyslot(key)
    assert isinstance(slot, int)
    held = [port for port, node in nodes.items() if node.cluster("COUNTKEYSINSLOT", slot)]
    assert len(held) == 1, f"{key!r} (slot {slot}) is on nodes {held}"
    return held[0]


# ---------------------------------------------------------------- miss, hit, stale


@pytest.mark.anyio
async def test_miss_then_hit_then_stale_then_one_refresh(
    crt: isr.ISR, clock: FakeClock, raw: ClusterClient, namespace: str
) -> None:
    origin = Origin()
    gate: anyio.Event | None = None

    @isr.with_revalidate("item:{name}", ttl=10, swr=None, runtime=crt)
    async def get(name: str) -> str:
        value = origin.load(name)
        if gate is not None:
            await gate.wait()  # the refresh is slow: every reader meets the stale entry
        return value

    assert await get.lookup("a") == isr.Result("a v1", Status.MISS, 0.0)
    assert raw.exists(f"{namespace}:e:item:a") == 1  # in the cluster, not only in memory
    clock.advance(4)
    assert await get.lookup("a") == isr.Result("a v1", Status.HIT, 4.0)
    clock.advance(6)
    origin.version = 2
    gate = anyio.Event()
    try:
        results = [await get.lookup("a") for _ in range(50)]
    finally:
        gate.set()
    # Nobody waited for the refresh.
    assert {(r.value, r.status, r.age) for r in results} == {("a v1", Status.STALE, 10.0)}
    await crt.drain()
    assert origin.calls == 2  # one refresh for all of them
    assert await get.lookup("a") == isr.Result("a v2", Status.HIT, 0.0)


def test_sync_miss_then_hit_then_stale_then_one_refresh(
    csrt: isr.ISR, clock: FakeClock, raw: ClusterClient, namespace: str
) -> None:
    origin = Origin()
    gate = threading.Event()
    gate.set()

    @isr.with_revalidate("item:{name}", ttl=10, swr=None, runtime=csrt)
    def get(name: str) -> str:
        value = origin.load(name)
        assert gate.wait(10), "test gate never opened"
        return value

    assert get.lookup("a") == isr.Result("a v1", Status.MISS, 0.0)
    assert raw.exists(f"{namespace}:e:item:a") == 1
    clock.advance(4)
    assert get.lookup("a") == isr.Result("a v1", Status.HIT, 4.0)
    clock.advance(6)
    origin.version = 2
    gate.clear()  # the refresh is slow: every reader meets the stale entry
    try:
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda _: get.lookup("a"), range(50)))
    finally:
        gate.set()
    assert {(r.value, r.status, r.age) for r in results} == {("a v1", Status.STALE, 10.0)}
    csrt.drain_sync()
    assert origin.calls == 2
    assert get.lookup("a") == isr.Result("a v2", Status.HIT, 0.0)


@pytest.mark.anyio
async def test_many_first_calls_at_once_on_a_new_async_client(
    cluster: RedisCluster, namespace: str
) -> None:
    # redis-py's asyncio RedisCluster, sent many commands at once before it has loaded its
    # slot map, drops connections under them; the adapter loads the map first, once.
    adapter = RedisAdapter.from_url(cluster.url, namespace=namespace)
    try:
        found: list[bool] = []

        async def take(i: int) -> None:
            found.append(await adapter.aacquire(f"k{i}", "me", 5))

        async with anyio.create_task_group() as tg:
            for i in range(50):
                tg.start_soon(take, i)
        assert found == [True] * 50
        assert adapter.errors == 0
    finally:
        await adapter.aclose()


@pytest.mark.anyio
async def test_an_unreachable_cluster_is_a_store_failure_not_a_hang(namespace: str) -> None:
    adapter = RedisAdapter.from_url(
        f"redis://127.0.0.1:{free_port()}/0?cluster=true&breaker_threshold=100", namespace=namespace
    )
    try:
        started = anyio.current_time()
        found: list[object] = []

        async def read(i: int) -> None:
            found.append(await adapter.aget(f"k{i}"))

        async with anyio.create_task_group() as tg:
            for i in range(20):
                tg.start_soon(read, i)
        assert found == [None] * 20  # missing: the callers go to the origin
        assert adapter.errors >= 1
        assert anyio.current_time() - started < 2
        assert await adapter.aget("k") is None  # a later call tries to load the map again
    finally:
        await adapter.aclose()


# ---------------------------------------------------------------- invalidation


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.anyio
async def test_invalidate_key(crt: isr.ISR, mode: str) -> None:
    origin = Origin()
    get = async_cached(crt, origin)
    await get("a")
    await get("b")
    origin.version = 2
    assert await crt.invalidate("item:a", mode=mode) is True  # type: ignore[arg-type]
    result = await get.lookup("a")
    if mode == "revalidate":
        assert (result.value, result.status) == ("a v1", Status.STALE)
        await crt.drain()
        assert (await get.lookup("a")).value == "a v2"
    else:
        assert (result.value, result.status) == ("a v2", Status.MISS)
    assert (await get.lookup("b")).status is Status.HIT  # other keys untouched


@pytest.mark.anyio
async def test_expire_keeps_a_fallback_and_purge_does_not(crt: isr.ISR) -> None:
    origin = Origin()
    get = async_cached(crt, origin)
    await get("a")
    await get("b")
    origin.fail = ConnectionError("down")
    await crt.invalidate("item:a")  # expire
    await crt.invalidate("item:b", mode="purge")
    assert (await get.lookup("a")).status is Status.STALE_IF_ERROR
    with pytest.raises(ConnectionError):
        await get("b")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.anyio
async def test_invalidate_a_tag_whose_keys_are_on_every_node(
    crt: isr.ISR,
    cluster: RedisCluster,
    raw: ClusterClient,
    nodes: dict[int, redis.Redis],
    namespace: str,
    mode: str,
) -> None:
    origin = Origin()

    @crt.with_revalidate("post:{slug}", ttl=60, tags=["posts", "author:{author}"])
    async def post(slug: str, author: str) -> str:
        return origin.load(slug)

    authors = {f"s{i}": f"a{i % 3}" for i in range(48)}
    for slug, author in authors.items():
        await post(slug, author)
    # The entries are spread over the three nodes, each tag set sits on one of them.
    held = {owner(raw, nodes, f"{namespace}:e:post:{slug}") for slug in authors}
    assert held == set(cluster.ports)
    tag_sets = [f"{namespace}:t:{tag}" for tag in ("posts", "author:a0", "author:a1")]
    assert {owner(raw, nodes, key) for key in tag_sets} <= set(cluster.ports)
    assert raw.scard(tag_sets[0]) == 48

    origin.version = 2
    expected = Status.STALE if mode == "revalidate" else Status.MISS
    assert await crt.invalidate_tag("author:a1", mode=mode) == 16  # type: ignore[arg-type]
    for slug, author in authors.items():
        status = (await post.lookup(slug, author)).status
        assert status is (expected if author == "a1" else Status.HIT), slug
    await crt.drain()

    origin.version = 3
    assert await crt.invalidate_tag("posts", mode=mode) == 48  # type: ignore[arg-type]
    results = {slug: await post.lookup(slug, author) for slug, author in authors.items()}
    assert {r.status for r in results.values()} == {expected}
    if mode != "revalidate":
        assert {r.value for r in results.values()} == {f"{slug} v3" for slug in authors}
    await crt.drain()
    assert {(await post.lookup(s, a)).value for s, a in authors.items()} == {
        f"{slug} v3" for slug in authors
    }


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.anyio
async def test_invalidate_all(crt: isr.ISR, mode: str) -> None:
    origin = Origin()
    get = async_cached(crt, origin)
    for name in "abc":
        await get(name)
    origin.version = 2
    origin.fail = ConnectionError("down")
    await crt.invalidate_all(mode=mode)  # type: ignore[arg-type]

    async def status_of(name: str) -> Status | None:
        try:
            return (await get.lookup(name)).status
        except ConnectionError:
            return None

    statuses = {await status_of(name) for name in "ab"}
    expected = {"revalidate": Status.STALE, "expire": Status.STALE_IF_ERROR, "purge": None}
    assert statuses == {expected[mode]}
    await crt.drain()
    origin.fail = None
    assert (await get.lookup("c")).value == ("c v1" if mode == "revalidate" else "c v2")


def test_sync_invalidation_of_key_tag_and_all(
    csrt: isr.ISR,
    cluster: RedisCluster,
    raw: ClusterClient,
    nodes: dict[int, redis.Redis],
    namespace: str,
) -> None:
    origin = Origin()

    @isr.with_revalidate("post:{slug}", ttl=60, tags=["posts"], runtime=csrt)
    def post(slug: str) -> str:
        return origin.load(slug)

    slugs = [f"s{i}" for i in range(24)]
    for slug in slugs:
        post(slug)
    assert {owner(raw, nodes, f"{namespace}:e:post:{s}") for s in slugs} == set(cluster.ports)
    origin.version = 2
    assert csrt.invalidate_sync("post:s0") is True
    assert post.lookup("s0") == isr.Result("s0 v2", Status.MISS, 0.0)
    assert csrt.invalidate_tag_sync("posts", mode="purge") == 24
    assert {post.lookup(s).status for s in slugs} == {Status.MISS}
    csrt.invalidate_all_sync(mode="revalidate")
    assert {post.lookup(s).status for s in slugs} == {Status.STALE}
    csrt.drain_sync()


# ---------------------------------------------------------------- two runtimes, one cluster


@pytest.mark.anyio
async def test_fetch_lock_lets_one_of_two_runtimes_call_the_origin(
    pair: tuple[isr.ISR, isr.ISR],
) -> None:
    a, b = pair
    origin = Origin()
    gate = anyio.Event()
    entered = anyio.Event()

    def cached(rt: isr.ISR) -> isr.AsyncCached[[str], str]:
        @rt.with_revalidate("page:{slug}", ttl=60)
        async def page(slug: str) -> str:
            value = origin.load(slug)
            entered.set()
            await gate.wait()
            return value

        return page

    results: list[isr.Result[str]] = []

    async def call(page: isr.AsyncCached[[str], str]) -> None:
        results.append(await page.lookup("home"))

    on_a, on_b = cached(a), cached(b)
    async with anyio.create_task_group() as tg:
        for page in (on_a, on_b) * 10:
            tg.start_soon(call, page)
        await entered.wait()
        await anyio.sleep(0.05)  # the other runtime's callers find the lock taken, and wait
        gate.set()
    assert origin.calls == 1
    assert {(r.value, r.status) for r in results} == {("home v1", Status.MISS)}
    assert len(results) == 20


def test_sync_fetch_lock_lets_one_of_two_runtimes_call_the_origin(
    cluster: RedisCluster, namespace: str
) -> None:
    one = isr.ISR(cluster.url, namespace=namespace)
    two = isr.ISR(cluster.url, namespace=namespace)
    origin = Origin()
    gate = threading.Event()

    def cached(rt: isr.ISR) -> isr.SyncCached[[str], str]:
        @rt.with_revalidate("page:{slug}", ttl=60)
        def page(slug: str) -> str:
            value = origin.load(slug)
            assert gate.wait(10), "test gate never opened"
            return value

        return page

    pages = [cached(one), cached(two)] * 8
    with ThreadPoolExecutor(len(pages)) as pool:
        futures = [pool.submit(page, "home") for page in pages]
        threading.Event().wait(0.1)  # every thread is in: one fetches, the others wait
        gate.set()
        assert {f.result() for f in futures} == {"home v1"}
    assert origin.calls == 1
    one.close()
    two.close()
    no_store_errors(one, two)


@pytest.mark.anyio
async def test_fetch_lock_on_the_adapter(cluster: RedisCluster, namespace: str) -> None:
    mine = RedisAdapter.from_url(cluster.url, namespace=namespace)
    theirs = RedisAdapter.from_url(cluster.url, namespace=namespace)
    try:
        for key in ("k0", "k1", "k2", "k3", "k4"):  # lock keys on more than one node
            assert mine.acquire(key, "mine", 5)
            assert not theirs.acquire(key, "theirs", 5)
            assert not await theirs.aacquire(key, "theirs", 5)
            theirs.release(key, "theirs")  # not theirs to give back
            await theirs.arelease(key, "theirs")
            assert not await theirs.aacquire(key, "theirs", 5)
            mine.release(key, "mine")
            assert await theirs.aacquire(key, "theirs", 5)
            assert not mine.acquire(key, "mine", 5)
            await theirs.arelease(key, "theirs")
        assert mine.errors == theirs.errors == 0
    finally:
        await mine.aclose()
        await theirs.aclose()


@pytest.mark.anyio
async def test_invalidations_reach_the_other_runtime(pair: tuple[isr.ISR, isr.ISR]) -> None:
    one, two = pair
    origin = Origin()
    get_one = async_cached(one, origin, tags=["items"])
    get_two = async_cached(two, origin, tags=["items"])
    assert await get_one("x") == "x v1"
    assert (await get_two.lookup("x")).status is Status.HIT  # the other's entry
    origin.version = 2
    assert await two.invalidate_tag("items") == 1
    assert (await get_one.lookup("x")).value == "x v2"
    origin.version = 3
    await two.invalidate_all()
    await anyio.sleep(0.1)  # one reads the generation record again within generation_poll
    assert (await get_one.lookup("x")).value == "x v3"
    assert origin.calls == 3


def test_three_processes_fifty_callers_each_one_origin_call(
    cluster: RedisCluster, namespace: str, tmp_path: Path
) -> None:
    procs = [spawn(cluster.url, namespace, tmp_path, 50) for _ in range(3)]
    start_together(procs, tmp_path)
    results = [r for p in procs for r in finish(p)]
    assert len(results) == 150
    assert calls(tmp_path) == 1


# ---------------------------------------------------------------- codec errors


@pytest.mark.anyio
async def test_unencodable_value_raises_codec_error_and_stores_nothing(
    crt: isr.ISR, raw: ClusterClient, namespace: str
) -> None:
    @isr.with_revalidate("set:{name}", ttl=60, tags=["sets"], runtime=crt)
    async def get(name: str) -> set[str]:
        return {name}

    with pytest.raises(isr.CodecError, match=":e:set:x'"):
        await get("x")
    for key in ("e:set:x", "l:set:x", "t:sets"):  # no entry, no lock left, no tag set
        assert raw.exists(f"{namespace}:{key}") == 0, key


def test_sync_unencodable_value_raises_codec_error_and_stores_nothing(
    csrt: isr.ISR, raw: ClusterClient, namespace: str
) -> None:
    @isr.with_revalidate("obj", ttl=60, runtime=csrt)
    def get() -> object:
        return object()

    with pytest.raises(isr.CodecError, match=":e:obj'"):
        get()
    for key in ("e:obj", "l:obj"):
        assert raw.exists(f"{namespace}:{key}") == 0, key
