"""The Redis store on a real redis-server and a real valkey-server (every test runs on
both): namespaces, codecs, locks, invalidation seen by other runtimes, and outages (server
stopped, server slow) that callers never notice."""

from __future__ import annotations

import asyncio
import logging
import pickle
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis

import isr
from isr import Status
from isr._entry import Entry, Policy
from isr.adapters.redis import RedisAdapter

from .redis_server import Flavour, RedisServer, free_port

ROOT = Path(__file__).resolve().parent.parent
SECRET = b"0123456789abcdef-test-signing-key"


@pytest.fixture
def anyio_backend() -> str:
    # redis-py's asyncio client runs on asyncio only: these tests do not run on trio.
    return "asyncio"


@pytest.fixture
def ns() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def raw(server: RedisServer) -> Iterator[redis.Redis]:
    """A plain client, to look at (or tamper with) what the store wrote."""
    client = redis.Redis.from_url(server.url)
    yield client
    client.close()


def vs(result: isr.Result[Any]) -> tuple[Any, Status]:
    """A result's value and status (its age runs on the wall clock here)."""
    return result.value, result.status


def adapter_of(rt: isr.ISR) -> RedisAdapter:
    assert isinstance(rt.adapter, RedisAdapter)
    return rt.adapter


class Origin:
    """Counts its calls; answers ``"<name> v<version>"``."""

    def __init__(self) -> None:
        self.calls = 0
        self.version = 1

    def load(self, name: str) -> str:
        self.calls += 1
        return f"{name} v{self.version}"


def async_cached(rt: isr.ISR, origin: Origin, **options: Any) -> isr.AsyncCached[[str], str]:
    options.setdefault("ttl", 60)

    @isr.with_revalidate("post:{name}", runtime=rt, **options)
    async def get(name: str) -> str:
        return origin.load(name)

    return get


def sync_cached(rt: isr.ISR, origin: Origin, **options: Any) -> isr.SyncCached[[str], str]:
    options.setdefault("ttl", 60)

    @isr.with_revalidate("post:{name}", runtime=rt, **options)
    def get(name: str) -> str:
        return origin.load(name)

    return get


# ---------------------------------------------------------------- namespaces and codecs


@pytest.mark.anyio
async def test_namespaces_isolate(server: RedisServer) -> None:
    one, two = f"a-{uuid.uuid4().hex}", f"b-{uuid.uuid4().hex}"
    async with (
        isr.ISR(server.url, namespace=one) as a,
        isr.ISR(server.url, namespace=two) as b,
        isr.ISR(server.url, namespace=one) as a_too,
    ):
        origin_a, origin_b, origin_a_too = Origin(), Origin(), Origin()
        origin_b.version = 2
        get_a = async_cached(a, origin_a)
        get_b = async_cached(b, origin_b)
        get_a_too = async_cached(a_too, origin_a_too)
        assert await get_a("x") == "x v1"
        assert await get_b("x") == "x v2"  # its own namespace: not a's entry
        assert vs(await get_a_too.lookup("x")) == ("x v1", Status.HIT)
        assert (origin_a.calls, origin_b.calls, origin_a_too.calls) == (1, 1, 0)


@pytest.mark.anyio
async def test_a_value_json_cannot_hold_raises_codec_error_and_stores_nothing(
    server: RedisServer, raw: redis.Redis, ns: str
) -> None:
    async with isr.ISR(server.url, namespace=ns) as rt:

        @isr.with_revalidate("set:{name}", ttl=60, runtime=rt)
        async def get(name: str) -> set[str]:
            return {name}

        with pytest.raises(isr.CodecError, match=":e:set:x'"):
            await get("x")
        assert isinstance(isr.CodecError("x"), isr.ISRError)
    assert raw.exists(f"{ns}:e:set:x", f"{ns}:l:set:x") == 0  # no entry, no lock left


def test_sync_unencodable_value_raises_codec_error(
    server: RedisServer, raw: redis.Redis, ns: str
) -> None:
    rt = isr.ISR(server.url, namespace=ns)

    @isr.with_revalidate("obj", ttl=60, runtime=rt)
    def get() -> object:
        return object()

    with pytest.raises(isr.CodecError, match=":e:obj'"):
        get()
    rt.close()
    assert raw.exists(f"{ns}:e:obj", f"{ns}:l:obj") == 0


