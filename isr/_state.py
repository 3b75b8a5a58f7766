"""What the async and the sync drivers share: the store, the clock, the lock, the ledger,
the backoff table and the counters, and the steps around a read or a fetch that never wait.

The decisions themselves are plain functions (``isr._decisions``); this holds the state they
read and write, under one lock where threads may race, and does the bookkeeping: counting,
logging, backoff, the loader's context. Nothing here awaits or sleeps: the drivers
(``isr/_async/driver.py``, and ``isr/_sync/driver.py`` generated from it) do the waiting.
"""

from __future__ import annotations

import logging
import random as _random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple

from isr.adapters.names import checked_all

from ._backoff import BackoffTable
from ._coherence import LoggedInvalidation, current_source
from ._context import FetchContext, current_fetch
from ._decisions import (
    Answer,
    Read,
    Settle,
    decide_read,
    fetched_entry,
    remark,
    settle,
    xfetch_due,
)
from ._entry import EXPIRED, FRESH, Entry, Generation, Mode, Verdict, classify
from ._flight import Flight
from ._ledger import Ledger
from ._loader import ErrorHook, Loader
from ._status import Status
from ._switch import bypassing

if TYPE_CHECKING:
    from isr.adapters.base import Adapter

__all__ = ["COUNTERS", "Invalidation", "Run", "RuntimeState"]

logger = logging.getLogger("isr")

_HIT, _MISS, _STALE = Status.HIT, Status.MISS, Status.STALE
_STALE_IF_ERROR = Status.STALE_IF_ERROR
#: The runtime's own counters (see `isr.Stats` for what each counts).
COUNTERS = (
    "hits",
    "stale",
    "misses",
    "stale_if_error",
    "errors",
    "loader_calls",
    "coalesced",
    "refreshes",
    "refresh_failures",
    "invalidations",
    "bypassed",
)
#: What a loader run is observed with when no metrics are recorded: nothing.
_UNOBSERVED = nullcontext()


def _unobserved(loader: Loader[Any], key: str, trigger: Status) -> AbstractContextManager[object]:
    return _UNOBSERVED


class Invalidation(NamedTuple):
    """One invalidation: of a ``"key"``, a ``"tag"`` or ``"all"`` (``name`` then empty), its
    strength and when it was made (this process's clock); for the log, where it came from
    (`isr.invalidation_source`) and the unix time it was made."""

    kind: str
    name: str
    mode: Mode
    at: float
    source: str = "code"
    detail: Mapping[str, str] = MappingProxyType({})
    wall: float = 0.0


class Run(NamedTuple):
    """One loader run: its place in the ledger, the generation it started under, the
    loader's context and when it started."""

    fid: int
    gen: int
    ctx: FetchContext
    started: float


