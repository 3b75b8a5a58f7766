"""The small records a shared store keeps beside its entries, and what happens to one that
cannot be read.

Whoever can write the store can write anything under any name, so every record is read as
untrusted text: one that does not parse is treated as missing, counted in the store's
``errors`` and logged once per name (`Refusals`), never trusted and never an exception.

- invalidation markers: ``"<time> <mode>"`` (the time of the latest invalidation, the
  number of its strongest mode), as text on disk and in Redis;
- the disk store's generation record: ``"<current> <revalidate> <expire> <purge>"``;
- a tag's invalidation record (disk and Redis): the same four numbers, one record per tag
  (`tag_mark`, `tag_numbers`): invalidating a tag moves its record on, as invalidate-all
  moves the store's, so it costs one write whatever the number of entries carrying the tag.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable

from isr._entry import Entry, Generation, Mode

__all__ = [
    "Refusals",
    "generation_text",
    "marker_mode",
    "marker_text",
    "parse_generation",
    "strongest",
    "tag_mark",
    "tag_numbers",
]

logger = logging.getLogger("isr")

_MODES = frozenset(int(m) for m in Mode)


def marker_text(at: float, mode: Mode) -> str:
    """An invalidation marker's record."""
    return f"{at!r} {int(mode)}"


def _marker(record: object) -> tuple[float, int] | None:
    """``(time, mode)`` of a marker's record (bytes or text), or None if it is not one."""
    if isinstance(record, bytes):
        try:
            record = record.decode("ascii")
        except UnicodeDecodeError:
            return None
    if not isinstance(record, str):
        return None
    at, _, mode = record.partition(" ")
    try:
        time, number = float(at), int(mode)
    except ValueError:
        return None
    if not math.isfinite(time) or number not in _MODES:
        return None
    return time, number


def marker_mode(record: object) -> int | None:
    """The mode number of a marker's record, or None if it is not one."""
    parsed = _marker(record)
    return None if parsed is None else parsed[1]


def strongest(records: Iterable[object], since: float) -> Mode | None:
    """The strongest mode of the marker ``records`` made after ``since``; None-records
    (no marker) and records that are not markers are skipped."""
    modes = [m for at, m in filter(None, map(_marker, records)) if at > since]
    return Mode(max(modes)) if modes else None


def generation_text(generation: Generation) -> str:
    """The disk store's generation record."""
    return " ".join(map(str, generation))


def parse_generation(record: object) -> Generation | None:
    """The generation in a record `generation_text` wrote, or None if it is not one."""
    if not isinstance(record, str):
        return None
    fields = record.split(" ")
    if len(fields) != 4 or not all(f.isascii() and f.isdigit() for f in fields):
        return None
    return Generation(*map(int, fields))


def tag_mark(entry: Entry, records: Iterable[object]) -> Entry | None:
    """``entry`` as its tags' invalidation records (``records``, one per tag, text as
    `generation_text` writes them, bytes or None) say: marked with the strongest invalidation
    any tag had since the entry was stored (`isr._entry.Entry.tagv`: the number each
    record had then), None when that is a purge. A tag's record works as the store's
    invalidate-all record does, one per tag: see `isr._entry.Generation`."""
    mark: Mode | None = None
    tagv = entry.tagv
    for i, raw in enumerate(records):
        if raw is None:
            continue
        record = parse_generation(raw.decode() if isinstance(raw, bytes) else raw)
        if record is None:
            continue
        mode = record.mark_for(tagv[i] if i < len(tagv) else 0)
        if mode is not None and (mark is None or mode > mark):
            mark = mode
    if mark is None:
        return entry
    return None if mark is Mode.PURGE else entry.marked(mark)


def tag_numbers(records: Iterable[object]) -> tuple[int, ...]:
    """The number each tag's record holds now (0 without one): what an entry stored now
    carries as ``tagv``."""
    numbers = []
    for raw in records:
        record = parse_generation(raw.decode() if isinstance(raw, bytes) else raw)
        numbers.append(0 if record is None else record.current)
    return tuple(numbers)


class Refusals:
    """Logs a record refused as unreadable once per name (a reader may read one name
    several times in one call), remembering at most ``limit`` names."""

    def __init__(self, store: str, limit: int = 1024) -> None:
        self.store = store
        self.limit = limit
        self._logged: set[str] = set()

    def note(self, name: str, message: str) -> None:
        """Log ``message`` saying why the record ``name`` was refused (first time only)."""
        if name in self._logged:
            return
        if len(self._logged) >= self.limit:
            self._logged.clear()
        self._logged.add(name)
        logger.warning("%s: %s; treated as missing (logged once per record)", self.store, message)
