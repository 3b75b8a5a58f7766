"""What users reach for beside the call, written once for async loaders (on asyncio and trio)
and generated into ``tests/_sync/test_features.py`` for sync loaders: the switch
(`isr.disabled`), ``fn.refresh`` and ``fn.invalidate``, the call-site form, a fallback that
never expires, ``ttl=0`` and windows given as `datetime.timedelta`. On every store of the
conformance suite; every window crossed with the fake clock."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

import isr
from isr import Status
from isr._synchronization import AsyncEvent

from .._concurrency import AsyncTaskGroup, async_wait_until
from ..conftest import FakeClock
from .test_runtime import Origin, cached

pytestmark = pytest.mark.anyio

TEN_YEARS = 10 * 365 * 86400.0


# ---------------------------------------------------------------- the switch


async def test_a_disabled_scope_runs_the_loader_on_every_call_and_stores_nothing(
    rt: isr.ISR,
) -> None:
    origin = Origin()
    get = cached(rt, origin)
    await get("a")  # a fresh entry, v1
    origin.version = 2
    with isr.disabled():
        first = await get.lookup("a")
        second = await get.lookup("a")
        assert await get("b") == "b v2"
    assert (first.value, first.status, first.age) == ("a v2", Status.BYPASS, 0.0)
    assert (second.value, second.status) == ("a v2", Status.BYPASS)
    assert origin.calls == 4  # one fill, then each disabled call ran the loader
    assert await get.lookup("a") == isr.Result("a v1", Status.HIT, 0.0)  # entry untouched
    assert (await get.lookup("b")).status is Status.MISS  # nothing was stored
    assert rt.stats().bypassed == 3


async def test_a_disabled_call_gets_the_origins_error_not_the_fallback(
    rt: isr.ISR, clock: FakeClock
) -> None:
    origin = Origin()
    get = cached(rt, origin, swr=0)
    await get("a")
    clock.advance(10)
    origin.fail = ConnectionError("down")
    with isr.disabled(), pytest.raises(ConnectionError, match="down"):
        await get("a")
    assert (await get.lookup("a")).status is Status.STALE_IF_ERROR  # the cache, as before


async def test_a_loader_may_call_cache_life_and_friends_while_disabled(rt: isr.ISR) -> None:
    @isr.with_revalidate("told:{x}", ttl=10, runtime=rt)
    async def load(x: str) -> str:
        isr.cache_life(ttl=1, stale_if_error=None)
        isr.cache_tag("told")
        isr.no_store()
        return x

    with isr.disabled():
        assert await load("a") == "a"


async def test_disabling_one_caller_leaves_the_others_cached(rt: isr.ISR) -> None:
    origin = Origin()
    get = cached(rt, origin)
    await get("a")
    inside, release = AsyncEvent(), AsyncEvent()
    seen: list[Status] = []

    async def disabled_caller() -> None:
        with isr.disabled():
            seen.append((await get.lookup("a")).status)
            inside.set()
            assert await release.wait(20)
            seen.append((await get.lookup("a")).status)

    async with AsyncTaskGroup() as tg:
        tg.start_soon(disabled_caller)
        assert await inside.wait(20)
        outside = await get.lookup("a")  # while the other caller is still disabled
        release.set()
    assert outside == isr.Result("a v1", Status.HIT, 0.0)
    assert seen == [Status.BYPASS, Status.BYPASS]
    assert origin.calls == 3


async def test_nested_scopes_restore_what_was_there(rt: isr.ISR) -> None:
    origin = Origin()
    get = cached(rt, origin)
    await get("a")
    with isr.disabled():
        with isr.disabled():
            assert (await get.lookup("a")).status is Status.BYPASS
        assert (await get.lookup("a")).status is Status.BYPASS
    assert (await get.lookup("a")).status is Status.HIT


# ---------------------------------------------------------------- per-call control


async def test_refresh_fetches_now_stores_and_returns_the_new_value(rt: isr.ISR) -> None:
    origin = Origin()
    get = cached(rt, origin)
    await get("a")
    origin.version = 2
    assert await get.refresh("a") == "a v2"  # although the entry was fresh
    assert await get.lookup("a") == isr.Result("a v2", Status.HIT, 0.0)
    assert origin.calls == 2


async def test_refresh_joins_the_fetch_in_flight(rt: isr.ISR) -> None:
    origin = Origin()
    origin.gate = AsyncEvent()
    get = cached(rt, origin)
    answers: list[str] = []

    async def call() -> None:
        answers.append(await get("a"))

    async def refresh() -> None:
        answers.append(await get.refresh("a"))

    async with AsyncTaskGroup() as tg:
        tg.start_soon(call)
        await async_wait_until(lambda: origin.calls == 1)
        tg.start_soon(refresh)
        await async_wait_until(lambda: rt.stats().coalesced == 1)
        origin.gate.set()
    assert origin.calls == 1
    assert answers == ["a v1", "a v1"]


async def test_a_failed_refresh_raises_and_keeps_the_old_value(rt: isr.ISR) -> None:
    origin = Origin()
    get = cached(rt, origin)
    await get("a")
    origin.fail = ConnectionError("down")
    with pytest.raises(ConnectionError, match="down"):
        await get.refresh("a")
    assert await get.lookup("a") == isr.Result("a v1", Status.HIT, 0.0)


def posts(rt: isr.ISR, origin: Origin) -> Any:
    """A loader with a parameter that has a default, for the helpers' arguments."""

    @isr.with_revalidate("post:{slug}:{lang}", ttl=10, runtime=rt)
    async def post(slug: str, lang: str = "en") -> str:
        return await origin.load(f"{slug}/{lang}")

    return post


