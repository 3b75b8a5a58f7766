"""The in-process store: a bounded cachetools ``Cache`` with second-chance (CLOCK) eviction.

Why not ``cachetools.LRUCache``: its OrderedDict costs about 100 bytes an entry on top of the
dict, and its Python-level ``__getitem__`` about 300 ns a read. Here a read is the dict's own
C ``get`` plus setting the entry's ``used`` bit, and the recency order is a deque of keys (8
bytes an entry). Eviction walks the deque from the oldest key: an entry read since the last
pass gets a second chance (bit cleared, key moved to the back), the first unread one goes.
That is CLOCK, the classic approximation of LRU: an entry read recently survives an eviction
that takes an entry not read since. Measured bookkeeping is about 150 to 185 bytes an entry
beyond key and value (see ``benchmarks/memory.py``).

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
from isr._entry import Entry, Generation, Mode
from isr._errors import ConfigError

from .base import Adapter
from .names import checked, checked_all

__all__ = ["MemoryAdapter", "weigh"]


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
        self._tags: dict[str, set[str]] = {}
        self._generation = Generation()
        self.gen = 0
        self._cache = _ClockCache(max_entries, self._on_evict, max_bytes)
        self.peek = self._cache.peek

    def _unindex(self, key: str, tags: tuple[str, ...]) -> None:
        for tag in tags:
            keys = self._tags.get(tag)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._tags[tag]

    def _on_evict(self, key: str, entry: Entry) -> None:
        self.evictions += 1
        self._unindex(key, entry.tags)

    def get(self, key: str) -> Entry | None:
        if not key.isascii():
            checked(key)
        return self._cache.peek(key)

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
            for tag in entry.tags:
                self._tags.setdefault(tag, set()).add(key)
            self._cache[key] = entry

    def delete(self, key: str) -> None:
        checked(key)
        with self._lock:
            old = self._cache.pop(key, None)
            if old is not None:
                self._unindex(key, old.tags)

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
