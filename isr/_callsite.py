"""The call-site form's loaders: ``rt.revalidating(key, ttl, fetcher, ...)`` needs no wrapper
compiled per call.

One `Loader` serves every call made with the same name and options: the fetcher and the
tags travel as the loader's arguments (``loader.fn(fetcher, tags)`` calls ``fetcher()``), so
singleflight, stale-while-revalidate, stale-if-error, timeouts, backoff and the status are
the decorator's own. The loaders are kept per (name, sync or async, windows, timeouts),
the most recent `KEPT` of them; a fresh hit needs none (``ISR.revalidating`` serves it by the
hot-path rule inline) and only counts itself under the call site's name.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypedDict

from ._entry import Policy, Seconds, optional_seconds, seconds
from ._errors import ConfigError
from ._loader import Loader

__all__ = ["KEPT", "CallSites", "RevalidatingOptions", "label"]

#: How many call-site loaders a runtime keeps (one per name and options).
KEPT = 256


class RevalidatingOptions(TypedDict, total=False):
    """The call-site form's keyword options, as for `isr.with_revalidate` (``name``: what
    metrics and logs call the call site; by default the fetcher's qualified name)."""

    tags: Iterable[str]
    swr: Seconds | None
    stale_if_error: Seconds | None
    timeout: Seconds | None
    soft_timeout: Seconds | None
    name: str | None


async def _fetch_async(fetcher: Callable[[], Awaitable[Any]], tags: tuple[str, ...]) -> Any:
    return await fetcher()


def _fetch_sync(fetcher: Callable[[], Any], tags: tuple[str, ...]) -> Any:
    return fetcher()


def _tags(fetcher: object, tags: tuple[str, ...]) -> tuple[str, ...]:
    return tags


def label(fetcher: object) -> str:
    """A call site's default name: its fetcher's qualified name (a lambda's names the
    function it is written in)."""
    name = getattr(fetcher, "__qualname__", None)
    if isinstance(name, str):
        return name
    inner = getattr(fetcher, "func", None)  # functools.partial
    return label(inner) if inner is not None else type(fetcher).__qualname__


def checked_call(key: object, fetcher: object, tags: Iterable[str]) -> tuple[str, ...]:
    """The call's tags as a tuple, once ``key``, ``fetcher`` and ``tags`` are valid."""
    if not isinstance(key, str) or not key:
        raise ConfigError(f"revalidating() takes a non-empty str key, not {key!r}")
    if not callable(fetcher):
        raise ConfigError(
            f"revalidating() takes a fetcher to call with no arguments, not {fetcher!r}"
        )
    found = (tags,) if isinstance(tags, str) else tuple(tags)
    for tag in found:
        if not isinstance(tag, str) or not tag:
            raise ConfigError(f"revalidating(tags=...) takes non-empty strings, not {tag!r}")
    return found


class CallSites:
    """A runtime's call-site loaders and the fresh hits each call site's name served."""

    def __init__(self, bind: Callable[[Loader[Any]], None]) -> None:
        self._bind = bind
        self._loaders: dict[tuple[Any, ...], Loader[Any]] = {}
        #: Fresh hits served inline, by call-site name (`isr.ISR.stats`, the metrics).
        self.hits: dict[str, int] = {}

    def loader(
        self,
        name: str,
        is_async: bool,
        ttl: Seconds,
        swr: Seconds | None,
        stale_if_error: Seconds | None,
        timeout: Seconds | None,
        soft_timeout: Seconds | None,
    ) -> Loader[Any]:
        """The loader for calls with this name and these options (made and bound once)."""
        options = (name, is_async, ttl, swr, stale_if_error, timeout, soft_timeout)
        loader = self._loaders.get(options)
        if loader is not None:
            return loader
        spelling = "revalidating" if is_async else "revalidating_sync"
        policy = Policy(
            seconds(ttl, f"{spelling}(ttl=...)"),
            optional_seconds(swr, f"{spelling}(swr=...)"),
            optional_seconds(stale_if_error, f"{spelling}(stale_if_error=...)"),
        )
        loader = Loader(
            _fetch_async if is_async else _fetch_sync,
            name=name,
            is_async=is_async,
            policy=policy,
            tags=_tags,
            soft_timeout=optional_seconds(soft_timeout, f"{spelling}(soft_timeout=...)"),
            timeout=optional_seconds(timeout, f"{spelling}(timeout=...)"),
            xfetch=None,
            on_error=None,
        )
        loader.async_hint = "Use `await rt.revalidating(...)` instead of revalidating_sync"
        self._bind(loader)
        if len(self._loaders) >= KEPT:
            del self._loaders[next(iter(self._loaders))]
        self._loaders[options] = loader
        return loader
