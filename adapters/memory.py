"""The in-process store: a bounded cachetools ``Cache`` with second-chance (CLOCK) eviction.

Why not ``cachetools.LRUCache``: its OrderedDict costs about 100 bytes an entry on top of the
dict, and its Python-level ``__getitem__`` about 300 ns a read. Here a read is the dict's own
C ``get`` plus setting the entry's ``used`` bit, and the recency order is a deque of keys (8
bytes an entry). Eviction walks the deque from the oldest key: an entry read since the last
pass gets a second chance (bit cleared, key moved to the back), the first unread one goes.
That is CLOCK, the classic approximation of LRU: an entry read recently survives an eviction
that takes an entry not read since. Measured bookkeeping is about 150 to 185 bytes an entry
beyond key and value (see ``benchmarks/memory.py``).

A tag's invalidation is one record, whatever the number of entries carrying the tag (as
the Redis store's, and bentocache's or Next.js's tags): the tag's mark and the sequence number
it was made at, kept beside the tag's index (which holds the number each key was indexed at).
The store's ``gen`` then becomes a new object of the same value, so no entry passes the hot
path's identity check until a read (`get`, `revive`) has applied every mark newer than it to
it and stamped it with the new object again: one lookup per tag, once per entry.

``max_bytes`` bounds the store by size as well: the text and binary data its values hold
(`weigh`: a page record's body and headers, a loader's strings) are counted, and the same
second-chance eviction makes room when a write would pass the bound.

``codec`` (``memory://?codec=json``, or ``ISR("memory://", codec=isr.JsonCodec())``) makes the
store do what a shared store does with every value it keeps: encode it with the codec, and
keep what decoding gives back. A value the shared stores would refuse then fails here too
(`isr.CodecError`, nothing stored), in development rather than in production, and readers
get what they would get from Redis (a tuple comes back a list, a dict's int keys as str).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Any, ClassVar

import cachetools

from isr._codec import Codec
from isr._entry import INF, Entry, Generation, Mode, Policy
from isr._errors import ConfigError

from .base import Adapter, renewed
from .names import checked, checked_all

__all__ = ["MemoryAdapter", "weigh"]

_PURGE = Mode.PURGE
_STRONGEST_FIRST = (Mode.PURGE, Mode.EXPIRE, Mode.REVALIDATE)

#: Tags with marks kept before they are applied to every entry at once (and forgotten).
MARKS_KEPT = 4096


def weigh(value: Any, depth: int = 3) -> int:
    """Bytes of the ``str``, ``bytes`` and ``bytearray`` data ``value`` holds, looking
    ``depth`` levels into dicts, lists and tuples (a page record: its body, its headers).
    An estimate by design: the data that makes a value large, not Python's overheads."""
    if isinstance(value, (bytes, bytearray, str)):
        return len(value)
    if depth <= 0:
        return 0
    if isinstance(value, dict):
        return sum(weigh(v, depth - 1) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(weigh(v, depth - 1) for v in value)
    return 0


class _ClockCache(cachetools.Cache[str, Entry]):
    """``cachetools.Cache`` bounded by entry count, evicting by second chance."""

    def __init__(
        self, maxsize: int, evicted: Callable[[str, Entry], None], max_bytes: int | None = None
    ) -> None:
        super().__init__(maxsize)
        self._ring: deque[str] = deque()
        self._evicted = evicted
        # Bound in bytes (None: none): the weight of each entry's value, and their sum.
        self.max_bytes = max_bytes
        self.weights: dict[str, int] = {}
        self.bytes = 0
        # The C-level get of cachetools' own dict: the hot path's read. Fall back to the
        # (slower, still correct) public get should a cachetools release rename it.
        data = getattr(self, "_Cache__data", None)
        self.peek: Callable[[str], Entry | None] = data.get if isinstance(data, dict) else self.get

    def __setitem__(self, key: str, value: Entry) -> None:
        new = key not in self
        super().__setitem__(key, value)
        if new:
            ring = self._ring
            ring.append(key)
            if len(ring) > 2 * len(self) + 64:
                # Deleted keys leave their place in the ring behind; drop them now and then.
                self._ring = deque(k for k in dict.fromkeys(ring) if k in self)
        if self.max_bytes is not None:
            size = weigh(value.value)
            self.bytes += size - self.weights.get(key, 0)
            self.weights[key] = size
            while self.bytes > self.max_bytes and len(self):
                self.popitem()

    def __delitem__(self, key: str) -> None:
        super().__delitem__(key)
        if self.max_bytes is not None:
            self.bytes -= self.weights.pop(key, 0)

    def popitem(self) -> tuple[str, Entry]:
        ring = self._ring
        while ring:
            key = ring.popleft()
            entry = self.peek(key)
            if entry is None:
                continue
            if entry.used:
                entry.used = False
                ring.append(key)
                continue
            del self[key]
            self._evicted(key, entry)
            return key, entry
        raise KeyError("cache is empty")


class MemoryAdapter(Adapter):
    """Bounded in-process store (``memory://?max_entries=N&max_bytes=N``); the development
    default. ``max_bytes`` (None: no bound) also bounds the data the values hold (`weigh`);
    a value heavier than the whole bound is not kept (counted as an eviction).

    Values are kept as they are, unless a ``codec`` is given (see the module docstring).
    ``namespace`` is accepted for symmetry with the
    shared stores and has no effect: a memory store belongs to the runtime that made it.
    Keys and tags that are not valid Unicode text are refused as every store refuses them
    (`isr.adapters.names.checked`), although a dict could hold them: a store swap changes
    nothing.
    """

    local: ClassVar[bool] = True
    inline: ClassVar[bool] = True

    def __init__(
        self,
        max_entries: int = 10_000,
        *,
        namespace: str | None = None,
        max_bytes: int | None = None,
        codec: Codec | None = None,
    ) -> None:
        if not isinstance(max_entries, int) or isinstance(max_entries, bool) or max_entries < 1:
            raise ConfigError(f"max_entries must be a positive integer, not {max_entries!r}")
        if max_bytes is not None and (
            not isinstance(max_bytes, int) or isinstance(max_bytes, bool) or max_bytes < 1
        ):
            raise ConfigError(f"max_bytes must be a positive integer or None, not {max_bytes!r}")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        #: Every value kept goes through it and back, as in a shared store (None: kept as is).
        self.codec = codec
        self.namespace = namespace
        self.evictions = 0
        self._lock = threading.RLock()
        #: Each tag's keys, each with the sequence number it was indexed (or brought up to
        #: date) at; and each invalidated tag's marks: the number of its latest invalidation
        #: of each strength (by ``Mode`` value; 0: none).
        self._tags: dict[str, dict[str, int]] = {}
        self._marks: dict[str, list[int]] = {}
        self._seq = 0
        self._generation = Generation()
        self.gen = 0
        self._cache = _ClockCache(max_entries, self._on_evict, max_bytes)
        self.peek = self._cache.peek

    def _unindex(self, key: str, tags: tuple[str, ...]) -> None:
        for tag in tags:
            keys = self._tags.get(tag)
            if keys is not None:
                keys.pop(key, None)
                if not keys:
                    del self._tags[tag]

    def _renew_gen(self) -> None:
        """Make ``gen`` a new object of the same value (`renewed`): every entry fails the
        hot path's identity check until a read brings it up to date (`revive`)."""
        self.gen = renewed(self.gen)
        self._generation = self._generation._replace(current=self.gen)

    def _tag_mark(self, key: str, tags: tuple[str, ...]) -> Mode | None:
        """The strongest mark of ``tags`` newer than ``key``'s place in their index (a key
        the index no longer lists, after a tag's purge, is older than every mark)."""
        strongest: Mode | None = None
        for tag in tags:
            marks = self._marks.get(tag)
            if marks is None:
                continue
            keys = self._tags.get(tag)
            stamp = 0 if keys is None else keys.get(key, 0)
            for mode in _STRONGEST_FIRST:
                if marks[mode] > stamp:
                    if strongest is None or mode > strongest:
                        strongest = mode
                    break
        return strongest

    def revive(self, key: str, entry: Entry) -> Entry | None:
        """``entry`` (just peeked under ``key``) with every tag mark newer than it applied
        (None: one was a purge, and it is gone), stamped with ``gen`` again when no
        invalidate-all came since it was written: the hot path serves it from then on."""
        if not self._marks or entry.gen is self.gen:
            return entry
        with self._lock:
            if self._cache.peek(key) is not entry:  # replaced meanwhile: that one instead
                now = self._cache.peek(key)
                return None if now is None else self.revive(key, now)
            mode = self._tag_mark(key, entry.tags)
            if mode is _PURGE:
                self._cache.pop(key, None)
                self._unindex(key, entry.tags)
                return None
            if mode is not None:
                entry.policy = entry.policy.marked(mode)
                entry.fresh_until = -INF
            seq = self._seq
            for tag in entry.tags:
                keys = self._tags.get(tag)
                if keys is not None and key in keys:
                    keys[key] = seq  # every mark so far applied
            if entry.gen == self.gen:
                entry.gen = self.gen
            return entry

    def _apply_marks(self) -> None:
        """Apply every tag mark to every entry now, and forget them (too many tags kept)."""
        for key in list(self._cache.keys()):
            entry = self._cache.peek(key)
            if entry is not None:
                self.revive(key, entry)
        self._marks.clear()

    def _on_evict(self, key: str, entry: Entry) -> None:
        self.evictions += 1
        self._unindex(key, entry.tags)

    def get(self, key: str) -> Entry | None:
        if not key.isascii():
            checked(key)
        entry = self._cache.peek(key)
        if entry is not None and self._marks and entry.gen is not self.gen:
            return self.revive(key, entry)
        return entry

    def set(self, key: str, entry: Entry) -> None:
        checked(key)
        checked_all(entry.tags)
        codec = self.codec
        if codec is not None:  # a CodecError leaves the store untouched
            entry = codec.loads(key, codec.dumps(key, entry))
            if entry.gen == self.gen:
                entry.gen = self.gen  # the very object the hot path compares with ``is``
        with self._lock:
            old = self._cache.peek(key)
            if old is not None and old.tags != entry.tags:
                self._unindex(key, old.tags)
            seq = self._seq
            for tag in entry.tags:
                self._tags.setdefault(tag, {})[key] = seq
            self._cache[key] = entry

    def delete(self, key: str) -> None:
        checked(key)
        with self._lock:
            old = self._cache.pop(key, None)
            if old is not None:
                self._unindex(key, old.tags)

    def invalidate_tag(self, tag: str, mode: Mode, before: float | None = None) -> int:
        """Invalidate ``tag``'s entries: one mark, whatever their number, each entry
        obeying it when next read (see the module docstring); how many the tag's index
        listed. A purge also drops the index (its entries go as they are read or evicted).

        With ``before`` (a replay: only entries produced before then), every entry of the
        tag is marked in place instead, in one pass under the lock (a few tenths of a
        microsecond an entry)."""
        checked(tag, "tag")
        if before is None:
            with self._lock:
                keys = self._tags.get(tag)
                if not keys:
                    return 0
                self._seq += 1
                self._marks.setdefault(tag, [0, 0, 0, 0])[mode] = self._seq
                if mode is _PURGE:
                    del self._tags[tag]
                self._renew_gen()
                if len(self._marks) > MARKS_KEPT:
                    self._apply_marks()
                return len(keys)
        done = 0
        marked: dict[int, Policy] = {}  # entries of one decorator share one Policy
        unfresh = -INF
        with self._lock:
            peek = self._cache.peek
            for key in self._tags.get(tag, ()):
                entry = peek(key)
                if entry is None or tag not in entry.tags:
                    continue
                policy = entry.policy
                if policy.mark is _PURGE:  # gone already (and counted then)
                    continue
                if before is not None and entry.created >= before:
                    continue
                new = marked.get(id(policy))
                if new is None:
                    new = marked[id(policy)] = policy.marked(mode)
                entry.policy = new
                entry.fresh_until = unfresh
                done += 1
        return done

    def tagged(self, tag: str) -> list[str]:
        checked(tag, "tag")
        with self._lock:
            return list(self._tags.get(tag, ()))

    def generation(self) -> Generation:
        return self._generation

    def bump_generation(self, mode: Mode) -> Generation:
        with self._lock:
            self._generation = self._generation.bumped(mode)
            self.gen = self._generation.current
            return self._generation

    def size(self) -> int:
        return len(self._cache)

    def counters(self) -> dict[str, int]:
        """With ``max_bytes``, ``bytes``: the weight of the values held now."""
        return {} if self.max_bytes is None else {"bytes": self._cache.bytes}

    def clear(self) -> None:
        """Drop every entry (the generation record stays)."""
        with self._lock:
            self._cache.clear()
            self._cache._ring.clear()
            self._tags.clear()
            self._marks.clear()
