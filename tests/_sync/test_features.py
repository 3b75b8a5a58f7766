# GENERATED from tests/_async/test_features.py by tests/unasync.py: do not edit.
# Edit the async source, then run `python -m tests.unasync`.
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
from isr._synchronization import Event

from .._concurrency import TaskGroup, wait_until
from ..conftest import FakeClock
from .test_runtime import Origin, cached

TEN_YEARS = 10 * 365 * 86400.0


# ---------------------------------------------------------------- the switch


def test_a_disabled_scope_runs_the_loader_on_every_call_and_stores_nothing(
    srt: isr.ISR,
) -> None:
    origin = Origin()
    get = cached(srt, origin)
    get("a")  # a fresh entry, v1
    origin.version = 2
    with isr.disabled():
        first = get.lookup("a")
        second = get.lookup("a")
        assert get("b") == "b v2"
    assert (first.value, first.status, first.age) == ("a v2", Status.BYPASS, 0.0)
    assert (second.value, second.status) == ("a v2", Status.BYPASS)
    assert origin.calls == 4  # one fill, then each disabled call ran the loader
    assert get.lookup("a") == isr.Result("a v1", Status.HIT, 0.0)  # entry untouched
    assert (get.lookup("b")).status is Status.MISS  # nothing was stored
    assert srt.stats().bypassed == 3


def test_a_disabled_call_gets_the_origins_error_not_the_fallback(
    srt: isr.ISR, clock: FakeClock
) -> None:
    origin = Origin()
    get = cached(srt, origin, swr=0)
    get("a")
    clock.advance(10)
    origin.fail = ConnectionError("down")
    with isr.disabled(), pytest.raises(ConnectionError, match="down"):
        get("a")
    assert (get.lookup("a")).status is Status.STALE_IF_ERROR  # the cache, as before


def test_a_loader_may_call_cache_life_and_friends_while_disabled(srt: isr.ISR) -> None:
    @isr.with_revalidate("told:{x}", ttl=10, runtime=srt)
    def load(x: str) -> str:
        isr.cache_life(ttl=1, stale_if_error=None)
        isr.cache_tag("told")
        isr.no_store()
        return x

    with isr.disabled():
        assert load("a") == "a"


def test_disabling_one_caller_leaves_the_others_cached(srt: isr.ISR) -> None:
    origin = Origin()
    get = cached(srt, origin)
    get("a")
    inside, release = Event(), Event()
    seen: list[Status] = []

    def disabled_caller() -> None:
        with isr.disabled():
            seen.append((get.lookup("a")).status)
            inside.set()
            assert release.wait(20)
            seen.append((get.lookup("a")).status)

    with TaskGroup() as tg:
        tg.start_soon(disabled_caller)
        assert inside.wait(20)
        outside = get.lookup("a")  # while the other caller is still disabled
        release.set()
    assert outside == isr.Result("a v1", Status.HIT, 0.0)
    assert seen == [Status.BYPASS, Status.BYPASS]
    assert origin.calls == 3


def test_nested_scopes_restore_what_was_there(srt: isr.ISR) -> None:
    origin = Origin()
    get = cached(srt, origin)
    get("a")
    with isr.disabled():
        with isr.disabled():
            assert (get.lookup("a")).status is Status.BYPASS
        assert (get.lookup("a")).status is Status.BYPASS
    assert (get.lookup("a")).status is Status.HIT


# ---------------------------------------------------------------- per-call control


def test_refresh_fetches_now_stores_and_returns_the_new_value(srt: isr.ISR) -> None:
    origin = Origin()
    get = cached(srt, origin)
    get("a")
    origin.version = 2
    assert get.refresh("a") == "a v2"  # although the entry was fresh
    assert get.lookup("a") == isr.Result("a v2", Status.HIT, 0.0)
    assert origin.calls == 2