class RuntimeState:
    """The state of one runtime that both drivers share (see the module docstring)."""

    def __init__(
        self,
        store: Adapter,
        *,
        clock: Callable[[], float],
        backoff: float,
        max_backoff: float,
        lock_ttl: float,
        on_error: ErrorHook | None,
        random: Callable[[], float] | None,
        journal: int = 10_000,
    ) -> None:
        self.store = store
        self.clock = clock
        self.random: Callable[[], float] = random or _random.random
        self.lock_ttl = lock_ttl
        self.on_error = on_error
        #: A store answering without I/O (memory, disk): async code calls it directly.
        self.inline = store.inline
        #: A store whose ``peek`` and ``generation()`` answer without waiting (memory, disk,
        #: an L1): a stale or backing-off entry it peeked is served without awaiting.
        self.quick = store.inline or store.local
        #: Other processes share the store: fetch locks, markers.
        self.shared = store.shared
        #: Orders invalidations with the fetches they race, and guards the tables below
        #: where threads share them.
        self.lock = threading.RLock()
        self.ledger = Ledger()
        self.backoffs = BackoffTable(backoff, max_backoff)
        self.counts = dict.fromkeys(COUNTERS, 0)
        #: Invalidations the store could not take (it was out of reach), in order: applied
        #: to it as soon as it answers, before anything is served from it again.
        self.outbox: deque[Invalidation] = deque()
        #: The latest invalidations this process made, re-applied should the store be found
        #: to have lost its state (`isr.adapters.base.Adapter.losses`).
        self.journal: deque[Invalidation] = deque(maxlen=journal)
        #: The store's losses this process has recovered from.
        self.losses = store.losses
        self.recovering = False
        #: A background task applies the outbox (see the driver's ``_keep_trying``).
        self.flushing = False
        #: The runtime is closing: background tries stop.
        self.closing = False
        #: The generation record a read last saw from a store that is not quick.
        self.last_gen = Generation()
        #: This runtime's id among the instances (`isr.ISR.instance_id`), whether it is in
        #: the store's registry (it heartbeats), and how many invalidations the log keeps.
        self.instance_id = ""
        self.registered = False
        self.log_size = 1000
        #: Log ids of this runtime's invalidations no confirmation has covered yet.
        self.unconfirmed: deque[str] = deque(maxlen=journal)
        self.log_failures = 0
        #: False for a runtime built disabled (see `bypassing`).
        self.enabled = True
        #: The block around each loader run (``isr._metrics``: a span and its duration).
        self.observe: Callable[[Loader[Any], str, Status], AbstractContextManager[object]] = (
            _unobserved
        )
        #: Invalidations by (scope, mode): ``"key"``, ``"tag"`` or ``"all"``, and the mode.
        self.invalidated: dict[tuple[str, Mode], int] = {}

    def bypassing(self) -> bool:
        """Whether the cache is off for the call being made (`isr.disabled`, or a runtime
        built disabled): its loader then runs alone and nothing is stored."""
        return not self.enabled or bypassing()

    def trigger(self, background: bool, seen: Entry | None) -> Status:
        """The status of the read that started a loader run: MISS (a fetch), STALE (a
        background refresh) or HIT (an early refresh of a fresh entry: XFetch)."""
        if not background:
            return _MISS
        if self.classify(seen, self.clock()) is FRESH:
            return _HIT
        return _STALE

    # ------------------------------------------------------------------ counting

    def count(self, name: str) -> None:
        self.counts[name] += 1

    # ------------------------------------------------------------------ reads

    def read(
        self, loader: Loader[Any], key: str, entry: Entry | None, verdict: Verdict, now: float
    ) -> Read:
        """`decide_read` for ``entry``, counted; a served entry is marked recently used."""
        early = False
        backoff = None
        if verdict is FRESH:
            if loader.xfetch is not None and entry is not None:
                r = self.random()
                early = xfetch_due(loader.delta, loader.xfetch, r, now, entry.fresh_until)
        elif verdict is EXPIRED:
            backoff = self.backoffs.active(key, now)
        decision = decide_read(entry, verdict, now, backoff, early)
        answer = decision.answer
        if answer is not None:
            assert entry is not None
            entry.used = True
            status = answer[1]
            counts = self.counts
            if status is _HIT:
                counts["hits"] += 1
            elif status is _STALE:
                counts["stale"] += 1
            else:
                counts["stale_if_error"] += 1
        return decision

    def classify(self, entry: Entry | None, now: float) -> Verdict:
        """``entry``'s verdict against the generation this process knows without I/O."""
        return classify(entry, now, self.known_generation())

    def known_generation(self) -> Generation:
        """The freshest invalidate-all record this process holds without I/O: a quick
        store's own (an L1's is kept current by its bus), else the one last read."""
        return self.store.generation() if self.quick else self.last_gen

    def stale_answer(self, fallback: Entry, now: float) -> Answer:
        """The old value served because a fetch passed its soft timeout."""
        self.count("stale")
        return (fallback.value, _STALE, now - fallback.created, None)

    # ------------------------------------------------------------------ fetching

    @contextmanager
    def fetching(
        self,
        loader: Loader[Any],
        key: str,
        flight: Flight[Any],
        flights: dict[str, Any],
        pending: set[Any],
        background: bool,
    ) -> Iterator[Run]:
        """The bookkeeping around one loader run: its place in the ledger, the loader's
        context (for ``isr.cache_life`` etc.), and publishing the outcome to ``flight``. A
        loader's exception becomes the flight's error (counted, logged, backed off); anything
        else (cancellation) leaves the flight without an outcome, so its waiters try again,
        and propagates."""
        with self.lock:
            fid = self.ledger.begin()
            # Never older than what a read classified with, so that a refresh after
            # invalidate_all(revalidate) is not born under the mark.
            gen = self.known_generation().current
        run = Run(fid, gen, FetchContext(), self.clock())
        token = current_fetch.set(run.ctx)
        try:
            yield run
        except Exception as exc:
            flight.error = exc
            if background:
                self.count("refresh_failures")
            self.failed(loader, key, exc, background=background)
        except BaseException:
            flight.cancelled = True
            raise
        finally:
            current_fetch.reset(token)
            with self.lock:
                self.ledger.end(fid)
                if flights.get(key) is flight:
                    del flights[key]
                pending.discard(flight)
            flight.done = True
            flight.event.set()

    def stored(
        self,
        run: Run,
        loader: Loader[Any],
        key: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        value: Any,
    ) -> Entry | None:
        """The entry for a fetched value. An inline store gets it here, under the lock that
        also orders invalidations, so none can slip between the ledger check and the write."""
        loader.observe(self.clock() - run.started)
        with self.lock:
            entry = fetched_entry(
                value,
                created=self.clock(),
                gen=run.gen,
                policy=loader.policy,
                tags=loader.tags(*args, **kwargs),
                ctx=run.ctx,
            )
            if entry is not None:
                checked_all(entry.tags)  # before any store sees them (see `names.checked`)
                if self.ledger:
                    entry = remark(entry, self.ledger.mark_since(run.fid, key, entry.tags))
            if entry is not None and self.inline:
                if self.shared:
                    entry = self.store.store(key, entry, run.started)
                else:
                    self.store.set(key, entry)
        return entry

    def landed(self, flight: Flight[Any], key: str, value: Any, entry: Entry | None) -> None:
        """The fetch behind ``flight`` ended with ``value`` (stored as ``entry``, if kept)."""
        flight.value = value
        flight.age_base = None if entry is None else entry.created
        with self.lock:
            self.backoffs.succeeded(key)

    def failed(
        self, loader: Loader[Any], key: str, exc: BaseException, *, background: bool
    ) -> None:
        """Record a loader failure: backoff for the key, log, error hook.

        A background refresh has no caller to tell, so its failure is a warning with the
        traceback; a foreground failure reaches its callers (as the exception, or as the
        old value, which `answer` logs), so here it is only a debug line.
        """
        with self.lock:
            delay = self.backoffs.failed(key, self.clock(), exc)
        name = type(exc).__name__
        if background:
            logger.warning(
                "background refresh of %r failed (%s: %s); the old value is kept, "
                "next try in %.3g s",
                key,
                name,
                exc,
                delay,
                exc_info=exc,
            )
        else:
            logger.debug("fetch of %r failed (%s: %s)", key, name, exc)
        hook = loader.on_error or self.on_error
        if hook is not None:
            try:
                hook(key, exc)
            except Exception:
                logger.exception("the on_error hook raised for %r", key)

    def answer(self, flight: Flight[Any], fallback: Entry | None, key: str) -> Answer:
        """A finished flight as this caller's answer (or raise the origin's error)."""
        return self._settled(flight.value, flight.error, flight.age_base, fallback, key, flight)

    def timed_out(self, loader: Loader[Any], key: str, fallback: Entry | None) -> Answer:
        """This caller's answer when the fetch it waits for passed the loader's ``timeout``
        (the fetch goes on; a late value is still stored)."""
        error = TimeoutError(f"{loader.name}() took longer than {loader.timeout} s for {key!r}")
        self.failed(loader, key, error, background=False)
        return self._settled(None, error, None, fallback, key, None)

    def _settled(
        self,
        value: Any,
        error: BaseException | None,
        age_base: float | None,
        fallback: Entry | None,
        key: str,
        flight: Flight[Any] | None,
    ) -> Answer:
        outcome = settle(error, fallback)
        if outcome is Settle.VALUE:
            self.count("misses")
            age = 0.0 if age_base is None else max(0.0, self.clock() - age_base)
            return (value, _MISS, age, None)
        assert error is not None
        if outcome is Settle.FALLBACK:
            assert fallback is not None
            self.count("stale_if_error")
            if flight is None or not flight.reported:
                if flight is not None:
                    flight.reported = True
                logger.warning(
                    "fetch of %r failed (%s: %s); serving the value from %.0f s ago",
                    key,
                    type(error).__name__,
                    error,
                    self.clock() - fallback.created,
                )
            age = max(0.0, self.clock() - fallback.created)
            return (fallback.value, _STALE_IF_ERROR, age, error)
        self.count("errors")
        raise error

    def lock_ttl_for(self, loader: Loader[Any]) -> float:
        """How long a fetch lock in a shared store lasts: past the loader's timeout."""
        return max(self.lock_ttl, (loader.timeout or 0.0) + 1.0)

    def fresh_since(self, landed: Entry | None, seen: Entry | None) -> bool:
        """Has another process stored a fresh value since we saw ``seen``?"""
        if landed is None or (seen is not None and landed.created <= seen.created):
            return False
        return self.classify(landed, self.clock()) is FRESH

    # ------------------------------------------------------------------ invalidation

    def invalidating(self, kind: str, name: str, mode: Mode) -> Invalidation:
        """Count an invalidation of ``kind`` (``"key"``, ``"tag"`` or ``"all"``) and tell the
        fetches in flight (the ledger; an invalidate-all reaches them through the
        generation); the keys it concerns may try their origin again at once. The
        invalidation, to apply to the store."""
        self.count("invalidations")
        with self.lock:
            self.invalidated[kind, mode] = self.invalidated.get((kind, mode), 0) + 1
            if kind == "key":
                self.backoffs.succeeded(name)
            else:  # every key it may reach may try its origin again at once
                self.backoffs.clear()
            if kind != "all":
                self.ledger.record(kind, name, mode)
        source, detail = current_source()
        return Invalidation(kind, name, mode, self.clock(), source, detail, time.time())

    def mark_inline(self, key: str, mode: Mode, tag: str | None, before: float | None) -> bool:
        """`isr.adapters.base.Adapter.mark` on an inline store, under the lock, so that no
        fetch stores between the read and the write; the key's backoff ends."""
        with self.lock:
            self.backoffs.succeeded(key)
            return self.store.mark(key, mode, tag, before)

    def forget_backoff(self, key: str) -> None:
        """An invalidated key may try its origin again at once."""
        with self.lock:
            self.backoffs.succeeded(key)

    # ------------------------------------------------------------------ outbox, journal

    def log_entry(self, invalidation: Invalidation, epoch: int | None) -> LoggedInvalidation:
        """What the store's log keeps of ``invalidation`` (published as ``epoch``)."""
        return LoggedInvalidation(
            "",
            invalidation.wall,
            invalidation.kind,
            invalidation.name,
            invalidation.mode.name.lower(),
            invalidation.source,
            invalidation.detail,
            self.instance_id,
            epoch,
        )

    def logged(self, log_id: str | None) -> None:
        """The store's log took an invalidation as ``log_id`` (None: it did not)."""
        if log_id is not None:
            with self.lock:
                self.unconfirmed.append(log_id)

    def log_failed(self, exc: Exception) -> None:
        """A store's log raised (a third-party store): counted, logged the first time."""
        self.log_failures += 1
        if self.log_failures == 1:
            logger.error(
                "the invalidation log could not be written (%s: %s); invalidations go on, unlogged",
                type(exc).__name__,
                exc,
            )

    def take_unconfirmed(self) -> list[str]:
        """The log ids a confirmation made now covers (and no later one will)."""
        with self.lock:
            ids = list(self.unconfirmed)
            self.unconfirmed.clear()
        return ids

    def queue(self, invalidation: Invalidation) -> None:
        """Keep an invalidation the store could not take, to apply when it answers."""
        with self.lock:
            self.outbox.append(invalidation)

    def applied(self, invalidation: Invalidation, queued: bool = False) -> None:
        """``invalidation`` reached the store (``queued``: from the outbox, its first)."""
        with self.lock:
            if queued and self.outbox and self.outbox[0] is invalidation:
                self.outbox.popleft()
            self.journal.append(invalidation)
