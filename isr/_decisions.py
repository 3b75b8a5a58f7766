"""The runtime's decisions, as plain functions: no I/O, no event loop, no threads, no clock.

- `decide_read`: what a read does with what the store holds (serve it, serve it stale and
  refresh it, answer from the fallback while the key backs off, or fetch, with or without an
  old value to fall back on). `isr._entry.classify` gives the verdict it starts from.
- `xfetch_due`: whether a fresh read starts an early refresh (XFetch).
- `fetched_entry` and `remark`: how a fetched value is stored (its windows, its tags) and
  marked by an invalidation made while it was fetched.
- `settle`: what the callers of a finished fetch get (its value, the fallback, or the error).

The drivers (``isr/_async/driver.py`` and the generated ``isr/_sync/driver.py``) do the I/O
around them; ``tests/test_decisions.py`` checks them with tables of cases.
"""

from __future__ import annotations

import enum
import math
from typing import Any, Final, NamedTuple

from ._backoff import Backoff
from ._codec import CodecError
from ._context import FetchContext
from ._entry import EXPIRED, FRESH, STALE, Entry, Mode, Policy, Verdict
from ._status import Status

__all__ = [
    "FETCH",
    "Answer",
    "Read",
    "Settle",
    "decide_read",
    "fetched_entry",
    "may_hide",
    "remark",
    "settle",
    "xfetch_due",
]

#: An answer before it becomes a `Result`: (value, status, age, error).
Answer = tuple[Any, Status, float, "BaseException | None"]

# Enum member access costs about 100 ns on Python 3.11: the slow path uses these.
_HIT, _STALE, _STALE_IF_ERROR = Status.HIT, Status.STALE, Status.STALE_IF_ERROR
_PURGE: Final = Mode.PURGE


class Read(NamedTuple):
    """What a read does. ``answer``: serve it now. ``refresh``: start one background refresh
    of the key (unless one runs already). Without an answer, the read fetches, and serves
    ``fallback`` (an old value) should the fetch fail."""

    answer: Answer | None
    refresh: bool
    fallback: Entry | None


#: A read that fetches, with no old value to fall back on.
FETCH: Final = Read(None, False, None)
# Every slow read makes one: tuple's own C constructor, not the NamedTuple's Python one.
_new = tuple.__new__


def may_hide(error: BaseException) -> bool:
    """May a failed fetch be answered with the old value (STALE-IF-ERROR)? Not when the
    store's codec refused the new one (`CodecError`): that is a bug to fix, not an origin
    blip, so every caller gets the error, also while the key backs off; the old value still
    serves as STALE within ``swr``, with a warning per failed refresh."""
    return not isinstance(error, CodecError)


def decide_read(
    entry: Entry | None,
    verdict: Verdict,
    now: float,
    backoff: Backoff | None,
    early: bool = False,
) -> Read:
    """What a read at ``now`` does with ``entry`` (classified as ``verdict``), given the key's
    running ``backoff``, if any (only an expired entry needs it), and whether an early
    refresh is ``early`` (`xfetch_due`)."""
    if entry is None:
        return FETCH
    if verdict is FRESH:
        return _new(Read, ((entry.value, _HIT, now - entry.created, None), early, None))
    if verdict is STALE:
        return _new(Read, ((entry.value, _STALE, now - entry.created, None), True, None))
    if verdict is EXPIRED:
        if backoff is not None and may_hide(backoff.error):
            age = now - entry.created
            return _new(Read, ((entry.value, _STALE_IF_ERROR, age, backoff.error), False, None))
        return _new(Read, (None, False, entry))
    return FETCH


def xfetch_due(delta: float, beta: float | None, r: float, now: float, fresh_until: float) -> bool:
    """XFetch (Vattani, Chierichetti, Lowenstein, VLDB 2015): refresh early with a
    probability that grows as expiry nears, scaled by how long the loader takes
    (``delta``) and ``beta``; ``r`` is uniform in [0, 1)."""
    if beta is None or delta <= 0.0:
        return False
    gap = -delta * beta * math.log(r) if r > 0.0 else math.inf
    return now + gap >= fresh_until


def fetched_entry(
    value: Any,
    *,
    created: float,
    gen: int,
    policy: Policy,
    tags: tuple[str, ...],
    ctx: FetchContext,
) -> Entry | None:
    """The entry to store for a fetched ``value`` (None: keep nothing): the decorator's
    ``policy`` and ``tags`` with what the loader said while it ran (``ctx``: its
    ``cache_life``, ``cache_tag`` and ``no_store``)."""
    if ctx.no_store:
        return None
    if ctx.ttl is not None or ctx.swr_set or ctx.sie_set:
        policy = Policy(
            policy.ttl if ctx.ttl is None else ctx.ttl,
            (None if policy.swr == math.inf else policy.swr) if not ctx.swr_set else ctx.swr,
            (None if policy.sie == math.inf else policy.sie) if not ctx.sie_set else ctx.sie,
        )
    if ctx.tags:
        tags = tuple(dict.fromkeys((*tags, *ctx.tags)))
    return Entry(value, created, policy, gen, tags)


def remark(entry: Entry, mode: Mode | None) -> Entry | None:
    """``entry`` with an invalidation made while it was being fetched (None: purged, store
    nothing)."""
    if mode is None:
        return entry
    return None if mode is _PURGE else entry.marked(mode)


class Settle(enum.Enum):
    """What the callers of a finished fetch get."""

    VALUE = "value"  # the fetched value: MISS
    FALLBACK = "fallback"  # the old value: STALE-IF-ERROR
    RAISE = "raise"  # the origin's error


def settle(error: BaseException | None, fallback: Entry | None) -> Settle:
    """The fetch failed with ``error`` (or not); ``fallback`` is the old value, if any."""
    if error is None:
        return Settle.VALUE
    if fallback is not None and may_hide(error):
        return Settle.FALLBACK
    return Settle.RAISE
