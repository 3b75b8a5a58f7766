"""Load on ``redis://``: a burst of readers on a cold process, and a cold fill, each against
raw ``redis.asyncio`` doing the same work in the same run (issue 17).

(a) Burst: the values of 100 keys sit in Redis; a fresh runtime (no connection yet, the
default 0.25 s timeouts, no L1: a process that just started) gets 1000 concurrent callers
over those keys, 10 a key, all started at once. The peer: a fresh ``redis.asyncio`` client
on a ``BlockingConnectionPool`` of 50 connections (a sensible pool: callers wait for a
connection rather than fail) doing the same 1000 GETs and ``json.loads``. Figures: isr's
throughput (callers answered per second, from the first call to the last answer), its ratio
to the peer's in the same round (median over rounds), and, over all rounds, the store
errors, the breaker trips and the origin calls isr made (every value is in Redis: any is
extra). Targets: 0 / 0 / 0, and at least the peer's throughput (aim 2x: concurrent reads of
one key can share one round trip).

(b) Cold fill: N keys nobody has read yet, filled by 500 concurrent callers through isr (a
loader that answers at once) against the peer doing a GET that misses and a SET of the same
JSON value per key, same concurrency. Figure: misses per second; target at least half the
peer's rate.

Breaker trips are counted from the ``isr`` logger's "not using it" records (the breaker's
own announcement that it opened).
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from time import perf_counter
from typing import Any

import isr

from ._harness import Row, Section, Settings, median, progress

__all__ = ["run"]

BURST_TITLE = "11. burst on a cold process (redis://, no L1, default timeouts, loopback)"
BURST_BASELINE = "isr's throughput over raw redis.asyncio's in the same round (higher is better)"
FILL_TITLE = "12. cold fill (redis://, loader answers at once, loopback)"
FILL_BASELINE = "isr's misses/s over raw redis.asyncio's GET-miss + SET, same round"
CALLERS = 1000
KEYS = 100
POOL = 50
FILL_CONCURRENCY = 500
BURST_TARGET = 1.0
FILL_TARGET = 0.5


def value(n: int) -> dict[str, Any]:
    """What the origin answers for key ``n``: a small JSON document."""
    return {"n": n, "title": f"Post {n}", "body": "lorem ipsum " * 20}


class BreakerTrips(logging.Handler):
    """Counts the breaker's "not using it" records on the ``isr`` logger."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "not using it" in record.getMessage():
            self.count += 1


@dataclass
class Outcome:
    """One round of one contender."""

    seconds: float
    errors: int = 0
    trips: int = 0
    origin_calls: int = 0


def _raw_client(url: str) -> Any:
    import redis.asyncio as aredis

    pool = aredis.BlockingConnectionPool.from_url(url, max_connections=POOL, timeout=5)
    return aredis.Redis(connection_pool=pool)


async def _close_raw(client: Any) -> None:
    await client.aclose()
    await client.connection_pool.aclose()


async def _isr(url: str, namespace: str, work: list[int]) -> Outcome:
    """``work`` (key numbers) asked of a fresh runtime, ``FILL_CONCURRENCY`` at a time at
    most (all at once when they are fewer)."""
    logger = logging.getLogger("isr")
    trips = BreakerTrips()
    logger.addHandler(trips)
    calls = 0
    try:
        async with isr.ISR(url, namespace=namespace) as rt:

            @isr.with_revalidate("item:{n}", ttl=3600, runtime=rt)
            async def item(n: int) -> dict[str, Any]:
                nonlocal calls
                calls += 1
                return value(n)

            todo = iter(work)

            async def caller() -> None:
                for n in todo:
                    if await item(n) != value(n):
                        raise RuntimeError(f"isr answered wrongly for item {n}")

            started = perf_counter()
            await asyncio.gather(*(caller() for _ in range(min(len(work), FILL_CONCURRENCY))))
            seconds = perf_counter() - started
            errors = rt.stats().store_errors
    finally:
        logger.removeHandler(trips)
    return Outcome(seconds, errors, trips.count, calls)


async def _raw(url: str, prefix: str, work: list[int], fill: bool) -> Outcome:
    """The peer: GET (and, for ``fill``, SET on a miss) of ``work`` on a fresh client."""
    from redis import RedisError

    client = _raw_client(url)
    errors = 0
    todo = iter(work)

    async def one(n: int) -> None:
        nonlocal errors
        try:
            data = await client.get(f"{prefix}{n}")
            if data is None and fill:
                await client.set(f"{prefix}{n}", json.dumps(value(n)), ex=3600)
            elif data is None or json.loads(data) != value(n):
                raise RuntimeError(f"raw client: item {n} missing or wrong")
        except (RedisError, OSError):
            errors += 1

    async def caller() -> None:
        for n in todo:
            await one(n)

    try:
        started = perf_counter()
        await asyncio.gather(*(caller() for _ in range(min(len(work), FILL_CONCURRENCY))))
        seconds = perf_counter() - started
    finally:
        await _close_raw(client)
    return Outcome(seconds, errors)


async def _prefill(url: str, namespace: str, prefix: str) -> None:
    """The burst's values in Redis: through isr for its namespace, raw for the peer's."""
    async with isr.ISR(url, namespace=namespace) as rt:

        @isr.with_revalidate("item:{n}", ttl=3600, runtime=rt)
        async def item(n: int) -> dict[str, Any]:
            return value(n)

        for n in range(KEYS):
            await item(n)
        if rt.stats().store_errors:
            raise RuntimeError("the burst's values could not be stored")
    client = _raw_client(url)
    try:
        for n in range(KEYS):
            await client.set(f"{prefix}{n}", json.dumps(value(n)), ex=3600)
    finally:
        await _close_raw(client)


