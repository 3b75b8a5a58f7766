"""Fresh hits on the disk store (one host, several worker processes).

The floor is a raw diskcache ``get`` of the same small dict (diskcache pickles it), awaited
from a coroutine in the same loop as every contender: the least a disk-backed cache can do.
isr reads its JSON record through the same diskcache, decodes it and checks its windows;
cashews' ``disk://`` backend (also diskcache underneath) is measured beside it.

Target: the isr disk hit within 1.3x the raw diskcache get.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import cast

import diskcache

import isr

from ._harness import (
    ARG,
    AsyncFn,
    Row,
    Section,
    Settings,
    interleave_async,
    median,
    paired_ratio,
    progress,
)

__all__ = ["run"]

VALUE: dict[str, str] = {"slug": ARG, "title": "Hello", "body": "x" * 200}
FLOOR = "floor: raw diskcache get"
ISR_HIT = "isr disk hit"
CASHEWS = "cashews cache(ttl='1m') disk://"
TARGET = 1.3


async def _samples(directory: Path, settings: Settings) -> tuple[dict[str, list[float]], list[str]]:
    raw = diskcache.Cache(str(directory / "raw"))
    raw.set(f"post:{ARG}", VALUE)

    async def floor(k: str) -> object:
        return raw.get("post:" + k)

    rt = isr.ISR(f"disk://{directory / 'isr'}")

    @rt.with_revalidate("post:{slug}", ttl=600, swr=None)
    async def get_post(slug: str) -> dict[str, str]:
        return VALUE

    await get_post(ARG)
    fns: dict[str, AsyncFn] = {FLOOR: floor, ISR_HIT: get_post}
    missing: list[str] = []
    try:
        from cashews import cache

        cache.setup(f"disk://?directory={directory / 'cashews'}")

        @cache(ttl="1m")
        async def cashews_post(slug: str) -> dict[str, str]:
            return VALUE

        await cashews_post(ARG)
        fns[CASHEWS] = cast(AsyncFn, cashews_post)
    except ImportError:
        missing.append(CASHEWS)
    samples = await interleave_async(fns, settings)
    stats = rt.stats()
    if stats.loader_calls != 1:
        raise RuntimeError(f"the isr contender did not hit: {stats}")
    rt.close()
    raw.close()
    return samples, missing


def run(settings: Settings) -> list[Section]:
    progress("disk store: fresh hits")
    with tempfile.TemporaryDirectory(prefix="isr-bench-") as tmp:
        samples, missing = asyncio.run(_samples(Path(tmp), settings))
    ratio = paired_ratio(samples, ISR_HIT, FLOOR)
    rows = [Row(FLOOR, median(samples[FLOOR]) * 1e9, "ns/call", 1.0)]
    rows.append(
        Row(
            ISR_HIT,
            median(samples[ISR_HIT]) * 1e9,
            "ns/call",
            ratio,
            target=f"<= {TARGET}x floor",
            passed=ratio <= TARGET,
        )
    )
    if CASHEWS in samples:
        rows.append(
            Row(
                CASHEWS,
                median(samples[CASHEWS]) * 1e9,
                "ns/call",
                paired_ratio(samples, CASHEWS, FLOOR),
            )
        )
    rows.extend(Row(name, None, "ns/call", note="not installed") for name in missing)
    return [
        Section(
            "5. disk store fresh hit (diskcache, JSON records)",
            "median per-round time over a raw diskcache get of the same value, same loop",
            rows,
        )
    ]
