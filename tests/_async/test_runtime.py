"""The runtime's semantics, written once: ``tests/_async/test_runtime.py`` checks async
loaders (on asyncio and trio), and ``tests/_sync/test_runtime.py``, generated from it by
``python -m tests.unasync``, checks sync loaders the same way. Every window is crossed with
a fake clock; every store of the conformance suite is checked."""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

import pytest

import isr
from isr import Status
from isr._synchronization import AsyncEvent

from .._concurrency import AsyncTaskGroup, async_wait_until
from ..conftest import FakeClock

pytestmark = pytest.mark.anyio

#: Callers started at once on a cold key.
CALLERS = 50


class Origin:
    """A loader's origin: counts calls, can fail, can be held up by a gate."""

    def __init__(self) -> None:
        self.calls = 0
        self.version = 1
        self.fail: Exception | None = None
        self.gate: AsyncEvent | None = None
        self.entered = AsyncEvent()  # set once a loader call is running
        self._lock = threading.Lock()

    async def load(self, name: str) -> str:
        with self._lock:
            self.calls += 1
        self.entered.set()
        if self.gate is not None:
            assert await self.gate.wait(20), "the test never opened the gate"
        if self.fail is not None:
            raise self.fail
        return f"{name} v{self.version}"


def cached(rt: isr.ISR, origin: Origin, **options: Any) -> isr.AsyncCached[[str], str]:
    options.setdefault("ttl", 10)

    @isr.with_revalidate("item:{name}", runtime=rt, **options)
    async def get(name: str) -> str:
        return await origin.load(name)

    return get


async def test_miss_then_hit_without_calling_the_loader(rt: isr.ISR, clock: FakeClock) -> None:
    origin = Origin()
    get = cached(rt, origin)
    first = await get.lookup("a")
    assert (first.value, first.status, first.age) == ("a v1", Status.MISS, 0.0)
    clock.advance(4)
    again = await get.lookup("a")
    assert (again.value, again.status, again.age) == ("a v1", Status.HIT, 4.0)
    assert await get("a") == "a v1"
    assert origin.calls == 1
    assert rt.stats().hits == 2


async def test_after_a_revalidate_all_one_refresh_makes_the_value_fresh_again(
    rt: isr.ISR,
) -> None:
    origin = Origin()
    get = cached(rt, origin)
    await get("a")
    origin.version = 2
    await rt.invalidate_all(mode="revalidate")
    assert (await get.lookup("a")).status is Status.STALE
    await rt.drain()
    answers = [await get.lookup("a") for _ in range(3)]
    await rt.drain()
    assert {(r.value, r.status) for r in answers} == {("a v2", Status.HIT)}
    assert origin.calls == 2  # one fill, one refresh: not a refresh on every read


async def test_stale_is_served_at_once_while_one_refresh_runs(
    rt: isr.ISR, clock: FakeClock
) -> None:
    origin = Origin()
    get = cached(rt, origin, swr=None)
    await get("a")
    origin.version = 2
    clock.advance(10)  # ttl reached
    origin.gate = AsyncEvent()  # the refresh will hang until released
    answers = [await get.lookup("a") for _ in range(5)]
    assert {(r.value, r.status) for r in answers} == {("a v1", Status.STALE)}
    assert answers[0].age == 10.0  # age is time since produced, not time left
    assert rt.stats().refreshing == 1
    origin.gate.set()
    await rt.drain()
    assert origin.calls == 2  # one refresh for five stale reads
    fresh = await get.lookup("a")
    assert (fresh.value, fresh.status) == ("a v2", Status.HIT)


async def test_past_swr_the_call_fetches(rt: isr.ISR, clock: FakeClock) -> None:
    origin = Origin()
    get = cached(rt, origin, swr=5)
    await get("a")
    origin.version = 2
    clock.advance(15)  # ttl 10 + swr 5
    result = await get.lookup("a")
    assert (result.value, result.status) == ("a v2", Status.MISS)


