"""The pure core: an entry's windows and what a read should do with it.

No I/O, no event loop. ``classify(entry, now, generation)`` is the one place that decides
between serving fresh, serving stale with a refresh, or fetching (with or without a
stale-if-error fallback); the async and the sync drivers only carry out its verdict.

    created ── ttl ──► fresh_until ── swr ──► stale_until ── stale_if_error ──► error_until
      FRESH               STALE (+ one refresh)            EXPIRED (fetch; old value     ABSENT
                                                             only if the fetch fails)

``swr`` and ``stale_if_error`` may be None: no bound (a `Policy` keeps them as infinity).
``ttl=0`` is a valid window: never fresh, as HTTP's ``max-age=0`` (each read within ``swr``
is STALE and refreshes). Windows are given in seconds or as `datetime.timedelta` (`seconds`).
"""

from __future__ import annotations

import datetime
import enum
import math
from typing import Any, Final, Literal, NamedTuple, TypeAlias

from ._errors import ConfigError

__all__ = [
    "INF",
    "Entry",
    "Generation",
    "Mode",
    "ModeName",
    "Policy",
    "Seconds",
    "Verdict",
    "classify",
    "optional_seconds",
    "parse_mode",
    "seconds",
]

INF: Final = math.inf

ModeName = Literal["revalidate", "expire", "purge"]

#: A window: seconds (an int or a float), or a `datetime.timedelta`.
Seconds: TypeAlias = "float | datetime.timedelta"


def seconds(value: Seconds, what: str) -> float:
    """``value`` (a window: seconds >= 0, or a non-negative `datetime.timedelta`) in seconds,
    or `isr.ConfigError` naming ``what`` (``"with_revalidate(ttl=...)"``) and the value."""
    if isinstance(value, datetime.timedelta):
        number: object = value.total_seconds()
    else:
        number = value
    if isinstance(number, bool) or not isinstance(number, (int, float)) or not number >= 0:
        raise ConfigError(
            f"{what} takes seconds >= 0 (a number or a datetime.timedelta), not {value!r}"
        )
    return float(number)


def optional_seconds(value: Seconds | None, what: str) -> float | None:
    """`seconds`, where None (no bound) is a valid value too."""
    return None if value is None else seconds(value, what)


class Mode(enum.IntEnum):
    """Invalidation strengths, ordered: a stronger mark always wins over a weaker one."""

    REVALIDATE = 1  # next reads: STALE at once, one background refresh
    EXPIRE = 2  # next read fetches; the old value stays only as stale-if-error fallback
    PURGE = 3  # gone: never served again, not even as a fallback


_MODES: Final = {"revalidate": Mode.REVALIDATE, "expire": Mode.EXPIRE, "purge": Mode.PURGE}


def parse_mode(mode: str | Mode) -> Mode:
    """Turn ``"expire"`` (etc.) into a `Mode`, or raise `isr.ConfigError` naming the valid
    ones."""
    if isinstance(mode, Mode):
        return mode
    try:
        return _MODES[mode]
    except (KeyError, TypeError):
        raise ConfigError(
            f"invalid invalidation mode {mode!r}: expected one of 'expire' (default), "
            "'revalidate' or 'purge'"
        ) from None


class Policy:
    """The windows of an entry, shared by every entry one decorator (or one loader call) makes.

    ``mark`` is set on the copy an invalidation makes; entries of one decorator share one
    unmarked Policy object, so an entry costs a pointer for its windows, not three floats.
    """

    __slots__ = ("mark", "sie", "swr", "ttl")

    def __init__(
        self, ttl: float, swr: float | None, sie: float | None, mark: Mode | None = None
    ) -> None:
        self.ttl = float(ttl)
        self.swr = INF if swr is None else float(swr)
        self.sie = INF if sie is None else float(sie)
        self.mark = mark

    def marked(self, mode: Mode) -> Policy:
        """This policy with an invalidation mark; a stronger existing mark is kept."""
        if self.mark is not None and self.mark >= mode:
            return self
        return Policy(self.ttl, self.swr, self.sie, mode)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Policy):
            return NotImplemented
        return (self.ttl, self.swr, self.sie, self.mark) == (
            other.ttl,
            other.swr,
            other.sie,
            other.mark,
        )

    def __hash__(self) -> int:
        return hash((self.ttl, self.swr, self.sie, self.mark))

    def __repr__(self) -> str:
        swr = None if self.swr == INF else self.swr
        sie = None if self.sie == INF else self.sie
        return f"Policy(ttl={self.ttl}, swr={swr}, sie={sie}, mark={self.mark!r})"


