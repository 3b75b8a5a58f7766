"""The runtime: singleflight, background refresh, stale-if-error, invalidation and stats.

``ISR`` drives the pure core (`isr._entry.classify`) with real I/O. There are two drivers
over one set of helpers: an async one (anyio; asyncio and trio) and a sync one (threads).
Both follow the same steps: read the entry, classify it, then serve it, serve it and refresh
in the background, or fetch (once per key however many callers ask) with the old value as
the fallback should the fetch fail.
"""

from __future__ import annotations

import logging
import math
import os
import random as _random
import secrets
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, TypeVar

import anyio
import cachetools
from typing_extensions import Self

from adapters.base import Adapter

from ._codec import Codec, CodecError
from ._config import adapter_from_url, url_from_env
from ._context import FetchContext, current_fetch
from ._entry import (
    EXPIRED,
    FRESH,
    STALE,
    Entry,
    Generation,
    Mode,
    ModeName,
    Policy,
    Verdict,
    classify,
    parse_mode,
)
from ._errors import ConfigError
from ._spawn import spawn_detached
from ._status import Result, Status

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

    from ._decorator import Revalidate

__all__ = ["ISR", "Loader", "Stats"]

logger = logging.getLogger("isr")

T = TypeVar("T")
ErrorHook = Callable[[str, BaseException], None]
# Enum member access costs about 100 ns on Python 3.11: the slow path uses these.
_HIT, _STALE, _MISS = Status.HIT, Status.STALE, Status.MISS
_STALE_IF_ERROR = Status.STALE_IF_ERROR
#: An answer before it becomes a `Result`: (value, status, age, error).
_Answer = tuple[Any, Status, float, "BaseException | None"]


@dataclass(frozen=True)
class Stats:
    """Counters since the runtime started (a snapshot; see `ISR.stats`)."""

    hits: int
    """Fresh answers, the loader not called."""
    stale: int
    """Stale answers served at once while a refresh ran (or a soft timeout elapsed)."""
    misses: int
    """Answers fetched from the origin (including callers that shared a concurrent fetch)."""
    stale_if_error: int
    """Old values served because the origin failed (or was in backoff after failing)."""
    errors: int
    """Calls that raised the origin's exception (nothing to fall back on)."""
    loader_calls: int
    """Times a loader actually ran (foreground and background)."""
    coalesced: int
    """Callers that waited for a fetch another caller had started, instead of fetching."""
    refreshes: int
    """Background refreshes started."""
    refresh_failures: int
    """Background refreshes whose loader raised (the old value was kept)."""
    invalidations: int
    """Calls to invalidate, invalidate_tag and invalidate_all."""
    evictions: int
    """Entries the store evicted to stay within its bounds (memory store)."""
    entries: int | None
    """Entries in the store, where the store can tell cheaply."""
    refreshing: int
    """Background refreshes running now."""
    store_errors: int
    """Store failures absorbed (unreachable, timed out, unreadable record): the callers got
    answers regardless, from the origin if need be."""
    gone: int
    """Renders the origin answered 404 or 410 (the HTTP edge): each purged its page, or kept
    the answer for the rule's ``negative_ttl``."""
    store: dict[str, int]
    """Store-specific counters: with an L1, ``l1_entries``, ``bus_received`` (invalidations
    from other instances) and ``bus_resyncs`` (times the L1 was dropped because messages
    may have been lost)."""


class Loader(Generic[T]):
    """What the runtime needs to know of one decorated function (made by the decorator)."""

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str,
        is_async: bool,
        policy: Policy,
        tags: Callable[..., tuple[str, ...]],
        soft_timeout: float | None,
        timeout: float | None,
        xfetch: float | None,
        on_error: ErrorHook | None,
    ) -> None:
        self.fn = fn
        self.name = name
        self.is_async = is_async
        self.policy = policy
        self.tags = tags
        self.soft_timeout = soft_timeout
        self.timeout = timeout
        self.xfetch = xfetch
        self.on_error = on_error
        #: Moving average of the loader's duration: XFetch's "delta".
        self.delta = 0.0
        #: The generated wrapper's namespace; its ``_isr_hits`` counts fast-path hits.
        self.namespace: dict[str, Any] = {}
        #: Hits an edge served by the hot-path rule itself (see adapters/base.py).
        self.edge_hits = 0
        #: Renders an edge saw answered 404 or 410 (see `Stats.gone`).
        self.gone = 0
        self.runtime: ISR | None = None

    def observe(self, seconds: float) -> None:
        self.delta = seconds if self.delta == 0.0 else 0.8 * self.delta + 0.2 * seconds

    def fast_hits(self) -> int:
        return int(self.namespace.get("_isr_hits", 0)) + self.edge_hits