async def test_refresh_takes_the_functions_arguments(rt: isr.ISR) -> None:
    origin = Origin()
    post = posts(rt, origin)
    await post("a")
    await post("a", lang="de")
    origin.version = 2
    assert await post.refresh("a", lang="de") == "a/de v2"
    assert await post("a") == "a/en v1"
    assert await post("a", "de") == "a/de v2"


@pytest.mark.parametrize("mode", ["expire", "revalidate", "purge"])
async def test_invalidate_takes_the_functions_arguments_and_a_mode(rt: isr.ISR, mode: Any) -> None:
    origin = Origin()
    post = posts(rt, origin)
    await post("a")
    await post("a", lang="de")
    origin.version = 2
    assert await post.invalidate("a", mode=mode) is True
    result = await post.lookup("a")
    if mode == "revalidate":
        assert (result.value, result.status) == ("a/en v1", Status.STALE)
    else:
        assert (result.value, result.status) == ("a/en v2", Status.MISS)
    assert (await post.lookup("a", lang="de")).status is Status.HIT  # another key
    assert await post.invalidate("nothing-here") is False


async def test_invalidate_expires_by_default_and_keeps_the_fallback(
    rt: isr.ISR, clock: FakeClock
) -> None:
    origin = Origin()
    get = cached(rt, origin)
    await get("a")
    assert await get.invalidate("a") is True
    origin.fail = ConnectionError("down")
    result = await get.lookup("a")
    assert (result.value, result.status) == ("a v1", Status.STALE_IF_ERROR)
    assert await get.invalidate("a", mode="purge") is True
    with pytest.raises(ConnectionError):
        await get("a")


async def test_a_function_with_its_own_mode_parameter_keeps_it(rt: isr.ISR) -> None:
    origin = Origin()

    @isr.with_revalidate("mode:{mode}", ttl=10, runtime=rt)
    async def load(mode: str) -> str:
        return await origin.load(mode)

    await load("dark")
    origin.version = 2
    assert await load.invalidate(mode="dark") is True  # the function's mode: the key's
    assert await load("dark") == "dark v2"


async def test_a_bad_mode_is_refused_and_changes_nothing(rt: isr.ISR) -> None:
    origin = Origin()
    get = cached(rt, origin)
    await get("a")
    with pytest.raises(isr.ConfigError, match="invalid invalidation mode 'gone'"):
        await get.invalidate("a", mode="gone")  # type: ignore[call-overload]
    assert (await get.lookup("a")).status is Status.HIT


