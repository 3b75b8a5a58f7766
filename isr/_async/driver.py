"""A runtime's driver: its reads, fetches and invalidations, with the waiting done.

Written once: ``isr/_sync/driver.py`` is generated from ``isr/_async/driver.py`` by
``python -m tests.unasync`` (the async spellings renamed, ``async``/``await`` dropped; the
test command fails when the two are out of step). Edit the async one, then regenerate.

The decisions are ``isr._decisions``' plain functions, the shared state and bookkeeping
``isr._state.RuntimeState``; the few things that really differ between an event loop and
threads (events, spawning, sleeping, shielding, timeouts) are the named primitives of
``isr._synchronization``.

A read: read the entry, classify it, then serve it (HIT), serve it and refresh it in the
background (STALE), serve the fallback while the key backs off (STALE-IF-ERROR), or fetch it
once for every caller that asks meanwhile, with the old value as the fallback should the
fetch fail. On a shared store the fetch runs under the key's fetch lock in the store; a
process that finds the lock taken waits for the value the holder stores.
"""

from __future__ import annotations

import secrets
import time
from typing import TYPE_CHECKING, Any

from isr._context import loading
from isr._decisions import FETCH, Answer, remark
from isr._entry import Entry, Mode, classify
from isr._flight import Flight
from isr._loader import Loader
from isr._status import Result, Status
from isr._synchronization import (
    ASYNC_RUNS_TIMEOUTS_INLINE,
    AsyncEvent,
    AsyncShieldCancellation,
    AsyncSpawner,
    async_fail_after,
    async_sleep,
    async_usable,
    async_warn_blocking,
)
from isr.adapters.names import checked

if TYPE_CHECKING:
    from isr._state import RuntimeState

__all__ = ["AsyncDriver"]


