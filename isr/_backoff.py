"""The backoff table: after a failed fetch, how long a key leaves its origin alone.

Plain data, no I/O, no clock of its own (callers pass ``now``), no lock (the runtime holds
its own around it). A key's delay starts at ``base`` seconds and doubles with each failure in
a row, up to ``most``; a success forgets the key. Bounded: the least recently failed keys
are forgotten first once ``size`` keys back off.
"""

from __future__ import annotations

import cachetools

__all__ = ["Backoff", "BackoffTable"]


class Backoff:
    """One key's backoff: retry after ``retry_at``; ``failures`` in a row; the last ``error``."""

    __slots__ = ("error", "failures", "retry_at")

    def __init__(self, retry_at: float, failures: int, error: BaseException) -> None:
        self.retry_at = retry_at
        self.failures = failures
        self.error = error

    def __repr__(self) -> str:
        return f"Backoff(retry_at={self.retry_at}, failures={self.failures}, error={self.error!r})"


class BackoffTable:
    """Keys whose last fetch failed, and until when each leaves its origin alone."""

    def __init__(self, base: float, most: float, size: int = 10_000) -> None:
        self.base = base
        self.most = most
        self._table: cachetools.LRUCache[str, Backoff] = cachetools.LRUCache(size)

    def active(self, key: str, now: float) -> Backoff | None:
        """``key``'s backoff if it is still running at ``now``."""
        backoff = self._table.get(key)
        if backoff is not None and now < backoff.retry_at:
            return backoff
        return None

    def failed(self, key: str, now: float, error: BaseException) -> float:
        """Record a failed fetch of ``key`` at ``now``; return the delay before the next try."""
        prev = self._table.get(key)
        failures = 1 if prev is None else prev.failures + 1
        delay: float = min(self.base * 2.0 ** (failures - 1), self.most)
        self._table[key] = Backoff(now + delay, failures, error)
        return delay

    def succeeded(self, key: str) -> None:
        """Forget ``key`` (it was fetched, or invalidated: the next read tries at once)."""
        if key in self._table:
            self._table.pop(key, None)

    def clear(self) -> None:
        """Forget every key (an invalidate-all)."""
        self._table.clear()

    def __len__(self) -> int:
        return len(self._table)