# ---------------------------------------------------------------- windows


async def test_stale_if_error_none_keeps_the_fallback_until_purged(
    rt: isr.ISR, clock: FakeClock
) -> None:
    origin = Origin()
    get = cached(rt, origin, swr=0, stale_if_error=None)
    await get("a")
    clock.advance(TEN_YEARS)
    origin.fail = ConnectionError("the CMS is down")
    result = await get.lookup("a")
    assert (result.value, result.status, result.age) == ("a v1", Status.STALE_IF_ERROR, TEN_YEARS)
    assert await get.invalidate("a", mode="purge") is True
    with pytest.raises(ConnectionError):
        await get("a")


async def test_a_loader_can_make_its_fallback_unbounded(rt: isr.ISR, clock: FakeClock) -> None:
    origin = Origin()

    @isr.with_revalidate("item:{name}", ttl=10, swr=0, stale_if_error=5, runtime=rt)
    async def get(name: str) -> str:
        isr.cache_life(stale_if_error=None)
        return await origin.load(name)

    await get("a")
    clock.advance(TEN_YEARS)
    origin.fail = ConnectionError("down")
    assert (await get.lookup("a")).status is Status.STALE_IF_ERROR


async def test_ttl_zero_is_never_fresh_each_read_refreshes(rt: isr.ISR) -> None:
    origin = Origin()
    get = cached(rt, origin, ttl=0)
    assert (await get.lookup("a")).status is Status.MISS
    origin.version = 2
    stale = await get.lookup("a")
    assert (stale.value, stale.status) == ("a v1", Status.STALE)
    await rt.drain()
    again = await get.lookup("a")
    assert (again.value, again.status) == ("a v2", Status.STALE)
    await rt.drain()
    assert origin.calls == 3


async def test_ttl_and_swr_zero_fetch_on_every_read_with_a_fallback(rt: isr.ISR) -> None:
    origin = Origin()
    get = cached(rt, origin, ttl=0, swr=0)
    await get("a")
    await get("a")
    assert origin.calls == 2
    origin.fail = ConnectionError("down")
    assert (await get.lookup("a")).status is Status.STALE_IF_ERROR


async def test_windows_may_be_timedeltas(rt: isr.ISR, clock: FakeClock) -> None:
    origin = Origin()
    get = cached(
        rt,
        origin,
        ttl=datetime.timedelta(minutes=1),
        swr=datetime.timedelta(seconds=30),
        stale_if_error=datetime.timedelta(hours=1),
    )
    await get("a")
    clock.advance(59)
    assert (await get.lookup("a")).status is Status.HIT
    clock.advance(1)
    assert (await get.lookup("a")).status is Status.STALE
    await rt.drain()
    clock.advance(90 + 3599)
    origin.fail = ConnectionError("down")
    assert (await get.lookup("a")).status is Status.STALE_IF_ERROR
    clock.advance(1)
    with pytest.raises(ConnectionError):
        await get("a")


# ---------------------------------------------------------------- the call-site form


async def test_revalidating_keeps_and_revalidates_a_value_like_the_decorator(
    rt: isr.ISR, clock: FakeClock
) -> None:
    origin = Origin()
    first = await rt.revalidating("posts", 10, lambda: origin.load("p"), swr=5, lookup=True)
    assert (first.value, first.status, first.age) == ("p v1", Status.MISS, 0.0)
    clock.advance(4)
    assert await rt.revalidating("posts", 10, lambda: origin.load("p"), swr=5) == "p v1"
    hit = await rt.revalidating("posts", 10, lambda: origin.load("p"), swr=5, lookup=True)
    assert (hit.status, hit.age) == (Status.HIT, 4.0)
    origin.version = 2
    clock.advance(6)
    stale = await rt.revalidating("posts", 10, lambda: origin.load("p"), swr=5, lookup=True)
    assert (stale.value, stale.status) == ("p v1", Status.STALE)
    await rt.drain()
    assert await rt.revalidating("posts", 10, lambda: origin.load("p"), swr=5) == "p v2"
    assert origin.calls == 2
    assert rt.stats().hits == 3


