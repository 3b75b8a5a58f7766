"""Fresh hits: what a cached call costs when the answer is already there and fresh.

That is the call a busy server makes almost every time, so it is the one figure that must
stay close to free. The floor is the least any cache can do: a bare coroutine (or, for sync
code, a bare function) doing one dict lookup, called in the very same loop as every
contender, ``for _ in range(n): await f("a")``. A ratio to that floor is therefore the price
of the cache itself: building the key, checking freshness, counting the hit, on top of the
call and the lookup nobody can avoid. The peers (async-lru, asyncache, aiocache, cashews;
cachetools and functools for sync code) run in the same process, loop and rounds; a peer
that is not installed is reported as such.

Targets: the isr async hit within 3.0x the floor (stretch 2.5x) and faster than async-lru;
the isr sync hit at most half the time of ``cachetools.cached(TTLCache)``.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Mapping
from typing import TypeVar, cast

import isr

from ._harness import (
    ARG,
    AsyncFn,
    Row,
    Samples,
    Section,
    Settings,
    SyncFn,
    interleave_async,
    interleave_sync,
    median,
    paired_ratio,
    progress,
)

__all__ = ["run"]

F = TypeVar("F")

#: What every contender returns: one pre-made object, so no contender pays for building it.
VALUE: dict[str, str] = {"slug": ARG, "title": "Hello"}
FLOOR = "floor"
ISR_HIT = "isr fresh hit"
ISR_LOOKUP = "isr lookup() hit"
ISR_METHOD = "isr method hit (obj.method)"
ISR_SITE = "isr call-site hit (rt.revalidating)"
ISR_SITE_SYNC = "isr call-site hit (rt.revalidating_sync)"
TARGET_FLOOR = 3.0
STRETCH_FLOOR = 2.5
TARGET_VS_CACHETOOLS = 0.5


# ---------------------------------------------------------------- async contenders


def _async_floor() -> AsyncFn:
    data = {ARG: VALUE}

    async def floor(k: str) -> dict[str, str]:
        return data[k]

    return floor


def _isr_async(rt: isr.ISR) -> isr.AsyncCached[[str], dict[str, str]]:
    @isr.with_revalidate("post:{slug}", ttl=60, swr=None, runtime=rt)
    async def get_post(slug: str) -> dict[str, str]:
        return VALUE

    return get_post


def _isr_async_method(rt: isr.ISR) -> AsyncFn:
    """A decorated method through an instance (``self`` bound on each access)."""

    class Posts:
        id = "p"

        @rt.with_revalidate("m:{self.id}:{slug}", ttl=60, swr=None)
        async def get(self, slug: str) -> dict[str, str]:
            return VALUE

    posts = Posts()

    async def call(slug: str) -> dict[str, str]:
        return await posts.get(slug)

    return call


async def _fetch_post() -> dict[str, str]:
    return VALUE


def _isr_async_site(rt: isr.ISR) -> AsyncFn:
    """The call-site form as written at a call site: the key made there, a fetcher passed."""

    async def call(slug: str) -> dict[str, str]:
        return await rt.revalidating(f"site:{slug}", 60, _fetch_post)

    return call


def _async_lru() -> AsyncFn:
    from async_lru import alru_cache

    @alru_cache(maxsize=1024, ttl=60)
    async def get_post(slug: str) -> dict[str, str]:
        return VALUE

    return cast(AsyncFn, get_post)


def _asyncache() -> AsyncFn:
    import cachetools
    from asyncache import cached

    async def get_post(slug: str) -> dict[str, str]:
        return VALUE

    return cast(AsyncFn, cached(cachetools.TTLCache(1024, 60))(get_post))


def _aiocache() -> AsyncFn:
    from aiocache import cached

    async def get_post(slug: str) -> dict[str, str]:
        return VALUE

    return cast(AsyncFn, cached(ttl=60)(get_post))


def _cashews() -> AsyncFn:
    from cashews import cache

    cache.setup("mem://")

    @cache(ttl="1m")
    async def get_post(slug: str) -> dict[str, str]:
        return VALUE

    return cast(AsyncFn, get_post)


ASYNC_PEERS: dict[str, Callable[[], AsyncFn]] = {
    "async-lru alru_cache(ttl=60)": _async_lru,
    "asyncache cached(TTLCache)": _asyncache,
    "aiocache cached(ttl=60)": _aiocache,
    "cashews cache(ttl='1m') mem://": _cashews,
}
ASYNC_LRU = "async-lru alru_cache(ttl=60)"


# ---------------------------------------------------------------- sync contenders


def _sync_floor() -> SyncFn:
    data = {ARG: VALUE}

    def floor(k: str) -> dict[str, str]:
        return data[k]

    return floor


def _isr_sync(rt: isr.ISR) -> isr.SyncCached[[str], dict[str, str]]:
    @isr.with_revalidate("post:{slug}", ttl=60, swr=None, runtime=rt)
    def get_post(slug: str) -> dict[str, str]:
        return VALUE

    return get_post


def _fetch_post_sync() -> dict[str, str]:
    return VALUE


def _isr_sync_site(rt: isr.ISR) -> SyncFn:
    def call(slug: str) -> dict[str, str]:
        return rt.revalidating_sync(f"site:{slug}", 60, _fetch_post_sync)

    return call


def _cachetools_ttl() -> SyncFn:
    import cachetools

    @cachetools.cached(cachetools.TTLCache(1024, 60))
    def get_post(slug: str) -> dict[str, str]:
        return VALUE

    return get_post


def _lru_cache() -> SyncFn:
    @functools.lru_cache(maxsize=1024)
    def get_post(slug: str) -> dict[str, str]:
        return VALUE

    return get_post


CACHETOOLS = "cachetools cached(TTLCache)"
SYNC_PEERS: dict[str, Callable[[], SyncFn]] = {
    CACHETOOLS: _cachetools_ttl,
    "functools lru_cache": _lru_cache,
}


# ---------------------------------------------------------------- helpers


def _made(factory: Callable[[], F]) -> F | None:
    """The peer's decorated function, or None when the peer is not installed."""
    try:
        return factory()
    except ImportError:
        return None