async def test_failed_fetch_serves_the_old_value_within_stale_if_error(
    rt: isr.ISR, clock: FakeClock
) -> None:
    origin = Origin()
    get = cached(rt, origin, swr=5, stale_if_error=100)
    await get("a")
    clock.advance(20)
    origin.fail = ConnectionError("origin down")
    result = await get.lookup("a")
    assert (result.value, result.status, result.age) == ("a v1", Status.STALE_IF_ERROR, 20.0)
    assert isinstance(result.error, ConnectionError)
    assert await get("a") == "a v1"
    assert rt.stats().stale_if_error == 2


async def test_failed_fetch_past_stale_if_error_raises_the_origins_error(
    rt: isr.ISR, clock: FakeClock
) -> None:
    origin = Origin()
    get = cached(rt, origin, swr=5, stale_if_error=100)
    await get("a")
    clock.advance(10 + 5 + 100)
    origin.fail = ConnectionError("origin down")
    with pytest.raises(ConnectionError, match="origin down"):
        await get("a")
    assert rt.stats().errors == 1


async def test_an_exception_is_never_cached(rt: isr.ISR) -> None:
    origin = Origin()
    get = cached(rt, origin)
    origin.fail = KeyError("nope")
    with pytest.raises(KeyError):
        await get("a")
    origin.fail = None
    assert (await get.lookup("a")).status is Status.MISS
    assert origin.calls == 2


async def test_concurrent_cold_callers_share_one_fetch(rt: isr.ISR) -> None:
    origin = Origin()
    origin.gate = AsyncEvent()
    get = cached(rt, origin)
    results: list[isr.Result[str]] = []

    async def call() -> None:
        results.append(await get.lookup("a"))

    async with AsyncTaskGroup() as tg:
        for _ in range(CALLERS):
            tg.start_soon(call)
        await async_wait_until(lambda: rt.stats().coalesced == CALLERS - 1)
        origin.gate.set()
    assert origin.calls == 1
    assert len(results) == CALLERS
    assert {(r.value, r.status) for r in results} == {("a v1", Status.MISS)}


async def test_concurrent_cold_callers_share_the_exception(rt: isr.ISR) -> None:
    origin = Origin()
    origin.gate = AsyncEvent()
    origin.fail = TimeoutError("slow origin")
    get = cached(rt, origin)
    errors: list[BaseException] = []

    async def call() -> None:
        try:
            await get("a")
        except TimeoutError as exc:
            errors.append(exc)

    async with AsyncTaskGroup() as tg:
        for _ in range(CALLERS):
            tg.start_soon(call)
        await async_wait_until(lambda: rt.stats().coalesced == CALLERS - 1)
        origin.gate.set()
    assert origin.calls == 1
    assert len(errors) == CALLERS