def test_refresh_joins_the_fetch_in_flight(srt: isr.ISR) -> None:
    origin = Origin()
    origin.gate = Event()
    get = cached(srt, origin)
    answers: list[str] = []

    def call() -> None:
        answers.append(get("a"))

    def refresh() -> None:
        answers.append(get.refresh("a"))

    with TaskGroup() as tg:
        tg.start_soon(call)
        wait_until(lambda: origin.calls == 1)
        tg.start_soon(refresh)
        wait_until(lambda: srt.stats().coalesced == 1)
        origin.gate.set()
    assert origin.calls == 1
    assert answers == ["a v1", "a v1"]


def test_a_failed_refresh_raises_and_keeps_the_old_value(srt: isr.ISR) -> None:
    origin = Origin()
    get = cached(srt, origin)
    get("a")
    origin.fail = ConnectionError("down")
    with pytest.raises(ConnectionError, match="down"):
        get.refresh("a")
    assert get.lookup("a") == isr.Result("a v1", Status.HIT, 0.0)


def posts(srt: isr.ISR, origin: Origin) -> Any:
    """A loader with a parameter that has a default, for the helpers' arguments."""

    @isr.with_revalidate("post:{slug}:{lang}", ttl=10, runtime=srt)
    def post(slug: str, lang: str = "en") -> str:
        return origin.load(f"{slug}/{lang}")

    return post


def test_refresh_takes_the_functions_arguments(srt: isr.ISR) -> None:
    origin = Origin()
    post = posts(srt, origin)
    post("a")
    post("a", lang="de")
    origin.version = 2
    assert post.refresh("a", lang="de") == "a/de v2"
    assert post("a") == "a/en v1"
    assert post("a", "de") == "a/de v2"


@pytest.mark.parametrize("mode", ["expire", "revalidate", "purge"])
def test_invalidate_takes_the_functions_arguments_and_a_mode(srt: isr.ISR, mode: Any) -> None:
    origin = Origin()
    post = posts(srt, origin)
    post("a")
    post("a", lang="de")
    origin.version = 2
    assert post.invalidate("a", mode=mode) is True
    result = post.lookup("a")
    if mode == "revalidate":
        assert (result.value, result.status) == ("a/en v1", Status.STALE)
    else:
        assert (result.value, result.status) == ("a/en v2", Status.MISS)
    assert (post.lookup("a", lang="de")).status is Status.HIT  # another key
    assert post.invalidate("nothing-here") is False


def test_invalidate_expires_by_default_and_keeps_the_fallback(
    srt: isr.ISR, clock: FakeClock
) -> None:
    origin = Origin()
    get = cached(srt, origin)
    get("a")
    assert get.invalidate("a") is True
    origin.fail = ConnectionError("down")
    result = get.lookup("a")
    assert (result.value, result.status) == ("a v1", Status.STALE_IF_ERROR)
    assert get.invalidate("a", mode="purge") is True
    with pytest.raises(ConnectionError):
        get("a")


def test_a_function_with_its_own_mode_parameter_keeps_it(srt: isr.ISR) -> None:
    origin = Origin()

    @isr.with_revalidate("mode:{mode}", ttl=10, runtime=srt)
    def load(mode: str) -> str:
        return origin.load(mode)

    load("dark")
    origin.version = 2
    assert load.invalidate(mode="dark") is True  # the function's mode: the key's
    assert load("dark") == "dark v2"


def test_a_bad_mode_is_refused_and_changes_nothing(srt: isr.ISR) -> None:
    origin = Origin()
    get = cached(srt, origin)
    get("a")
    with pytest.raises(isr.ConfigError, match="invalid invalidation mode 'gone'"):
        get.invalidate("a", mode="gone")  # type: ignore[call-overload]
    assert (get.lookup("a")).status is Status.HIT


# ---------------------------------------------------------------- windows


