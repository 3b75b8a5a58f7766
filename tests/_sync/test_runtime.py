# GENERATED from tests/_async/test_runtime.py by tests/unasync.py: do not edit.
# Edit the async source, then run `python -m tests.unasync`.
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
from isr._synchronization import Event

from .._concurrency import TaskGroup, wait_until
from ..conftest import FakeClock

#: Callers started at once on a cold key.
CALLERS = 50


class Origin:
    """A loader's origin: counts calls, can fail, can be held up by a gate."""

    def __init__(self) -> None:
        self.calls = 0
        self.version = 1
        self.fail: Exception | None = None
        self.gate: Event | None = None
        self.entered = Event()  # set once a loader call is running
        self._lock = threading.Lock()

    def load(self, name: str) -> str:
        with self._lock:
            self.calls += 1
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(20), "the test never opened the gate"
        if self.fail is not None:
            raise self.fail
        return f"{name} v{self.version}"


def cached(srt: isr.ISR, origin: Origin, **options: Any) -> isr.SyncCached[[str], str]:
    options.setdefault("ttl", 10)

    @isr.with_revalidate("item:{name}", runtime=srt, **options)
    def get(name: str) -> str:
        return origin.load(name)

    return get


def test_miss_then_hit_without_calling_the_loader(srt: isr.ISR, clock: FakeClock) -> None:
    origin = Origin()
    get = cached(srt, origin)
    first = get.lookup("a")
    assert (first.value, first.status, first.age) == ("a v1", Status.MISS, 0.0)
    clock.advance(4)
    again = get.lookup("a")
    assert (again.value, again.status, again.age) == ("a v1", Status.HIT, 4.0)
    assert get("a") == "a v1"
    assert origin.calls == 1
    assert srt.stats().hits == 2


def test_after_a_revalidate_all_one_refresh_makes_the_value_fresh_again(
    srt: isr.ISR,
) -> None:
    origin = Origin()
    get = cached(srt, origin)
    get("a")
    origin.version = 2
    srt.invalidate_all_sync(mode="revalidate")
    assert (get.lookup("a")).status is Status.STALE
    srt.drain_sync()
    answers = [get.lookup("a") for _ in range(3)]
    srt.drain_sync()
    assert {(r.value, r.status) for r in answers} == {("a v2", Status.HIT)}
    assert origin.calls == 2  # one fill, one refresh: not a refresh on every read


def test_stale_is_served_at_once_while_one_refresh_runs(srt: isr.ISR, clock: FakeClock) -> None:
    origin = Origin()
    get = cached(srt, origin, swr=None)
    get("a")
    origin.version = 2
    clock.advance(10)  # ttl reached
    origin.gate = Event()  # the refresh will hang until released
    answers = [get.lookup("a") for _ in range(5)]
    assert {(r.value, r.status) for r in answers} == {("a v1", Status.STALE)}
    assert answers[0].age == 10.0  # age is time since produced, not time left
    assert srt.stats().refreshing == 1
    origin.gate.set()
    srt.drain_sync()
    assert origin.calls == 2  # one refresh for five stale reads
    fresh = get.lookup("a")
    assert (fresh.value, fresh.status) == ("a v2", Status.HIT)


def test_past_swr_the_call_fetches(srt: isr.ISR, clock: FakeClock) -> None:
    origin = Origin()
    get = cached(srt, origin, swr=5)
    get("a")
    origin.version = 2
    clock.advance(15)  # ttl 10 + swr 5
    result = get.lookup("a")
    assert (result.value, result.status) == ("a v2", Status.MISS)


def test_failed_fetch_serves_the_old_value_within_stale_if_error(
    srt: isr.ISR, clock: FakeClock
) -> None:
    origin = Origin()
    get = cached(srt, origin, swr=5, stale_if_error=100)
    get("a")
    clock.advance(20)
    origin.fail = ConnectionError("origin down")
    result = get.lookup("a")
    assert (result.value, result.status, result.age) == ("a v1", Status.STALE_IF_ERROR, 20.0)
    assert isinstance(result.error, ConnectionError)
    assert get("a") == "a v1"
    assert srt.stats().stale_if_error == 2


