"""What a loader can say about its own result while it runs: its windows, tags, or "don't keep".

    @isr.with_revalidate("post:{slug}", ttl=60)
    async def get_post(slug: str) -> dict:
        post = await cms.get(slug)
        isr.cache_tag(f"author:{post['author']}")       # tags known only from the data
        if post["breaking"]:
            isr.cache_life(ttl=5)                        # this one goes stale sooner
        return post

Outside a loader these calls raise RuntimeError: there is no result for them to apply to.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from ._entry import Seconds, optional_seconds
from ._errors import ConfigError

__all__ = ["FetchContext", "cache_life", "cache_tag", "current_fetch", "loading", "no_store"]

_UNSET: float = -1.0


class FetchContext:
    """Per-fetch overrides collected while a loader runs (``*_set``: the loader set that
    window, possibly to None, no bound)."""

    __slots__ = ("no_store", "sie", "sie_set", "swr", "swr_set", "tags", "ttl")

    def __init__(self) -> None:
        self.ttl: float | None = None
        self.swr: float | None = None
        self.swr_set = False
        self.sie: float | None = None
        self.sie_set = False
        self.tags: list[str] = []
        self.no_store = False


current_fetch: ContextVar[FetchContext | None] = ContextVar("isr_fetch", default=None)


@contextmanager
def loading(ctx: FetchContext | None = None) -> Iterator[FetchContext]:
    """The block where a loader runs: ``isr.cache_life`` and the others apply to ``ctx``
    (a fresh one by default)."""
    ctx = FetchContext() if ctx is None else ctx
    token = current_fetch.set(ctx)
    try:
        yield ctx
    finally:
        current_fetch.reset(token)


def _context(name: str) -> FetchContext:
    ctx = current_fetch.get()
    if ctx is None:
        raise RuntimeError(f"isr.{name}() was called outside a function decorated by isr")
    return ctx


class _Keep:
    """The default of `cache_life`'s windows that may be None: keep the decorator's."""

    def __repr__(self) -> str:
        return "KEEP"


_KEEP: Any = _Keep()


def cache_life(
    *,
    ttl: Seconds | None = None,
    swr: Seconds | None = _KEEP,
    stale_if_error: Seconds | None = _KEEP,
) -> None:
    """Override the decorator's windows for the value the running loader returns.

    Windows are seconds or `datetime.timedelta`. ``swr=None`` and ``stale_if_error=None``
    mean unbounded, as on the decorator; leave an argument out to keep the decorator's value.
    """
    ctx = _context("cache_life")
    new_ttl = optional_seconds(ttl, "isr.cache_life(ttl=...)")
    keep_swr, keep_sie = swr is _KEEP, stale_if_error is _KEEP
    new_swr = None if keep_swr else optional_seconds(swr, "isr.cache_life(swr=...)")
    new_sie = (
        None if keep_sie else optional_seconds(stale_if_error, "isr.cache_life(stale_if_error=...)")
    )
    if new_ttl is not None:
        ctx.ttl = new_ttl
    if not keep_swr:
        ctx.swr, ctx.swr_set = new_swr, True
    if not keep_sie:
        ctx.sie, ctx.sie_set = new_sie, True


def cache_tag(*tags: str) -> None:
    """Add tags to the value the running loader returns (beside the decorator's tags)."""
    ctx = _context("cache_tag")
    for tag in tags:
        if not isinstance(tag, str) or not tag:
            raise ConfigError(f"isr.cache_tag() takes non-empty strings, not {tag!r}")
    ctx.tags.extend(tags)


def no_store() -> None:
    """Return the running loader's value to its callers without caching it."""
    _context("no_store").no_store = True
