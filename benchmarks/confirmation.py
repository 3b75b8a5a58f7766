"""How long a confirmation takes: every instance's L1 applied an invalidation, and said so.

N runtimes (3, then 20) in this process, each with its own L1 and its own bus (a thread with
its own subscription and connections, as a separate process would have: the messages and
acknowledgements really travel through a loopback redis-server), registered in the store's
registry. Each round, instance ``a`` invalidates a key (mode ``expire``, what a publish
webhook does) and then calls ``await a.confirm(timeout=1.0)``, which waits until the N - 1
others have acknowledged the invalidation's epoch (``a`` confirms itself); the figure is
the time ``confirm`` took (its own ``ms``). A round whose confirmation is not complete fails
the benchmark.

What it includes: the bus message's delivery to N - 1 bus threads, each dropping the key
from its L1 and sending its acknowledgement (one script: the registry's field, then a
publish on the ack channel), and those N - 1 acknowledgements reaching ``a``'s bus thread,
which ``confirm`` polls every 0.5 ms. The threads share one GIL here, which separate
processes would not: with 20 instances, a round moves 20 x 20 acknowledgement messages
through this one interpreter, so the figures are an upper bound for 20 real processes.

Target: p99 within 20 ms with 20 instances.
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from statistics import quantiles

import isr
from isr.adapters.l1 import L1Adapter

from ._harness import Row, Section, Settings, progress

__all__ = ["run"]

TITLE = "14. confirmation (N runtimes with their own L1 and bus, one loopback redis-server)"
BASELINE = "none: milliseconds `confirm` took after `invalidate` returned"
TARGET_P99_MS = 20.0
SIZES = (3, 20)


async def _rounds(url: str, size: int, rounds: int) -> list[float]:
    ns = f"bench-confirm-{uuid.uuid4().hex[:8]}"
    runtimes = [isr.ISR(url, namespace=ns, l1=True) for _ in range(size)]
    try:
        for rt in runtimes:
            if not await rt.wait_ready(10):
                raise RuntimeError("a runtime was not ready within 10 s")
        a = runtimes[0]
        expected = sorted(rt.instance_id for rt in runtimes)
        if [i.id for i in await a.instances()] != expected:
            raise RuntimeError("the instances do not all list each other")
        assert all(isinstance(rt.adapter, L1Adapter) for rt in runtimes)
        times: list[float] = []
        for n in range(rounds + 3):  # the first rounds warm the connections up
            await a.invalidate(f"page:{n}")
            done = await a.confirm(timeout=1.0)
            if not done.complete or len(done.confirmed) != size:
                raise RuntimeError(f"round {n}: {done}")
            if n >= 3:
                times.append(done.ms)
        return times
    finally:
        for rt in runtimes:
            await rt.aclose()


def _rows(size: int, times: list[float]) -> list[Row]:
    cuts = quantiles(times, n=100, method="inclusive")
    figures = {"p50": cuts[49], "p99": cuts[98], "max": max(times)}
    rows = []
    for name, value in figures.items():
        target, passed, note = "", None, ""
        if name == "p99" and size == max(SIZES):
            target = f"<= {TARGET_P99_MS:g} ms"
            passed = value <= TARGET_P99_MS
        if name == "p50":
            note = f"{len(times)} rounds, every one complete"
        rows.append(Row(f"{size} instances: {name}", value, "ms", None, target, passed, note))
    return rows


def run(settings: Settings) -> list[Section]:
    if shutil.which("redis-server") is None:
        return [Section(TITLE, BASELINE, [Row("redis", None, "ms", note="no redis-server")])]
    try:
        import redis  # noqa: F401
    except ImportError:
        return [Section(TITLE, BASELINE, [Row("redis", None, "ms", note="no redis-py")])]
    from tests.redis_server import RedisServer

    rounds = 30 if settings.quick else 300
    rows: list[Row] = []
    with RedisServer() as server:
        for size in SIZES:
            progress(f"confirmation: {size} instances, {rounds} rounds")
            rows += _rows(size, asyncio.run(_rounds(server.url, size, rounds)))
    return [Section(TITLE, BASELINE, rows)]