@pytest.mark.anyio
async def test_pickle_codec_round_trips_values_json_cannot_hold(
    server: RedisServer, ns: str
) -> None:
    value = {"tags": frozenset({"a", "b"}), "at": (2024, 1, 1)}
    calls = 0

    def define(rt: isr.ISR) -> isr.AsyncCached[[], dict[str, Any]]:
        @isr.with_revalidate("page", ttl=60, runtime=rt)
        async def page() -> dict[str, Any]:
            nonlocal calls
            calls += 1
            return value

        return page

    async with (
        isr.ISR(server.url, namespace=ns, codec=isr.PickleCodec(SECRET)) as writer,
        isr.ISR(server.url, namespace=ns, codec=isr.PickleCodec(SECRET)) as reader,
    ):
        assert await define(writer)() == value
        hit = await define(reader).lookup()
        assert (hit.value, hit.status) == (value, Status.HIT)
        assert type(hit.value["tags"]) is frozenset
        assert type(hit.value["at"]) is tuple
        assert calls == 1


EXPLODED: list[str] = []


def _explode(what: str) -> None:
    EXPLODED.append(what)


class _Payload:
    """Unpickling this calls `_explode`: the attack a signed codec must refuse."""

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (_explode, ("unpickled",))


@pytest.mark.parametrize("forgery", ["no signature", "another key"])
@pytest.mark.anyio
async def test_a_tampered_pickle_record_is_refused_never_unpickled(
    server: RedisServer,
    raw: redis.Redis,
    ns: str,
    forgery: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    payload = pickle.dumps(_Payload())
    if forgery == "no signature":
        record = b"\0" * 32 + payload
    else:
        record = isr.PickleCodec(b"someone else's key, 32 bytes!!!").dumps(
            "post:x", Entry(_Payload(), 0.0, Policy(60, None, 0), 0)
        )
    raw.set(f"{ns}:e:post:x", record)
    origin = Origin()
    async with isr.ISR(server.url, namespace=ns, codec=isr.PickleCodec(SECRET)) as rt:
        get = async_cached(rt, origin)
        with caplog.at_level(logging.WARNING, logger="isr"):
            result = await get.lookup("x")
        assert (result.value, result.status) == ("x v1", Status.MISS)  # a miss: origin
        assert rt.stats().store_errors >= 1  # each read of it counts
        assert ":e:post:x' has no valid signature" in caplog.text
        assert (await get.lookup("x")).status is Status.HIT  # replaced by a good record
    assert EXPLODED == []


@pytest.mark.anyio
async def test_a_corrupt_json_record_is_a_counted_miss(
    server: RedisServer, raw: redis.Redis, ns: str
) -> None:
    raw.set(f"{ns}:e:post:x", b"\xff not json")
    async with isr.ISR(server.url, namespace=ns) as rt:
        result = await async_cached(rt, Origin()).lookup("x")
        assert (result.value, result.status) == ("x v1", Status.MISS)
        assert rt.stats().store_errors >= 1  # each read of it counts


# ---------------------------------------------------------------- layout


def test_entries_expire_after_their_last_window_and_unbounded_ones_never(
    server: RedisServer, raw: redis.Redis, ns: str
) -> None:
    adapter = RedisAdapter(server.url, namespace=ns)
    adapter.set("bounded", Entry("v", time.time(), Policy(1, 2, 3), 0))
    adapter.set("unbounded", Entry("v", time.time(), Policy(1, None, 3), 0))
    assert 5000 < raw.pttl(f"{ns}:e:bounded") <= 6000
    assert raw.pttl(f"{ns}:e:unbounded") == -1  # bounded by the server's maxmemory policy
    adapter.close()


@pytest.mark.anyio
async def test_untag_keeps_a_key_stored_again_meanwhile(
    server: RedisServer, raw: redis.Redis, ns: str
) -> None:
    adapter = RedisAdapter(server.url, namespace=ns)
    try:
        for key in ("gone", "retagged", "back"):
            await adapter.aset(key, Entry(key, 1.0, Policy(60, None, 0), 0, ("t",)))
        assert sorted(await adapter.atagged("t")) == ["back", "gone", "retagged"]
        # The runtime found these three without the tag; meanwhile "back" was stored again.
        raw.delete(f"{ns}:e:gone")
        adapter.set("retagged", Entry("r", 1.0, Policy(60, None, 0), 0, ("other",)))
        await adapter.auntag("t", ["gone", "retagged", "back"])
        assert adapter.tagged("t") == ["back"]
        adapter.untag("other", ["retagged"])  # its entry carries the tag: kept
        assert adapter.tagged("other") == ["retagged"]
    finally:
        await adapter.aclose()


def test_one_adapter_serves_one_event_loop_after_another(server: RedisServer, ns: str) -> None:
    adapter = RedisAdapter(server.url, namespace=ns)
    entry = Entry("v", 1.0, Policy(60, None, 0), 0)

    async def use(write: bool) -> Entry | None:
        if write:
            await adapter.aset("k", entry)
        found = await adapter.aget("k")
        await adapter.aclose()
        return found

    assert asyncio.run(use(True)) is not None
    assert asyncio.run(use(False)) is not None  # a new loop: a new asyncio client
    assert adapter.errors == 0


@pytest.mark.anyio
async def test_more_concurrent_calls_than_connections_wait_for_one(
    ns: str, flavour: Flavour
) -> None:
    with RedisServer(flavour) as server:
        url = f"{server.url}?max_connections=1&timeout=0.1&breaker_threshold=100"
        adapter = RedisAdapter.from_url(url, namespace=ns)
        await adapter.aset("k", Entry("v", 1.0, Policy(60, None, 0), 0))
        found: list[Entry | None] = []

        async def read() -> None:
            found.append(await adapter.aget("k"))

        async with anyio.create_task_group() as tg:
            for _ in range(50):
                tg.start_soon(read)
        assert len(found) == 50
        assert None not in found
        assert adapter.errors == 0

        pauser = redis.Redis.from_url(server.url)
        pauser.client_pause(300, all=True)
        pauser.close()
        found.clear()
        async with anyio.create_task_group() as tg:
            for _ in range(3):  # one times out on Redis, the others waiting for it
                tg.start_soon(read)
        assert found == [None, None, None]
        assert adapter.errors == 3
        await anyio.sleep(0.3)
        for _ in range(3):  # no connection slot was lost on the way
            assert await adapter.aget("k") is not None
        await adapter.aclose()


def test_on_trio_a_runtime_uses_the_generated_sync_operations(server: RedisServer) -> None:
    """redis-py's asyncio client needs asyncio: the store says so (``asyncio_only``), and
    a runtime on trio runs its generated sync operations in worker threads instead, with the
    same answers (the conformance suite runs every Redis test on trio this way)."""
    import trio

    adapter = RedisAdapter(server.url, namespace=f"trio-{uuid.uuid4().hex[:8]}")
    with pytest.raises(isr.ConfigError, match="asyncio"):  # called directly: refused
        trio.run(adapter.aget, "k")

    async def visit() -> tuple[object, ...]:
        async with isr.ISR(adapter) as rt:

            @rt.with_revalidate("k:{n}", ttl=60, tags=["t"])
            async def load(n: int) -> int:
                return n * 2

            first, again = await load.lookup(21), await load.lookup(21)
            purged = await rt.invalidate_tag("t", mode="purge")
            return (first.status, again.status, purged, rt.adapter.get("k:21"))

    assert trio.run(visit) == (Status.MISS, Status.HIT, 1, None)
    assert adapter.errors == 0


# ---------------------------------------------------------------- configuration


def test_url_options(server: RedisServer) -> None:
    url = f"{server.url}?timeout=0.5&generation_poll=0.1&breaker_cooldown=3&max_connections=8"
    adapter = RedisAdapter.from_url(url, namespace="n")
    assert (adapter.timeout, adapter.connect_timeout) == (0.5, 0.5)
    assert adapter.breaker.cooldown == 3.0
    adapter.set("k", Entry("v", 1.0, Policy(60, None, 0), 0))
    assert adapter.get("k") is not None
    adapter.delete("k")
    adapter.close()
    with pytest.raises(isr.ConfigError, match="colour"):
        isr.ISR(f"{server.url}?colour=blue&timeout=1")
    with pytest.raises(isr.ConfigError, match="timeout"):
        isr.ISR(f"{server.url}?timeout=soon")
    with pytest.raises(isr.ConfigError, match="cluster"):
        isr.ISR(f"{server.url}?cluster=maybe")
    with pytest.raises(isr.ConfigError, match="colour") as error:
        isr.ISR("redis://app:hunter2@127.0.0.1:6379/0?colour=blue")
    assert "hunter2" not in str(error.value)  # a password never lands in a log


@pytest.mark.anyio
# The sync and async twins share their key template, and the sync one is called in the
# loop: both an isr.ISRWarning, and beside the point here.
@pytest.mark.filterwarnings("ignore::isr.ISRWarning")
async def test_cluster_mode_on_a_plain_server_is_a_store_failure_not_a_crash(
    server: RedisServer, ns: str
) -> None:
    # A real cluster is tested in tests/test_redis_cluster.py; this checks that a node
    # without cluster support, named with cluster=true, is absorbed like an outage.
    async with isr.ISR(f"{server.url}?cluster=true", namespace=ns) as rt:
        origin = Origin()
        assert adapter_of(rt).cluster
        assert await async_cached(rt, origin)("x") == "x v1"
        assert sync_cached(rt, origin)("x") == "x v1"
        assert rt.stats().store_errors >= 2


def test_import_isr_works_without_redis_and_the_redis_url_says_what_to_install() -> None:
    code = (
        "import sys; sys.modules['redis'] = None\n"
        "import isr\n"
        "isr.ISR('memory://')\n"
        "try:\n"
        "    isr.ISR('redis://127.0.0.1:6379/0')\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert 'pip install "isr-runtime[redis]"' in out


# ---------------------------------------------------------------- fetch locks


def test_fetch_lock(server: RedisServer, ns: str) -> None:
    adapter = RedisAdapter(server.url, namespace=ns)
    assert adapter.acquire("k", "mine", 0.3)
    assert not adapter.acquire("k", "theirs", 0.3)
    adapter.release("k", "theirs")  # not their lock to give back
    assert not adapter.acquire("k", "theirs", 0.3)
    time.sleep(0.4)  # a holder that died blocks nobody past the lock's ttl
    assert adapter.acquire("k", "theirs", 5)
    adapter.release("k", "theirs")
    assert adapter.acquire("k", "mine", 5)
    adapter.release("k", "mine")
    adapter.close()


@pytest.mark.anyio
async def test_fetch_lock_async(server: RedisServer, ns: str) -> None:
    adapter = RedisAdapter(server.url, namespace=ns)
    assert await adapter.aacquire("k", "mine", 0.3)
    assert not await adapter.aacquire("k", "theirs", 0.3)
    await adapter.arelease("k", "theirs")
    assert not await adapter.aacquire("k", "theirs", 0.3)
    await anyio.sleep(0.4)
    assert await adapter.aacquire("k", "theirs", 5)
    await adapter.arelease("k", "theirs")
    assert await adapter.aacquire("k", "mine", 5)
    await adapter.arelease("k", "mine")
    await adapter.aclose()


# ---------------------------------------------------------------- invalidation across runtimes


@pytest.mark.anyio
async def test_invalidations_reach_another_runtime(server: RedisServer, ns: str) -> None:
    url = f"{server.url}?generation_poll=0.05"
    async with isr.ISR(url, namespace=ns) as one, isr.ISR(url, namespace=ns) as two:
        origin = Origin()
        get_one = async_cached(one, origin, tags=["posts"])
        get_two = async_cached(two, origin, tags=["posts"])
        assert await get_one("x") == "x v1"
        assert (await get_two.lookup("x")).status is Status.HIT  # the other's entry

        origin.version = 2
        assert await two.invalidate_tag("posts") == 1
        assert vs(await get_one.lookup("x")) == ("x v2", Status.MISS)

        origin.version = 3
        assert await two.invalidate("post:x", mode="revalidate")
        assert vs(await get_one.lookup("x")) == ("x v2", Status.STALE)
        await one.drain()
        assert vs(await get_one.lookup("x")) == ("x v3", Status.HIT)

        origin.version = 4
        assert await get_one("y") == "y v4"
        await two.invalidate_all()
        origin.version = 5
        assert vs(await get_two.lookup("x")) == ("x v5", Status.MISS)  # its own: at once
        await anyio.sleep(0.1)  # the other reads the record again within generation_poll
        assert vs(await get_one.lookup("y")) == ("y v5", Status.MISS)
        assert vs(await get_one.lookup("x")) == ("x v5", Status.HIT)  # fetched after it
        assert origin.calls == 6


def test_invalidate_all_reaches_another_runtime_sync(server: RedisServer, ns: str) -> None:
    url = f"{server.url}?generation_poll=0.05"
    one, two = isr.ISR(url, namespace=ns), isr.ISR(url, namespace=ns)
    origin = Origin()
    get_one, get_two = sync_cached(one, origin), sync_cached(two, origin)
    assert get_one("x") == "x v1"
    assert get_two.lookup("x").status is Status.HIT
    origin.version = 2
    two.invalidate_all_sync()
    time.sleep(0.1)
    assert vs(get_one.lookup("x")) == ("x v2", Status.MISS)
    assert one.stats().store_errors == two.stats().store_errors == 0
    one.close()
    two.close()


# ---------------------------------------------------------------- outages


@pytest.mark.anyio
async def test_redis_down_then_back_async(
    ns: str, flavour: Flavour, caplog: pytest.LogCaptureFixture
) -> None:
    with RedisServer(flavour) as server:
        async with isr.ISR(f"{server.url}?breaker_cooldown=0.5", namespace=ns) as rt:
            adapter = adapter_of(rt)
            origin = Origin()
            get = async_cached(rt, origin)
            await get("x")
            assert (await get.lookup("x")).status is Status.HIT

            server.stop()
            for name in ("x", "x", "y", "z"):
                started = time.monotonic()
                result = await get.lookup(name)
                assert time.monotonic() - started < 0.5
                assert (result.value, result.status) == (f"{name} v1", Status.MISS)
            assert rt.stats().store_errors > 0
            assert adapter.breaker.is_open
            errors = adapter.errors
            before = adapter._generation.value
            with pytest.raises(isr.StoreUnavailable, match="could not reach"):
                await rt.invalidate_all()  # cannot reach Redis: applied here, not reported done
            assert (await adapter.ageneration()).current > before.current  # applied here
            assert rt.stats().outbox == 1
            assert await get("w") == "w v1"
            assert adapter.errors == errors  # breaker open: not even tried

            server.start()  # same port, empty (no persistence)
            await anyio.sleep(0.6)  # the breaker's cooldown
            assert (await get.lookup("x")).status is Status.MISS  # the probe: Redis is back
            assert rt.stats().outbox == 0  # and it got the invalidate-all first
            assert (await get.lookup("x")).status is Status.HIT  # stored there again
            assert not adapter.breaker.is_open


def test_redis_down_then_back_sync(
    ns: str, flavour: Flavour, caplog: pytest.LogCaptureFixture
) -> None:
    with RedisServer(flavour) as server:
        rt = isr.ISR(f"{server.url}?breaker_cooldown=0.5", namespace=ns)
        adapter = adapter_of(rt)
        origin = Origin()
        get = sync_cached(rt, origin, tags=["posts"])
        get("x")
        server.stop()
        for name in ("x", "y", "z"):
            started = time.monotonic()
            assert vs(get.lookup(name)) == (f"{name} v1", Status.MISS)
            assert time.monotonic() - started < 0.5
        assert adapter.breaker.is_open
        with caplog.at_level(logging.ERROR, logger="isr"), pytest.raises(isr.StoreUnavailable):
            rt.invalidate_tag_sync("posts")
        assert "invalidation of tag 'posts' could not reach redis" in caplog.text
        assert rt.stats().outbox == 1
        server.start()
        time.sleep(0.6)
        assert get.lookup("x").status is Status.MISS
        assert rt.stats().outbox == 0
        assert get.lookup("x").status is Status.HIT
        rt.close()


@pytest.mark.anyio
async def test_a_slow_redis_costs_a_caller_at_most_its_timeout(ns: str, flavour: Flavour) -> None:
    with RedisServer(flavour) as server:
        pauser = redis.Redis.from_url(server.url)
        async with isr.ISR(f"{server.url}?timeout=0.1&breaker_cooldown=5", namespace=ns) as rt:
            get = async_cached(rt, Origin())
            await get("x")
            pauser.client_pause(1000, all=True)  # every command waits
            try:
                started = time.monotonic()
                assert vs(await get.lookup("x")) == ("x v1", Status.MISS)
                assert time.monotonic() - started < 0.8  # a few 0.1 s timeouts, then open
                assert adapter_of(rt).breaker.is_open
                started = time.monotonic()
                assert await get("y") == "y v1"
                assert time.monotonic() - started < 0.05  # open: Redis not waited on
            finally:
                pauser.client_unpause()
                pauser.close()


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # the asyncio client's own bound
@pytest.mark.anyio
async def test_a_caller_giving_up_on_a_hung_redis_is_cancelled_not_timed_out(
    ns: str, flavour: Flavour
) -> None:
    """Commands are bounded by one timer among them all (Redis's timeout, a failure: the
    test above): a caller's own deadline, shorter, still ends its wait at once, as a
    cancellation; the store neither counts a failure nor stops being used."""
    with RedisServer(flavour) as server:
        pauser = redis.Redis.from_url(server.url)
        async with isr.ISR(f"{server.url}?timeout=1.5", namespace=ns) as rt:
            get = async_cached(rt, Origin())
            await get("x")
            pauser.client_pause(1500, all=True)  # every command hangs for 1.5 s
            try:
                started = time.monotonic()
                with anyio.move_on_after(0.2) as scope:
                    await get("x")
                assert scope.cancelled_caught
                assert time.monotonic() - started < 1.0  # the caller's 0.2 s, not Redis's 1.5
                assert rt.stats().store_errors == 0
                assert not adapter_of(rt).breaker.failures
            finally:
                pauser.client_unpause()
                pauser.close()
            assert vs(await get.lookup("x")) == ("x v1", Status.HIT)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # the asyncio client's own bound
@pytest.mark.anyio
async def test_a_stall_of_the_loop_leaves_a_wait_on_a_hung_redis_bounded(
    ns: str, flavour: Flavour
) -> None:
    """A stall of the loop gives the commands in flight their time again (their answers
    may have arrived meanwhile, tests/test_faults_process.py), but a Redis that does not
    answer still fails them: the wait stays bounded."""
    with RedisServer(flavour) as server:
        pauser = redis.Redis.from_url(server.url)
        async with isr.ISR(f"{server.url}?breaker_cooldown=5", namespace=ns) as rt:
            get = async_cached(rt, Origin())
            await get("x")
            pauser.client_pause(4000, all=True)  # every command hangs for 4 s

            async def hold_up_the_loop() -> None:
                await anyio.sleep(0.05)
                time.sleep(0.5)  # noqa: ASYNC251 (the stall under test)

            try:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(hold_up_the_loop)
                    started = time.monotonic()
                    assert vs(await get.lookup("x")) == ("x v1", Status.MISS)
                    took = time.monotonic() - started
                assert took < 3.0  # the 0.5 s stall, a few 0.25 s timeouts; not Redis's 4 s
                assert rt.stats().store_errors >= 1
            finally:
                pauser.client_unpause()
                pauser.close()


def test_wait_ready_tells_whether_redis_answers(server: RedisServer) -> None:
    with isr.ISR(server.url, namespace=f"ready-{uuid.uuid4().hex[:8]}") as up:
        assert up.wait_ready_sync(5) is True
    for l1 in (False, True):
        with isr.ISR(f"redis://127.0.0.1:{free_port()}/0", l1=l1) as down:
            errors = down.stats().store_errors
            started = time.monotonic()
            assert down.wait_ready_sync(0.5) is False
            assert time.monotonic() - started < 3  # bounded by what was asked, roughly
            assert down.stats().store_errors == errors  # a probe, not a caller's failure


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["key", "tag"])
@pytest.mark.parametrize("mode", ["purge", "expire"])
async def test_another_process_s_invalidation_during_a_fetch_wins_over_its_result(
    server: RedisServer, ns: str, kind: str, mode: str
) -> None:
    """The value a fetch read before another process's publish is not stored as fresh:
    the write that also gives the fetch lock back (one round trip) checks for it."""
    gate, entered = asyncio.Event(), asyncio.Event()
    origin = Origin()
    async with isr.ISR(server.url, namespace=ns) as a, isr.ISR(server.url, namespace=ns) as b:

        @isr.with_revalidate("item:{name}", ttl=60, tags=["items"], runtime=a)
        async def get(name: str) -> str:
            if name != "warm":
                entered.set()
                await gate.wait()
            return origin.load(name)

        @isr.with_revalidate("item:{name}", ttl=60, tags=["items"], runtime=b)
        async def other(name: str) -> str:
            return origin.load(name)

        await get("warm")  # a knows the tag's record: its next write takes one round trip
        task = asyncio.create_task(get("a"))
        await entered.wait()
        if kind == "key":
            await b.invalidate("item:a", mode=mode)  # type: ignore[arg-type]
        else:
            await b.invalidate_tag("items", mode=mode)  # type: ignore[arg-type]
        gate.set()
        assert await task == "a v1"  # its caller has it: it asked before the publish
        origin.version = 2
        assert vs(await other.lookup("a")) == ("a v2", Status.MISS)


@pytest.mark.anyio
async def test_a_value_stored_after_another_process_moved_its_tag_s_record_is_fresh(
    server: RedisServer, ns: str
) -> None:
    """A process stores values with the tag numbers it last read; once another process
    has moved a tag's record, the next value is stamped with the new number (not judged
    invalidated by an invalidation older than itself, fetched again and again)."""
    origin = Origin()
    async with isr.ISR(server.url, namespace=ns) as a, isr.ISR(server.url, namespace=ns) as b:
        get = async_cached(a, origin, tags=["items"])
        assert await get("x") == "x v1"  # a has read the tag's record (none yet)
        await b.invalidate_tag("items", mode="expire")
        assert await get("y") == "y v1"
        assert vs(await get.lookup("y")) == ("y v1", Status.HIT)
        assert origin.calls == 2
        assert vs(await get.lookup("x")) == ("x v1", Status.MISS)  # x was invalidated


@pytest.mark.anyio
async def test_commands_queued_for_a_connection_go_as_one_pipeline_each_with_its_answer(
    ns: str, flavour: Flavour
) -> None:
    """With every connection slot taken, reads wait together and go in one pipeline (one
    round trip for all): each caller still gets its own key's entry."""
    with RedisServer(flavour) as server:
        adapter = RedisAdapter.from_url(f"{server.url}?max_connections=1", namespace=ns)
        for n in range(50):
            await adapter.aset(f"k{n}", Entry(f"v{n}", 1.0, Policy(60, None, 0), 0))
        found: dict[int, Any] = {}

        async def read(n: int) -> None:
            entry = await adapter.aget(f"k{n}")
            found[n] = None if entry is None else entry.value

        with redis.Redis.from_url(server.url) as admin:
            calls = admin.info("stats")["total_commands_processed"]
            async with anyio.create_task_group() as tg:
                for n in range(50):
                    tg.start_soon(read, n)
            sent = admin.info("stats")["total_commands_processed"] - calls
        assert found == {n: f"v{n}" for n in range(50)}
        assert sent <= 52  # 50 GETs and the INFO: nothing sent twice, nothing lost
        assert adapter.errors == 0
        await adapter.aclose()


@pytest.mark.anyio
async def test_a_queued_lock_its_caller_gave_up_on_is_never_taken(
    ns: str, flavour: Flavour
) -> None:
    """A caller cancelled while its command waits in the queue: the command is not sent,
    so no fetch lock is left behind, held by nobody, for its whole ttl."""
    with RedisServer(flavour) as server:
        adapter = RedisAdapter.from_url(f"{server.url}?max_connections=1&timeout=2", namespace=ns)
        assert await adapter.aget("warm") is None  # the one connection, made
        with redis.Redis.from_url(server.url) as admin:
            admin.client_pause(300, all=True)
            async with anyio.create_task_group() as tg:
                tg.start_soon(adapter.aget, "blocking")  # holds the only slot, paused
                await anyio.sleep(0.05)
                with anyio.move_on_after(0.05):
                    await adapter.atake("x", "token", 30)  # queued, then given up on
                await anyio.sleep(0.5)
            assert admin.exists(f"{ns}:l:x") == 0
        assert (await adapter.atake("x", "token-2", 30))[0] is True  # free to take
        await adapter.aclose()
