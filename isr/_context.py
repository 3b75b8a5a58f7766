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

from contextvars import ContextVar

from ._errors import ConfigError

__all__ = ["FetchContext", "cache_life", "cache_tag", "current_fetch", "no_store"]

_UNSET: float = -1.0


class FetchContext:
    """Per-fetch overrides collected while a loader runs."""

    __slots__ = ("no_store", "sie", "swr", "swr_set", "tags", "ttl")

    def __init__(self) -> None:
        self.ttl: float | None = None
        self.swr: float | None = None
        self.swr_set = False
        self.sie: float | None = None
        self.tags: list[str] = []
        self.no_store = False


current_fetch: ContextVar[FetchContext | None] = ContextVar("isr_fetch", default=None)


def _context(name: str) -> FetchContext:
    ctx = current_fetch.get()
    if ctx is None:
        raise RuntimeError(f"isr.{name}() was called outside a function decorated by isr")
    return ctx


def _check_window(name: str, value: float | None, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
        raise ConfigError(f"isr.cache_life({name}=...) takes seconds >= 0, not {value!r}")


_KEEP: object = object()


def cache_life(
    *,
    ttl: float | None = None,
    swr: float | object | None = _KEEP,
    stale_if_error: float | None = None,
) -> None:
    """Override the decorator's windows for the value the running loader returns.

    ``swr=None`` means unbounded (classic ISR), as on the decorator; leave an argument out to
    keep the decorator's value.
    """
    ctx = _context("cache_life")
    if ttl is not None:
        _check_window("ttl", ttl)
    if swr is not _KEEP:
        _check_window("swr", swr, allow_none=True)  # type: ignore[arg-type]
    if stale_if_error is not None:
        _check_window("stale_if_error", stale_if_error)
    if ttl is not None:
        ctx.ttl = float(ttl)
    if swr is not _KEEP:
        ctx.swr = None if swr is None else float(swr)  # type: ignore[arg-type]
        ctx.swr_set = True
    if stale_if_error is not None:
        ctx.sie = float(stale_if_error)


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