class _Flight:
    """One fetch of one key, shared by every caller that asks meanwhile."""

    __slots__ = ("age_base", "cancelled", "done", "error", "reported", "seen", "value")

    def __init__(self) -> None:
        self.value: Any = None
        self.error: BaseException | None = None
        self.cancelled = False  # ended without an outcome: waiters try again
        self.reported = False  # a stale-if-error answer from it has been logged
        self.done = False
        self.age_base: float | None = None  # ``created`` of the stored entry, if any
        self.seen: Entry | None = None  # what the store held when the fetch was decided


class _AsyncFlight(_Flight):
    __slots__ = ("event",)

    def __init__(self) -> None:
        super().__init__()
        self.event = anyio.Event()


class _SyncFlight(_Flight):
    __slots__ = ("event",)

    def __init__(self) -> None:
        super().__init__()
        self.event = threading.Event()


class _Run(NamedTuple):
    """One loader run: its place in the invalidation log, the generation it started under,
    the loader's context and when it started."""

    fid: int
    gen: int
    ctx: FetchContext
    started: float


class _Backoff:
    __slots__ = ("error", "failures", "retry_at")

    def __init__(self, retry_at: float, failures: int, error: BaseException) -> None:
        self.retry_at = retry_at
        self.failures = failures
        self.error = error


def _may_hide(error: BaseException) -> bool:
    """May a failed fetch be answered with the old value (STALE-IF-ERROR)? Not when the
    store's codec refused the new one (`CodecError`): that is a bug to fix, not an origin
    blip, so every caller gets the error, also while the key backs off; the old value still
    serves as STALE within ``swr``, with a warning per failed refresh."""
    return not isinstance(error, CodecError)


