# GENERATED from isr/_async/driver.py by tests/unasync.py: do not edit.
# Edit the async source, then run `python -m tests.unasync`.
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

from isr._coherence import Confirmation
from isr._context import loading
from isr._decisions import FETCH, Answer
from isr._entry import Entry, Mode, classify
from isr._errors import StoreUnavailable
from isr._flight import Flight, Reading
from isr._loader import Loader
from isr._status import Result, Status
from isr._synchronization import (
    RUNS_TIMEOUTS_INLINE,
    Event,
    ShieldCancellation,
    Spawner,
    fail_after,
    sleep,
    usable,
    warn_blocking,
)
from isr.adapters.names import checked

if TYPE_CHECKING:
    from isr._state import Invalidation, RuntimeState
    from isr.adapters.base import Adapter

__all__ = ["ACK_POLL", "OUTBOX_RETRY", "REGISTRY_POLL", "SyncDriver"]

#: Seconds between two tries at applying the outbox while the store is out of reach.
OUTBOX_RETRY = 0.5
#: Seconds between two looks at the acknowledgements a confirmation waits for: in this
#: process's memory when its bus hears them (an L1), else in the store's registry.
ACK_POLL = 0.0005
REGISTRY_POLL = 0.002


class SyncDriver:
    """Serves one runtime's callers (see the module docstring); the async driver serves
    async callers, the sync driver generated from it the others."""

    def __init__(self, state: RuntimeState, workers: int) -> None:
        self.state = state
        self.store = state.store
        #: The fetch in flight per key, shared by every caller that asks meanwhile.
        self.flights: dict[str, Flight[Event]] = {}
        #: Fetches running in the background (refreshes, fetches past a soft timeout).
        self.pending: set[Flight[Event]] = set()
        #: The store read in flight per key (a store that is not inline), shared likewise.
        self.reads: dict[str, Reading[Event]] = {}
        self.spawner = Spawner(workers)

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
        entry = self.store.revive(key, entry)  # marks recorded lazily (a tag's), applied
        if entry is None:
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

    def miss(
        self, loader: Loader[Any], key: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """A call's value, past the wrapper's hot path (`call`'s work, inlined: a shared
        store's hit comes this way)."""
        try:
            if self.state.bypassing():
                answer = self.bypass(loader, key, args, kwargs)
            else:
                answer = self.resolve(loader, key, args, kwargs)
        except Exception:
            loader.errors += 1
            raise
        loader.tally(answer[1])
        return answer[0]

    def lookup(
        self, loader: Loader[Any], key: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Result[Any]:
        """A call's `Result`, past the wrapper's hot path."""
        return Result(*self.call(loader, key, args, kwargs))

    def refresh(
        self, loader: Loader[Any], key: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """``fn.refresh``: fetch ``key`` now, or join the fetch of it in flight; store the
        value and return it. The origin's error reaches the caller (no fallback)."""
        return (self.call(loader, key, args, kwargs, True))[0]

    def call(
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
                answer = self.bypass(loader, key, args, kwargs)
            else:
                answer = self.resolve(loader, key, args, kwargs, force)
        except Exception:
            loader.errors += 1
            raise
        loader.tally(answer[1])
        return answer

    def bypass(
        self, loader: Loader[Any], key: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Answer:
        """With the cache off: run the loader for this call alone and store nothing (its
        ``isr.cache_life`` and the like apply to nothing)."""
        state = self.state
        checked(key)
        warn_blocking(loader, key)
        state.count("bypassed")
        state.count("loader_calls")
        observed = state.observe(loader, key, Status.BYPASS)
        with loading(), observed, fail_after(loader.timeout):
            value = loader.fn(*args, **kwargs)
        return (value, Status.BYPASS, 0.0, None)

    def resolve(
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
                store = usable(self.store)
                if (state.outbox or store.losses != state.losses) and not (self._recover(store)):
                    # Nothing from the store before it has what this process owes it: what
                    # this process holds of its own (an L1's copy), else the origin.
                    entry, generation = store.peek(key), state.known_generation()
                    if entry is not None:
                        entry = store.revive(key, entry)
                else:
                    reading: Reading[Event] = Reading()
                    if self.reads.setdefault(key, reading) is not reading:
                        entry = self._read(store, key)  # another caller's read: joined
                    else:  # `_read`'s usual case, inline (the hit's path): this caller reads
                        try:
                            entry = reading.entry = store.get(key)
                            reading.done = True
                        finally:
                            self._read_done(key, reading)
                    generation = state.last_gen = store.generation()
                    if store.losses != state.losses:
                        continue  # it lost its state: recover, then read again
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
            warn_blocking(loader, key)
            with state.lock:
                flight = self.flights.get(key)
                lead = flight is None
                if flight is None:
                    flight = self.flights[key] = Flight(Event(), entry)
            if lead and soft is None and (RUNS_TIMEOUTS_INLINE or loader.timeout is None):
                self.run(loader, key, args, kwargs, flight, False)
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
            if soft is not None and not flight.event.wait(soft):
                assert fallback is not None
                return state.stale_answer(fallback, now)
            if loader.timeout is not None:
                left = loader.timeout - (time.monotonic() - started)
                if not flight.event.wait(max(0.0, left)):
                    return state.timed_out(loader, key, fallback)
            else:
                flight.event.wait()
            if flight.cancelled:
                continue  # the caller that was fetching was cancelled: try again
            return state.answer(flight, fallback, key)

    def _read(self, store: Adapter, key: str) -> Entry | None:
        """``store.get(key)``, one round trip for every caller reading ``key`` at once: a
        burst of readers is one read per key, not one each (nor a connection each)."""
        state = self.state
        event = None
        with state.lock:
            reading = self.reads.get(key)
            if reading is None:
                reading = self.reads[key] = Reading()
            else:
                event = reading.event
                if event is None:
                    event = reading.event = Event()
        if event is not None:  # another caller is reading it: its answer is ours
            event.wait()
            if reading.done:
                return reading.entry
            return store.get(key)  # its reader was cancelled: read for ourselves
        try:
            reading.entry = store.get(key)
            reading.done = True
        finally:
            self._read_done(key, reading)
        return reading.entry

    def _read_done(self, key: str, reading: Reading[Event]) -> None:
        """``reading`` ended (``done``, or its reader was cancelled): wake who joined it."""
        with self.state.lock:
            del self.reads[key]
            waiting = reading.event
        if waiting is not None:
            waiting.set()

    # ------------------------------------------------------------------ fetching

    def spawn(
        self,
        loader: Loader[Any],
        key: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        seen: Entry | None = None,
    ) -> Flight[Event] | None:
        """Start one background refresh of ``key`` unless one runs (returned) or the key
        backs off (None)."""
        state = self.state
        with state.lock:
            flight = self.flights.get(key)
            if flight is not None:
                return flight
            if state.backoffs.active(key, state.clock()) is not None:
                return None
            flight = self.flights[key] = Flight(Event(), seen)
            self.pending.add(flight)
        state.count("refreshes")
        self.spawner.start(self.run, loader, key, args, kwargs, flight, True)
        return flight

    def run(
        self,
        loader: Loader[Any],
        key: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        flight: Flight[Event],
        background: bool,
    ) -> None:
        """Run the loader once for ``flight``; store and publish its outcome. On a shared
        store, under its fetch lock: if another process is fetching the key, wait for its
        value instead. Never raises but for the caller's own cancellation."""
        state, store = self.state, usable(self.store)
        with state.fetching(loader, key, flight, self.flights, self.pending, background) as run:
            token = None
            deadline = None if loader.timeout is None else time.monotonic() + loader.timeout
            if state.shared:
                token = secrets.token_hex(16)
                ttl = state.lock_ttl_for(loader)
                try:
                    landed = self._lock(loader, key, token, ttl, flight.seen, deadline)
                except BaseException:
                    # Cancelled (or out of time) while asking: the lock may be ours.
                    with ShieldCancellation():
                        store.release(key, token)
                    raise
                if landed is not None:
                    state.landed(flight, key, landed.value, landed)
                    return
            try:
                state.count("loader_calls")
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                trigger = state.trigger(background, flight.seen)
                with state.observe(loader, key, trigger), fail_after(left):
                    value = loader.fn(*args, **kwargs)
                entry = state.stored(run, loader, key, args, kwargs, value)
                if entry is not None and token is not None:
                    entry = store.finish(key, entry, run.started, token)
                    token = None  # given back with the write (else below: again is harmless)
                elif entry is not None and not state.inline:
                    entry = store.store(key, entry, run.started)
            finally:
                if token is not None:
                    # Shielded: a cancelled fetcher must still hand its lock back, or the
                    # caller taking over would wait out the lock's TTL.
                    with ShieldCancellation():
                        store.release(key, token)
            state.landed(flight, key, value, entry)

    def _lock(
        self,
        loader: Loader[Any],
        key: str,
        token: str,
        ttl: float,
        seen: Entry | None,
        deadline: float | None,
    ) -> Entry | None:
        """Take ``key``'s fetch lock in the shared store (None), or wait for the value the
        process holding it is fetching and return it once it lands. A holder that dies
        blocks nobody past ``ttl``: its lock expires and the next try takes it. With a
        ``deadline`` (the loader's timeout), nobody waits past it either: TimeoutError, as
        for a fetch that took too long."""
        state, store = self.state, usable(self.store)
        delay = 0.002
        while True:
            # The lock, and the value as it is now: one round trip on a network store.
            taken, landed = store.take(key, token, ttl)
            if taken:
                if state.fresh_since(landed, seen):  # landed between our read and the lock
                    store.release(key, token)
                    return landed
                return None
            if state.fresh_since(landed, seen):  # the holder's value is in
                return landed
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"{loader.name}() took longer than {loader.timeout} s for {key!r} "
                        "(another process holds its fetch)"
                    )
                delay = min(delay, left)
            sleep(delay)
            delay = min(delay * 1.5, 0.05)

    def drain(self) -> None:
        """Wait until none of this driver's background fetches runs."""
        while self.pending:
            for flight in list(self.pending):
                flight.event.wait()

    # ------------------------------------------------------------------ invalidation

    def invalidate(self, key: str, mode: Mode) -> bool:
        """Mark (or purge) the entry under ``key``; True if one was there."""
        return bool(self._invalidate(self.state.invalidating("key", key, mode)))

    def invalidate_tag(self, tag: str, mode: Mode) -> int:
        """Mark (or purge) every entry carrying ``tag``; how many there were."""
        return self._invalidate(self.state.invalidating("tag", tag, mode))

    def invalidate_all(self, mode: Mode) -> None:
        """Move the store's generation on: every entry is judged against it when next read."""
        self._invalidate(self.state.invalidating("all", "", mode))

    def _invalidate(self, invalidation: Invalidation) -> int:
        """Apply ``invalidation`` to the store, after any the outbox holds. A store out of
        reach: this process's own copy obeys at once, the outbox keeps the invalidation for
        the store, and the caller hears `isr.StoreUnavailable`."""
        state, store = self.state, usable(self.store)
        try:
            self._flush(store)
            done, epoch = self._perform(store, invalidation, None)
        except StoreUnavailable:
            state.queue(invalidation)
            kind, name, mode = invalidation.kind, invalidation.name, invalidation.mode
            store.forget_local(kind, name, mode)
            self._keep_trying()
            raise
        state.applied(invalidation)
        self._log(store, invalidation, epoch)
        return done

    def _perform(
        self, store: Adapter, invalidation: Invalidation, before: float | None
    ) -> tuple[int, int | None]:
        """The store's part of ``invalidation`` (only on entries produced before ``before``,
        when given: a replay); how many entries it affected, and the bus epoch it was
        published as (None: no bus)."""
        state = self.state
        kind, name, mode = invalidation.kind, invalidation.name, invalidation.mode
        if kind == "all":
            store.bump_generation(mode)
            return 0, store.published
        if state.shared:
            store.note_invalidation(kind, name, mode, invalidation.at, state.lock_ttl)
        if kind == "key":
            done = int(self._mark(store, name, mode, None, before))
        else:
            done = self._mark_tag(store, name, mode, before)
        return done, store.announce(kind, name, mode)

    def _log(self, store: Adapter, invalidation: Invalidation, epoch: int | None) -> None:
        """Add ``invalidation`` to the store's log: best-effort, one store op (a store
        that cannot take it counts an error; one that raises is logged once)."""
        state = self.state
        try:
            logged = store.log_invalidation(state.log_entry(invalidation, epoch), state.log_size)
        except Exception as exc:  # a third-party store's: the invalidation is done
            state.log_failed(exc)
            return
        state.logged(logged)

    # ------------------------------------------------------------------ coherence

    def confirm(self, timeout: float) -> Confirmation:
        """Wait (at most ``timeout`` seconds) until every live instance with an L1 has
        applied the latest epoch this runtime published; who did, who did not, how long it
        took. Recorded on the logged invalidations it covers."""
        state, store = self.state, usable(self.store)
        started = time.perf_counter()
        # The log ids first: each was logged after its publish, so the epoch read next
        # is at least every covered invalidation's (another task may publish meanwhile).
        covered = state.take_unconfirmed()
        target = store.published
        me = state.instance_id
        others = [i for i in store.instances(state.clock()) if i.id != me]
        if state.outbox:  # not in the store yet: nobody else can have applied it
            waiting = {i.id for i in others}
        elif target is None:
            waiting = set()
        else:
            waiting = {i.id for i in others if i.l1 and (i.applied is None or i.applied < target)}
        deadline = started + timeout
        looks = 0
        while waiting and not state.outbox:
            acks = store.acks
            if acks is not None:
                waiting = {iid for iid in waiting if acks.get(iid, 0) < (target or 0)}
            left = deadline - time.perf_counter()
            if not waiting or left <= 0:
                break
            sleep(min(ACK_POLL if acks is not None else REGISTRY_POLL, left))
            looks += 1
            if acks is None or looks % 100 == 0:  # the registry: acks this bus missed
                applied = {i.id: i.applied for i in store.instances(state.clock())}
                waiting = {iid for iid in waiting if (applied.get(iid) or 0) < (target or 0)}
        ms = round((time.perf_counter() - started) * 1000, 2)
        confirmed = [i.id for i in others if i.id not in waiting]
        if state.registered:
            confirmed.append(me)
        confirmation = Confirmation(tuple(sorted(confirmed)), tuple(sorted(waiting)), ms)
        if covered:
            try:
                store.confirm_logged(covered, confirmation)
            except Exception as exc:  # a third-party store's: the confirmation stands
                state.log_failed(exc)
        return confirmation

    def _mark_tag(self, store: Adapter, tag: str, mode: Mode, before: float | None) -> int:
        """Invalidate ``tag``'s entries: in one step where the store has one (a lazy record,
        a bulk mark: `isr.adapters.base.Adapter.invalidate_tag`), else entry by entry."""
        state = self.state
        if state.inline:
            with state.lock:  # ordered with the fetches storing meanwhile, as `_mark`
                done = store.invalidate_tag(tag, mode, before)
        else:
            done = store.invalidate_tag(tag, mode, before)
        if done is not None:
            return done
        keys = store.tagged(tag)
        marked = [self._mark(store, key, mode, tag, before) for key in keys]
        store.untag(tag, [k for k, ok in zip(keys, marked, strict=True) if not ok])
        return sum(marked)

    def _mark(
        self, store: Adapter, key: str, mode: Mode, tag: str | None, before: float | None
    ) -> bool:
        """Apply ``mode`` to the entry under ``key`` (see `isr.adapters.base.Adapter.mark`)."""
        state = self.state
        if state.inline:
            return state.mark_inline(key, mode, tag, before)
        state.forget_backoff(key)
        return store.mark(key, mode, tag, before)

    def _flush(self, store: Adapter) -> None:
        """Apply the outbox to the store, in order; `isr.StoreUnavailable` (what is left
        stays) when it is still out of reach."""
        state = self.state
        while state.outbox:
            invalidation = state.outbox[0]
            _, epoch = self._perform(store, invalidation, None)
            state.applied(invalidation, queued=True)
            self._log(store, invalidation, epoch)

    def _keep_trying(self) -> None:
        """Apply the outbox in the background as soon as the store answers (tried every
        `OUTBOX_RETRY` seconds), not only when a read or an invalidation comes by: an L1
        may serve every read meanwhile."""
        state = self.state
        with state.lock:
            if state.flushing:
                return
            state.flushing = True
        self.spawner.start(self._retry_outbox)

    def _retry_outbox(self) -> None:
        state = self.state
        try:
            while state.outbox and not state.closing:
                if self._recover(usable(self.store)):
                    break
                sleep(OUTBOX_RETRY)
        finally:
            state.flushing = False

    def _recover(self, store: Adapter) -> bool:
        """Before anything is served from the store: apply the outbox, and, should the
        store have lost its state since this process last looked (a restart, a failover,
        an eviction of its records), re-apply this process's recent invalidations (its
        journal) to what the store holds now. False: the store is still out of reach (or
        another caller is at it), so nothing is read from it yet."""
        state = self.state
        if state.recovering:
            return False
        state.recovering = True
        try:
            losses = store.losses
            if losses != state.losses:
                for invalidation in list(state.journal):
                    self._perform(store, invalidation, invalidation.at)
                state.losses = losses
            self._flush(store)
        except StoreUnavailable:
            return False
        finally:
            state.recovering = False
        return True