def _load_peers(factories: Mapping[str, Callable[[], F]]) -> tuple[dict[str, F], list[str]]:
    """The peers that import, and the names of those that do not."""
    made = {name: _made(factory) for name, factory in factories.items()}
    ok = {name: fn for name, fn in made.items() if fn is not None}
    return ok, [name for name, fn in made.items() if fn is None]


def _rows(
    samples: Samples,
    missing: list[str],
    targets: dict[str, tuple[str, bool, str]],
) -> list[Row]:
    """Median ns/call and ratio to the floor for every contender; ``targets`` adds a
    (target, passed, note) to some rows."""
    rows = []
    for name, times in samples.items():
        target, passed, note = targets.get(name, ("", None, ""))
        rows.append(
            Row(
                name,
                median(times) * 1e9,
                "ns/call",
                paired_ratio(samples, name, FLOOR),
                target,
                passed,
                note,
            )
        )
    rows.extend(Row(name, None, "ns/call", note="not installed") for name in missing)
    return rows


def _check_hits(rt: isr.ISR, what: str) -> None:
    """A figure is a fresh-hit figure only if the loader ran once, to fill the entry."""
    stats = rt.stats()
    if stats.loader_calls != 1 or stats.hits < 1:
        raise RuntimeError(f"{what}: expected fresh hits and one loader call, got {stats}")


# ---------------------------------------------------------------- sections


async def _asyncio_samples(settings: Settings) -> tuple[Samples, list[str], isr.ISR]:
    rt = isr.ISR("memory://")
    get_post = _isr_async(rt)
    peers, missing = _load_peers(ASYNC_PEERS)
    fns: dict[str, AsyncFn] = {FLOOR: _async_floor(), ISR_HIT: get_post}
    fns.update(peers)
    for name, fn in fns.items():  # fill every cache, and check every contender's answer
        if await fn(ARG) != VALUE or await fn(ARG) != VALUE:
            raise RuntimeError(f"{name} answered wrongly")
    if (await get_post.lookup(ARG)).status is not isr.Status.HIT:
        raise RuntimeError("the isr entry is not fresh")
    fns[ISR_LOOKUP] = get_post.lookup
    # The other spellings, on a runtime of their own (the figures' hit checks are per runtime).
    other = isr.ISR("memory://")
    fns[ISR_METHOD] = _isr_async_method(other)
    fns[ISR_SITE] = _isr_async_site(other)
    for name in (ISR_METHOD, ISR_SITE):
        if await fns[name](ARG) != VALUE or await fns[name](ARG) != VALUE:
            raise RuntimeError(f"{name} answered wrongly")
    return await interleave_async(fns, settings), missing, rt