class ISR:
    """A cache runtime: a store, a clock, and the refreshes and fetches under way.

    ``url_or_adapter`` is a cache URL (``"memory://?max_entries=50000"``) or an `Adapter`.
    ``clock`` returns seconds (monotonic by default); tests pass a fake one. ``backoff`` is
    the delay after a failed refresh before the origin is tried again for that key (doubling
    per failure up to ``max_backoff``). ``refresh_workers`` bounds the threads that refresh
    sync loaders. Use it as ``async with ISR() as rt:`` to run refreshes in its own task
    group, or call `aclose` (or `close` from sync code) when done: both wait for running
    refreshes to finish.
    """

    def __init__(
        self,
        url_or_adapter: str | Adapter = "memory://",
        *,
        namespace: str | None = None,
        clock: Callable[[], float] | None = None,
        backoff: float = 1.0,
        max_backoff: float = 60.0,
        refresh_workers: int = 8,
        on_error: ErrorHook | None = None,
        random: Callable[[], float] | None = None,
        codec: Codec | None = None,
        lock_ttl: float = 30.0,
        l1: bool | int = False,
    ) -> None:
        if isinstance(url_or_adapter, Adapter):
            if namespace is not None or codec is not None or l1:
                raise ConfigError(
                    "pass namespace=, codec= and l1= with a cache URL, or build the adapter "
                    "with them yourself"
                )
            self.adapter = url_or_adapter
        elif isinstance(url_or_adapter, str):
            self.adapter = adapter_from_url(url_or_adapter, namespace=namespace, codec=codec, l1=l1)
        else:
            raise ConfigError(
                f"ISR() takes a cache URL or an Adapter, not {type(url_or_adapter).__name__}"
            )
        if not (backoff > 0 and max_backoff >= backoff):
            raise ConfigError("backoff must be > 0 and max_backoff >= backoff")
        if not isinstance(refresh_workers, int) or refresh_workers < 1:
            raise ConfigError("refresh_workers must be a positive integer")
        if not lock_ttl > 0:
            raise ConfigError("lock_ttl must be > 0 seconds")
        self.clock: Callable[[], float] = clock or (
            time.time if self.adapter.wall_clock else time.monotonic
        )
        self.lock_ttl = lock_ttl
        self.random: Callable[[], float] = random or _random.random
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.refresh_workers = refresh_workers
        self.on_error = on_error
        self._inline = self.adapter.inline
        # Stores whose peek and generation() answer without waiting (memory, disk, an L1):
        # the generated wrapper may serve a stale entry from them without awaiting.
        self._quick = self.adapter.inline or self.adapter.local
        self._shared = self.adapter.shared
        self._last_gen = Generation()
        self._lock = threading.RLock()
        self._aflights: dict[str, _AsyncFlight] = {}
        self._sflights: dict[str, _SyncFlight] = {}
        self._pending: set[_AsyncFlight] = set()
        self._spending: set[_SyncFlight] = set()
        self._backoffs: cachetools.LRUCache[str, _Backoff] = cachetools.LRUCache(10_000)
        # Invalidations made while fetches run: (sequence, kind, name, mode). A fetch that
        # started before an invalidation of its key or one of its tags stores its value
        # with that mark, so a publish never loses to a refresh that read the old content.
        self._seq = 0
        self._active: dict[int, int] = {}
        self._log: list[tuple[int, str, str, Mode]] = []
        self._pool: ThreadPoolExecutor | None = None
        self._tg: TaskGroup | None = None
        self._loaders: weakref.WeakSet[Loader[Any]] = weakref.WeakSet()
        self._n = dict.fromkeys(
            (
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
            ),
            0,
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **options: Any) -> ISR:
        """A runtime on the store the environment names: ``ISR_CACHE_URL`` (a cache URL),
        else ``ISR_TARGET`` (development, tests: memory; single-host: disk under
        ``ISR_CACHE_DIR``; multi-instance, serverless: Redis, which then needs
        ``ISR_CACHE_URL``), else memory. ``ISR_NAMESPACE`` sets the namespace. Other
        arguments as for `ISR`."""
        env = os.environ if environ is None else environ
        url = url_from_env(env)
        if "namespace" not in options and env.get("ISR_NAMESPACE"):
            options["namespace"] = env["ISR_NAMESPACE"]
        return cls(url, **options)

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Self:
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        tg, self._tg = self._tg, None
        try:
            await self.aclose()
        finally:
            if tg is not None:
                await tg.__aexit__(exc_type, exc, tb)
        return None

    async def wait_ready(self, within: float = 5.0) -> bool:
        """Wait until the store can keep its promises: with an L1, until its invalidation
        bus has subscribed (so no invalidation published from then on is missed). Call it at
        start-up before serving; False if it did not happen within ``within`` seconds."""
        return await anyio.to_thread.run_sync(self.adapter.ready, within)

    def wait_ready_sync(self, within: float = 5.0) -> bool:
        """`wait_ready` for sync code."""
        return self.adapter.ready(within)

    async def drain(self) -> None:
        """Wait until no background refresh (async or in a thread) is running."""
        while self._pending or self._spending:
            if self._pending:
                await next(iter(self._pending)).event.wait()
            else:
                await anyio.to_thread.run_sync(self.drain_sync)

    def drain_sync(self) -> None:
        """`drain` for sync code: wait for the refreshes running in threads."""
        while self._spending:
            for flight in list(self._spending):
                flight.event.wait()

    async def aclose(self) -> None:
        """Wait for running refreshes, stop the refresh threads, close the store."""
        await self.drain()
        pool = self._pool
        if pool is not None:
            await anyio.to_thread.run_sync(pool.shutdown)
            self._pool = None
        await self.adapter.aclose()

    def close(self) -> None:
        """`aclose` for sync code: waits for running sync refreshes, then closes the store."""
        self.drain_sync()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self.adapter.close()

    # ------------------------------------------------------------------ decorating

    def with_revalidate(
        self,
        key: str | Callable[..., str],
        ttl: float,
        *,
        swr: float | None = None,
        stale_if_error: float = 86400,
        tags: Iterable[str | Callable[..., str]] | str = (),
        soft_timeout: float | None = None,
        timeout: float | None = None,
        xfetch: float | None = None,
        on_error: ErrorHook | None = None,
    ) -> Revalidate:
        """`isr.with_revalidate` bound to this runtime (see there for the arguments)."""
        from ._decorator import make_decorator

        return make_decorator(
            key,
            ttl,
            swr=swr,
            stale_if_error=stale_if_error,
            tags=tags,
            runtime=self,
            bind_default=None,
            soft_timeout=soft_timeout,
            timeout=timeout,
            xfetch=xfetch,
            on_error=on_error,
        )

    # ------------------------------------------------------------------ stats

    def stats(self) -> Stats:
        n = self._n
        fast = sum(loader.fast_hits() for loader in self._loaders if loader.runtime is self)
        return Stats(
            hits=n["hits"] + fast,
            stale=n["stale"],
            misses=n["misses"],
            stale_if_error=n["stale_if_error"],
            errors=n["errors"],
            loader_calls=n["loader_calls"],
            coalesced=n["coalesced"],
            refreshes=n["refreshes"],
            refresh_failures=n["refresh_failures"],
            invalidations=n["invalidations"],
            evictions=self.adapter.evictions,
            entries=self.adapter.size(),
            refreshing=len(self._pending) + len(self._spending),
            store_errors=self.adapter.errors,
            gone=sum(loader.gone for loader in self._loaders if loader.runtime is self),
            store=self.adapter.counters(),
        )

    def _count(self, name: str) -> None:
        self._n[name] += 1

    # ------------------------------------------------------------------ shared helpers

    def attach(self, loader: Loader[Any]) -> None:
        """Bind a decorated function's generated wrapper to this runtime."""
        ns = loader.namespace
        ns["_isr_peek"] = self.adapter.peek
        ns["_isr_ad"] = self.adapter
        ns["_isr_clock"] = self.clock
        ns["_isr_miss"] = self._amiss if loader.is_async else self._smiss
        ns["_isr_quick"] = self._aquick_answer
        ns["_isr_lookup"] = self._alookup if loader.is_async else self._slookup
        ns["_isr_spawn"] = self._aspawn if loader.is_async else self._sspawn
        if loader.runtime is not self:
            loader.runtime = self
            ns["_isr_hits"] = 0  # hits counted from here on belong to this runtime
            self._loaders.add(loader)

    def _begin_fetch(self) -> tuple[int, int]:
        with self._lock:
            self._seq += 1
            fid = self._seq
            self._active[fid] = fid
        # Never older than what a read classified with, so that a refresh after
        # invalidate_all(revalidate) is not born under the mark.
        return fid, self._known_generation().current

    def _known_generation(self) -> Generation:
        """The freshest invalidate-all record this process holds without I/O: an inline or
        local store's own (an L1's is kept current by its bus), else the one last read
        (reading a shared store's here would block)."""
        return self.adapter.generation() if self._quick else self._last_gen

    def _end_fetch(self, fid: int) -> None:
        with self._lock:
            self._active.pop(fid, None)
            if not self._active:
                self._log.clear()
            elif self._log:
                oldest = min(self._active)
                self._log = [item for item in self._log if item[0] > oldest]

    def _log_invalidation(self, kind: str, name: str, mode: Mode) -> None:
        # Called with self._lock held.
        self._seq += 1
        if self._active:
            self._log.append((self._seq, kind, name, mode))

    def _mark_since(self, fid: int, key: str, tags: tuple[str, ...]) -> Mode | None:
        mark: Mode | None = None
        for seq, kind, name, mode in self._log:
            if seq > fid and ((kind == "key" and name == key) or (kind == "tag" and name in tags)):
                mark = mode if mark is None else max(mark, mode)
        return mark

    def _make_entry(
        self,
        loader: Loader[Any],
        key: str,
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        value: Any,
        ctx: FetchContext,
        fid: int,
        gen: int,
    ) -> Entry | None:
        """The entry to store for a fetched value (None: keep nothing). Lock held."""
        if ctx.no_store:
            return None
        policy = loader.policy
        if ctx.ttl is not None or ctx.swr_set or ctx.sie is not None:
            policy = Policy(
                policy.ttl if ctx.ttl is None else ctx.ttl,
                (None if policy.swr == math.inf else policy.swr) if not ctx.swr_set else ctx.swr,
                policy.sie if ctx.sie is None else ctx.sie,
            )
        tags = loader.tags(*args, **kwargs)
        if ctx.tags:
            tags = tuple(dict.fromkeys((*tags, *ctx.tags)))
        entry = Entry(value, self.clock(), policy, gen, tags)
        return self._remark(entry, self._mark_since(fid, key, tags)) if self._log else entry

    def _backoff_for(self, key: str, now: float) -> _Backoff | None:
        b = self._backoffs.get(key)
        if b is not None and now < b.retry_at:
            return b
        return None

    def _failed(
        self, loader: Loader[Any], key: str, exc: BaseException, *, background: bool
    ) -> None:
        """Record a loader failure: backoff for the key, log, error hook.

        A background refresh has no caller to tell, so its failure is a warning with the
        traceback; a foreground failure reaches its callers (as the exception, or as the
        old value, which `_answer` logs), so here it is only a debug line.
        """
        with self._lock:
            prev = self._backoffs.get(key)
            failures = 1 if prev is None else prev.failures + 1
            delay = min(self.backoff * 2 ** (failures - 1), self.max_backoff)
            self._backoffs[key] = _Backoff(self.clock() + delay, failures, exc)
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

    def _succeeded(self, key: str) -> None:
        if key in self._backoffs:
            with self._lock:
                self._backoffs.pop(key, None)

    def _serve(
        self,
        loader: Loader[Any],
        key: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        entry: Entry | None,
        verdict: Verdict,
        now: float,
        flights: Mapping[str, _Flight],
        spawn: Callable[[Loader[Any], str, tuple[Any, ...], dict[str, Any], Entry | None], object],
    ) -> _Answer | None:
        """Answer from what the store holds, if the verdict allows it without fetching:
        fresh (HIT), stale (STALE, and ``spawn`` a refresh unless one is in ``flights``), or
        expired while the key backs off after a failure (STALE-IF-ERROR). None: the caller
        must fetch."""
        if entry is None:
            return None
        if verdict is FRESH:
            entry.used = True
            self._n["hits"] += 1
            if loader.xfetch is not None and self._xfetch_due(loader, entry, now):
                spawn(loader, key, args, kwargs, entry)
            return (entry.value, _HIT, now - entry.created, None)
        if verdict is STALE:
            entry.used = True
            self._n["stale"] += 1
            if key not in flights:
                spawn(loader, key, args, kwargs, entry)
            return (entry.value, _STALE, now - entry.created, None)
        if verdict is EXPIRED:
            backoff = self._backoff_for(key, now)
            if backoff is not None and _may_hide(backoff.error):
                self._n["stale_if_error"] += 1
                return (entry.value, _STALE_IF_ERROR, now - entry.created, backoff.error)
        return None

    def _answer(self, flight: _Flight, fallback: Entry | None, key: str) -> _Answer:
        """Turn a finished flight into this caller's answer (or raise the origin's error)."""
        if flight.error is None:
            self._count("misses")
            age = 0.0 if flight.age_base is None else max(0.0, self.clock() - flight.age_base)
            return (flight.value, _MISS, age, None)
        if fallback is not None and _may_hide(flight.error):
            self._count("stale_if_error")
            if not flight.reported:
                flight.reported = True
                logger.warning(
                    "fetch of %r failed (%s: %s); serving the value from %.0f s ago",
                    key,
                    type(flight.error).__name__,
                    flight.error,
                    self.clock() - fallback.created,
                )
            age = max(0.0, self.clock() - fallback.created)
            return (fallback.value, _STALE_IF_ERROR, age, flight.error)
        self._count("errors")
        raise flight.error

    @contextmanager
    def _fetching(
        self,
        loader: Loader[Any],
        key: str,
        flight: _AsyncFlight | _SyncFlight,
        flights: dict[str, Any],
        pending: set[Any],
        background: bool,
    ) -> Iterator[_Run]:
        """The bookkeeping around one loader run, shared by both drivers: the fetch's place
        in the invalidation log, the loader's context (for ``isr.cache_life`` etc.), and
        publishing the outcome to ``flight``. A loader's exception becomes the flight's
        error (counted, logged, backed off); anything else (cancellation) leaves the flight
        without an outcome, so its waiters try again, and propagates."""
        fid, gen = self._begin_fetch()
        run = _Run(fid, gen, FetchContext(), self.clock())
        token = current_fetch.set(run.ctx)
        try:
            yield run
        except Exception as exc:
            flight.error = exc
            if background:
                self._count("refresh_failures")
            self._failed(loader, key, exc, background=background)
        except BaseException:
            flight.cancelled = True
            raise
        finally:
            current_fetch.reset(token)
            self._end_fetch(fid)
            flight.done = True
            with self._lock:
                if flights.get(key) is flight:
                    del flights[key]
                pending.discard(flight)
            flight.event.set()

    def _stored(
        self,
        run: _Run,
        loader: Loader[Any],
        key: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        value: Any,
    ) -> Entry | None:
        """The entry for a fetched value. A local store gets it here, under the lock that
        also orders invalidations, so none can slip between the log check and the write."""
        loader.observe(self.clock() - run.started)
        with self._lock:
            entry = self._make_entry(loader, key, args, kwargs, value, run.ctx, run.fid, run.gen)
            if entry is not None and self._inline:
                if self._shared:
                    entry = self._remark(
                        entry, self.adapter.invalidated_since(key, entry.tags, run.started)
                    )
                if entry is not None:
                    self.adapter.set(key, entry)
        return entry

    @staticmethod
    def _remark(entry: Entry, mode: Mode | None) -> Entry | None:
        """``entry`` with an invalidation made while it was being fetched, in this process
        (the log) or another (the store's markers); None: purged, store nothing."""
        if mode is None:
            return entry
        return None if mode is Mode.PURGE else entry.marked(mode)

    def _lock_ttl(self, loader: Loader[Any]) -> float:
        return max(self.lock_ttl, (loader.timeout or 0.0) + 1.0)

    def _fresh_since(self, landed: Entry | None, seen: Entry | None) -> bool:
        """Has another process stored a fresh value since we saw ``seen``?"""
        if landed is None or (seen is not None and landed.created <= seen.created):
            return False
        return classify(landed, self.clock(), self._known_generation()) is FRESH

    def _landed(self, flight: _Flight, key: str, value: Any, entry: Entry | None) -> None:
        flight.value = value
        flight.age_base = None if entry is None else entry.created
        self._succeeded(key)

    # ------------------------------------------------------------------ async driver

    def _aquick_answer(
        self,
        loader: Loader[Any],
        key: str,
        entry: Entry | None,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> _Answer | None:
        """The generated async wrapper's (and ``lookup``'s) second chance, before it awaits
        anything: answer from the entry it peeked, if the store answers without waiting
        (HIT, STALE, STALE-IF-ERROR in backoff); None: await the slow path."""
        if entry is None or not self._quick:
            return None
        now = self.clock()
        verdict = classify(entry, now, self.adapter.generation())
        return self._serve(
            loader, key, args, kwargs, entry, verdict, now, self._aflights, self._aspawn
        )

    async def _amiss(
        self, loader: Loader[Any], key: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        return (await self._aresolve(loader, key, args, kwargs))[0]

    async def _alookup(
        self, loader: Loader[Any], key: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Result[Any]:
        return Result(*await self._aresolve(loader, key, args, kwargs))

    async def _aresolve(
        self, loader: Loader[Any], key: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> _Answer:
        while True:
            if self._inline:
                entry, generation = self.adapter.get(key), self.adapter.generation()
            else:
                entry, generation = await self.adapter.aget(key), await self.adapter.ageneration()
                self._last_gen = generation
            now = self.clock()
            verdict = classify(entry, now, generation)
            answer = self._serve(
                loader, key, args, kwargs, entry, verdict, now, self._aflights, self._aspawn
            )
            if answer is not None:
                return answer
            fallback = entry if verdict is EXPIRED else None
            flight = self._aflights.get(key)
            soft = loader.soft_timeout if fallback is not None else None
            if flight is None and soft is None:
                flight = _AsyncFlight()
                flight.seen = entry
                self._aflights[key] = flight
                await self._arun(loader, key, args, kwargs, flight, background=False)
                return self._answer(flight, fallback, key)
            if flight is None:
                # With a soft timeout the fetch runs in the background, so that it can
                # outlive this caller when the old value is served instead.
                flight = self._aspawn(loader, key, args, kwargs, entry)
                assert flight is not None
            else:
                self._count("coalesced")
            if soft is not None:
                assert fallback is not None
                with anyio.move_on_after(soft):
                    await flight.event.wait()
                if not flight.done:
                    self._count("stale")
                    return (fallback.value, _STALE, now - fallback.created, None)
            else:
                await flight.event.wait()
            if flight.cancelled:
                continue  # the caller that was fetching was cancelled: try again
            return self._answer(flight, fallback, key)

    def _xfetch_due(self, loader: Loader[Any], entry: Entry, now: float) -> bool:
        """XFetch (Vattani et al., VLDB 2015): refresh early with a probability that grows
        as expiry nears, scaled by how long the loader takes (``delta``) and ``beta``."""
        beta = loader.xfetch
        if beta is None or loader.delta <= 0.0:
            return False
        r = self.random()
        gap = -loader.delta * beta * math.log(r) if r > 0.0 else math.inf
        return now + gap >= entry.fresh_until

    def _aspawn(
        self,
        loader: Loader[Any],
        key: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        seen: Entry | None = None,
    ) -> _AsyncFlight | None:
        """Start one background refresh of ``key`` unless one runs or the key backs off."""
        flight = self._aflights.get(key)
        if flight is not None:
            return flight
        if self._backoff_for(key, self.clock()) is not None:
            return None
        flight = _AsyncFlight()
        flight.seen = seen
        self._aflights[key] = flight
        self._pending.add(flight)
        self._count("refreshes")

        async def refresh() -> None:
            await self._arun(loader, key, args, kwargs, flight, background=True)

        if self._tg is not None:
            self._tg.start_soon(refresh)
        else:
            spawn_detached(refresh)
        return flight

    async def _arun(
        self,
        loader: Loader[Any],
        key: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        flight: _AsyncFlight,
        *,
        background: bool,
    ) -> None:
        """Run the loader once for ``flight``; store and publish its outcome. On a shared
        store, under its fetch lock: if another process is fetching the key, wait for its
        value instead. Never raises but for the caller's own cancellation."""
        with self._fetching(loader, key, flight, self._aflights, self._pending, background) as run:
            token = None
            if self._shared:
                token = secrets.token_hex(16)
                landed = await self._alock(key, token, self._lock_ttl(loader), flight.seen)
                if landed is not None:
                    self._landed(flight, key, landed.value, landed)
                    return
            try:
                self._count("loader_calls")
                if loader.timeout is not None:
                    with anyio.fail_after(loader.timeout):
                        value = await loader.fn(*args, **kwargs)
                else:
                    value = await loader.fn(*args, **kwargs)
                entry = self._stored(run, loader, key, args, kwargs, value)
                if entry is not None and not self._inline:
                    since = await self.adapter.ainvalidated_since(key, entry.tags, run.started)
                    entry = self._remark(entry, since)
                    if entry is not None:
                        await self.adapter.aset(key, entry)
            finally:
                if token is not None:
                    # Shielded: a cancelled fetcher must still hand its lock back, or the
                    # caller taking over would wait out the lock's TTL.
                    with anyio.CancelScope(shield=True):
                        await self.adapter.arelease(key, token)
            self._landed(flight, key, value, entry)

    async def _alock(self, key: str, token: str, ttl: float, seen: Entry | None) -> Entry | None:
        """Take ``key``'s fetch lock in the shared store (None), or wait for the value the
        process holding it is fetching and return it once it lands. A holder that dies
        blocks nobody past ``ttl``: its lock expires and the next try takes it."""
        delay = 0.002
        while True:
            if await self.adapter.aacquire(key, token, ttl):
                landed = await self.adapter.aget(key)  # landed between our read and the lock?
                if self._fresh_since(landed, seen):
                    await self.adapter.arelease(key, token)
                    return landed
                return None
            await anyio.sleep(delay)
            delay = min(delay * 1.5, 0.05)
            landed = await self.adapter.aget(key)
            if self._fresh_since(landed, seen):
                return landed

    # ------------------------------------------------------------------ sync driver

    def _smiss(
        self, loader: Loader[Any], key: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        return self._sresolve(loader, key, args, kwargs)[0]

    def _slookup(
        self, loader: Loader[Any], key: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Result[Any]:
        return Result(*self._sresolve(loader, key, args, kwargs))

    def _sresolve(
        self, loader: Loader[Any], key: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> _Answer:
        adapter = self.adapter
        while True:
            entry = adapter.get(key)
            now = self.clock()
            self._last_gen = generation = adapter.generation()
            verdict = classify(entry, now, generation)
            answer = self._serve(
                loader, key, args, kwargs, entry, verdict, now, self._sflights, self._sspawn
            )
            if answer is not None:
                return answer
            fallback = entry if verdict is EXPIRED else None
            soft = loader.soft_timeout if fallback is not None else None
            with self._lock:
                flight = self._sflights.get(key)
                lead = flight is None
                if flight is None:
                    flight = _SyncFlight()
                    flight.seen = entry
                    self._sflights[key] = flight
            if lead and soft is None and loader.timeout is None:
                self._srun(loader, key, args, kwargs, flight, background=False)
                return self._answer(flight, fallback, key)
            if lead:
                # A timeout needs the loader off this thread: it runs on the refresh pool
                # (a thread cannot be interrupted; a late value is still stored).
                self._spending.add(flight)
                self._executor().submit(
                    self._srun, loader, key, args, kwargs, flight, background=False
                )
            else:
                self._count("coalesced")
            started = time.monotonic()
            if soft is not None and not flight.event.wait(soft):
                assert fallback is not None
                self._count("stale")
                return (fallback.value, _STALE, now - fallback.created, None)
            if loader.timeout is not None:
                left = loader.timeout - (time.monotonic() - started)
                if not flight.event.wait(max(0.0, left)):
                    late = _SyncFlight()
                    late.error = TimeoutError(
                        f"{loader.name}() took longer than {loader.timeout} s for {key!r}"
                    )
                    self._failed(loader, key, late.error, background=False)
                    return self._answer(late, fallback, key)
            else:
                flight.event.wait()
            if flight.cancelled:
                continue
            return self._answer(flight, fallback, key)

    def _executor(self) -> ThreadPoolExecutor:
        pool = self._pool
        if pool is None:
            with self._lock:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(
                        self.refresh_workers, thread_name_prefix="isr-refresh"
                    )
                pool = self._pool
        return pool

    def _sspawn(
        self,
        loader: Loader[Any],
        key: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        seen: Entry | None = None,
    ) -> _SyncFlight | None:
        with self._lock:
            flight = self._sflights.get(key)
            if flight is not None:
                return flight
            if self._backoff_for(key, self.clock()) is not None:
                return None
            flight = _SyncFlight()
            flight.seen = seen
            self._sflights[key] = flight
            self._spending.add(flight)
        self._count("refreshes")
        self._executor().submit(self._srun, loader, key, args, kwargs, flight, background=True)
        return flight

    def _srun(
        self,
        loader: Loader[Any],
        key: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        flight: _SyncFlight,
        *,
        background: bool,
    ) -> None:
        """`_arun` for sync loaders (in the caller's thread or on the refresh pool)."""
        with self._fetching(loader, key, flight, self._sflights, self._spending, background) as run:
            token = None
            if self._shared:
                token = secrets.token_hex(16)
                landed = self._slock(key, token, self._lock_ttl(loader), flight.seen)
                if landed is not None:
                    self._landed(flight, key, landed.value, landed)
                    return
            try:
                self._count("loader_calls")
                value = loader.fn(*args, **kwargs)
                entry = self._stored(run, loader, key, args, kwargs, value)
                if entry is not None and not self._inline:
                    since = self.adapter.invalidated_since(key, entry.tags, run.started)
                    entry = self._remark(entry, since)
                    if entry is not None:
                        self.adapter.set(key, entry)
            finally:
                if token is not None:
                    self.adapter.release(key, token)
            self._landed(flight, key, value, entry)

    def _slock(self, key: str, token: str, ttl: float, seen: Entry | None) -> Entry | None:
        """`_alock` for sync code."""
        delay = 0.002
        while True:
            if self.adapter.acquire(key, token, ttl):
                landed = self.adapter.get(key)
                if self._fresh_since(landed, seen):
                    self.adapter.release(key, token)
                    return landed
                return None
            time.sleep(delay)
            delay = min(delay * 1.5, 0.05)
            landed = self.adapter.get(key)
            if self._fresh_since(landed, seen):
                return landed

    # ------------------------------------------------------------------ invalidation

    def _mark_sync(self, key: str, mode: Mode, tag: str | None = None) -> bool:
        """Apply ``mode`` to the entry under ``key`` (if it still carries ``tag``, when one
        is given) through the store's sync calls. Lock held."""
        self._backoffs.pop(key, None)
        entry = self.adapter.get(key)
        if entry is None or (tag is not None and tag not in entry.tags):
            return False
        if mode is Mode.PURGE:
            self.adapter.delete(key)
        else:
            self.adapter.set(key, entry.marked(mode))
        return True

    async def _amark(self, key: str, mode: Mode, tag: str | None = None) -> bool:
        with self._lock:
            self._backoffs.pop(key, None)
        entry = await self.adapter.aget(key)
        if entry is None or (tag is not None and tag not in entry.tags):
            return False
        if mode is Mode.PURGE:
            await self.adapter.adelete(key)
        else:
            await self.adapter.aset(key, entry.marked(mode))
        return True

    def invalidate_sync(self, key: str, mode: ModeName | Mode = "expire") -> bool:
        """Invalidate one key from sync code; True if an entry was there. See `invalidate`."""
        m = self._check(key, "key", mode)
        self._count("invalidations")
        with self._lock:
            self._log_invalidation("key", key, m)
            if self._shared:
                self.adapter.note_invalidation("key", key, m, self.clock(), self.lock_ttl)
            marked = self._mark_sync(key, m)
        self.adapter.announce("key", key, m)
        return marked

    async def invalidate(self, key: str, mode: ModeName | Mode = "expire") -> bool:
        """Invalidate one key: ``"expire"`` (default; the next read fetches, the old value is
        kept only as the stale-if-error fallback), ``"revalidate"`` (next reads are served
        stale at once while one refresh runs) or ``"purge"`` (gone; never served again).
        A fetch of the key already under way stores its value with the same mark.
        Returns True if an entry was there."""
        if self._inline:  # a store answering without I/O: the sync path, with no wait
            return self.invalidate_sync(key, mode)
        m = self._check(key, "key", mode)
        self._count("invalidations")
        with self._lock:
            self._log_invalidation("key", key, m)
        if self._shared:
            await self.adapter.anote_invalidation("key", key, m, self.clock(), self.lock_ttl)
        marked = await self._amark(key, m)
        await self.adapter.aannounce("key", key, m)
        return marked

    def invalidate_tag_sync(self, tag: str, mode: ModeName | Mode = "expire") -> int:
        """`invalidate_tag` for sync code."""
        m = self._check(tag, "tag", mode)
        self._count("invalidations")
        with self._lock:
            self._log_invalidation("tag", tag, m)
            if self._shared:
                self.adapter.note_invalidation("tag", tag, m, self.clock(), self.lock_ttl)
            keys = self.adapter.tagged(tag)
            done = [self._mark_sync(key, m, tag) for key in keys]
            self.adapter.untag(tag, [k for k, ok in zip(keys, done, strict=True) if not ok])
        self.adapter.announce("tag", tag, m)
        return sum(done)

    async def invalidate_tag(self, tag: str, mode: ModeName | Mode = "expire") -> int:
        """Invalidate every entry carrying ``tag`` (modes as in `invalidate`); costs
        O(entries with the tag). Returns how many entries were affected."""
        if self._inline:  # a store answering without I/O: the sync path, with no wait
            return self.invalidate_tag_sync(tag, mode)
        m = self._check(tag, "tag", mode)
        self._count("invalidations")
        with self._lock:
            self._log_invalidation("tag", tag, m)
        if self._shared:
            await self.adapter.anote_invalidation("tag", tag, m, self.clock(), self.lock_ttl)
        keys = await self.adapter.atagged(tag)
        done = [await self._amark(key, m, tag) for key in keys]
        await self.adapter.auntag(tag, [k for k, ok in zip(keys, done, strict=True) if not ok])
        await self.adapter.aannounce("tag", tag, m)
        return sum(done)

    def invalidate_all_sync(self, mode: ModeName | Mode = "expire") -> None:
        """`invalidate_all` for sync code."""
        m = parse_mode(mode)
        self._count("invalidations")
        with self._lock:
            self._backoffs.clear()
            self.adapter.bump_generation(m)

    async def invalidate_all(self, mode: ModeName | Mode = "expire") -> None:
        """Invalidate every entry at once, in O(1): the store's generation moves on and each
        entry is judged against it when next read."""
        if self._inline:  # a store answering without I/O: the sync path, with no wait
            self.invalidate_all_sync(mode)
            return
        m = parse_mode(mode)
        self._count("invalidations")
        with self._lock:
            self._backoffs.clear()
        await self.adapter.abump_generation(m)

    @staticmethod
    def _check(name: str, what: str, mode: ModeName | Mode) -> Mode:
        m = parse_mode(mode)
        if not isinstance(name, str) or not name:
            raise ValueError(f"the {what} to invalidate must be a non-empty str, not {name!r}")
        return m

    def __repr__(self) -> str:
        return f"ISR({type(self.adapter).__name__}, loaders={len(self._loaders)})"