class Entry:
    """One cached value and its bookkeeping.

    Kept small on purpose (eight slots beyond the value): the memory store holds many of
    them. ``fresh_until`` is what the hot path compares with the clock; an invalidated entry
    is replaced by a copy (on the memory store, marked in place) whose ``fresh_until`` lies
    in the past, so the hot path needs no other check. ``used`` is the recently-read bit of
    the memory store's second-chance eviction; ``gen`` the store generation the value was
    fetched under; ``tagv`` (a shared store's) the number each of ``tags`` had in its
    per-tag invalidation record when the entry was stored, so that a later invalidation of
    the tag is seen on read (see ``isr.adapters.records``).
    """

    __slots__ = ("created", "fresh_until", "gen", "policy", "tags", "tagv", "used", "value")

    def __init__(
        self,
        value: Any,
        created: float,
        policy: Policy,
        gen: int,
        tags: tuple[str, ...] = (),
        tagv: tuple[int, ...] = (),
    ) -> None:
        self.value = value
        self.created = created
        self.fresh_until = -INF if policy.mark is not None else created + policy.ttl
        self.policy = policy
        self.gen = gen
        self.tags = tags
        self.tagv = tagv
        self.used = False

    def marked(self, mode: Mode) -> Entry:
        """A copy carrying an invalidation mark (the stronger of the old and the new)."""
        policy = self.policy.marked(mode)
        return Entry(self.value, self.created, policy, self.gen, self.tags, self.tagv)

    @property
    def stale_until(self) -> float:
        return self.created + self.policy.ttl + self.policy.swr

    @property
    def error_until(self) -> float:
        return self.stale_until + self.policy.sie

    def __repr__(self) -> str:
        return (
            f"Entry(value={self.value!r}, created={self.created}, policy={self.policy!r}, "
            f"gen={self.gen}, tags={self.tags!r})"
        )


class Generation(NamedTuple):
    """The store-wide invalidation state that makes ``invalidate_all`` O(1).

    ``current`` moves on with each invalidate-all (a count on a store one process uses, a
    time in milliseconds that never goes back on a shared one: `bumped`); the other three
    hold the value of ``current`` right after the latest invalidate-all of each strength. An
    entry fetched under generation ``g`` is affected by the strongest mode whose number is
    greater than ``g``.
    """

    current: int = 0
    revalidate: int = 0
    expire: int = 0
    purge: int = 0

    def bumped(self, mode: Mode, now: int = 0, floor: int = 0) -> Generation:
        """This record after an invalidate-all of strength ``mode``: its number moves above
        the old one, above ``floor`` (the highest this process has seen) and up to ``now``
        (milliseconds on the store's clock; 0 for a store only one process uses, whose
        numbers simply count). So a shared store's numbers are times that never go back:
        after the store lost the record (a restart, a failover, an eviction) the next
        invalidate-all still rises above every number an entry was stamped with."""
        nxt = max(self.current + 1, now, floor + 1)
        return Generation(
            nxt,
            nxt if mode is Mode.REVALIDATE else self.revalidate,
            nxt if mode is Mode.EXPIRE else self.expire,
            nxt if mode is Mode.PURGE else self.purge,
        )

    def merged(self, other: Generation) -> Generation:
        """The later of two records, field by field: what a store that lost (or went back
        from) its record is given back by a process that remembers more."""
        return Generation(*(max(a, b) for a, b in zip(self, other, strict=True)))

    def mark_for(self, gen: int) -> Mode | None:
        """The invalidate-all strength that applies to an entry fetched under ``gen``."""
        if gen >= self.current:
            return None
        if self.purge > gen:
            return Mode.PURGE
        if self.expire > gen:
            return Mode.EXPIRE
        if self.revalidate > gen:
            return Mode.REVALIDATE
        return None


class Verdict(enum.Enum):
    """What a read does with what the store holds."""

    FRESH = "fresh"  # serve it: HIT
    STALE = "stale"  # serve it at once (STALE) and refresh in the background
    EXPIRED = "expired"  # fetch; serve the old value only if the fetch fails
    ABSENT = "absent"  # fetch; nothing to fall back on


def effective_mark(entry: Entry, generation: Generation) -> Mode | None:
    own = entry.policy.mark
    gen_mark = generation.mark_for(entry.gen)
    if gen_mark is None:
        return own
    if own is None:
        return gen_mark
    return max(own, gen_mark)


# Enum member access costs about 100 ns on Python 3.11; classify runs on every slow read.
FRESH: Final = Verdict.FRESH
STALE: Final = Verdict.STALE
EXPIRED: Final = Verdict.EXPIRED
ABSENT: Final = Verdict.ABSENT
_EXPIRE: Final = Mode.EXPIRE
_PURGE: Final = Mode.PURGE


def classify(entry: Entry | None, now: float, generation: Generation) -> Verdict:
    """Decide what a read at ``now`` does with ``entry``; see the module docstring."""
    if entry is None:
        return ABSENT
    policy = entry.policy
    mark = policy.mark
    if entry.gen != generation.current:
        mark = effective_mark(entry, generation)
    if mark is _PURGE:
        return ABSENT
    fresh_until = entry.created + policy.ttl
    if mark is None and now < fresh_until:
        return FRESH
    stale_until = fresh_until + policy.swr
    if mark is not _EXPIRE and now < stale_until:
        return STALE
    if now < stale_until + policy.sie:
        return EXPIRED
    return ABSENT
