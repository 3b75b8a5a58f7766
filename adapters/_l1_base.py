"""The L1 store's state and coherence: everything of `isr.adapters.l1.L1Adapter` but the
store operations, which are written once in ``isr/adapters/_async/l1.py`` and generated for
sync code in ``isr/adapters/_sync/l1.py``."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import ClassVar

from isr._entry import Entry, Generation, Mode

from .base import Adapter, renewed
from .memory import MemoryAdapter
from .names import prefix
from .redis import RedisAdapter
from .redis_bus import Message, RedisBus

__all__ = ["L1Base"]

#: The ``gen`` of an L1 whose bus is not subscribed: no entry carries it, so the hot path
#: serves nothing from the L1 (see `L1Base._unsubscribed`).
_UNCHECKED = -1


class L1Base(Adapter):
    """Memory L1 over a `RedisAdapter`, with a `RedisBus` between instances."""

    local: ClassVar[bool] = True  # the hot path serves from the L1 and checks ``gen``
    shared: ClassVar[bool] = True
    wall_clock: ClassVar[bool] = True
    asyncio_only: ClassVar[bool] = True  # awaits the Redis store's asyncio operations

    def __init__(
        self, l2: RedisAdapter, max_entries: int = 10_000, *, epoch_poll: float = 1.0
    ) -> None:
        self.l2 = l2
        self.l1 = MemoryAdapter(max_entries)
        self.peek = self.l1.peek
        self.namespace = l2.namespace
        self._generation = l2.generation()
        # Unchecked until the bus first subscribes (then a resync makes it coherent).
        self.coherent = False
        self.gen = _UNCHECKED
        self.bus = RedisBus(
            l2.subscriber_client,
            prefix(l2.namespace),
            on_message=self._received,
            on_resync=self._resync,
            on_lost=self._unsubscribed,
            epoch_poll=epoch_poll,
            sender=l2.sender,
            on_ask=self._holds,
        )

    # ------------------------------------------------------------------ coherence

    def _set_generation(self, generation: Generation) -> Generation:
        # Replace ``gen`` only when it changes: the hot path compares it by identity, and
        # an equal but new int (above 256, Python caches no ints) would miss every time.
        if generation != self._generation and generation.current >= self._generation.current:
            self._generation = generation
            if self.coherent:
                self.gen = generation.current
        return self._generation

    def _unsubscribed(self) -> None:
        """The bus lost its subscription: whatever is published meanwhile is not heard, so
        nothing is served from the L1 unchecked until it resubscribes and resyncs: the hot
        path misses (no entry carries this ``gen``), and reads ask Redis (or, if Redis
        cannot answer, fall back to the L1's copy, as during an outage)."""
        self.coherent = False
        self.gen = _UNCHECKED

    def _received(self, message: Message) -> None:
        """Another instance's invalidation: drop what it touched (Redis holds the mark)."""
        if message.kind == "key":
            self.l1.delete(message.name)
        elif message.kind == "tag":
            self._tag_invalidated(message.name, Mode.PURGE)  # Redis holds the mark itself
        elif message.kind == "all":
            self._set_generation(Generation(*map(int, message.name.split(","))))

    def _resync(self, why: str) -> None:
        self.l1.clear()
        self._set_generation(self.l2.fresh_generation())
        self.coherent = True
        self.gen = self._generation.current

    def _holds(self, key: str) -> bool:
        """Whether the L1 holds a copy of ``key`` (asked by another instance's explain;
        looked at, not touched)."""
        return self.l1.peek(key) is not None

    def holders(self, key: str, ids: Sequence[str], within: float) -> dict[str, bool] | None:
        return self.l2.holders(key, ids, within)

    def _tag_invalidated(self, tag: str, mode: Mode, before: float | None = None) -> None:
        """The L1's copies of ``tag``'s entries obey ``mode``: one mark in the L1 (see
        `isr.adapters.memory`), and a new ``gen`` object, so none of them passes the hot
        path until `revive` has applied it."""
        with self.l1._lock:
            self.l1.invalidate_tag(tag, mode, before)
            if self.coherent:
                self.gen = renewed(self.gen)
                self._generation = self._generation._replace(current=self.gen)

    def revive(self, key: str, entry: Entry) -> Entry | None:
        """The L1's copy, with the marks of its tags applied (None: purged here), and, if
        no invalidate-all came since it was written, stamped with ``gen`` again: served by
        the hot path from then on, with no round trip to Redis."""
        with self.l1._lock:
            revived = self.l1.revive(key, entry)
            if revived is not None and self.coherent and revived.gen == self.gen:
                revived.gen = self.gen
            return revived

    def _forget_local(self, kind: str, name: str, mode: Mode) -> None:
        """`isr.adapters.base.Adapter.forget_local`: the L1's copy alone obeys."""
        if kind == "key":
            self.l1.mark(name, mode)
        elif kind == "tag":
            self._tag_invalidated(name, mode)
        elif kind == "all":
            self.l2.forget_local(kind, name, mode)
            self._set_generation(self.l2._generation.value)

    @property
    def published(self) -> int | None:  # type: ignore[override]
        return self.l2.published

    @property
    def acks(self) -> dict[str, int] | None:  # type: ignore[override]
        """The acknowledgements the bus heard, once it listens to them (asked on first
        use: until then None, and a confirmation reads the registry)."""
        return self.bus.acks if self.bus.listen_to_acks() else None

    @property
    def losses(self) -> int:  # type: ignore[override]
        return self.l2.losses

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

    def generation(self) -> Generation:
        """The record as the bus keeps it (no network); while the bus is unsubscribed (it
        hears nothing), Redis's, read at most every ``generation_poll``, as the async
        `ageneration` always does. Redis's too while a new connection has found a server
        whose run_id is not yet checked (a restart the bus may have resubscribed across
        before anyone saw it): the check may move the record on (`_RESTARTED`)."""
        if self.coherent and not self.l2._pending_runs:
            return self._generation
        return self._set_generation(self.l2.generation())

    async def ageneration(self) -> Generation:
        return self._set_generation(await self.l2.ageneration())

    def size(self) -> int:
        return self.l1.size()

    def counters(self) -> dict[str, int]:
        return {
            "l1_entries": self.l1.size(),
            "bus_received": self.bus.received,
            "bus_resyncs": self.bus.resyncs,
            "bus_acks": self.bus.acked,
        }

    def ready(self, timeout: float) -> bool:
        """Whether Redis answers and the bus has subscribed, within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        return self.l2.ready(timeout) and self.bus.connected.wait(
            max(0.0, deadline - time.monotonic())
        )