async def _paired(
    first_isr: bool, mine: Callable[[], Awaitable[Outcome]], raw: Callable[[], Awaitable[Outcome]]
) -> tuple[Outcome, Outcome]:
    """One round: both contenders, the one to go first alternating from round to round."""
    if first_isr:
        done = await mine()
        return done, await raw()
    other = await raw()
    return await mine(), other


async def _burst(url: str, rounds: int) -> list[tuple[Outcome, Outcome]]:
    namespace = f"bench-burst-{uuid.uuid4().hex[:8]}"
    prefix = f"{namespace}:raw:"
    await _prefill(url, namespace, prefix)
    work = [i % KEYS for i in range(CALLERS)]
    return [
        await _paired(
            r % 2 == 0,
            lambda: _isr(url, namespace, work),
            lambda: _raw(url, prefix, work, fill=False),
        )
        for r in range(rounds)
    ]


async def _fill(url: str, rounds: int, keys: int) -> list[tuple[Outcome, Outcome]]:
    work = list(range(keys))
    pairs = []
    for r in range(rounds):
        namespace = f"bench-fill-{uuid.uuid4().hex[:8]}"
        pairs.append(
            await _paired(
                r % 2 == 0,
                lambda: _isr(url, namespace, work),  # noqa: B023 - awaited in this iteration
                lambda: _raw(url, f"{namespace}:raw:", work, fill=True),  # noqa: B023
            )
        )
    return pairs


def _rates(
    pairs: list[tuple[Outcome, Outcome]],
    work: int,
    unit: str,
    names: tuple[str, str],
    target: tuple[float, str],
    notes: tuple[str, str],
) -> list[Row]:
    """isr's rate and the peer's (``work`` per second, medians over the rounds), isr's
    ratio to the peer being the median of the per-round ratios."""
    ratio = median([raw.seconds / mine.seconds for mine, raw in pairs])
    least, label = target
    return [
        Row(
            names[0],
            round(median([work / mine.seconds for mine, _ in pairs])),
            unit,
            ratio,
            target=label,
            passed=ratio >= least,
            note=notes[0],
        ),
        Row(
            names[1],
            round(median([work / raw.seconds for _, raw in pairs])),
            unit,
            1.0,
            note=notes[1],
        ),
    ]


def _burst_rows(pairs: list[tuple[Outcome, Outcome]]) -> list[Row]:
    mine = [m for m, _ in pairs]
    errors = sum(m.errors for m in mine)
    trips = sum(m.trips for m in mine)
    extra = sum(m.origin_calls for m in mine)
    reps = f"{len(pairs)} rounds"
    return [
        *_rates(
            pairs,
            CALLERS,
            "calls/s",
            (f"isr: {CALLERS} callers over {KEYS} keys", f"raw redis.asyncio, pool of {POOL}"),
            (BURST_TARGET, f">= {BURST_TARGET:g}x raw (aim 2x)"),
            (
                f"median of {reps}; first call to last answer, connections included",
                f"GET + json.loads; errors {sum(r.errors for _, r in pairs)}",
            ),
        ),
        Row("    isr store errors", errors, "", target="0", passed=errors == 0, note=reps),
        Row("    isr breaker trips", trips, "", target="0", passed=trips == 0, note=reps),
        Row(
            "    isr extra origin calls",
            extra,
            "",
            target="0",
            passed=extra == 0,
            note="every value is in Redis",
        ),
    ]


def _fill_rows(pairs: list[tuple[Outcome, Outcome]], keys: int) -> list[Row]:
    mine = [m for m, _ in pairs]
    extra = sum(m.origin_calls - keys for m in mine)
    return _rates(
        pairs,
        keys,
        "misses/s",
        (f"isr: {keys} cold keys, {FILL_CONCURRENCY} callers", "raw redis.asyncio GET-miss + SET"),
        (FILL_TARGET, f">= {FILL_TARGET:g}x raw"),
        (
            f"median of {len(pairs)} rounds; store errors {sum(m.errors for m in mine)}, "
            f"breaker trips {sum(m.trips for m in mine)}, extra origin calls {extra}",
            f"pool of {POOL}; errors {sum(r.errors for _, r in pairs)}",
        ),
    )


def run(settings: Settings) -> list[Section]:
    try:
        import redis  # noqa: F401
    except ImportError:
        return [
            Section(BURST_TITLE, BURST_BASELINE, [Row("redis", None, "", note="no redis-py")]),
            Section(FILL_TITLE, FILL_BASELINE, [Row("redis", None, "", note="no redis-py")]),
        ]
    from tests.redis_server import RedisServer

    rounds = 1 if settings.quick else min(settings.repeats, 5)
    keys = 300 if settings.quick else 1000
    with RedisServer() as server:
        progress("redis load: a burst on a cold process")
        burst = asyncio.run(_burst(server.url, rounds))
        progress("redis load: a cold fill")
        fill = asyncio.run(_fill(server.url, 1 if settings.quick else 5, keys))
    return [
        Section(BURST_TITLE, BURST_BASELINE, _burst_rows(burst)),
        Section(FILL_TITLE, FILL_BASELINE, _fill_rows(fill, keys)),
    ]
