"""The one interface every store implements: get, set, delete, tags, generation, lock,
claim, close.

**Writing a store.** Subclass `Adapter` and implement its six abstract methods: `get`,
`set`, `delete`, `tagged` (the keys stored with a tag), `generation` and `bump_generation`
(the store-wide invalidate-all record, a `Generation`). Entries are `Entry` objects (a value,
when it was produced, its `Policy` of windows, the generation it was fetched under, its
tags); a store that keeps them as bytes uses a codec (``isr._codec``: `isr.JsonCodec` by
default). Everything else has a default that suits a store used by one process: no fetch
locks, no invalidation markers, nothing to announce. Then ``isr.ISR(MyStore())``. The
conformance suite (the ``rt``/``srt`` fixtures of ``tests/conftest.py``, which run
``tests/_async/test_runtime.py`` and its generated sync twin on every store) is what a store
must pass; ``tests/_third_party.py`` is a store written from this page alone, and passes it.

**Sync and async.** The sync methods (``get``) serve sync loaders and the runtime's ``_sync``
calls; the ``a``-prefixed spellings (``aget``), as in Python's own ``next``/``anext``, serve
async code. Their defaults call the sync methods directly, which suits a store whose calls
never block for long (memory, a local disk). A network store overrides them (the Redis store
writes its async operations once and generates the sync ones: see ``isr.adapters.redis``).

**Flags** (class attributes):

- ``local``: entries stay in this process as objects (no codec), and the store keeps ``gen``
  (the current generation number) up to date: the decorator's hot path serves an entry from
  ``peek`` (a C-level ``dict.get`` at best) after checking ``gen`` and the clock, nothing else.
  The rule, for every hot path (the generated wrappers and the page middleware's quick
  path, which inline it because a Python call costs more than the check): ``e = peek(key)``
  is a fresh hit when ``e is not None and e.gen is store.gen and clock() < e.fresh_until``;
  the reader then sets ``e.used = True`` and counts the hit. Anything else goes to the
  runtime. A store without an in-process copy keeps the default ``peek``, which misses.
- ``inline``: calls are quick and never wait on a network (memory, a local disk), so async
  code calls the sync methods directly, and a stale or fresh entry ``peek`` returns is
  served without awaiting anything.
- ``shared``: other processes read and write it too. The runtime then takes the store's fetch
  lock (``acquire``/``release``) so one process fetches a key while the others wait for its
  value, and records invalidations (``note_invalidation``) so that a fetch another process
  started before one does not store its value as fresh.
- ``asyncio_only``: the async methods need asyncio (redis-py's asyncio client does). On any
  other anyio backend (trio), a runtime then calls the sync methods in worker threads
  instead (`ThreadedStore`).
- ``wall_clock``: entries outlive the process (or span hosts), so their times come from
  ``time.time``, which every process shares and a restart does not reset, rather than from
  ``time.monotonic`` (unless the runtime is given a clock).

A shared store is also expected never to raise for being unreachable when it is read or
written for a caller: it answers "missing" (and "acquired", so callers go to the origin),
counts the failure in ``errors`` and logs it. An invalidation is the exception: one that
cannot reach the store (``mark``, ``tagged``, ``note_invalidation``, ``bump_generation``,
``announce``) raises `isr.StoreUnavailable`, so that the runtime keeps it in its outbox
instead of reporting it done (see ``isr._state``); ``forget_local`` then applies it to the
process's own copy.
Every store refuses a key or tag that is not valid Unicode text with `isr.ConfigError` at
the call, and names what it keeps per namespace the one way `isr.adapters.names` lays out.
"""

from __future__ import annotations

import abc
import inspect
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

import anyio.to_thread

from isr._coherence import Confirmation, Instance, LoggedInvalidation
from isr._entry import Entry, Generation, Mode

from .claims import LocalClaims
from .coherence import LocalCoherence

__all__ = ["Adapter", "GenerationCache", "ThreadedStore", "lifetime"]


def _never(key: str) -> Entry | None:
    return None


_kept_lock = threading.Lock()
T = TypeVar("T")


def _kept(store: object, name: str, make: Callable[[], T]) -> T:
    """The object ``store`` keeps under ``name`` in its ``__dict__``, made by ``make`` on
    first use (once, whichever thread comes first): a default a subclass need not set up
    in its ``__init__``."""
    found: T | None = store.__dict__.get(name)
    if found is None:
        with _kept_lock:
            found = store.__dict__.setdefault(name, make())
    return found


