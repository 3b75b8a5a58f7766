"""A walk through isr-runtime on the memory store: HIT, STALE, MISS, stale-if-error, invalidation.

A small in-process "CMS" plays the origin. The runtime gets a clock the demo can move
forward, so the windows (ttl 60 s, swr unbounded, stale-if-error 1 h) pass in an instant;
everything else (the background refresh, the coalescing, the fallbacks) is real.

    python examples/demo.py
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time

import isr


class CMS:
    """The origin: posts that editors change, an outage switch, and a call counter."""

    def __init__(self) -> None:
        self.posts = {"hello": "Hello, world (v1)", "about": "About us (v1)"}
        self.down = False
        self.calls = 0

    async def fetch(self, slug: str) -> str:
        self.calls += 1
        await asyncio.sleep(0.02)  # a slow origin
        if self.down:
            raise ConnectionError("CMS unreachable")
        if slug not in self.posts:
            raise LookupError(f"no post {slug!r}")
        return self.posts[slug]


class DemoClock:
    """Monotonic time plus however far the demo has fast-forwarded."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset

    def forward(self, seconds: float) -> None:
        self.offset += seconds
        print(f"\n   ... {seconds:g} s later ...")


class OneLine(logging.Formatter):
    """The runtime logs origin failures with their traceback; one line is enough here."""

    def format(self, record: logging.LogRecord) -> str:
        return f"   [log isr] {record.getMessage()}"


handler = logging.StreamHandler(sys.stdout)
handler.setFormatter(OneLine())
logging.getLogger("isr").addHandler(handler)

cms = CMS()
clock = DemoClock()
runtime = isr.configure("memory://", clock=clock)


@isr.with_revalidate("post:{slug}", ttl=60, swr=None, stale_if_error=3600, tags=["posts"])
async def get_post(slug: str) -> str:
    return await cms.fetch(slug)


async def show(step: str, slug: str = "hello") -> isr.Result[str] | None:
    try:
        r = await get_post.lookup(slug)
    except Exception as exc:
        print(f"{step:<50} raised {type(exc).__name__}: {exc}")
        return None
    status = r.status.value
    print(f"{step:<50} {status:<15} age {r.age:4.1f} s  {r.value!r:<22} origin calls: {cms.calls}")
    return r


async def main() -> None:
    print("isr-runtime demo: memory store, ttl=60 s, swr=unbounded, stale_if_error=1 h\n")

    print("1. A cold key: 100 concurrent readers, one origin call")
    results = await asyncio.gather(*(get_post.lookup("hello") for _ in range(100)))
    print(f"   statuses: {sorted({r.status.value for r in results})}, origin calls: {cms.calls}")
    await show("2. Read again (fresh)")

    clock.forward(61)
    cms.posts["hello"] = "Hello, world (v2)"
    await show("3. Past ttl: the old page at once, one refresh")
    await runtime.drain()
    await show("4. After the background refresh")

    print("\n5. An editor publishes; the app invalidates the key (mode 'expire')")
    cms.posts["hello"] = "Hello, world (v3)"
    await isr.invalidate("post:hello")
    await show("   next read fetches the new version")

    print("\n6. The CMS goes down")
    cms.down = True
    clock.forward(61)
    await show("   past ttl: stale at once, the refresh fails")
    await runtime.drain()
    await isr.invalidate("post:hello")  # force a fetch
    await show("   expired, origin down: the old value, not a 5xx")

    print("\n7. The post is unpublished (mode 'purge'): never served again")
    await isr.invalidate("post:hello", mode="purge")
    await show("   origin still down: the error reaches the caller")

    print("\n8. The CMS is back; a whole section is revalidated by tag")
    cms.down = False
    await show("   'about' is fetched", "about")
    cms.posts["about"] = "About us (v2)"
    n = await isr.invalidate_tag("posts", mode="revalidate")
    print(
        f"   invalidate_tag('posts', mode='revalidate') marked {n} entr{'y' if n == 1 else 'ies'}"
    )
    await show("   stale at once while it refreshes", "about")
    await runtime.drain()
    await show("   then fresh", "about")

    s = runtime.stats()
    print(
        f"\nstats: hits={s.hits} stale={s.stale} misses={s.misses} "
        f"stale_if_error={s.stale_if_error} errors={s.errors} loader_calls={s.loader_calls} "
        f"coalesced={s.coalesced} refreshes={s.refreshes} refresh_failures={s.refresh_failures}"
    )
    await runtime.aclose()


if __name__ == "__main__":
    asyncio.run(main())
