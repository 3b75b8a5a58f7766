"""`ISR`, the runtime: a facade over a store, the shared state and the two drivers.

What a read or an invalidation does is decided by plain functions (``isr._decisions``, the
ledger, the backoff table), carried out with I/O by the async driver (``isr._async``) or the
sync driver generated from it (``isr._sync``), over the state both share
(``isr._state.RuntimeState``). This class configures them, binds decorated functions to
them, and holds the public API: an async method and its ``_sync`` spelling for every
operation that may wait (``invalidate`` / ``invalidate_sync``, ``wait_ready`` /
``wait_ready_sync``, ``drain`` / ``drain_sync``), and anyio's ``aclose`` / ``close``.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, Literal, TypeVar, overload

import anyio
import anyio.to_thread
from typing_extensions import Self, Unpack

from isr.adapters.base import Adapter
from isr.adapters.names import checked

from ._async.driver import AsyncDriver
from ._async.explain import read_facts
from ._callsite import CallSites, RevalidatingOptions, checked_call, label
from ._codec import Codec
from ._coherence import Confirmation, Instance, LoggedInvalidation
from ._config import adapter_from_url, url_from_env
from ._decisions import xfetch_due
from ._decorator import Revalidate, make_decorator
from ._entry import Mode, ModeName, Seconds, parse_mode, seconds
from ._errors import ConfigError, warn
from ._explain import (
    HOLDERS_WAIT,
    LOG_SEARCHED,
    Explanation,
    Facts,
    Windows,
    explanation,
    literal_length,
    page_rule_windows,
    template_matches,
)
from ._loader import ErrorHook, Loader
from ._metrics import install, retire
from ._state import RuntimeState
from ._stats import Stats
from ._status import Result, Status
from ._switch import CLOSED, bypassing, register
from ._sync.driver import SyncDriver
from ._sync.explain import read_facts as read_facts_sync
from ._synchronization import async_usable

__all__ = ["ISR"]

logger = logging.getLogger("isr")

T = TypeVar("T")
_HIT = Status.HIT
#: `ISR._site_hit`'s answer when the entry is not a fresh hit.
_NOT_FRESH: Any = object()


class ISR:
    """A cache runtime: a store, a clock, and the refreshes and fetches under way.

    ``url_or_adapter`` is a cache URL (``"memory://?max_entries=50000"``) or an `Adapter`.
    ``clock`` returns seconds (monotonic by default); tests pass a fake one. ``backoff`` is
    the delay after a failed refresh before the origin is tried again for that key (doubling
    per failure up to ``max_backoff``). ``refresh_workers`` bounds the threads that refresh
    sync loaders. Use it as ``async with ISR() as rt:`` to run refreshes in its own task
    group (``with ISR() as rt:`` from sync code), or call `aclose` (or `close` from sync
    code) when done: both wait for running refreshes to finish.

    ``heartbeat`` (seconds or a `datetime.timedelta`, default 1): on a store other
    processes share (disk, Redis), the runtime registers itself as an instance and says it
    is alive this often, from a daemon thread (`instances`); None: it does not register (a
    one-off script, the ``isr`` command). ``log_size``: how many invalidations the store's
    log keeps (`invalidation_log`; on Redis a stream trimmed to exactly that many).
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
        heartbeat: Seconds | None = 1.0,
        log_size: int = 1000,
        enabled: bool = True,
    ) -> None:
        if not isinstance(enabled, bool):
            raise ConfigError(f"ISR(enabled=...) takes True or False, not {enabled!r}")
        if isinstance(url_or_adapter, Adapter):
            if namespace is not None or codec is not None or l1:
                raise ConfigError(
                    "pass namespace=, codec= and l1= with a cache URL, or build the adapter "
                    "with them yourself"
                )
            adapter = url_or_adapter
        elif isinstance(url_or_adapter, str):
            adapter = adapter_from_url(url_or_adapter, namespace=namespace, codec=codec, l1=l1)
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
        beat = None if heartbeat is None else seconds(heartbeat, "ISR(heartbeat=...)")
        if beat is not None and not 0 < beat < float("inf"):
            raise ConfigError("ISR(heartbeat=...) must be > 0 seconds (or None: not registered)")
        if isinstance(log_size, bool) or not isinstance(log_size, int) or log_size < 1:
            raise ConfigError("log_size must be a positive integer")
        self.adapter = adapter
        self.clock: Callable[[], float] = clock or (
            time.time if adapter.wall_clock else time.monotonic
        )
        self.refresh_workers = refresh_workers
        self._state = RuntimeState(
            adapter,
            clock=self.clock,
            backoff=backoff,
            max_backoff=max_backoff,
            lock_ttl=lock_ttl,
            on_error=on_error,
            random=random,
        )
        self._state.enabled = self.enabled = enabled
        self._async = AsyncDriver(self._state, refresh_workers)
        self._sync = SyncDriver(self._state, refresh_workers)
        self._loaders: weakref.WeakSet[Loader[Any]] = weakref.WeakSet()
        #: The page middleware serving from this runtime (`isr._http.Edge`), whose rules
        #: `explain` matches page keys with.
        self._edges: weakref.WeakSet[Any] = weakref.WeakSet()
        host = socket.gethostname()
        self.instance_id = f"{host}:{os.getpid()}:{secrets.token_hex(3)}"
        self._host = host
        self._started = time.time()
        self.heartbeat = beat
        self._state.instance_id = self.instance_id
        self._state.registered = beat is not None
        self._state.log_size = log_size
        self._beat: _Heartbeat | None = None
        if self.heartbeat is not None and adapter.shared:
            self._beat = _Heartbeat(adapter, self._instance, self.heartbeat)
        #: Key templates in use, for the warning when two functions share one.
        self._templates: weakref.WeakValueDictionary[str, Loader[Any]] = (
            weakref.WeakValueDictionary()
        )
        # What the hot paths compare entries' generations with: the store, or CLOSED while
        # the cache is off (isr._switch); changed under the lock, with the loaders'.
        self._hot: Any = adapter
        self._hot_lock = threading.Lock()
        self._peek = adapter.peek
        self._sites = CallSites(self.attach)
        register(self)
        install(self)  # metrics and spans, with the [otel] extra

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **options: Any) -> ISR:
        """A runtime on the store the environment names: ``ISR_CACHE_URL`` (a cache URL),
        else ``ISR_TARGET`` (development, tests: memory; single-host: disk under
        ``ISR_CACHE_DIR``; multi-instance, serverless: Redis, which then needs
        ``ISR_CACHE_URL``), else memory. ``ISR_NAMESPACE`` sets the namespace;
        ``ISR_ENABLED=0`` (or ``false``, ``no``, ``off``) builds it disabled (see
        `isr.disabled`). Other arguments as for `ISR`."""
        env = os.environ if environ is None else environ
        url = url_from_env(env)
        if "namespace" not in options and env.get("ISR_NAMESPACE"):
            options["namespace"] = env["ISR_NAMESPACE"]
        if "enabled" not in options:
            options["enabled"] = enabled_from_env(env)
        return cls(url, **options)

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Self:
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._async.spawner.task_group = tg
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        tg, self._async.spawner.task_group = self._async.spawner.task_group, None
        try:
            await self.aclose()
        finally:
            if tg is not None:
                await tg.__aexit__(exc_type, exc, tb)
        return None

    def __enter__(self) -> Self:
        """``with ISR(...) as rt:`` from sync code: `close` on leaving the block."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def wait_ready(self, within: float = 5.0) -> bool:
        """Wait until the store answers and can keep its promises: Redis answers a PING;
        with an L1, its invalidation bus has also subscribed (so no invalidation published
        from then on is missed); the runtime is in the store's registry of instances. Call
        it at start-up before serving; False if that did not happen within ``within``
        seconds (the store cannot be reached, say)."""
        return await anyio.to_thread.run_sync(self.wait_ready_sync, within)

    def wait_ready_sync(self, within: float = 5.0) -> bool:
        """`wait_ready` for sync code."""
        ready = self.adapter.ready(within)
        if ready and self._beat is not None:
            self._beat.beat()  # registered before the caller goes on (and tells the others)
        return ready

    async def drain(self) -> None:
        """Wait until no background refresh (async or in a thread) is running."""
        while self._async.pending or self._sync.pending:
            await self._async.drain()
            if self._sync.pending:
                await anyio.to_thread.run_sync(self._sync.drain)

    def drain_sync(self) -> None:
        """`drain` for sync code: wait for the refreshes running in threads."""
        self._sync.drain()

    async def aclose(self) -> None:
        """Wait for running refreshes, stop the refresh threads, leave the registry of
        instances, close the store."""
        self._state.closing = True
        await self.drain()
        await anyio.to_thread.run_sync(self._sync.spawner.shutdown)
        if self._beat is not None:
            await anyio.to_thread.run_sync(self._beat.stop)
        await self.adapter.aclose()
        retire(self)

    def close(self) -> None:
        """`aclose` for sync code: waits for running sync refreshes, then closes the store."""
        self._state.closing = True
        self._sync.drain()
        self._sync.spawner.shutdown()
        if self._beat is not None:
            self._beat.stop()
        self.adapter.close()
        retire(self)

    # ------------------------------------------------------------------ decorating

    def with_revalidate(
        self,
        key: str | Callable[..., str],
        ttl: Seconds,
        *,
        swr: Seconds | None = None,
        stale_if_error: Seconds | None = 86400,
        tags: Iterable[str | Callable[..., str]] | str = (),
        soft_timeout: Seconds | None = None,
        timeout: Seconds | None = None,
        xfetch: float | None = None,
        on_error: ErrorHook | None = None,
        shared: bool = False,
    ) -> Revalidate:
        """`isr.with_revalidate` bound to this runtime (see there for the arguments)."""
        return make_decorator(
            key,
            ttl,
            swr=swr,
            stale_if_error=stale_if_error,
            tags=tags,
            bind=self.attach,
            soft_timeout=soft_timeout,
            timeout=timeout,
            xfetch=xfetch,
            on_error=on_error,
            shared=shared,
        )

    def attach(self, loader: Loader[Any]) -> None:
        """Bind a decorated function's generated wrapper to this runtime."""
        driver = self._async if loader.is_async else self._sync
        ns = loader.namespace
        ns["_isr_peek"] = self.adapter.peek
        ns["_isr_clock"] = self.clock
        ns["_isr_miss"] = driver.miss
        ns["_isr_quick"] = self._async.quick_answer
        ns["_isr_lookup"] = driver.lookup
        ns["_isr_spawn"] = driver.spawn
        ns["_isr_early"] = self._early
        ns["_isr_refresh"] = driver.refresh
        ns["_isr_invalidate"] = self.invalidate if loader.is_async else self.invalidate_sync
        if loader.runtime is None and loader.template is not None:
            self._share_template(loader, loader.template)
        with self._hot_lock:
            ns["_isr_ad"] = self._hot
            if loader.runtime is not self:
                loader.runtime = self
                loader.reset()  # answers counted from here on belong to this runtime
                self._loaders.add(loader)
        if loader.template is not None:
            self._templates.setdefault(loader.template, loader)

    def _share_template(self, loader: Loader[Any], template: str) -> None:
        """Warn when another function already uses ``loader``'s key template here: their
        entries share keys, so each may be served what the other loaded."""
        other = self._templates.get(template)
        if other is None or other.runtime is not self:
            return
        mine, theirs = _where(loader), _where(other)
        if mine != theirs:  # the same function decorated again (a factory, a reload) is fine
            warn(
                f"{mine}() and {theirs}() both use the key template {template!r} on one "
                "runtime: their entries share keys, so each may be served what the other "
                "loaded. Give each function its own key prefix."
            )

    def shut_hot_paths(self, shut: bool) -> None:
        """Give the hot paths of this runtime's functions `isr.CLOSED` (``shut``:
        the cache is off somewhere in the process) or the store again (if enabled)."""
        with self._hot_lock:
            self._hot = self.adapter if self.enabled and not shut else CLOSED
            for loader in list(self._loaders):
                if loader.runtime is self:
                    loader.namespace["_isr_ad"] = self._hot

    def _early(self, loader: Loader[Any], entry: Any, now: float) -> bool:
        """Whether a fresh hit starts an early refresh (XFetch; the wrappers' hit block)."""
        return xfetch_due(loader.delta, loader.xfetch, self._state.random(), now, entry.fresh_until)

    # ------------------------------------------------------------------ the call-site form

    @overload
    async def revalidating(
        self,
        key: str,
        ttl: Seconds,
        fetcher: Callable[[], Awaitable[T]],
        *,
        lookup: Literal[False] = False,
        **options: Unpack[RevalidatingOptions],
    ) -> T: ...
    @overload
    async def revalidating(
        self,
        key: str,
        ttl: Seconds,
        fetcher: Callable[[], Awaitable[T]],
        *,
        lookup: Literal[True],
        **options: Unpack[RevalidatingOptions],
    ) -> Result[T]: ...

    async def revalidating(
        self,
        key: str,
        ttl: Seconds,
        fetcher: Callable[[], Awaitable[T]],
        *,
        tags: Iterable[str] = (),
        swr: Seconds | None = None,
        stale_if_error: Seconds | None = 86400,
        timeout: Seconds | None = None,  # noqa: ASYNC109 - the loader's, as on the decorator
        soft_timeout: Seconds | None = None,
        name: str | None = None,
        lookup: bool = False,
    ) -> T | Result[T]:
        """The value under ``key``, kept and revalidated as `with_revalidate` keeps a
        decorated function's: fetched by ``fetcher()`` (a coroutine function taking no
        arguments: a lambda, a bound method) on a miss, once for every concurrent caller;
        served STALE while one background refresh runs; the old value if the fetch fails,
        within ``stale_if_error``. The windows and ``tags``, ``timeout``, ``soft_timeout``
        as for the decorator. ``lookup=True``: the `Result` (value, status, age) instead of
        the value. ``name``: what metrics and logs call this call site (by default the
        fetcher's qualified name). The options are checked when a call fetches.

            posts = await rt.revalidating("posts:all", 60, lambda: cms.get("/posts"),
                                          tags=["posts"], swr=600)

        Named for what it does, beside `with_revalidate`: the value, revalidating; the
        decorator stays the main form (its key is computed from the arguments, and its
        fresh hit costs less: see the benchmarks).
        """
        hit = self._site_hit(key, fetcher, name, lookup)
        if hit is not _NOT_FRESH:
            return hit  # type: ignore[no-any-return]
        args = (fetcher, checked_call(key, fetcher, tags))
        loader = self._sites.loader(
            name or label(fetcher), True, ttl, swr, stale_if_error, timeout, soft_timeout
        )
        answer = await self._async.call(loader, key, args, {})
        return Result(*answer) if lookup else answer[0]

    @overload
    def revalidating_sync(
        self,
        key: str,
        ttl: Seconds,
        fetcher: Callable[[], T],
        *,
        lookup: Literal[False] = False,
        **options: Unpack[RevalidatingOptions],
    ) -> T: ...
    @overload
    def revalidating_sync(
        self,
        key: str,
        ttl: Seconds,
        fetcher: Callable[[], T],
        *,
        lookup: Literal[True],
        **options: Unpack[RevalidatingOptions],
    ) -> Result[T]: ...

    def revalidating_sync(
        self,
        key: str,
        ttl: Seconds,
        fetcher: Callable[[], T],
        *,
        tags: Iterable[str] = (),
        swr: Seconds | None = None,
        stale_if_error: Seconds | None = 86400,
        timeout: Seconds | None = None,
        soft_timeout: Seconds | None = None,
        name: str | None = None,
        lookup: bool = False,
    ) -> T | Result[T]:
        """`revalidating` for sync code: ``fetcher()`` is a plain function (refreshes run
        on the runtime's refresh threads)."""
        hit = self._site_hit(key, fetcher, name, lookup)
        if hit is not _NOT_FRESH:
            return hit  # type: ignore[no-any-return]
        args = (fetcher, checked_call(key, fetcher, tags))
        loader = self._sites.loader(
            name or label(fetcher), False, ttl, swr, stale_if_error, timeout, soft_timeout
        )
        answer = self._sync.call(loader, key, args, {})
        return Result(*answer) if lookup else answer[0]

    def _site_hit(self, key: str, fetcher: object, name: str | None, lookup: bool) -> Any:
        """The call-site form's fresh hit, by the hot-path rule of ``isr/adapters/base.py``
        (counted under the call site's name): the value, or its `Result` with ``lookup``;
        `_NOT_FRESH` when the call must go to the driver."""
        entry = self._peek(key)
        if entry is not None and entry.gen is self._hot.gen:
            now = self.clock()
            if now < entry.fresh_until:
                entry.used = True
                site = name or label(fetcher)
                hits = self._sites.hits
                hits[site] = hits.get(site, 0) + 1
                return Result(entry.value, _HIT, now - entry.created) if lookup else entry.value
        return _NOT_FRESH

    # ------------------------------------------------------------------ stats

    def stats(self) -> Stats:
        """Counters since the runtime started (a snapshot)."""
        n = self._state.counts
        fast = sum(loader.fast_hits() for loader in self._loaders if loader.runtime is self)
        fast += sum(self._sites.hits.values())
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
            bypassed=n["bypassed"],
            evictions=self.adapter.evictions,
            entries=self.adapter.size(),
            refreshing=len(self._async.pending) + len(self._sync.pending),
            outbox=len(self._state.outbox),
            store_errors=self.adapter.errors + self._state.log_failures,
            gone=sum(loader.gone for loader in self._loaders if loader.runtime is self),
            store=self.adapter.counters(),
        )

    # ------------------------------------------------------------------ invalidation

    async def invalidate(self, key: str, mode: ModeName | Mode = "expire") -> bool:
        """Invalidate one key: ``"expire"`` (default; the next read fetches, the old value is
        kept only as the stale-if-error fallback), ``"revalidate"`` (next reads are served
        stale at once while one refresh runs) or ``"purge"`` (gone; never served again).
        A fetch of the key already under way stores its value with the same mark.
        Returns True if an entry was there. A shared store that cannot be reached raises
        `isr.StoreUnavailable` (this process obeys at once; the store and the other
        instances once it answers: see there)."""
        return await self._async.invalidate(key, _checked(key, "key", mode))

    def invalidate_sync(self, key: str, mode: ModeName | Mode = "expire") -> bool:
        """`invalidate` for sync code (a Django view, a CLI, a thread)."""
        return self._sync.invalidate(key, _checked(key, "key", mode))

    async def invalidate_tag(self, tag: str, mode: ModeName | Mode = "expire") -> int:
        """Invalidate every entry carrying ``tag`` (modes and `isr.StoreUnavailable` as in
        `invalidate`); costs O(entries with the tag). Returns how many entries were
        affected."""
        return await self._async.invalidate_tag(tag, _checked(tag, "tag", mode))

    def invalidate_tag_sync(self, tag: str, mode: ModeName | Mode = "expire") -> int:
        """`invalidate_tag` for sync code."""
        return self._sync.invalidate_tag(tag, _checked(tag, "tag", mode))

    async def invalidate_all(self, mode: ModeName | Mode = "expire") -> None:
        """Invalidate every entry at once, in O(1): the store's generation moves on and each
        entry is judged against it when next read (`isr.StoreUnavailable` as in
        `invalidate`)."""
        await self._async.invalidate_all(parse_mode(mode))

    def invalidate_all_sync(self, mode: ModeName | Mode = "expire") -> None:
        """`invalidate_all` for sync code."""
        self._sync.invalidate_all(parse_mode(mode))

    # ------------------------------------------------------------------ explaining

    async def explain(self, key: str) -> Explanation:
        """What the store and this runtime hold for ``key`` now, and what its next read will
        do and why (an `isr.Explanation`; ``str()`` of it says it in plain words): when the
        value was produced, its windows and where it stands in them, its tags, its mark and
        the logged invalidation that set it, the generation, a fetch or backoff under way,
        this instance's L1 copy and which other instances' L1s hold one (asked over the
        bus, at most 0.5 s). Reads the store without changing what any read finds;
        counts nothing. The page key of a URL: `isr.asgi.page_key`."""
        _checked_key(key)
        facts = await read_facts(self.adapter, key, self.clock)
        log = await self.invalidation_log(LOG_SEARCHED)
        instances = await self.instances()
        holders = await anyio.to_thread.run_sync(self._holders, key, instances)
        return self._explained(facts, log, instances, holders)

    def explain_sync(self, key: str) -> Explanation:
        """`explain` for sync code."""
        _checked_key(key)
        facts = read_facts_sync(self.adapter, key, self.clock)
        log = self.invalidation_log_sync(LOG_SEARCHED)
        instances = self.instances_sync()
        return self._explained(facts, log, instances, self._holders(key, instances))

    def _holders(self, key: str, instances: list[Instance]) -> dict[str, bool] | None:
        """What the other live instances keeping an L1 answer when asked whether theirs
        holds ``key`` (at most `HOLDERS_WAIT` seconds); None: they could not be asked."""
        ids = [i.id for i in instances if i.l1 and i.id != self.instance_id]
        return self.adapter.holders(key, ids, HOLDERS_WAIT) if ids else {}

    def _explained(
        self,
        facts: Facts,
        log: list[LoggedInvalidation],
        instances: list[Instance],
        holders: dict[str, bool] | None = None,
    ) -> Explanation:
        key, state = facts.key, self._state
        with state.lock:
            backoff = state.backoffs.active(key, facts.now)
            fetching = key in self._async.flights or key in self._sync.flights
        return explanation(
            facts,
            windows=self._windows(key),
            backoff=backoff,
            fetching_here=fetching,
            log=log,
            instances=instances,
            instance_id=self.instance_id,
            holders=holders,
            off=None
            if self.enabled and not bypassing()
            else "the cache is off "
            + (
                "in this runtime (ISR(enabled=False))"
                if not self.enabled
                else "here (isr.disabled)"
            ),
        )

    def _windows(self, key: str) -> Windows | None:
        """The windows ``key`` gets from what is registered here: the page rule whose path
        matches a page key, else the decorated function whose key template matches it
        (the most specific: the most literal text)."""
        edges = list(self._edges)
        found = page_rule_windows(key, [edge.site for edge in edges])
        if found is not None:
            return found
        pages = {id(route.counter) for edge in edges for route in edge.site.routes}
        best: Loader[Any] | None = None
        for loader in list(self._loaders):
            template = loader.template
            if loader.runtime is not self or template is None or id(loader) in pages:
                continue
            if template_matches(template, key) and (
                best is None or literal_length(template) > literal_length(best.template or "")
            ):
                best = loader
        if best is None or best.template is None:
            return None
        return Windows(
            "function",
            best.name,
            best.template,
            best.policy,
            best.xfetch,
            best.soft_timeout,
        )

    # ------------------------------------------------------------------ coherence

    def _instance(self) -> Instance:
        """This runtime's record in the registry, as of now (a store with an L1 fills in
        ``l1`` and ``applied``)."""
        return Instance(
            self.instance_id,
            self._host,
            os.getpid(),
            self._started,
            getattr(self.adapter, "namespace", None) or "isr",
            self._now(),
            False,
            None,
            self.heartbeat or 1.0,
        )

    def _now(self) -> float:
        """The registry's time: the runtime's clock on a store whose times are wall-clock
        ones (every shared store), else unix time (a monotonic clock means nothing to
        another process)."""
        return self.clock() if self.adapter.wall_clock else time.time()

    def _with_me(self, found: list[Instance]) -> list[Instance]:
        if self._state.registered and all(i.id != self.instance_id for i in found):
            found = sorted([*found, self._instance()], key=lambda i: i.id)
        return found

    async def instances(self) -> list[Instance]:
        """The live instances sharing the store (this one included, unless built with
        ``heartbeat=None``), sorted by id: each registers when it starts, says it is alive
        every ``heartbeat`` seconds and leaves when it closes; one silent for three
        heartbeats (killed, frozen, cut off) is no longer listed. Times are the instances'
        clocks: hosts must agree on the time to well within a heartbeat (NTP does). The
        memory store lists this runtime alone; a store out of reach, none but it."""
        store = async_usable(self.adapter)
        return self._with_me(await store.ainstances(self._now()))

    def instances_sync(self) -> list[Instance]:
        """`instances` for sync code."""
        return self._with_me(self.adapter.instances(self._now()))

    async def confirm(self, timeout: float = 1.0) -> Confirmation:  # noqa: ASYNC109 - a bound, not a cancel
        """Wait until every live instance has applied every invalidation this runtime made
        so far (its L1 dropped what they cover; an instance without an L1 has nothing to
        drop and confirms at once), at most ``timeout`` seconds (0: look once, do not
        wait), and say who did (`isr.Confirmation.confirmed`), who did not in time
        (``missing``: frozen, partitioned, or its subscription down) and how long it took.
        Never raises for an instance that does not answer. Invalidations still in the
        outbox (the store was out of reach) cannot be confirmed: every other instance is
        missing. Each logged invalidation it covers gets the confirmation
        (`invalidation_log`)."""
        return await self._async.confirm(_timeout(timeout))

    def confirm_sync(self, timeout: float = 1.0) -> Confirmation:
        """`confirm` for sync code."""
        return self._sync.confirm(_timeout(timeout))

    async def invalidation_log(self, limit: int = 50) -> list[LoggedInvalidation]:
        """The ``limit`` latest invalidations made on the store by any instance, newest
        first: when, what, how, where it came from (`isr.invalidation_source`), which
        instance, its bus epoch and its confirmation once one covered it. Best-effort: a
        store out of reach gives an empty list."""
        store = async_usable(self.adapter)
        return await store.ainvalidation_log(_limit(limit))

    def invalidation_log_sync(self, limit: int = 50) -> list[LoggedInvalidation]:
        """`invalidation_log` for sync code."""
        return self.adapter.invalidation_log(_limit(limit))

    def __repr__(self) -> str:
        return f"ISR({type(self.adapter).__name__}, loaders={len(self._loaders)})"


