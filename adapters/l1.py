"""A bounded memory L1 in front of Redis, kept coherent across instances by a pub/sub bus.

``isr.ISR("redis://…", l1=True)`` (or ``l1=50_000`` for the bound). Reads are served from
the L1 by the decorator's hot path, as from the memory store; what the L1 lacks or cannot
serve comes from Redis and is kept in the L1. Writes go to both. Every invalidation (key,
tag or everything, in every mode) is written to Redis as without an L1, then published on
the bus; the other instances drop what they hold for it, so their next read goes to Redis
and sees the mark. What a caller can expect:

- Propagation: an invalidation reaches the other instances' L1 within a pub/sub round trip
  (about a millisecond on a LAN; measured in ``benchmarks/l1.py``).
- Lost messages (a dropped subscription, a Redis restart, ``CLIENT KILL TYPE pubsub``): the
  bus notices from its epoch counter, immediately on reconnecting and otherwise within
  ``epoch_poll`` seconds (1 s by default), and drops the whole L1. That is the bound on how
  long an instance may serve a value invalidated elsewhere: seconds, never a TTL.
- Redis down: each instance keeps serving from its L1 (fresh values as HIT, stale ones as
  STALE while the origin is asked, old ones as STALE-IF-ERROR when it fails); invalidations
  made on an instance still apply to its own L1; fetch locks count as taken, so instances
  may each call the origin once per key. Once Redis is back, the bus resubscribes and the
  instance resyncs (drops its L1) since it cannot know what it missed.
"""

from __future__ import annotations

from typing import ClassVar

from isr._entry import Entry, Generation, Mode

from .base import Adapter
from .memory import MemoryAdapter
from .names import prefix
from .redis import RedisAdapter
from .redis_bus import Message, RedisBus

__all__ = ["L1Adapter"]