async def test_revalidating_shares_one_fetch_among_concurrent_callers(rt: isr.ISR) -> None:
    origin = Origin()
    origin.gate = AsyncEvent()
    answers: list[str] = []

    async def call() -> None:
        answers.append(await rt.revalidating("cold", 10, lambda: origin.load("c")))

    async with AsyncTaskGroup() as tg:
        for _ in range(10):
            tg.start_soon(call)
        await async_wait_until(lambda: rt.stats().coalesced == 9)
        origin.gate.set()
    assert origin.calls == 1
    assert answers == ["c v1"] * 10


async def test_revalidating_serves_the_old_value_when_the_fetch_fails(
    rt: isr.ISR, clock: FakeClock
) -> None:
    origin = Origin()
    await rt.revalidating("k", 10, lambda: origin.load("k"), swr=0, stale_if_error=None)
    clock.advance(TEN_YEARS)
    origin.fail = ConnectionError("down")
    result = await rt.revalidating(
        "k", 10, lambda: origin.load("k"), swr=0, stale_if_error=None, lookup=True
    )
    assert (result.value, result.status) == ("k v1", Status.STALE_IF_ERROR)


async def test_revalidating_tags_reach_the_entry(rt: isr.ISR) -> None:
    origin = Origin()
    await rt.revalidating("post:1", 10, lambda: origin.load("1"), tags=["posts", "post:1"])
    origin.version = 2
    assert await rt.invalidate_tag("post:1") == 1
    again = await rt.revalidating("post:1", 10, lambda: origin.load("1"), lookup=True)
    assert (again.value, again.status) == ("1 v2", Status.MISS)


async def test_revalidating_takes_a_bound_method_and_timedeltas(
    rt: isr.ISR, clock: FakeClock
) -> None:
    origin = Origin()

    class Client:
        async def posts(self) -> str:
            return await origin.load("bound")

    day = datetime.timedelta(days=1)
    assert await rt.revalidating("b", day, Client().posts) == "bound v1"
    clock.advance(day.total_seconds() - 1)
    assert (await rt.revalidating("b", day, Client().posts, lookup=True)).status is Status.HIT
    clock.advance(1)
    assert (await rt.revalidating("b", day, Client().posts, lookup=True)).status is Status.STALE


async def test_revalidating_refuses_bad_input_and_stores_nothing(rt: isr.ISR) -> None:
    origin = Origin()
    with pytest.raises(isr.ConfigError, match=r"revalidating\(ttl=\.\.\.\)"):
        await rt.revalidating("k", -1, lambda: origin.load("k"))
    with pytest.raises(isr.ConfigError, match="non-empty str key"):
        await rt.revalidating("", 10, lambda: origin.load("k"))
    with pytest.raises(isr.ConfigError, match="tags"):
        await rt.revalidating("k", 10, lambda: origin.load("k"), tags=["ok", ""])
    with pytest.raises(isr.ConfigError, match="fetcher"):
        await rt.revalidating("k", 10, "not callable")  # type: ignore[call-overload]
    assert origin.calls == 0
    assert (await rt.revalidating("k", 10, lambda: origin.load("k"), lookup=True)).status is (
        Status.MISS
    )


async def test_revalidating_is_bypassed_while_disabled(rt: isr.ISR) -> None:
    origin = Origin()
    await rt.revalidating("k", 10, lambda: origin.load("k"))
    with isr.disabled():
        result = await rt.revalidating("k", 10, lambda: origin.load("k"), lookup=True)
    assert result.status is Status.BYPASS
    assert origin.calls == 2


async def test_revalidating_builds_no_loader_per_call(rt: isr.ISR) -> None:
    """Lambdas are new objects on every call; the loader is the same for a call site's
    name and options (no wrapper compiled per call)."""
    origin = Origin()
    for i in range(20):
        await rt.revalidating(f"k{i}", 10, lambda: origin.load("k"))
    loaders = {id(loader) for loader in rt._loaders}
    assert len(loaders) == 1
