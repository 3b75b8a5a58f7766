"""What `isr.ISR.stats` returns: counters since the runtime started."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Stats"]


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
    outbox: int
    """Invalidations waiting for the shared store to answer again (`isr.StoreUnavailable`):
    applied to it as soon as it does, before anything is served from it."""
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
    bypassed: int = 0
    """Calls made with the cache off (`isr.disabled`, or a runtime built disabled): each
    ran its loader and stored nothing."""
