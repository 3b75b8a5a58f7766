"""The module-level API: a default runtime that ``isr.configure`` replaces.

Functions decorated with ``isr.with_revalidate`` (no ``runtime=``) follow the default runtime:
``configure`` rebinds them, so decorating at import time and configuring at start-up works.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Literal, TypeVar, overload

from typing_extensions import Unpack

from isr.adapters.base import Adapter

from ._callsite import RevalidatingOptions
from ._decorator import Revalidate, make_decorator
from ._entry import Mode, ModeName, Seconds
from ._loader import ErrorHook, Loader
from ._runtime import ISR
from ._status import Result

T = TypeVar("T")

__all__ = [
    "configure",
    "get_runtime",
    "invalidate",
    "invalidate_all",
    "invalidate_all_sync",
    "invalidate_sync",
    "invalidate_tag",
    "invalidate_tag_sync",
    "revalidating",
    "revalidating_sync",
    "with_revalidate",
]

_lock = threading.Lock()
_default: ISR | None = None
_followers: weakref.WeakSet[Loader[Any]] = weakref.WeakSet()


def get_runtime() -> ISR:
    """The default runtime (``memory://`` until `configure` says otherwise)."""
    global _default
    if _default is None:
        with _lock:
            if _default is None:
                _default = ISR()
    return _default


def configure(url_or_adapter: str | Adapter = "memory://", **options: Any) -> ISR:
    """Replace the default runtime (same arguments as `ISR`) and move every function
    decorated without ``runtime=`` onto it. Call it at start-up, before serving: entries and
    refreshes of the old default runtime are left behind."""
    global _default
    runtime = ISR(url_or_adapter, **options)
    with _lock:
        old, _default = _default, runtime
        for loader in list(_followers):
            runtime.attach(loader)
    if old is not None:
        old._sync.spawner.shutdown(wait=False)
    return runtime


def _follow_default(loader: Loader[Any]) -> None:
    runtime = get_runtime()
    with _lock:
        _followers.add(loader)
    runtime.attach(loader)


def with_revalidate(
    key: str | Callable[..., str],
    ttl: Seconds,
    *,
    swr: Seconds | None = None,
    stale_if_error: Seconds | None = 86400,
    tags: Iterable[str | Callable[..., str]] | str = (),
    runtime: ISR | None = None,
    soft_timeout: Seconds | None = None,
    timeout: Seconds | None = None,
    xfetch: float | None = None,
    on_error: ErrorHook | None = None,
    shared: bool = False,
) -> Revalidate:
    """Cache an async or sync loader with incremental static regeneration.

    ``key`` is a template over the function's parameters (``"post:{slug}"``; defaults
    count) or a callable taking the same arguments; ``tags`` likewise. An answer is fresh for
    ``ttl`` seconds (HIT); for ``swr`` seconds more (None: without bound, classic ISR) it is
    served at once while one background refresh runs (STALE); after that the call fetches,
    and if the fetch raises, the old value is served for ``stale_if_error`` seconds more
    (STALE-IF-ERROR; None: until the entry is purged or evicted) before the origin's
    exception reaches the caller. Every window is seconds or a `datetime.timedelta`;
    ``ttl=0`` means never fresh, as HTTP's ``max-age=0``: each read within ``swr`` is served
    the cached value at once and starts one refresh (with ``swr=0`` too, each read fetches,
    the last value kept as the stale-if-error fallback). For no caching at all, see
    `isr.disabled`. ``soft_timeout``:
    serve the old value (STALE) when a fetch takes longer, the fetch going on in the
    background. ``timeout``: a fetch taking longer fails with TimeoutError. ``xfetch``: the
    beta of probabilistic early refresh (1.0 is usual). ``on_error(key, exc)`` hears of every
    origin failure. ``runtime``: an `ISR`; by default the module's runtime (see `configure`).
    Bad templates or windows raise at decoration time.

    Beside the call: ``fn.lookup(...)`` (the `Result`: value, status, age), ``fn.refresh(...)``
    (fetch now, joining a fetch in flight; store and return the new value),
    ``fn.invalidate(..., mode="expire")`` (the key those arguments make), ``fn.cache_key(...)``
    and ``fn.cache_tags(...)``, each taking the function's own arguments (awaitable where
    the function is async). On a method (first parameter ``self`` or ``cls``), the key
    template must name it (``"user:{self.id}"``), else every instance would share one
    entry: a `TemplateError`, unless ``shared=True`` says that is meant; through an
    instance, the call and every helper bind ``self``. Two functions using one key template
    on one runtime get an `isr.ISRWarning`: their entries would collide.
    """
    return make_decorator(
        key,
        ttl,
        swr=swr,
        stale_if_error=stale_if_error,
        tags=tags,
        bind=runtime.attach if runtime is not None else _follow_default,
        soft_timeout=soft_timeout,
        timeout=timeout,
        xfetch=xfetch,
        on_error=on_error,
        shared=shared,
    )


async def invalidate(key: str, mode: ModeName | Mode = "expire") -> bool:
    """`ISR.invalidate` on the default runtime."""
    return await get_runtime().invalidate(key, mode)


async def invalidate_tag(tag: str, mode: ModeName | Mode = "expire") -> int:
    """`ISR.invalidate_tag` on the default runtime."""
    return await get_runtime().invalidate_tag(tag, mode)


async def invalidate_all(mode: ModeName | Mode = "expire") -> None:
    """`ISR.invalidate_all` on the default runtime."""
    await get_runtime().invalidate_all(mode)


def invalidate_sync(key: str, mode: ModeName | Mode = "expire") -> bool:
    """`invalidate` for sync code (a Django view, a CLI, a thread)."""
    return get_runtime().invalidate_sync(key, mode)


def invalidate_tag_sync(tag: str, mode: ModeName | Mode = "expire") -> int:
    """`invalidate_tag` for sync code."""
    return get_runtime().invalidate_tag_sync(tag, mode)


def invalidate_all_sync(mode: ModeName | Mode = "expire") -> None:
    """`invalidate_all` for sync code."""
    get_runtime().invalidate_all_sync(mode)


@overload
async def revalidating(
    key: str,
    ttl: Seconds,
    fetcher: Callable[[], Awaitable[T]],
    *,
    lookup: Literal[False] = False,
    **options: Unpack[RevalidatingOptions],
) -> T: ...
@overload
async def revalidating(
    key: str,
    ttl: Seconds,
    fetcher: Callable[[], Awaitable[T]],
    *,
    lookup: Literal[True],
    **options: Unpack[RevalidatingOptions],
) -> Result[T]: ...


async def revalidating(
    key: str,
    ttl: Seconds,
    fetcher: Callable[[], Awaitable[T]],
    *,
    lookup: bool = False,
    **options: Unpack[RevalidatingOptions],
) -> T | Result[T]:
    """`ISR.revalidating` on the default runtime: the value under ``key``, fetched by
    ``fetcher()`` and kept and revalidated as a decorated function's."""
    runtime = get_runtime()
    if lookup:
        return await runtime.revalidating(key, ttl, fetcher, lookup=True, **options)
    return await runtime.revalidating(key, ttl, fetcher, **options)


@overload
def revalidating_sync(
    key: str,
    ttl: Seconds,
    fetcher: Callable[[], T],
    *,
    lookup: Literal[False] = False,
    **options: Unpack[RevalidatingOptions],
) -> T: ...
@overload
def revalidating_sync(
    key: str,
    ttl: Seconds,
    fetcher: Callable[[], T],
    *,
    lookup: Literal[True],
    **options: Unpack[RevalidatingOptions],
) -> Result[T]: ...


def revalidating_sync(
    key: str,
    ttl: Seconds,
    fetcher: Callable[[], T],
    *,
    lookup: bool = False,
    **options: Unpack[RevalidatingOptions],
) -> T | Result[T]:
    """`revalidating` for sync code, on the default runtime."""
    runtime = get_runtime()
    if lookup:
        return runtime.revalidating_sync(key, ttl, fetcher, lookup=True, **options)
    return runtime.revalidating_sync(key, ttl, fetcher, **options)