def test_stale_if_error_none_keeps_the_fallback_until_purged(
    srt: isr.ISR, clock: FakeClock
) -> None:
    origin = Origin()
    get = cached(srt, origin, swr=0, stale_if_error=None)
    get("a")
    clock.advance(TEN_YEARS)
    origin.fail = ConnectionError("the CMS is down")
    result = get.lookup("a")
    assert (result.value, result.status, result.age) == ("a v1", Status.STALE_IF_ERROR, TEN_YEARS)
    assert get.invalidate("a", mode="purge") is True
    with pytest.raises(ConnectionError):
        get("a")


def test_a_loader_can_make_its_fallback_unbounded(srt: isr.ISR, clock: FakeClock) -> None:
    origin = Origin()

    @isr.with_revalidate("item:{name}", ttl=10, swr=0, stale_if_error=5, runtime=srt)
    def get(name: str) -> str:
        isr.cache_life(stale_if_error=None)
        return origin.load(name)

    get("a")
    clock.advance(TEN_YEARS)
    origin.fail = ConnectionError("down")
    assert (get.lookup("a")).status is Status.STALE_IF_ERROR


def test_ttl_zero_is_never_fresh_each_read_refreshes(srt: isr.ISR) -> None:
    origin = Origin()
    get = cached(srt, origin, ttl=0)
    assert (get.lookup("a")).status is Status.MISS
    origin.version = 2
    stale = get.lookup("a")
    assert (stale.value, stale.status) == ("a v1", Status.STALE)
    srt.drain_sync()
    again = get.lookup("a")
    assert (again.value, again.status) == ("a v2", Status.STALE)
    srt.drain_sync()
    assert origin.calls == 3


def test_ttl_and_swr_zero_fetch_on_every_read_with_a_fallback(srt: isr.ISR) -> None:
    origin = Origin()
    get = cached(srt, origin, ttl=0, swr=0)
    get("a")
    get("a")
    assert origin.calls == 2
    origin.fail = ConnectionError("down")
    assert (get.lookup("a")).status is Status.STALE_IF_ERROR


def test_windows_may_be_timedeltas(srt: isr.ISR, clock: FakeClock) -> None:
    origin = Origin()
    get = cached(
        srt,
        origin,
        ttl=datetime.timedelta(minutes=1),
        swr=datetime.timedelta(seconds=30),
        stale_if_error=datetime.timedelta(hours=1),
    )
    get("a")
    clock.advance(59)
    assert (get.lookup("a")).status is Status.HIT
    clock.advance(1)
    assert (get.lookup("a")).status is Status.STALE
    srt.drain_sync()
    clock.advance(90 + 3599)
    origin.fail = ConnectionError("down")
    assert (get.lookup("a")).status is Status.STALE_IF_ERROR
    clock.advance(1)
    with pytest.raises(ConnectionError):
        get("a")


# ---------------------------------------------------------------- the call-site form


def test_revalidating_keeps_and_revalidates_a_value_like_the_decorator(
    srt: isr.ISR, clock: FakeClock
) -> None:
    origin = Origin()
    first = srt.revalidating_sync("posts", 10, lambda: origin.load("p"), swr=5, lookup=True)
    assert (first.value, first.status, first.age) == ("p v1", Status.MISS, 0.0)
    clock.advance(4)
    assert srt.revalidating_sync("posts", 10, lambda: origin.load("p"), swr=5) == "p v1"
    hit = srt.revalidating_sync("posts", 10, lambda: origin.load("p"), swr=5, lookup=True)
    assert (hit.status, hit.age) == (Status.HIT, 4.0)
    origin.version = 2
    clock.advance(6)
    stale = srt.revalidating_sync("posts", 10, lambda: origin.load("p"), swr=5, lookup=True)
    assert (stale.value, stale.status) == ("p v1", Status.STALE)
    srt.drain_sync()
    assert srt.revalidating_sync("posts", 10, lambda: origin.load("p"), swr=5) == "p v2"
    assert origin.calls == 2
    assert srt.stats().hits == 3


