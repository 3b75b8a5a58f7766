"""Tag invalidation at scale: ``invalidate_tag`` over 1k, 10k and 100k entries carrying the
tag, on every store (memory, disk, Redis, Redis with an L1), issue 17.

A blog's "posts" tag is carried by every post page: a CMS webhook that expires it waits for
``invalidate_tag("posts")`` to return. The figure is that call's time (mode ``expire``,
through the runtime: what a webhook costs), the median of up to ``Settings.repeats`` calls,
fewer when they are slow (at most about a second of them). The ratio is to the same store's
1k figure: how the cost grows with the tag. Target: at most 50 ms at 100k, on every store.

The entries are written straight into the store, in its own layout, batched (one pipeline,
one transaction): through ``set``, filling 100k takes minutes on Redis, which is not what is
measured. After the fill the store must list every key under the tag, and after the first
invalidation a read of one of them must be a MISS (expired): a store whose layout changed
fails loudly instead of timing an empty call. A size whose time, scaled from the previous
size's, would pass `BUDGET` is not run (its row says what it would take).
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from time import perf_counter
from typing import Any

import anyio.to_thread

import isr
from isr._entry import Entry, Policy

from ._harness import Row, Section, Settings, median, progress

__all__ = ["run"]

TITLE = "13. tag invalidation at scale (invalidate_tag, mode expire, one tag on every entry)"
BASELINE = "the same store's time at 1k entries (how the cost grows with the tag)"
TAG = "posts"
SIZES = (1_000, 10_000, 100_000)
TARGET_MS = 50.0
#: Seconds one invalidation may be expected to take before its size is not run.
BUDGET = 5.0
#: Seconds of repeated invalidations per size, at most (beyond the first).
REPEAT_BUDGET = 1.0
POLICY = Policy(3600, None, 86400)  # unbounded: the stores set no expiry


def _entries(rt: isr.ISR, n: int) -> Iterator[tuple[str, Entry]]:
    created, gen = rt.clock(), rt.adapter.generation().current
    for i in range(n):
        yield f"post:{i}", Entry({"i": i, "title": f"Post {i}"}, created, POLICY, gen, (TAG,))


def _fill_memory(rt: isr.ISR, n: int) -> None:
    for key, entry in _entries(rt, n):
        rt.adapter.set(key, entry)


def _fill_disk(rt: isr.ISR, n: int) -> None:
    """What ``DiskAdapter.set`` writes for each entry, in one transaction of each database."""
    store: Any = rt.adapter
    tags = []
    with store._cache.transact():
        for key, entry in _entries(rt, n):
            name = store._e + key
            data = store.codec.dumps(name, entry)
            store._cache.set(name, data.decode() if store.codec.text else data)
            tags.append((store._tag_prefix + TAG, key))
    with store._db() as db:
        db.executemany("INSERT OR IGNORE INTO isr_tags (tag, key) VALUES (?, ?)", tags)


def _fill_redis(rt: isr.ISR, n: int) -> None:
    """What ``RedisAdapter.set`` writes for each entry, pipelined; with an L1, the entries
    are in the L1 too (as after every instance read them)."""
    import redis

    store: Any = rt.adapter
    l2 = getattr(store, "l2", store)
    entries = list(_entries(rt, n))
    with redis.Redis.from_url(l2.url) as client:
        for start in range(0, n, 5000):
            chunk = entries[start : start + 5000]
            pipe = client.pipeline(transaction=False)
            for key, entry in chunk:
                pipe.set(l2._e + key, l2.codec.dumps(l2._e + key, entry))
            pipe.sadd(l2._t + TAG, *(key for key, _ in chunk))
            pipe.execute()
    if store is not l2:
        for key, entry in entries:
            store.l1.set(key, entry)


@contextmanager
def _runtime(store: str, url: str) -> Iterator[tuple[isr.ISR, Callable[[isr.ISR, int], None]]]:
    """A fresh runtime on ``store`` (a new directory or namespace), and its filler; the
    caller closes the runtime."""
    if store == "memory":
        yield isr.ISR("memory://?max_entries=200000"), _fill_memory
    elif store == "disk":
        directory = tempfile.mkdtemp(prefix="isr-bench-tags-")
        try:
            yield isr.ISR(f"disk://{directory}/cache"), _fill_disk  # closed by its user
        finally:
            shutil.rmtree(directory, ignore_errors=True)
    else:
        namespace = f"bench-tags-{uuid.uuid4().hex[:8]}"
        l1: bool | int = 200_000 if store == "redis+L1" else False
        yield isr.ISR(url, namespace=namespace, l1=l1), _fill_redis


async def _measure(store: str, url: str, n: int, repeats: int) -> list[float]:
    """Seconds of ``invalidate_tag`` over ``n`` entries on ``store``, up to ``repeats`` times."""
    with _runtime(store, url) as (rt, fill):
        async with rt:
            assert await rt.wait_ready(10), f"{store} is not ready"

            @rt.with_revalidate("post:{i}", ttl=3600, tags=[TAG])
            async def post(i: int) -> dict[str, Any]:
                return {"i": i, "title": f"Post {i}"}

            await anyio.to_thread.run_sync(fill, rt, n)
            listed = await anyio.to_thread.run_sync(rt.adapter.tagged, TAG)
            if len(listed) != n:
                raise RuntimeError(f"{store}: {len(listed)} keys under the tag, not {n}")
            if (await post.lookup(n - 1)).status is not isr.Status.HIT:
                raise RuntimeError(f"{store}: the filled entries are not fresh hits")
            times: list[float] = []
            while len(times) < repeats and (len(times) < 1 or sum(times) < REPEAT_BUDGET):
                started = perf_counter()
                await rt.invalidate_tag(TAG, "expire")
                times.append(perf_counter() - started)
                if len(times) == 1 and (await post.lookup(0)).status is not isr.Status.MISS:
                    raise RuntimeError(f"{store}: an entry with the tag was still fresh")
    return times


async def _store_rows(store: str, url: str, sizes: tuple[int, ...], repeats: int) -> list[Row]:
    rows = []
    first: float | None = None
    last: tuple[int, float] | None = None
    for n in sizes:
        target, limit = ("", None) if n < 100_000 else (f"<= {TARGET_MS:g} ms", TARGET_MS)
        name = f"{store}: {n:,} entries"
        if last is not None and last[1] * n / last[0] > BUDGET:
            estimate = last[1] * n / last[0]
            note = f"not run: about {estimate:.0f} s, scaled from {last[0]:,}"
            rows.append(Row(name, None, "ms", None, target, None if limit is None else False, note))
            continue
        progress(f"tag scale: {name}")
        times = await _measure(store, url, n, repeats)
        ms = median(times) * 1e3
        first = ms if first is None else first
        passed = None if limit is None else ms <= limit
        note = f"median of {len(times)}"
        rows.append(Row(name, ms, "ms", ms / first, target, passed, note))
        last = (n, ms / 1e3)
    return rows


def run(settings: Settings) -> list[Section]:
    sizes = SIZES[:1] if settings.quick else SIZES
    repeats = 1 if settings.quick else settings.repeats
    stores = ["memory", "disk"]
    notes: list[Row] = []
    try:
        import redis  # noqa: F401

        from tests.redis_server import RedisServer

        server: RedisServer | None = RedisServer()
    except (ImportError, RuntimeError) as exc:
        server = None
        notes.append(Row("redis, redis+L1", None, "ms", note=str(exc).partition(":")[0]))
    rows: list[Row] = []
    if server is None:
        for store in stores:
            rows += asyncio.run(_store_rows(store, "", sizes, repeats))
        return [Section(TITLE, BASELINE, rows + notes)]
    with server:
        for store in [*stores, "redis", "redis+L1"]:
            rows += asyncio.run(_store_rows(store, server.url, sizes, repeats))
    return [Section(TITLE, BASELINE, rows)]