def test_failed_fetch_past_stale_if_error_raises_the_origins_error(
    srt: isr.ISR, clock: FakeClock
) -> None:
    origin = Origin()
    get = cached(srt, origin, swr=5, stale_if_error=100)
    get("a")
    clock.advance(10 + 5 + 100)
    origin.fail = ConnectionError("origin down")
    with pytest.raises(ConnectionError, match="origin down"):
        get("a")
    assert srt.stats().errors == 1


def test_an_exception_is_never_cached(srt: isr.ISR) -> None:
    origin = Origin()
    get = cached(srt, origin)
    origin.fail = KeyError("nope")
    with pytest.raises(KeyError):
        get("a")
    origin.fail = None
    assert (get.lookup("a")).status is Status.MISS
    assert origin.calls == 2


def test_concurrent_cold_callers_share_one_fetch(srt: isr.ISR) -> None:
    origin = Origin()
    origin.gate = Event()
    get = cached(srt, origin)
    results: list[isr.Result[str]] = []

    def call() -> None:
        results.append(get.lookup("a"))

    with TaskGroup() as tg:
        for _ in range(CALLERS):
            tg.start_soon(call)
        wait_until(lambda: srt.stats().coalesced == CALLERS - 1)
        origin.gate.set()
    assert origin.calls == 1
    assert len(results) == CALLERS
    assert {(r.value, r.status) for r in results} == {("a v1", Status.MISS)}


def test_concurrent_cold_callers_share_the_exception(srt: isr.ISR) -> None:
    origin = Origin()
    origin.gate = Event()
    origin.fail = TimeoutError("slow origin")
    get = cached(srt, origin)
    errors: list[BaseException] = []

    def call() -> None:
        try:
            get("a")
        except TimeoutError as exc:
            errors.append(exc)

    with TaskGroup() as tg:
        for _ in range(CALLERS):
            tg.start_soon(call)
        wait_until(lambda: srt.stats().coalesced == CALLERS - 1)
        origin.gate.set()
    assert origin.calls == 1
    assert len(errors) == CALLERS