async def _trio_samples(settings: Settings) -> tuple[Samples, isr.ISR]:
    rt = isr.ISR("memory://")
    get_post = _isr_async(rt)
    fns: dict[str, AsyncFn] = {
        FLOOR: _async_floor(),
        ISR_HIT: get_post,
        ISR_LOOKUP: get_post.lookup,
    }
    await get_post(ARG)
    return await interleave_async(fns, settings), rt


def async_section(settings: Settings) -> Section:
    progress("hot path: async fresh hit (asyncio)")
    samples, missing, rt = asyncio.run(_asyncio_samples(settings))
    _check_hits(rt, "isr on asyncio")
    ratio = paired_ratio(samples, ISR_HIT, FLOOR)
    targets: dict[str, tuple[str, bool, str]] = {
        ISR_HIT: (
            f"<= {TARGET_FLOOR}x floor",
            ratio <= TARGET_FLOOR,
            f"stretch <= {STRETCH_FLOOR}x: {'met' if ratio <= STRETCH_FLOOR else 'missed'}",
        )
    }
    if ASYNC_LRU in samples:
        vs = paired_ratio(samples, ISR_HIT, ASYNC_LRU)
        targets[ASYNC_LRU] = ("isr faster", vs < 1.0, f"isr = {vs:.2f}x this")
    return Section(
        "1. async fresh hit, asyncio (memory store, key 'post:{slug}')",
        "median per-round time over a bare coroutine doing a dict lookup, same loop",
        _rows(samples, missing, targets),
    )


def trio_section(settings: Settings) -> Section:
    title = "1b. async fresh hit on trio (informational)"
    baseline = "over the same bare coroutine, measured on trio"
    try:
        import trio
    except ImportError:
        return Section(title, baseline, [Row("trio", None, "ns/call", note="not installed")])
    progress("hot path: async fresh hit (trio)")
    samples, rt = trio.run(_trio_samples, settings)
    _check_hits(rt, "isr on trio")
    return Section(title, baseline, _rows(samples, [], {}))


def sync_section(settings: Settings) -> Section:
    progress("hot path: sync fresh hit")
    rt = isr.ISR("memory://")
    get_post = _isr_sync(rt)
    peers, missing = _load_peers(SYNC_PEERS)
    fns: dict[str, SyncFn] = {FLOOR: _sync_floor(), ISR_HIT: get_post}
    fns.update(peers)
    fns[ISR_SITE_SYNC] = _isr_sync_site(isr.ISR("memory://"))
    for name, fn in fns.items():
        if fn(ARG) != VALUE or fn(ARG) != VALUE:
            raise RuntimeError(f"{name} answered wrongly")
    samples = interleave_sync(fns, settings)
    _check_hits(rt, "isr sync")
    targets: dict[str, tuple[str, bool, str]] = {}
    if CACHETOOLS in samples:
        vs = paired_ratio(samples, ISR_HIT, CACHETOOLS)
        targets[CACHETOOLS] = (
            f"isr <= {TARGET_VS_CACHETOOLS}x this",
            vs <= TARGET_VS_CACHETOOLS,
            f"isr = {vs:.2f}x this",
        )
    return Section(
        "2. sync fresh hit (memory store, key 'post:{slug}')",
        "median per-round time over a bare function doing a dict lookup, same loop",
        _rows(samples, missing, targets),
    )


def run(settings: Settings) -> list[Section]:
    return [async_section(settings), trio_section(settings), sync_section(settings)]