def _checked_key(key: str) -> None:
    if not isinstance(key, str) or not key:
        raise ConfigError(f"the key to explain must be a non-empty str, not {key!r}")
    checked(key)


class _Heartbeat:
    """Registers a runtime in its store's registry now and every ``interval`` seconds,
    from a daemon thread (the store's sync calls), until `stop` removes the record."""

    def __init__(self, adapter: Adapter, instance: Callable[[], Instance], interval: float):
        self._adapter = adapter
        self._instance = instance
        self._interval = interval
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="isr-heartbeat", daemon=True)
        self._thread.start()

    def beat(self) -> None:
        with self._lock:
            if not self._stop.is_set():
                try:
                    self._adapter.register(self._instance())
                except Exception:  # a third-party store's: the next beat tries again
                    logger.exception("isr: heartbeat failed")

    def _run(self) -> None:
        while not self._stop.is_set():
            self.beat()
            self._stop.wait(self._interval)

    def stop(self) -> None:
        with self._lock:
            if self._stop.is_set():
                return
            self._stop.set()
        self._thread.join()
        try:
            self._adapter.unregister(self._instance().id)
        except Exception:
            logger.exception("isr: leaving the registry failed")


def _timeout(timeout: float) -> float:
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout >= 0:
        raise ConfigError(f"timeout must be >= 0 seconds, not {timeout!r}")
    return min(float(timeout), 3600.0)


