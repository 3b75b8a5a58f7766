"""Memory: bytes of bookkeeping an entry costs beyond its key and its value.

The keys and the values are made before tracing starts and are shared by every contender, so
``tracemalloc`` sees only what a store allocates to hold them: its dict slots, its per-entry
objects (for isr an ``Entry`` and its two timestamps; for cachetools' TTLCache a link object
and an ordering dict), its eviction order. Each store is made empty before tracing too, and
nothing is subtracted afterwards: the figure is traced bytes after filling, over the count.

isr is filled through its public path: a sync function decorated with the key template
``"{key}"`` (an f-string over a str returns that very str, so no key is copied) is called once
per key, its loader returning the pre-made value. The floor is a plain dict holding the same
keys and values: the least any store keyed by string can spend. Target: isr at most 200 bytes
an entry (cachetools' TTLCache spends about 218).
"""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable

import cachetools

import isr
from isr.adapters.memory import MemoryAdapter

from ._harness import Row, Section, Settings, progress

__all__ = ["run"]

TARGET_BYTES = 200
Filler = Callable[[], None]


def _bytes_per_entry(fill: Filler, n: int) -> float:
    """Traced bytes that ``fill()`` leaves allocated, over ``n``."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        fill()
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    return (after - before) / n


def run(settings: Settings) -> list[Section]:
    progress("memory: bytes per entry")
    n = settings.entries
    keys = [f"post:{i}" for i in range(n)]
    values = [f"value {i}" for i in range(n)]
    value_of = dict(zip(keys, values, strict=True))

    plain: dict[str, str] = {}

    def fill_dict() -> None:
        plain.update(zip(keys, values, strict=True))

    rt = isr.ISR(MemoryAdapter(n))

    @isr.with_revalidate("{key}", ttl=60, runtime=rt)
    def load(key: str) -> str:
        return value_of[key]

    def fill_isr() -> None:
        for k in keys:
            load(k)

    ttl_cache: cachetools.TTLCache[str, str] = cachetools.TTLCache(n, 60)
    lru_cache: cachetools.LRUCache[str, str] = cachetools.LRUCache(n)

    def filler(cache: cachetools.Cache[str, str]) -> Filler:
        def fill() -> None:
            for k, v in zip(keys, values, strict=True):
                cache[k] = v

        return fill

    measured = {
        "floor: plain dict": _bytes_per_entry(fill_dict, n),
        "isr MemoryAdapter (public path)": _bytes_per_entry(fill_isr, n),
        "cachetools TTLCache": _bytes_per_entry(filler(ttl_cache), n),
        "cachetools LRUCache": _bytes_per_entry(filler(lru_cache), n),
    }
    stats = rt.stats()
    if stats.entries != n or stats.loader_calls != n or stats.evictions:
        raise RuntimeError(f"isr did not keep every entry: {stats}")
    if len(plain) != n or len(ttl_cache) != n or len(lru_cache) != n:
        raise RuntimeError("a store did not keep every entry")
    floor = measured["floor: plain dict"]
    rows = []
    for name, per_entry in measured.items():
        is_isr = name.startswith("isr")
        rows.append(
            Row(
                name,
                per_entry,
                "B/entry",
                per_entry / floor,
                target=f"<= {TARGET_BYTES} B" if is_isr else "",
                passed=per_entry <= TARGET_BYTES if is_isr else None,
            )
        )
    rt.close()
    return [
        Section(
            f"4. memory per entry ({n:,} entries, tracemalloc; keys and values not counted)",
            "over a plain dict holding the same keys and values",
            rows,
        )
    ]