class L1Adapter(Adapter):
    """Memory L1 over a `RedisAdapter`, with a `RedisBus` between instances."""

    local: ClassVar[bool] = True  # the hot path serves from the L1 and checks ``gen``
    shared: ClassVar[bool] = True
    wall_clock: ClassVar[bool] = True

    def __init__(
        self, l2: RedisAdapter, max_entries: int = 10_000, *, epoch_poll: float = 1.0
    ) -> None:
        self.l2 = l2
        self.l1 = MemoryAdapter(max_entries)
        self.peek = self.l1.peek
        self.namespace = l2.namespace
        self._generation = l2.generation()
        self.gen = self._generation.current
        self.bus = RedisBus(
            l2.subscriber_client,
            prefix(l2.namespace),
            on_message=self._received,
            on_resync=self._resync,
            epoch_poll=epoch_poll,
        )

    # ------------------------------------------------------------------ coherence

    def _set_generation(self, generation: Generation) -> Generation:
        # Replace ``gen`` only when it changes: the hot path compares it by identity, and
        # an equal but new int (above 256, Python caches no ints) would miss every time.
        if generation != self._generation and generation.current >= self._generation.current:
            self._generation = generation
            self.gen = generation.current
        return self._generation

    def _received(self, message: Message) -> None:
        """Another instance's invalidation: drop what it touched (Redis holds the mark)."""
        if message.kind == "key":
            self.l1.delete(message.name)
        elif message.kind == "tag":
            for key in self.l1.tagged(message.name):
                self.l1.delete(key)
        elif message.kind == "all":
            self._set_generation(Generation(*map(int, message.name.split(","))))

    def _resync(self, why: str) -> None:
        self.l1.clear()
        self._set_generation(self.l2.fresh_generation())

    @property
    def errors(self) -> int:  # type: ignore[override]
        return self.l2.errors

    @property
    def evictions(self) -> int:  # type: ignore[override]
        return self.l1.evictions

    # ------------------------------------------------------------------ reads

    def _landed(self, key: str, entry: Entry | None, reached: bool) -> Entry | None:
        """What a read of ``key`` from Redis (``entry``; ``reached``: Redis's word on it,
        see `RedisAdapter.read`) leaves in the L1 and returns. ``reached`` is this read's
        own, not guessed from the store's error count, which other reads move too."""
        if entry is not None:
            if entry.gen == self.gen:
                entry.gen = self.gen  # the very object the hot path compares with ``is``
            self.l1.set(key, entry)
            return entry
        if not reached:
            return self.l1.get(key)  # Redis out of reach: what this instance holds
        self.l1.delete(key)  # gone from Redis (expired, evicted, purged): gone here too
        return None

    def get(self, key: str) -> Entry | None:
        return self._landed(key, *self.l2.read(key))

    async def aget(self, key: str) -> Entry | None:
        return self._landed(key, *await self.l2.aread(key))

    def generation(self) -> Generation:
        return self._generation  # kept current by the bus; never waits on the network

    async def ageneration(self) -> Generation:
        return self._set_generation(await self.l2.ageneration())

    def tagged(self, tag: str) -> list[str]:
        return sorted({*self.l2.tagged(tag), *self.l1.tagged(tag)})

    async def atagged(self, tag: str) -> list[str]:
        return sorted({*await self.l2.atagged(tag), *self.l1.tagged(tag)})

    def invalidated_since(self, key: str, tags: tuple[str, ...], since: float) -> Mode | None:
        return self.l2.invalidated_since(key, tags, since)

    async def ainvalidated_since(
        self, key: str, tags: tuple[str, ...], since: float
    ) -> Mode | None:
        return await self.l2.ainvalidated_since(key, tags, since)

    # ------------------------------------------------------------------ writes

    def set(self, key: str, entry: Entry) -> None:
        self.l2.set(key, entry)  # first: a CodecError must leave both untouched
        self.l1.set(key, entry)

    async def aset(self, key: str, entry: Entry) -> None:
        await self.l2.aset(key, entry)
        self.l1.set(key, entry)

    def delete(self, key: str) -> None:
        self.l2.delete(key)
        self.l1.delete(key)

    async def adelete(self, key: str) -> None:
        await self.l2.adelete(key)
        self.l1.delete(key)

    def untag(self, tag: str, keys: list[str]) -> None:
        self.l2.untag(tag, keys)

    async def auntag(self, tag: str, keys: list[str]) -> None:
        await self.l2.auntag(tag, keys)

    def bump_generation(self, mode: Mode) -> Generation:
        generation = self._set_generation(self.l2.bump_generation(mode))
        self._publish("all", mode.name.lower(), ",".join(map(str, generation)))
        return generation

    async def abump_generation(self, mode: Mode) -> Generation:
        generation = self._set_generation(await self.l2.abump_generation(mode))
        await self._apublish("all", mode.name.lower(), ",".join(map(str, generation)))
        return generation

    def note_invalidation(self, kind: str, name: str, mode: Mode, at: float, ttl: float) -> None:
        self.l2.note_invalidation(kind, name, mode, at, ttl)

    async def anote_invalidation(
        self, kind: str, name: str, mode: Mode, at: float, ttl: float
    ) -> None:
        await self.l2.anote_invalidation(kind, name, mode, at, ttl)

    def announce(self, kind: str, name: str, mode: Mode) -> None:
        self._publish(kind, mode.name.lower(), name)

    async def aannounce(self, kind: str, name: str, mode: Mode) -> None:
        await self._apublish(kind, mode.name.lower(), name)

    # The announcement goes through the store's own clients, breaker and timeouts: a Redis
    # that hangs costs it a command's timeout, one that is out of use nothing.
    def _publish(self, kind: str, mode: str, name: str) -> None:
        _, ok = self.l2._run(self.bus.publishing(kind, mode, name), None)
        if not ok:
            self.bus.unpublished(kind, name)

    async def _apublish(self, kind: str, mode: str, name: str) -> None:
        _, ok = await self.l2._arun(self.bus.publishing(kind, mode, name), None)
        if not ok:
            self.bus.unpublished(kind, name)

    def acquire(self, key: str, token: str, ttl: float) -> bool:
        return self.l2.acquire(key, token, ttl)

    async def aacquire(self, key: str, token: str, ttl: float) -> bool:
        return await self.l2.aacquire(key, token, ttl)

    def release(self, key: str, token: str) -> None:
        self.l2.release(key, token)

    async def arelease(self, key: str, token: str) -> None:
        await self.l2.arelease(key, token)

    def claim(self, name: str, ttl: float) -> bool | None:
        return self.l2.claim(name, ttl)

    async def aclaim(self, name: str, ttl: float) -> bool | None:
        return await self.l2.aclaim(name, ttl)

    def unclaim(self, name: str) -> None:
        self.l2.unclaim(name)

    async def aunclaim(self, name: str) -> None:
        await self.l2.aunclaim(name)

    def size(self) -> int:
        return self.l1.size()

    def counters(self) -> dict[str, int]:
        return {
            "l1_entries": self.l1.size(),
            "bus_received": self.bus.received,
            "bus_resyncs": self.bus.resyncs,
        }

    def ready(self, timeout: float) -> bool:
        return self.bus.connected.wait(timeout)

    def close(self) -> None:
        self.bus.close()
        self.l2.close()

    async def aclose(self) -> None:
        self.bus.close()
        await self.l2.aclose()