class AsyncDriver:
    """Serves one runtime's callers (see the module docstring); the async driver serves
    async callers, the sync driver generated from it the others."""

    def __init__(self, state: RuntimeState, workers: int) -> None:
        self.state = state
        self.store = state.store
        #: The fetch in flight per key, shared by every caller that asks meanwhile.
        self.flights: dict[str, Flight[AsyncEvent]] = {}
        #: Fetches running in the background (refreshes, fetches past a soft timeout).
        self.pending: set[Flight[AsyncEvent]] = set()
        self.spawner = AsyncSpawner(workers)

    # ------------------------------------------------------------------ reads

    def quick_answer(
        self,
        loader: Loader[Any],
        key: str,
        entry: Entry | None,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Answer | None:
        """The generated wrapper's second chance, before it awaits anything: answer from the
        entry it peeked, if the store answers without waiting (HIT, STALE, STALE-IF-ERROR in
        backoff); None: take the slow path."""
        state = self.state
        if entry is None or not state.quick or state.bypassing():
            return None
        now = state.clock()
        verdict = classify(entry, now, self.store.generation())
        decision = state.read(loader, key, entry, verdict, now)
        if decision.refresh:
            self.spawn(loader, key, args, kwargs, entry)
        answer = decision.answer
        if answer is not None:
            loader.tally(answer[1])
        return answer

    async def miss(
        self, loader: Loader[Any], key: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """A call's value, past the wrapper's hot path."""
        return (await self.call(loader, key, args, kwargs))[0]

    async def lookup(
        self, loader: Loader[Any], key: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Result[Any]:
        """A call's `Result`, past the wrapper's hot path."""
        return Result(*await self.call(loader, key, args, kwargs))

    async def refresh(
        self, loader: Loader[Any], key: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """``fn.refresh``: fetch ``key`` now, or join the fetch of it in flight; store the
        value and return it. The origin's error reaches the caller (no fallback)."""
        return (await self.call(loader, key, args, kwargs, True))[0]

    async def call(
        self,
        loader: Loader[Any],
        key: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        force: bool = False,
    ) -> Answer:
        """Answer one call past the hot path, counted for its loader: by `resolve`, or with
        the cache off (`isr.disabled`) by the loader alone (`bypass`)."""
        try:
            if self.state.bypassing():
                answer = await self.bypass(loader, key, args, kwargs)
            else:
                answer = await self.resolve(loader, key, args, kwargs, force)
        except Exception:
            loader.errors += 1
            raise
        loader.tally(answer[1])
        return answer

    async def bypass(
        self, loader: Loader[Any], key: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Answer:
        """With the cache off: run the loader for this call alone and store nothing (its
        ``isr.cache_life`` and the like apply to nothing)."""
        state = self.state
        checked(key)
        async_warn_blocking(loader, key)
        state.count("bypassed")
        state.count("loader_calls")
        observed = state.observe(loader, key, Status.BYPASS)
        with loading(), observed, async_fail_after(loader.timeout):
            value = await loader.fn(*args, **kwargs)
        return (value, Status.BYPASS, 0.0, None)

    async def resolve(
        self,
        loader: Loader[Any],
        key: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        force: bool = False,
    ) -> Answer:
        """Answer one call: from the store, or from a fetch this call leads or joins
        (``force``: fetch whatever the store holds, with no fallback: `refresh`)."""
        state = self.state
        checked(key)  # every store refuses a key that is not Unicode text, at the call
        while True:
            if state.inline:  # answers without I/O: no await
                store = self.store
                entry, generation = store.get(key), store.generation()
            else:
                store = async_usable(self.store)
                entry = await store.aget(key)
                generation = state.last_gen = await store.ageneration()
            now = state.clock()
            if force:
                decision = FETCH
            else:
                decision = state.read(loader, key, entry, classify(entry, now, generation), now)
            if decision.refresh:
                self.spawn(loader, key, args, kwargs, entry)
            if decision.answer is not None:
                return decision.answer
            fallback = decision.fallback
            soft = loader.soft_timeout if fallback is not None else None
            async_warn_blocking(loader, key)
            with state.lock:
                flight = self.flights.get(key)
                lead = flight is None
                if flight is None:
                    flight = self.flights[key] = Flight(AsyncEvent(), entry)
            if lead and soft is None and (ASYNC_RUNS_TIMEOUTS_INLINE or loader.timeout is None):
                await self.run(loader, key, args, kwargs, flight, False)
                return state.answer(flight, fallback, key)
            if lead:
                # In the background, so that the fetch can outlive this caller: past a soft
                # timeout (the old value is served meanwhile), or past a timeout where the
                # loader cannot be interrupted (a thread: its late value is still stored).
                with state.lock:
                    self.pending.add(flight)
                self.spawner.start(self.run, loader, key, args, kwargs, flight, False)
            else:
                state.count("coalesced")
            started = time.monotonic()
            if soft is not None and not await flight.event.wait(soft):
                assert fallback is not None
                return state.stale_answer(fallback, now)
            if loader.timeout is not None:
                left = loader.timeout - (time.monotonic() - started)
                if not await flight.event.wait(max(0.0, left)):
                    return state.timed_out(loader, key, fallback)
            else:
                await flight.event.wait()
            if flight.cancelled:
                continue  # the caller that was fetching was cancelled: try again
            return state.answer(flight, fallback, key)

    # ------------------------------------------------------------------ fetching

    def spawn(
        self,
        loader: Loader[Any],
        key: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        seen: Entry | None = None,
    ) -> Flight[AsyncEvent] | None:
        """Start one background refresh of ``key`` unless one runs (returned) or the key
        backs off (None)."""
        state = self.state
        with state.lock:
            flight = self.flights.get(key)
            if flight is not None:
                return flight
            if state.backoffs.active(key, state.clock()) is not None:
                return None
            flight = self.flights[key] = Flight(AsyncEvent(), seen)
            self.pending.add(flight)
        state.count("refreshes")
        self.spawner.start(self.run, loader, key, args, kwargs, flight, True)
        return flight

    async def run(
        self,
        loader: Loader[Any],
        key: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        flight: Flight[AsyncEvent],
        background: bool,
    ) -> None:
        """Run the loader once for ``flight``; store and publish its outcome. On a shared
        store, under its fetch lock: if another process is fetching the key, wait for its
        value instead. Never raises but for the caller's own cancellation."""
        state, store = self.state, async_usable(self.store)
        with state.fetching(loader, key, flight, self.flights, self.pending, background) as run:
            token = None
            if state.shared:
                token = secrets.token_hex(16)
                landed = await self._lock(key, token, state.lock_ttl_for(loader), flight.seen)
                if landed is not None:
                    state.landed(flight, key, landed.value, landed)
                    return
            try:
                state.count("loader_calls")
                trigger = state.trigger(background, flight.seen)
                with state.observe(loader, key, trigger), async_fail_after(loader.timeout):
                    value = await loader.fn(*args, **kwargs)
                entry = state.stored(run, loader, key, args, kwargs, value)
                if entry is not None and not state.inline:
                    since = await store.ainvalidated_since(key, entry.tags, run.started)
                    entry = remark(entry, since)
                    if entry is not None:
                        await store.aset(key, entry)
            finally:
                if token is not None:
                    # Shielded: a cancelled fetcher must still hand its lock back, or the
                    # caller taking over would wait out the lock's TTL.
                    with AsyncShieldCancellation():
                        await store.arelease(key, token)
            state.landed(flight, key, value, entry)

    async def _lock(self, key: str, token: str, ttl: float, seen: Entry | None) -> Entry | None:
        """Take ``key``'s fetch lock in the shared store (None), or wait for the value the
        process holding it is fetching and return it once it lands. A holder that dies
        blocks nobody past ``ttl``: its lock expires and the next try takes it."""
        state, store = self.state, async_usable(self.store)
        delay = 0.002
        while True:
            if await store.aacquire(key, token, ttl):
                landed = await store.aget(key)  # landed between our read and the lock?
                if state.fresh_since(landed, seen):
                    await store.arelease(key, token)
                    return landed
                return None
            await async_sleep(delay)
            delay = min(delay * 1.5, 0.05)
            landed = await store.aget(key)
            if state.fresh_since(landed, seen):
                return landed

    async def drain(self) -> None:
        """Wait until none of this driver's background fetches runs."""
        while self.pending:
            for flight in list(self.pending):
                await flight.event.wait()

    # ------------------------------------------------------------------ invalidation

    async def invalidate(self, key: str, mode: Mode) -> bool:
        """Mark (or purge) the entry under ``key``; True if one was there."""
        state, store = self.state, async_usable(self.store)
        state.invalidating("key", key, mode)
        if state.shared:
            await store.anote_invalidation("key", key, mode, state.clock(), state.lock_ttl)
        marked = await self._mark(key, mode)
        await store.aannounce("key", key, mode)
        return marked

    async def invalidate_tag(self, tag: str, mode: Mode) -> int:
        """Mark (or purge) every entry carrying ``tag``; how many there were."""
        state, store = self.state, async_usable(self.store)
        state.invalidating("tag", tag, mode)
        if state.shared:
            await store.anote_invalidation("tag", tag, mode, state.clock(), state.lock_ttl)
        keys = await store.atagged(tag)
        done = [await self._mark(key, mode, tag) for key in keys]
        await store.auntag(tag, [k for k, ok in zip(keys, done, strict=True) if not ok])
        await store.aannounce("tag", tag, mode)
        return sum(done)

    async def invalidate_all(self, mode: Mode) -> None:
        """Move the store's generation on: every entry is judged against it when next read."""
        self.state.invalidating("all", "", mode)
        await async_usable(self.store).abump_generation(mode)

    async def _mark(self, key: str, mode: Mode, tag: str | None = None) -> bool:
        """Apply ``mode`` to the entry under ``key`` (if it still carries ``tag``, when
        one is given); True if there was one."""
        state, store = self.state, async_usable(self.store)
        if state.inline:
            return state.mark_inline(key, mode, tag)
        entry = await store.aget(key)
        if not state.marks(key, entry, tag):
            return False
        assert entry is not None
        if mode is Mode.PURGE:
            await store.adelete(key)
        else:
            await store.aset(key, entry.marked(mode))
        return True