def _limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ConfigError(f"limit must be a positive integer, not {limit!r}")
    return limit


def _where(loader: Loader[Any]) -> str:
    """A decorated function's module and qualified name."""
    return f"{getattr(loader.fn, '__module__', None) or '?'}.{loader.name}"


_ON = {"1": True, "true": True, "yes": True, "on": True, "": True}
_OFF = {"0": False, "false": False, "no": False, "off": False}


def enabled_from_env(environ: Mapping[str, str]) -> bool:
    """``ISR_ENABLED``: unset, ``1``, ``true``, ``yes`` or ``on`` (any case): enabled;
    ``0``, ``false``, ``no`` or ``off``: disabled; anything else: `isr.ConfigError`."""
    text = environ.get("ISR_ENABLED", "").strip().lower()
    try:
        return {**_ON, **_OFF}[text]
    except KeyError:
        raise ConfigError(
            f"ISR_ENABLED={environ['ISR_ENABLED']!r}: use 1/true/yes/on or 0/false/no/off"
        ) from None


def _checked(name: str, what: str, mode: ModeName | Mode) -> Mode:
    """The mode, once ``name`` (a key or a tag to invalidate) and ``mode`` are valid."""
    m = parse_mode(mode)
    if not isinstance(name, str) or not name:
        raise ConfigError(f"the {what} to invalidate must be a non-empty str, not {name!r}")
    checked(name, what)
    return m
