"""The invalidation ledger: which invalidations a fetch in flight must obey.

A fetch that started before an invalidation of its key (or of one of its tags) may have read
the content the invalidation was about; its value must then be stored with the
invalidation's mark instead of as fresh (a purge: not at all). The ledger numbers fetches
and invalidations in one sequence and keeps the invalidations only while a fetch that
started before them is still running. Plain data, no lock (the runtime holds its own around
it).
"""

from __future__ import annotations

from ._entry import Mode

__all__ = ["Ledger"]


class Ledger:
    """Fetches in flight and the invalidations made since the oldest of them began."""

    def __init__(self) -> None:
        self._seq = 0
        self._active: set[int] = set()
        self._log: list[tuple[int, str, str, Mode]] = []

    def begin(self) -> int:
        """A fetch begins: its place in the sequence."""
        self._seq += 1
        self._active.add(self._seq)
        return self._seq

    def end(self, fid: int) -> None:
        """The fetch ``fid`` ended: forget what no running fetch needs any more."""
        self._active.discard(fid)
        if not self._active:
            self._log.clear()
        elif self._log:
            oldest = min(self._active)
            self._log = [item for item in self._log if item[0] > oldest]

    def record(self, kind: str, name: str, mode: Mode) -> None:
        """An invalidation of ``kind`` (``"key"`` or ``"tag"``) ``name``. (An invalidate-all
        reaches fetches in flight through the generation they started under.)"""
        self._seq += 1
        if self._active:
            self._log.append((self._seq, kind, name, mode))

    def __bool__(self) -> bool:
        """Whether any invalidation is on record (the common case: none)."""
        return bool(self._log)

    def mark_since(self, fid: int, key: str, tags: tuple[str, ...]) -> Mode | None:
        """The strongest invalidation of ``key`` or of one of ``tags`` recorded after the
        fetch ``fid`` began, if any."""
        mark: Mode | None = None
        for seq, kind, name, mode in self._log:
            if seq > fid and ((kind == "key" and name == key) or (kind == "tag" and name in tags)):
                mark = mode if mark is None else max(mark, mode)
        return mark