def test_failed_refresh_keeps_stale_backs_off_logs_and_calls_the_hook(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[tuple[str, BaseException]] = []
    with isr.ISR(clock=clock, backoff=5, on_error=lambda k, e: seen.append((k, e))) as srt:
        origin = Origin()
        get = cached(srt, origin, swr=None)
        get("a")
        clock.advance(10)
        origin.fail = ConnectionError("down")
        with caplog.at_level(logging.WARNING, logger="isr"):
            assert (get.lookup("a")).status is Status.STALE
            srt.drain_sync()
        assert origin.calls == 2
        assert [k for k, _ in seen] == ["item:a"]
        assert "background refresh of 'item:a' failed (ConnectionError: down)" in caplog.text
        # within the backoff, stale reads do not hit the failing origin again
        for _ in range(10):
            assert (get.lookup("a")).value == "a v1"
        srt.drain_sync()
        assert origin.calls == 2
        clock.advance(5)
        get("a")
        srt.drain_sync()
        assert origin.calls == 3  # tried again after the backoff: failed again, doubled
        assert srt.stats().refresh_failures == 2
        origin.fail = None
        clock.advance(10)
        get("a")
        srt.drain_sync()
        assert (get.lookup("a")) == isr.Result("a v1", Status.HIT, 0.0)


def test_expired_entry_in_backoff_serves_fallback_without_calling_origin(
    srt: isr.ISR, clock: FakeClock
) -> None:
    origin = Origin()
    get = cached(srt, origin, swr=0)
    get("a")
    clock.advance(10)
    origin.fail = ConnectionError("down")
    assert (get.lookup("a")).status is Status.STALE_IF_ERROR
    assert (get.lookup("a")).status is Status.STALE_IF_ERROR
    assert origin.calls == 2  # the second read fell inside the backoff


@pytest.mark.parametrize("mode", ["expire", "revalidate", "purge"])
def test_invalidate_key_modes(srt: isr.ISR, clock: FakeClock, mode: str) -> None:
    origin = Origin()
    get = cached(srt, origin)
    get("a")
    get("b")
    origin.version = 2
    assert srt.invalidate_sync("item:a", mode=mode) is True  # type: ignore[arg-type]
    result = get.lookup("a")
    if mode == "revalidate":
        assert (result.value, result.status) == ("a v1", Status.STALE)
        srt.drain_sync()
        assert (get.lookup("a")).value == "a v2"
    else:
        assert (result.value, result.status) == ("a v2", Status.MISS)
    assert (get.lookup("b")).status is Status.HIT  # other keys untouched


def test_expire_keeps_the_old_value_as_fallback_and_purge_does_not(
    srt: isr.ISR,
) -> None:
    origin = Origin()
    get = cached(srt, origin)
    get("a")
    get("b")
    origin.fail = ConnectionError("down")
    srt.invalidate_sync("item:a")  # expire
    srt.invalidate_sync("item:b", mode="purge")
    assert (get.lookup("a")).status is Status.STALE_IF_ERROR
    with pytest.raises(ConnectionError):
        get("b")  # unpublished content is never served again


@pytest.mark.parametrize("mode", ["expire", "revalidate", "purge"])
def test_invalidate_tag(srt: isr.ISR, mode: str) -> None:
    origin = Origin()

    @isr.with_revalidate("post:{slug}", ttl=60, tags=["posts", "author:{author}"], runtime=srt)
    def get_post(slug: str, author: str) -> str:
        return origin.load(slug)

    get_post("a", "ann")
    get_post("b", "bob")
    origin.version = 2
    assert srt.invalidate_tag_sync("author:ann", mode=mode) == 1  # type: ignore[arg-type]
    a = get_post.lookup("a", "ann")
    b = get_post.lookup("b", "bob")
    assert b.status is Status.HIT
    expected = Status.STALE if mode == "revalidate" else Status.MISS
    assert a.status is expected
    srt.drain_sync()
    assert srt.invalidate_tag_sync("posts", mode=mode) == 2  # type: ignore[arg-type]
    assert (get_post.lookup("b", "bob")).status is expected


@pytest.mark.parametrize("mode", ["expire", "revalidate", "purge"])
def test_invalidate_all(srt: isr.ISR, mode: str) -> None:
    origin = Origin()
    get = cached(srt, origin)
    for name in "abc":
        get(name)
    origin.version = 2
    origin.fail = ConnectionError("down")
    srt.invalidate_all_sync(mode=mode)  # type: ignore[arg-type]
    statuses: set[Status | None] = set()

    def status_of(name: str) -> Status | None:
        try:
            return (get.lookup(name)).status
        except ConnectionError:
            return None

    for name in "ab":
        statuses.add(status_of(name))
    expected = {
        "revalidate": Status.STALE,
        "expire": Status.STALE_IF_ERROR,
        "purge": None,  # nothing left to serve
    }[mode]
    assert statuses == {expected}
    srt.drain_sync()
    origin.fail = None
    assert (get.lookup("c")).value == ("c v1" if mode == "revalidate" else "c v2")


def test_invalidate_all_is_o1_and_new_entries_are_fresh(srt: isr.ISR) -> None:
    origin = Origin()
    get = cached(srt, origin)
    for i in range(300):
        get(str(i))
    before = srt.adapter.get("item:7")
    srt.invalidate_all_sync()
    after = srt.adapter.get("item:7")  # nothing was scanned or rewritten
    assert before is not None
    assert after is not None
    assert (after.created, after.policy, after.gen) == (before.created, before.policy, before.gen)
    assert (get.lookup("7")).status is Status.MISS
    get("1")
    assert (get.lookup("1")).status is Status.HIT


def test_invalidation_during_a_fetch_wins_over_its_result(srt: isr.ISR) -> None:
    """A publish that lands while a refresh is reading the old content must not be lost."""
    origin = Origin()
    origin.gate = Event()
    get = cached(srt, origin)
    with TaskGroup() as tg:
        tg.start_soon(get, "a")
        origin.entered.wait()  # the loader runs (not just waits on the store)
        srt.invalidate_sync("item:a")  # the fetch in flight read v1 before the publish
        origin.gate.set()
    origin.gate = None
    origin.version = 2
    result = get.lookup("a")
    assert (result.value, result.status) == ("a v2", Status.MISS)


@pytest.mark.parametrize("how", ["tag", "all"])
def test_tag_and_global_invalidation_during_a_fetch_win_too(srt: isr.ISR, how: str) -> None:
    origin = Origin()
    origin.gate = Event()
    get = cached(srt, origin, tags=["items"])
    with TaskGroup() as tg:
        tg.start_soon(get, "a")
        origin.entered.wait()
        if how == "tag":
            srt.invalidate_tag_sync("items", mode="purge")
        else:
            srt.invalidate_all_sync(mode="purge")
        origin.gate.set()
    assert srt.adapter.get("item:a") is None or how == "all"
    origin.gate = None
    origin.version = 2
    assert (get.lookup("a")) == isr.Result("a v2", Status.MISS, 0.0)


@pytest.mark.parametrize("mode", ["expire", "purge"])
def test_a_stale_entry_whose_tag_was_invalidated_is_not_served_stale(
    srt: isr.ISR, clock: FakeClock, mode: str
) -> None:
    """Past its ttl, an entry is served STALE while it refreshes; once its tag has been
    expired or purged (recorded once for the tag, applied to the entry when it is next
    looked at), the next call fetches instead."""
    origin = Origin()
    get = cached(srt, origin, swr=None, tags=["items"])
    get("a")
    clock.advance(10)
    origin.version = 2
    assert srt.invalidate_tag_sync("items", mode=mode) == 1  # type: ignore[arg-type]
    assert get("a") == "a v2"
    assert origin.calls == 2


def test_a_tag_s_purge_counts_its_entries_once_and_spares_other_tags(
    srt: isr.ISR,
) -> None:
    origin = Origin()
    posts = cached(srt, origin, tags=["posts"])
    for name in ("a", "b", "c"):
        posts(name)

    @isr.with_revalidate("page:{name}", ttl=10, tags=["pages"], runtime=srt)
    def pages(name: str) -> str:
        return origin.load(name)

    pages("home")
    assert srt.invalidate_tag_sync("posts", mode="purge") == 3
    assert srt.invalidate_tag_sync("posts", mode="purge") == 0  # nothing left to purge
    assert (pages.lookup("home")).status is Status.HIT
    origin.version = 2
    assert [(posts.lookup(n)).value for n in ("a", "b", "c")] == ["a v2", "b v2", "c v2"]


def test_bad_mode_changes_nothing(srt: isr.ISR) -> None:
    origin = Origin()
    get = cached(srt, origin)
    get("a")
    with pytest.raises(isr.ConfigError, match="invalid invalidation mode 'delete'"):
        srt.invalidate_sync("item:a", mode="delete")  # type: ignore[arg-type]
    assert (get.lookup("a")).status is Status.HIT
    assert srt.stats().invalidations == 0


def test_soft_timeout_serves_stale_and_the_fetch_lands_later(
    srt: isr.ISR, clock: FakeClock
) -> None:
    origin = Origin()
    get = cached(srt, origin, swr=0, soft_timeout=0.05)
    get("a")
    clock.advance(10)
    origin.version = 2
    origin.gate = Event()
    result = get.lookup("a")
    assert (result.value, result.status, result.age) == ("a v1", Status.STALE, 10.0)
    origin.gate.set()
    srt.drain_sync()
    assert (get.lookup("a")) == isr.Result("a v2", Status.HIT, 0.0)


def test_hard_timeout_fails_the_fetch(srt: isr.ISR, clock: FakeClock) -> None:
    origin = Origin()
    origin.gate = Event()  # the origin hangs
    get = cached(srt, origin, swr=0, timeout=0.05)
    with pytest.raises(TimeoutError):
        get("a")
    origin.gate.set()
    srt.drain_sync()
    origin.gate = None
    get("a")
    clock.advance(10)
    origin.gate = Event()
    result = get.lookup("a")  # hangs again, but now there is a fallback
    assert (result.value, result.status) == ("a v1", Status.STALE_IF_ERROR)
    assert isinstance(result.error, TimeoutError)
    origin.gate.set()


def test_loader_sets_its_own_ttl_and_tags(srt: isr.ISR, clock: FakeClock) -> None:
    @isr.with_revalidate("post:{slug}", ttl=60, swr=0, runtime=srt)
    def get_post(slug: str) -> str:
        if slug == "breaking":
            isr.cache_life(ttl=5)
        isr.cache_tag("author:ann")
        return slug

    get_post("breaking")
    get_post("evergreen")
    clock.advance(6)
    assert (get_post.lookup("breaking")).status is Status.MISS
    assert (get_post.lookup("evergreen")).status is Status.HIT
    assert srt.invalidate_tag_sync("author:ann") == 2


def test_no_store_returns_the_value_without_caching_it(srt: isr.ISR) -> None:
    calls = 0

    @isr.with_revalidate("user:{uid}", ttl=60, runtime=srt)
    def get_user(uid: int) -> str | None:
        nonlocal calls
        calls += 1
        if uid == 0:
            isr.no_store()  # not found yet: ask again next time
            return None
        return "ann"

    assert get_user(0) is None
    assert get_user(0) is None
    assert calls == 2


def test_xfetch_refreshes_before_expiry(clock: FakeClock) -> None:
    # random() -> tiny: -log(r) is large, so an early refresh is due near expiry
    with isr.ISR(clock=clock, random=lambda: 1e-9) as srt:
        origin = Origin()
        get = cached(srt, origin, xfetch=1.0)
        get("a")  # the loader took 0 s on the fake clock: no basis for XFetch yet
        get.__isr_loader__.delta = 0.5  # type: ignore[attr-defined]
        clock.advance(1)
        assert (get.lookup("a")).status is Status.HIT
        srt.drain_sync()
        assert origin.calls == 2  # refreshed early, while still fresh
    with isr.ISR(clock=clock, random=lambda: 0.999999) as srt:
        origin = Origin()
        get = cached(srt, origin, xfetch=1.0)
        get("a")
        get.__isr_loader__.delta = 0.5  # type: ignore[attr-defined]
        clock.advance(1)
        get("a")
        srt.drain_sync()
        assert origin.calls == 1  # far from expiry: no early refresh


def test_lookup_with_xfetch_obeys_an_invalidation_and_counts_a_hit_once(
    srt: isr.ISR,
) -> None:
    origin = Origin()
    get = cached(srt, origin, xfetch=1.0)
    get("a")
    hit = get.lookup("a")
    assert (hit.value, hit.status, srt.stats().hits) == ("a v1", Status.HIT, 1)
    origin.version = 2
    srt.invalidate_sync("item:a")
    after = get.lookup("a")
    assert (after.value, after.status) == ("a v2", Status.MISS)


def test_an_entry_its_loader_retagged_leaves_its_old_tag(srt: isr.ISR) -> None:
    tags = ["section:a"]

    @isr.with_revalidate("k", ttl=60, runtime=srt)
    def load() -> str:
        isr.cache_tag(*tags)
        return "v"

    load()
    tags[:] = ["section:b"]
    srt.invalidate_sync("k")
    load()  # stored again, now tagged section:b only
    assert srt.invalidate_tag_sync("section:a") == 0
    assert (load.lookup()).status is Status.HIT
    assert srt.invalidate_tag_sync("section:b") == 1


# ------------------------------------------------------------------ coherence (issue 19)


def test_a_runtime_lists_itself_among_the_live_instances(srt: isr.ISR, store: str) -> None:
    found = srt.instances_sync()
    assert [i.id for i in found] == [srt.instance_id]
    me = found[0]
    host, pid, tail = srt.instance_id.split(":")
    assert (me.host, me.pid, len(tail)) == (host, os.getpid(), 6)
    assert me.pid == int(pid)
    assert me.l1 is (store == "redis-l1")
    # An L1 has applied the bus's epoch it subscribed at; without a bus, None.
    assert (me.applied is not None) is (store == "redis-l1")


def test_confirm_after_invalidations_lists_this_instance_and_covers_the_log(
    srt: isr.ISR, store: str
) -> None:
    origin = Origin()
    get = cached(srt, origin, tags=["posts"])
    get("a")
    assert srt.invalidate_tag_sync("posts", "purge") == 1
    assert (srt.invalidation_log_sync())[0].confirmation is None  # none asked yet
    done = srt.confirm_sync(timeout=1.0)
    assert done.complete
    assert (done.confirmed, done.missing) == ((srt.instance_id,), ())
    assert 0 <= done.ms < 1000
    assert done.as_json() == {"confirmed": 1, "missing": [], "ms": done.ms}
    logged = (srt.invalidation_log_sync())[0]
    assert (logged.scope, logged.name, logged.mode, logged.source) == (
        "tag",
        "posts",
        "purge",
        "code",
    )
    assert logged.confirmation == done
    assert (logged.epoch is not None) is store.startswith(("redis", "valkey"))
    # A later confirmation covers what was made since, not the earlier ones again.
    srt.invalidate_sync("item:a")
    again = srt.confirm_sync(timeout=0)
    newest, older = srt.invalidation_log_sync(limit=2)
    assert (newest.confirmation, older.confirmation) == (again, done)


def test_the_log_says_what_where_from_and_who_newest_first(srt: isr.ISR) -> None:
    srt.invalidate_sync("post:1")
    with isr.invalidation_source("webhook", event="entry.publish", model="article", entry="x4m1"):
        srt.invalidate_tag_sync("article:x4m1", "purge")
    with isr.invalidation_source("cli"):
        srt.invalidate_all_sync("revalidate")
    log = srt.invalidation_log_sync(limit=10)
    assert [(e.scope, e.name, e.mode, e.source) for e in log] == [
        ("all", "", "revalidate", "cli"),
        ("tag", "article:x4m1", "purge", "webhook"),
        ("key", "post:1", "expire", "code"),
    ]
    assert dict(log[1].detail) == {"event": "entry.publish", "model": "article", "entry": "x4m1"}
    assert {e.instance for e in log} == {srt.instance_id}
    assert log[0].id != log[1].id != log[2].id
    assert log[0].at >= log[1].at >= log[2].at
    assert [e.name for e in srt.invalidation_log_sync(limit=1)] == [""]
    with pytest.raises(isr.ConfigError):
        srt.invalidation_log_sync(limit=0)
    with pytest.raises(isr.ConfigError):
        srt.confirm_sync(timeout=-1)


def test_an_invalidation_the_store_could_not_take_is_not_confirmed(srt: isr.ISR) -> None:
    """With the outbox holding an invalidation, nobody else can have applied it: a
    confirmation says so at once instead of waiting for acknowledgements."""
    from isr._entry import Mode
    from isr._state import Invalidation

    srt._state.queue(Invalidation("key", "k", Mode.EXPIRE, 0.0))
    try:
        done = srt.confirm_sync(timeout=5)
        assert done.ms < 1000  # did not wait for the timeout
        assert done.confirmed == (srt.instance_id,)
    finally:
        srt._state.outbox.clear()