def test_revalidating_shares_one_fetch_among_concurrent_callers(srt: isr.ISR) -> None:
    origin = Origin()
    origin.gate = Event()
    answers: list[str] = []

    def call() -> None:
        answers.append(srt.revalidating_sync("cold", 10, lambda: origin.load("c")))

    with TaskGroup() as tg:
        for _ in range(10):
            tg.start_soon(call)
        wait_until(lambda: srt.stats().coalesced == 9)
        origin.gate.set()
    assert origin.calls == 1
    assert answers == ["c v1"] * 10


def test_revalidating_serves_the_old_value_when_the_fetch_fails(
    srt: isr.ISR, clock: FakeClock
) -> None:
    origin = Origin()
    srt.revalidating_sync("k", 10, lambda: origin.load("k"), swr=0, stale_if_error=None)
    clock.advance(TEN_YEARS)
    origin.fail = ConnectionError("down")
    result = srt.revalidating_sync(
        "k", 10, lambda: origin.load("k"), swr=0, stale_if_error=None, lookup=True
    )
    assert (result.value, result.status) == ("k v1", Status.STALE_IF_ERROR)


def test_revalidating_tags_reach_the_entry(srt: isr.ISR) -> None:
    origin = Origin()
    srt.revalidating_sync("post:1", 10, lambda: origin.load("1"), tags=["posts", "post:1"])
    origin.version = 2
    assert srt.invalidate_tag_sync("post:1") == 1
    again = srt.revalidating_sync("post:1", 10, lambda: origin.load("1"), lookup=True)
    assert (again.value, again.status) == ("1 v2", Status.MISS)


def test_revalidating_takes_a_bound_method_and_timedeltas(srt: isr.ISR, clock: FakeClock) -> None:
    origin = Origin()

    class Client:
        def posts(self) -> str:
            return origin.load("bound")

    day = datetime.timedelta(days=1)
    assert srt.revalidating_sync("b", day, Client().posts) == "bound v1"
    clock.advance(day.total_seconds() - 1)
    assert (srt.revalidating_sync("b", day, Client().posts, lookup=True)).status is Status.HIT
    clock.advance(1)
    assert (srt.revalidating_sync("b", day, Client().posts, lookup=True)).status is Status.STALE


def test_revalidating_refuses_bad_input_and_stores_nothing(srt: isr.ISR) -> None:
    origin = Origin()
    with pytest.raises(isr.ConfigError, match=r"revalidating_sync\(ttl=\.\.\.\)"):
        srt.revalidating_sync("k", -1, lambda: origin.load("k"))
    with pytest.raises(isr.ConfigError, match="non-empty str key"):
        srt.revalidating_sync("", 10, lambda: origin.load("k"))
    with pytest.raises(isr.ConfigError, match="tags"):
        srt.revalidating_sync("k", 10, lambda: origin.load("k"), tags=["ok", ""])
    with pytest.raises(isr.ConfigError, match="fetcher"):
        srt.revalidating_sync("k", 10, "not callable")  # type: ignore[call-overload]
    assert origin.calls == 0
    assert (srt.revalidating_sync("k", 10, lambda: origin.load("k"), lookup=True)).status is (
        Status.MISS
    )


def test_revalidating_is_bypassed_while_disabled(srt: isr.ISR) -> None:
    origin = Origin()
    srt.revalidating_sync("k", 10, lambda: origin.load("k"))
    with isr.disabled():
        result = srt.revalidating_sync("k", 10, lambda: origin.load("k"), lookup=True)
    assert result.status is Status.BYPASS
    assert origin.calls == 2


def test_revalidating_builds_no_loader_per_call(srt: isr.ISR) -> None:
    """Lambdas are new objects on every call; the loader is the same for a call site's
    name and options (no wrapper compiled per call)."""
    origin = Origin()
    for i in range(20):
        srt.revalidating_sync(f"k{i}", 10, lambda: origin.load("k"))
    loaders = {id(loader) for loader in srt._loaders}
    assert len(loaders) == 1
