"""A fresh hit from Redis: what a cached call costs when the answer sits in a shared store.

Every contender reads one small JSON value over a real loopback connection to a
redis-server the benchmark starts on a free port (with `tests.redis_server.RedisServer`,
the tests' own; without redis-server installed the section says so instead), then the same
on a valkey-server (the one the tests use; section 6b). The floor is
the least any Redis cache can do: redis-py's asyncio client doing one GET and ``json.loads``
of the bytes, in the same loop and rounds as every contender. The ratio to it is the price
of the cache itself: building the key, decoding the entry's record (value and windows),
judging its freshness. Peers: cashews and aiocache on the same server.

Target: the isr Redis hit within 1.1x the floor.

A loopback round trip varies far more from one moment to the next than an in-process call
(the scheduler, the server's own loop): this section takes three times the rounds of the
others, so that the median ratio says the cost of the cache rather than the moment's noise.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, cast

import isr

from ._harness import (
    ARG,
    AsyncFn,
    Row,
    Samples,
    Section,
    Settings,
    interleave_async,
    median,
    paired_ratio,
    progress,
)

__all__ = ["run"]

TITLES = {
    "redis": "6. fresh hit from Redis (asyncio, loopback redis-server)",
    "valkey": "6b. fresh hit from Valkey (asyncio, loopback valkey-server, same client)",
}
BASELINE = "median per-round time over redis.asyncio GET + json.loads of the same value"
VALUE: dict[str, str] = {"slug": ARG, "title": "Hello"}
FLOOR = "floor: redis.asyncio GET + json.loads"
ISR_HIT = "isr redis:// fresh hit"
TARGET = 1.1
#: This section's rounds, as a multiple of the settings' (see the module docstring).
ROUNDS = 3

#: A peer's decorated function, and how to release its connections afterwards.
Peer = tuple[AsyncFn, Callable[[], Awaitable[object]]]


async def _floor(url: str, ns: str) -> Peer:
    import redis.asyncio as aredis

    client = aredis.Redis.from_url(url)
    prefix = f"{ns}:raw:"
    await client.set(prefix + ARG, json.dumps(VALUE))

    async def floor(k: str) -> Any:
        data = await client.get(prefix + k)
        assert data is not None
        return json.loads(data)

    return floor, client.aclose


def _cashews(url: str, ns: str) -> Peer:
    from cashews import Cache

    cache = Cache()
    cache.setup(url)

    @cache(ttl="1m")
    async def get_post(slug: str) -> dict[str, str]:
        return VALUE

    return cast(AsyncFn, get_post), cache.close


def _aiocache(url: str, ns: str) -> Peer:
    from aiocache import Cache, cached

    host, port = url.split("//")[1].split("/")[0].split(":")
    decorator = cached(
        ttl=60,
        cache=Cache.REDIS,
        endpoint=host,
        port=int(port),
        namespace=f"{ns}:aiocache",
    )  # RedisCache's default serializer is JSON, as isr's default codec

    async def get_post(slug: str) -> dict[str, str]:
        return VALUE

    fn = decorator(get_post)

    async def close() -> None:
        if decorator.cache is not None:
            await decorator.cache.close()

    return cast(AsyncFn, fn), close


PEERS: dict[str, Callable[[str, str], Peer]] = {
    "cashews cache(ttl='1m') redis://": _cashews,
    "aiocache cached(Cache.REDIS)": _aiocache,
}


async def _samples(url: str, settings: Settings) -> tuple[Samples, list[str]]:
    ns = f"bench-{uuid.uuid4().hex[:8]}"
    floor, close_floor = await _floor(url, ns)
    closers = [close_floor]
    async with isr.ISR(url, namespace=f"{ns}:isr") as rt:

        @isr.with_revalidate("post:{slug}", ttl=60, swr=None, runtime=rt)
        async def get_post(slug: str) -> dict[str, str]:
            return VALUE

        fns: dict[str, AsyncFn] = {FLOOR: floor, ISR_HIT: get_post}
        missing: list[str] = []
        for name, factory in PEERS.items():
            try:
                fn, close = factory(url, ns)
            except ImportError:
                missing.append(name)
                continue
            fns[name] = fn
            closers.append(close)
        try:
            for name, fn in fns.items():  # fill every cache, and check every answer
                if await fn(ARG) != VALUE or await fn(ARG) != VALUE:
                    raise RuntimeError(f"{name} answered wrongly")
            if (await get_post.lookup(ARG)).status is not isr.Status.HIT:
                raise RuntimeError("the isr entry is not a fresh hit from Redis")
            rounds = dataclasses.replace(settings, rounds=settings.rounds * ROUNDS)
            samples = await interleave_async(fns, rounds)
            stats = rt.stats()
            if stats.loader_calls != 1 or stats.store_errors:
                raise RuntimeError(f"isr on Redis: expected hits and one loader call, got {stats}")
        finally:
            for close in closers:
                await close()
    return samples, missing


def run(settings: Settings) -> list[Section]:
    title = TITLES["redis"]
    try:
        import redis  # noqa: F401
    except ImportError:
        return [Section(title, BASELINE, [Row("redis", None, "ns/call", note="no redis-py")])]
    from tests.redis_server import FLAVOURS, RedisServer

    sections = []
    for flavour in FLAVOURS:
        progress(f"{flavour} store: fresh hit over loopback")
        try:
            server = RedisServer(flavour)
        except RuntimeError as exc:  # no valkey-server: say so, measure the rest
            row = Row(flavour, None, "ns/call", note=str(exc).partition(":")[0])
            sections.append(Section(TITLES[flavour], BASELINE, [row]))
            continue
        with server:
            samples, missing = asyncio.run(_samples(server.url, settings))
        sections.append(Section(TITLES[flavour], BASELINE, _rows(samples, missing)))
    return sections


def _rows(samples: Samples, missing: list[str]) -> list[Row]:
    rows = []
    for name, times in samples.items():
        ratio = paired_ratio(samples, name, FLOOR)
        target, passed = ("", None) if name != ISR_HIT else (f"<= {TARGET}x floor", ratio <= TARGET)
        rows.append(Row(name, median(times) * 1e9, "ns/call", ratio, target, passed))
    rows.extend(Row(name, None, "ns/call", note="not available") for name in missing)
    return rows