class Adapter(abc.ABC):
    """Storage for entries, a tag index, the generation record and per-key fetch locks."""

    #: True when entries stay in this process as objects and ``gen`` is kept up to date.
    local: ClassVar[bool] = False
    #: True when calls are quick local work that async code may make directly.
    inline: ClassVar[bool] = False
    #: True when other processes share the store: fetch locks and wall-clock times apply.
    shared: ClassVar[bool] = False
    #: True when entry times must come from the wall clock (see the module docstring).
    wall_clock: ClassVar[bool] = False
    #: True when the async methods run on asyncio only (see the module docstring).
    asyncio_only: ClassVar[bool] = False
    #: Fast lookup for the hot path (``inline`` stores); others keep this, which always misses.
    peek: Callable[[str], Entry | None] = staticmethod(_never)
    #: The current generation number, kept in step by local stores for the hot path.
    gen: int = -1
    #: Store failures (unreachable, timed out, unreadable record) absorbed so far.
    errors: int = 0
    #: Entries dropped to stay within the store's bounds (a bounded memory store).
    evictions: int = 0
    #: Times the store was found to have lost its state (its generation record vanished or
    #: went back: a restart, a failover, an eviction); the runtime then re-applies the
    #: invalidations it made recently (its journal) before it serves from the store again.
    losses: int = 0
    #: False while this process's own copy may have missed invalidations (an L1 whose bus
    #: is not subscribed): nothing is served from it without asking the store.
    coherent: bool = True
    #: The highest bus epoch this store has published an invalidation as (None: it has no
    #: bus, or published nothing yet): what `isr.ISR.confirm` waits for every L1 to apply.
    published: int | None = None
    #: The epochs other instances said (on the bus) they applied, by instance id, kept up
    #: to date by the bus's thread; None: this store hears no acknowledgements, and a
    #: confirmation reads the registry instead (`instances`).
    acks: Mapping[str, int] | None = None

    @abc.abstractmethod
    def get(self, key: str) -> Entry | None:
        """The entry stored under ``key``, or None."""

    @abc.abstractmethod
    def set(self, key: str, entry: Entry) -> None:
        """Store ``entry`` under ``key`` and index it under each of ``entry.tags``.
        A value the store's codec cannot encode raises `isr.CodecError` and stores nothing."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key`` (and its tag index entries); a missing key is not an error."""

    @abc.abstractmethod
    def tagged(self, tag: str) -> list[str]:
        """The keys currently stored with ``tag``."""

    @abc.abstractmethod
    def generation(self) -> Generation:
        """The store's invalidate-all record (a shared store may answer from a copy at most
        a poll interval old)."""

    @abc.abstractmethod
    def bump_generation(self, mode: Mode) -> Generation:
        """Record an invalidate-all of strength ``mode``, atomically; return the new record."""

    def mark(
        self, key: str, mode: Mode, tag: str | None = None, before: float | None = None
    ) -> bool:
        """Apply an invalidation of strength ``mode`` to the entry under ``key`` (only if it
        carries ``tag``, when given, and was produced before ``before``, when given: a
        replay): a purge removes it, the others store a copy carrying the mark. True if an
        entry was affected. A shared store that cannot be reached raises
        `isr.StoreUnavailable`."""
        entry = self.get(key)
        if entry is None or (tag is not None and tag not in entry.tags):
            return False
        if before is not None and entry.created >= before:
            return False
        if mode is Mode.PURGE:
            self.delete(key)
        else:
            self.set(key, entry.marked(mode))
        return True

    def store(self, key: str, entry: Entry, since: float) -> Entry | None:
        """Store a value fetched since ``since``: marked by any invalidation of its key or
        its tags recorded since then (`invalidated_since`; a purge: nothing stored), and
        return what was stored. A store with per-tag records stamps the entry with their
        numbers here."""
        mode = self.invalidated_since(key, entry.tags, since)
        if mode is Mode.PURGE:
            return None
        if mode is not None:
            entry = entry.marked(mode)
        self.set(key, entry)
        return entry

    def invalidate_tag(self, tag: str, mode: Mode, before: float | None = None) -> int | None:
        """Invalidate every entry carrying ``tag`` (produced before ``before``, when given:
        a replay) in one step whatever their number (a per-tag record checked on read, or a
        bulk mark), and return how many entries it reached, as far as the store can tell
        cheaply; None: the store has no such step, so the runtime marks each entry `tagged`
        lists (``mark``). A shared store that cannot be reached raises
        `isr.StoreUnavailable`."""
        return None

    def forget_local(self, kind: str, name: str, mode: Mode) -> None:  # noqa: B027
        """Apply an invalidation (``kind`` ``"key"``, ``"tag"`` or ``"all"``) to this
        process's own copy only, when the shared store could not be reached: an L1 drops what
        it holds for it. A store without a local copy has nothing to do."""

    def untag(self, tag: str, keys: list[str]) -> None:  # noqa: B027 - optional hook
        """Forget that ``keys`` carry ``tag`` (their entries are gone or were retagged); a
        store whose tag index can hold such leftovers cleans them up here."""

    def note_invalidation(self, kind: str, name: str, mode: Mode, at: float, ttl: float) -> None:  # noqa: B027
        """Record, for ``ttl`` seconds, that ``kind`` (``"key"`` or ``"tag"``) ``name`` was
        invalidated with ``mode`` at time ``at``. A shared store keeps these so that a fetch
        another process started before the invalidation does not store its value as fresh
        (see `invalidated_since`); a store only one process uses needs none."""

    def invalidated_since(self, key: str, tags: tuple[str, ...], since: float) -> Mode | None:
        """The strongest invalidation of ``key`` or of one of ``tags`` recorded after
        ``since`` (a fetch's start), if any."""
        return None

    def announce(self, kind: str, name: str, mode: Mode) -> int | None:
        """Tell other instances' local copies that ``kind`` ``name`` was just invalidated
        (after the store holds the marks), and return the bus epoch it was published as
        (None: no bus). Only a store with a bus (Redis) has anything to do."""
        return None

    def ready(self, timeout: float) -> bool:
        """Block until the store answers and can keep its promises (a network store's
        server answers; an L1's bus has subscribed), at most ``timeout`` seconds; False if
        it could not in time."""
        return True

    def counters(self) -> dict[str, int]:
        """Store-specific counters for `isr.ISR.stats` (an L1's bus, say)."""
        return {}

    def holders(self, key: str, ids: Sequence[str], within: float) -> dict[str, bool] | None:
        """Ask the live instances ``ids`` (those keeping an L1) whether their L1 holds a copy
        of ``key`` now (what `isr explain` reports): each one's answer, those that answered
        within ``within`` seconds; None when the store has no way to ask (no bus)."""
        return None

    def fetch_locked(self, key: str) -> bool | None:
        """Whether some process holds ``key``'s fetch lock in the store now (what `isr
        explain` reports); None when the store keeps no fetch locks (one process uses it:
        its runtime knows its own fetches) or could not be asked."""
        return None

    def inspect(self, key: str) -> Entry | None:
        """The entry under ``key`` as the store holds it, for a look that must change
        nothing (`isr.ISR.explain`): a store with a per-process copy (an L1) reads the
        shared store and leaves its copy as it was. The default is `get`."""
        return self.get(key)

    def acquire(self, key: str, token: str, ttl: float) -> bool:
        """Take ``key``'s fetch lock for ``ttl`` seconds unless someone holds it. A store
        only one process uses needs none: the default always succeeds."""
        return True

    def release(self, key: str, token: str) -> None:  # noqa: B027 - optional hook
        """Give ``key``'s fetch lock back, if ``token`` still holds it."""

    def take(self, key: str, token: str, ttl: float) -> tuple[bool, Entry | None]:
        """`acquire`, and the entry under ``key`` as it is now (`get`): whether the lock
        is ours, and whether someone's value landed meanwhile. A network store does both
        in one round trip."""
        return self.acquire(key, token, ttl), self.get(key)

    def finish(self, key: str, entry: Entry, since: float, token: str) -> Entry | None:
        """`store` a fetched value, then `release` the fetch lock ``token`` holds; what
        was stored. A network store does both in one round trip when it can."""
        try:
            return self.store(key, entry, since)
        finally:
            self.release(key, token)

    def claim(self, name: str, ttl: float) -> bool | None:
        """Take ``name`` for ``ttl`` seconds unless someone holds it (set-if-absent with an
        expiry; what the webhook's replay guard uses): True if it was free and is now the
        caller's, False if it is held, None if the store could not be asked (a network
        store out of reach: the caller must not take that for either answer). A shared
        store answers for every process sharing it; the default keeps claims in this
        process (`isr.adapters.claims.LocalClaims`)."""
        return self._local_claims().claim(name, ttl)

    def unclaim(self, name: str) -> None:
        """Give ``name`` back (a claim whose work failed, to be retried)."""
        self._local_claims().unclaim(name)

    def _local_claims(self) -> LocalClaims:
        return _kept(self, "_claims", LocalClaims)

    def size(self) -> int | None:
        """How many entries the store holds, where that is cheap to know."""
        return None

    # ------------------------------------------------------------------ coherence

    def register(self, instance: Instance) -> None:
        """Record ``instance`` as running, its ``seen`` the time now (a runtime calls it at
        start and at every heartbeat; it replaces the earlier record). A store other
        processes share keeps it where they read it (`instances`); the default keeps it in
        this process, so the list is the runtime alone. A store with an L1 fills in ``l1``
        and ``applied``. Best-effort: a store out of reach skips it (counted in
        ``errors``)."""
        self._coherence().register(instance)

    def unregister(self, instance_id: str) -> None:
        """Remove the instance's record (its runtime closes); best-effort."""
        self._coherence().unregister(instance_id)

    def instances(self, now: float) -> list[Instance]:
        """The live instances (`isr._coherence.is_live` at ``now``), sorted by id, with the
        epoch each has applied; records long silent are deleted on the way. A store out of
        reach answers an empty list."""
        return self._coherence().instances(now)

    def log_invalidation(self, entry: LoggedInvalidation, keep: int) -> str | None:
        """Append ``entry`` (its ``id`` ignored) to the store's invalidation log, which
        keeps about the ``keep`` latest, and return the id given (None: not logged, the
        store being out of reach). Best-effort: never raises for the store's sake."""
        return self._coherence().log(entry, keep)

    def confirm_logged(self, ids: Sequence[str], confirmation: Confirmation) -> None:
        """Attach ``confirmation`` to the logged invalidations ``ids``; best-effort."""
        self._coherence().confirm(ids, confirmation)

    def invalidation_log(self, limit: int) -> list[LoggedInvalidation]:
        """The ``limit`` latest logged invalidations, newest first, with their
        confirmations (empty when the store is out of reach)."""
        return self._coherence().read(limit)

    def _coherence(self) -> LocalCoherence:
        return _kept(self, "_local_coherence", LocalCoherence)

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections or files."""

    def revive(self, key: str, entry: Entry) -> Entry | None:
        """``entry``, just peeked under ``key``, brought up to date with what this store
        records lazily (an in-process store's tag marks: see `isr.adapters.memory`); None
        when that removed it. The runtime calls it before judging an entry it peeked
        rather than read; the default has nothing to apply."""
        return entry

    async def aget(self, key: str) -> Entry | None:
        return self.get(key)

    async def amark(
        self, key: str, mode: Mode, tag: str | None = None, before: float | None = None
    ) -> bool:
        return self.mark(key, mode, tag, before)

    async def aforget_local(self, kind: str, name: str, mode: Mode) -> None:
        self.forget_local(kind, name, mode)

    async def astore(self, key: str, entry: Entry, since: float) -> Entry | None:
        return self.store(key, entry, since)

    async def ainvalidate_tag(
        self, tag: str, mode: Mode, before: float | None = None
    ) -> int | None:
        return self.invalidate_tag(tag, mode, before)

    async def aset(self, key: str, entry: Entry) -> None:
        self.set(key, entry)

    async def adelete(self, key: str) -> None:
        self.delete(key)

    async def atagged(self, tag: str) -> list[str]:
        return self.tagged(tag)

    async def ageneration(self) -> Generation:
        return self.generation()

    async def abump_generation(self, mode: Mode) -> Generation:
        return self.bump_generation(mode)

    async def auntag(self, tag: str, keys: list[str]) -> None:
        self.untag(tag, keys)

    async def anote_invalidation(
        self, kind: str, name: str, mode: Mode, at: float, ttl: float
    ) -> None:
        self.note_invalidation(kind, name, mode, at, ttl)

    async def ainvalidated_since(
        self, key: str, tags: tuple[str, ...], since: float
    ) -> Mode | None:
        return self.invalidated_since(key, tags, since)

    async def aannounce(self, kind: str, name: str, mode: Mode) -> int | None:
        return self.announce(kind, name, mode)

    async def aacquire(self, key: str, token: str, ttl: float) -> bool:
        return self.acquire(key, token, ttl)

    async def arelease(self, key: str, token: str) -> None:
        self.release(key, token)

    async def atake(self, key: str, token: str, ttl: float) -> tuple[bool, Entry | None]:
        # The async spellings, so that a store overriding those alone never blocks here.
        return await self.aacquire(key, token, ttl), await self.aget(key)

    async def afinish(self, key: str, entry: Entry, since: float, token: str) -> Entry | None:
        try:
            return await self.astore(key, entry, since)
        finally:
            await self.arelease(key, token)

    async def afetch_locked(self, key: str) -> bool | None:
        return self.fetch_locked(key)

    async def ainspect(self, key: str) -> Entry | None:
        return self.inspect(key)

    async def aclaim(self, name: str, ttl: float) -> bool | None:
        return self.claim(name, ttl)

    async def aunclaim(self, name: str) -> None:
        self.unclaim(name)

    async def aregister(self, instance: Instance) -> None:
        self.register(instance)

    async def aunregister(self, instance_id: str) -> None:
        self.unregister(instance_id)

    async def ainstances(self, now: float) -> list[Instance]:
        return self.instances(now)

    async def alog_invalidation(self, entry: LoggedInvalidation, keep: int) -> str | None:
        return self.log_invalidation(entry, keep)

    async def aconfirm_logged(self, ids: Sequence[str], confirmation: Confirmation) -> None:
        self.confirm_logged(ids, confirmation)

    async def ainvalidation_log(self, limit: int) -> list[LoggedInvalidation]:
        return self.invalidation_log(limit)

    async def aclose(self) -> None:
        self.close()


class _Renewed(int):
    """An int of the same value as another but not the same object (`renewed`)."""

    __slots__ = ()


def renewed(gen: int) -> int:
    """``gen`` as a new object of the same value: a store that sets its ``gen`` to it makes
    every entry fail the hot path's identity check (``e.gen is store.gen``) until its own
    read path has looked at it again and stamped it with the new object, while every
    comparison by value (the generation's marks) is unchanged."""
    return _Renewed(gen)


class ThreadedStore:
    """``store``'s async methods on any anyio backend: each ``aname`` runs the store's sync
    ``name`` in a worker thread (anyio's default limiter bounds them). What a runtime uses on
    trio for an ``asyncio_only`` store; everything else is the store's own."""

    def __init__(self, store: Adapter) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        found = getattr(self._store, name)
        if not (name.startswith("a") and inspect.iscoroutinefunction(found)):
            return found
        sync = getattr(self._store, name[1:])

        async def in_a_thread(*args: Any) -> Any:
            return await anyio.to_thread.run_sync(sync, *args)

        return in_a_thread


class GenerationCache:
    """A shared store's generation record as last read, re-read at most every ``poll`` s.

    Reading the record on every read would double a hit's cost; instead a process sees
    another's ``invalidate_all`` within ``poll`` seconds (its own at once).
    """

    def __init__(self, poll: float = 1.0) -> None:
        self.poll = poll
        self.value = Generation()
        self._read_at = -float("inf")

    def current(self) -> Generation | None:
        """The cached record while it is fresh enough, else None (read the store)."""
        if time.monotonic() - self._read_at < self.poll:
            return self.value
        return None

    def expire(self) -> None:
        """Read the store's record on the next call."""
        self._read_at = -float("inf")

    def due(self) -> bool:
        """Is it time to read the store's record again?"""
        return time.monotonic() - self._read_at >= self.poll

    def update(self, value: Generation) -> Generation:
        """Keep ``value`` as read now, and return the record kept: an equal one already
        kept stays, so a store's ``gen`` taken from it keeps its identity across re-reads
        (the hot path compares ``gen`` with ``is``; entries decoded from the store get the
        kept object, see the disk store's ``get``)."""
        if value != self.value:
            self.value = value
        self._read_at = time.monotonic()
        return self.value


def lifetime(entry: Entry) -> float | None:
    """Seconds a store keeps ``entry`` from its write (now): until its last window ends, or
    None when one is unbounded. Counted from the write, not from ``created``: the runtime's
    clock (which ``created`` comes from) may be an injected one, while a store's expiry is
    on the wall clock; a write happens right after the fetch, and an invalidation's
    rewrite only keeps the entry longer."""
    p = entry.policy
    life = p.ttl + p.swr + p.sie
    return life if math.isfinite(life) else None