async def test_failed_refresh_keeps_stale_backs_off_logs_and_calls_the_hook(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[tuple[str, BaseException]] = []
    async with isr.ISR(clock=clock, backoff=5, on_error=lambda k, e: seen.append((k, e))) as rt:
        origin = Origin()
        get = cached(rt, origin, swr=None)
        await get("a")
        clock.advance(10)
        origin.fail = ConnectionError("down")
        with caplog.at_level(logging.WARNING, logger="isr"):
            assert (await get.lookup("a")).status is Status.STALE
            await rt.drain()
        assert origin.calls == 2
        assert [k for k, _ in seen] == ["item:a"]
        assert "background refresh of 'item:a' failed (ConnectionError: down)" in caplog.text
        # within the backoff, stale reads do not hit the failing origin again
        for _ in range(10):
            assert (await get.lookup("a")).value == "a v1"
        await rt.drain()
        assert origin.calls == 2
        clock.advance(5)
        await get("a")
        await rt.drain()
        assert origin.calls == 3  # tried again after the backoff: failed again, doubled
        assert rt.stats().refresh_failures == 2
        origin.fail = None
        clock.advance(10)
        await get("a")
        await rt.drain()
        assert (await get.lookup("a")) == isr.Result("a v1", Status.HIT, 0.0)


async def test_expired_entry_in_backoff_serves_fallback_without_calling_origin(
    rt: isr.ISR, clock: FakeClock
) -> None:
    origin = Origin()
    get = cached(rt, origin, swr=0)
    await get("a")
    clock.advance(10)
    origin.fail = ConnectionError("down")
    assert (await get.lookup("a")).status is Status.STALE_IF_ERROR
    assert (await get.lookup("a")).status is Status.STALE_IF_ERROR
    assert origin.calls == 2  # the second read fell inside the backoff


@pytest.mark.parametrize("mode", ["expire", "revalidate", "purge"])
async def test_invalidate_key_modes(rt: isr.ISR, clock: FakeClock, mode: str) -> None:
    origin = Origin()
    get = cached(rt, origin)
    await get("a")
    await get("b")
    origin.version = 2
    assert await rt.invalidate("item:a", mode=mode) is True  # type: ignore[arg-type]
    result = await get.lookup("a")
    if mode == "revalidate":
        assert (result.value, result.status) == ("a v1", Status.STALE)
        await rt.drain()
        assert (await get.lookup("a")).value == "a v2"
    else:
        assert (result.value, result.status) == ("a v2", Status.MISS)
    assert (await get.lookup("b")).status is Status.HIT  # other keys untouched


async def test_expire_keeps_the_old_value_as_fallback_and_purge_does_not(
    rt: isr.ISR,
) -> None:
    origin = Origin()
    get = cached(rt, origin)
    await get("a")
    await get("b")
    origin.fail = ConnectionError("down")
    await rt.invalidate("item:a")  # expire
    await rt.invalidate("item:b", mode="purge")
    assert (await get.lookup("a")).status is Status.STALE_IF_ERROR
    with pytest.raises(ConnectionError):
        await get("b")  # unpublished content is never served again


@pytest.mark.parametrize("mode", ["expire", "revalidate", "purge"])
async def test_invalidate_tag(rt: isr.ISR, mode: str) -> None:
    origin = Origin()

    @isr.with_revalidate("post:{slug}", ttl=60, tags=["posts", "author:{author}"], runtime=rt)
    async def get_post(slug: str, author: str) -> str:
        return await origin.load(slug)

    await get_post("a", "ann")
    await get_post("b", "bob")
    origin.version = 2
    assert await rt.invalidate_tag("author:ann", mode=mode) == 1  # type: ignore[arg-type]
    a = await get_post.lookup("a", "ann")
    b = await get_post.lookup("b", "bob")
    assert b.status is Status.HIT
    expected = Status.STALE if mode == "revalidate" else Status.MISS
    assert a.status is expected
    await rt.drain()
    assert await rt.invalidate_tag("posts", mode=mode) == 2  # type: ignore[arg-type]
    assert (await get_post.lookup("b", "bob")).status is expected


@pytest.mark.parametrize("mode", ["expire", "revalidate", "purge"])
async def test_invalidate_all(rt: isr.ISR, mode: str) -> None:
    origin = Origin()
    get = cached(rt, origin)
    for name in "abc":
        await get(name)
    origin.version = 2
    origin.fail = ConnectionError("down")
    await rt.invalidate_all(mode=mode)  # type: ignore[arg-type]
    statuses: set[Status | None] = set()

    async def status_of(name: str) -> Status | None:
        try:
            return (await get.lookup(name)).status
        except ConnectionError:
            return None

    for name in "ab":
        statuses.add(await status_of(name))
    expected = {
        "revalidate": Status.STALE,
        "expire": Status.STALE_IF_ERROR,
        "purge": None,  # nothing left to serve
    }[mode]
    assert statuses == {expected}
    await rt.drain()
    origin.fail = None
    assert (await get.lookup("c")).value == ("c v1" if mode == "revalidate" else "c v2")


async def test_invalidate_all_is_o1_and_new_entries_are_fresh(rt: isr.ISR) -> None:
    origin = Origin()
    get = cached(rt, origin)
    for i in range(300):
        await get(str(i))
    before = rt.adapter.get("item:7")
    await rt.invalidate_all()
    after = rt.adapter.get("item:7")  # nothing was scanned or rewritten
    assert before is not None
    assert after is not None
    assert (after.created, after.policy, after.gen) == (before.created, before.policy, before.gen)
    assert (await get.lookup("7")).status is Status.MISS
    await get("1")
    assert (await get.lookup("1")).status is Status.HIT


async def test_invalidation_during_a_fetch_wins_over_its_result(rt: isr.ISR) -> None:
    """A publish that lands while a refresh is reading the old content must not be lost."""
    origin = Origin()
    origin.gate = AsyncEvent()
    get = cached(rt, origin)
    async with AsyncTaskGroup() as tg:
        tg.start_soon(get, "a")
        await origin.entered.wait()  # the loader runs (not just waits on the store)
        await rt.invalidate("item:a")  # the fetch in flight read v1 before the publish
        origin.gate.set()
    origin.gate = None
    origin.version = 2
    result = await get.lookup("a")
    assert (result.value, result.status) == ("a v2", Status.MISS)


@pytest.mark.parametrize("how", ["tag", "all"])
async def test_tag_and_global_invalidation_during_a_fetch_win_too(rt: isr.ISR, how: str) -> None:
    origin = Origin()
    origin.gate = AsyncEvent()
    get = cached(rt, origin, tags=["items"])
    async with AsyncTaskGroup() as tg:
        tg.start_soon(get, "a")
        await origin.entered.wait()
        if how == "tag":
            await rt.invalidate_tag("items", mode="purge")
        else:
            await rt.invalidate_all(mode="purge")
        origin.gate.set()
    assert rt.adapter.get("item:a") is None or how == "all"
    origin.gate = None
    origin.version = 2
    assert (await get.lookup("a")) == isr.Result("a v2", Status.MISS, 0.0)


@pytest.mark.parametrize("mode", ["expire", "purge"])
async def test_a_stale_entry_whose_tag_was_invalidated_is_not_served_stale(
    rt: isr.ISR, clock: FakeClock, mode: str
) -> None:
    """Past its ttl, an entry is served STALE while it refreshes; once its tag has been
    expired or purged (recorded once for the tag, applied to the entry when it is next
    looked at), the next call fetches instead."""
    origin = Origin()
    get = cached(rt, origin, swr=None, tags=["items"])
    await get("a")
    clock.advance(10)
    origin.version = 2
    assert await rt.invalidate_tag("items", mode=mode) == 1  # type: ignore[arg-type]
    assert await get("a") == "a v2"
    assert origin.calls == 2


async def test_a_tag_s_purge_counts_its_entries_once_and_spares_other_tags(
    rt: isr.ISR,
) -> None:
    origin = Origin()
    posts = cached(rt, origin, tags=["posts"])
    for name in ("a", "b", "c"):
        await posts(name)

    @isr.with_revalidate("page:{name}", ttl=10, tags=["pages"], runtime=rt)
    async def pages(name: str) -> str:
        return await origin.load(name)

    await pages("home")
    assert await rt.invalidate_tag("posts", mode="purge") == 3
    assert await rt.invalidate_tag("posts", mode="purge") == 0  # nothing left to purge
    assert (await pages.lookup("home")).status is Status.HIT
    origin.version = 2
    assert [(await posts.lookup(n)).value for n in ("a", "b", "c")] == ["a v2", "b v2", "c v2"]


async def test_bad_mode_changes_nothing(rt: isr.ISR) -> None:
    origin = Origin()
    get = cached(rt, origin)
    await get("a")
    with pytest.raises(isr.ConfigError, match="invalid invalidation mode 'delete'"):
        await rt.invalidate("item:a", mode="delete")  # type: ignore[arg-type]
    assert (await get.lookup("a")).status is Status.HIT
    assert rt.stats().invalidations == 0


async def test_soft_timeout_serves_stale_and_the_fetch_lands_later(
    rt: isr.ISR, clock: FakeClock
) -> None:
    origin = Origin()
    get = cached(rt, origin, swr=0, soft_timeout=0.05)
    await get("a")
    clock.advance(10)
    origin.version = 2
    origin.gate = AsyncEvent()
    result = await get.lookup("a")
    assert (result.value, result.status, result.age) == ("a v1", Status.STALE, 10.0)
    origin.gate.set()
    await rt.drain()
    assert (await get.lookup("a")) == isr.Result("a v2", Status.HIT, 0.0)


async def test_hard_timeout_fails_the_fetch(rt: isr.ISR, clock: FakeClock) -> None:
    origin = Origin()
    origin.gate = AsyncEvent()  # the origin hangs
    get = cached(rt, origin, swr=0, timeout=0.05)
    with pytest.raises(TimeoutError):
        await get("a")
    origin.gate.set()
    await rt.drain()
    origin.gate = None
    await get("a")
    clock.advance(10)
    origin.gate = AsyncEvent()
    result = await get.lookup("a")  # hangs again, but now there is a fallback
    assert (result.value, result.status) == ("a v1", Status.STALE_IF_ERROR)
    assert isinstance(result.error, TimeoutError)
    origin.gate.set()


async def test_loader_sets_its_own_ttl_and_tags(rt: isr.ISR, clock: FakeClock) -> None:
    @isr.with_revalidate("post:{slug}", ttl=60, swr=0, runtime=rt)
    async def get_post(slug: str) -> str:
        if slug == "breaking":
            isr.cache_life(ttl=5)
        isr.cache_tag("author:ann")
        return slug

    await get_post("breaking")
    await get_post("evergreen")
    clock.advance(6)
    assert (await get_post.lookup("breaking")).status is Status.MISS
    assert (await get_post.lookup("evergreen")).status is Status.HIT
    assert await rt.invalidate_tag("author:ann") == 2


async def test_no_store_returns_the_value_without_caching_it(rt: isr.ISR) -> None:
    calls = 0

    @isr.with_revalidate("user:{uid}", ttl=60, runtime=rt)
    async def get_user(uid: int) -> str | None:
        nonlocal calls
        calls += 1
        if uid == 0:
            isr.no_store()  # not found yet: ask again next time
            return None
        return "ann"

    assert await get_user(0) is None
    assert await get_user(0) is None
    assert calls == 2


async def test_xfetch_refreshes_before_expiry(clock: FakeClock) -> None:
    # random() -> tiny: -log(r) is large, so an early refresh is due near expiry
    async with isr.ISR(clock=clock, random=lambda: 1e-9) as rt:
        origin = Origin()
        get = cached(rt, origin, xfetch=1.0)
        await get("a")  # the loader took 0 s on the fake clock: no basis for XFetch yet
        get.__isr_loader__.delta = 0.5  # type: ignore[attr-defined]
        clock.advance(1)
        assert (await get.lookup("a")).status is Status.HIT
        await rt.drain()
        assert origin.calls == 2  # refreshed early, while still fresh
    async with isr.ISR(clock=clock, random=lambda: 0.999999) as rt:
        origin = Origin()
        get = cached(rt, origin, xfetch=1.0)
        await get("a")
        get.__isr_loader__.delta = 0.5  # type: ignore[attr-defined]
        clock.advance(1)
        await get("a")
        await rt.drain()
        assert origin.calls == 1  # far from expiry: no early refresh


async def test_lookup_with_xfetch_obeys_an_invalidation_and_counts_a_hit_once(
    rt: isr.ISR,
) -> None:
    origin = Origin()
    get = cached(rt, origin, xfetch=1.0)
    await get("a")
    hit = await get.lookup("a")
    assert (hit.value, hit.status, rt.stats().hits) == ("a v1", Status.HIT, 1)
    origin.version = 2
    await rt.invalidate("item:a")
    after = await get.lookup("a")
    assert (after.value, after.status) == ("a v2", Status.MISS)


async def test_an_entry_its_loader_retagged_leaves_its_old_tag(rt: isr.ISR) -> None:
    tags = ["section:a"]

    @isr.with_revalidate("k", ttl=60, runtime=rt)
    async def load() -> str:
        isr.cache_tag(*tags)
        return "v"

    await load()
    tags[:] = ["section:b"]
    await rt.invalidate("k")
    await load()  # stored again, now tagged section:b only
    assert await rt.invalidate_tag("section:a") == 0
    assert (await load.lookup()).status is Status.HIT
    assert await rt.invalidate_tag("section:b") == 1


# ------------------------------------------------------------------ coherence (issue 19)


async def test_a_runtime_lists_itself_among_the_live_instances(rt: isr.ISR, store: str) -> None:
    found = await rt.instances()
    assert [i.id for i in found] == [rt.instance_id]
    me = found[0]
    host, pid, tail = rt.instance_id.split(":")
    assert (me.host, me.pid, len(tail)) == (host, os.getpid(), 6)
    assert me.pid == int(pid)
    assert me.l1 is (store == "redis-l1")
    # An L1 has applied the bus's epoch it subscribed at; without a bus, None.
    assert (me.applied is not None) is (store == "redis-l1")


async def test_confirm_after_invalidations_lists_this_instance_and_covers_the_log(
    rt: isr.ISR, store: str
) -> None:
    origin = Origin()
    get = cached(rt, origin, tags=["posts"])
    await get("a")
    assert await rt.invalidate_tag("posts", "purge") == 1
    assert (await rt.invalidation_log())[0].confirmation is None  # none asked yet
    done = await rt.confirm(timeout=1.0)
    assert done.complete
    assert (done.confirmed, done.missing) == ((rt.instance_id,), ())
    assert 0 <= done.ms < 1000
    assert done.as_json() == {"confirmed": 1, "missing": [], "ms": done.ms}
    logged = (await rt.invalidation_log())[0]
    assert (logged.scope, logged.name, logged.mode, logged.source) == (
        "tag",
        "posts",
        "purge",
        "code",
    )
    assert logged.confirmation == done
    assert (logged.epoch is not None) is store.startswith(("redis", "valkey"))
    # A later confirmation covers what was made since, not the earlier ones again.
    await rt.invalidate("item:a")
    again = await rt.confirm(timeout=0)
    newest, older = await rt.invalidation_log(limit=2)
    assert (newest.confirmation, older.confirmation) == (again, done)


async def test_the_log_says_what_where_from_and_who_newest_first(rt: isr.ISR) -> None:
    await rt.invalidate("post:1")
    with isr.invalidation_source("webhook", event="entry.publish", model="article", entry="x4m1"):
        await rt.invalidate_tag("article:x4m1", "purge")
    with isr.invalidation_source("cli"):
        await rt.invalidate_all("revalidate")
    log = await rt.invalidation_log(limit=10)
    assert [(e.scope, e.name, e.mode, e.source) for e in log] == [
        ("all", "", "revalidate", "cli"),
        ("tag", "article:x4m1", "purge", "webhook"),
        ("key", "post:1", "expire", "code"),
    ]
    assert dict(log[1].detail) == {"event": "entry.publish", "model": "article", "entry": "x4m1"}
    assert {e.instance for e in log} == {rt.instance_id}
    assert log[0].id != log[1].id != log[2].id
    assert log[0].at >= log[1].at >= log[2].at
    assert [e.name for e in await rt.invalidation_log(limit=1)] == [""]
    with pytest.raises(isr.ConfigError):
        await rt.invalidation_log(limit=0)
    with pytest.raises(isr.ConfigError):
        await rt.confirm(timeout=-1)


async def test_an_invalidation_the_store_could_not_take_is_not_confirmed(rt: isr.ISR) -> None:
    """With the outbox holding an invalidation, nobody else can have applied it: a
    confirmation says so at once instead of waiting for acknowledgements."""
    from isr._entry import Mode
    from isr._state import Invalidation

    rt._state.queue(Invalidation("key", "k", Mode.EXPIRE, 0.0))
    try:
        done = await rt.confirm(timeout=5)
        assert done.ms < 1000  # did not wait for the timeout
        assert done.confirmed == (rt.instance_id,)
    finally:
        rt._state.outbox.clear()
