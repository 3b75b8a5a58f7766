"""Claims kept in one process: names taken once each until they expire.

A claim is what the webhook's replay guard needs (a signed delivery accepted once within its
window): set-if-absent with an expiry. A shared store keeps its claims in the store (Redis
``SET NX PX``, diskcache ``add``), so every process sharing it sees them; a store only one
process uses keeps them here (`isr.adapters.base.Adapter.claim`'s default).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["LocalClaims"]


class LocalClaims:
    """At most ``limit`` live claims, each until ``ttl`` seconds after it was taken. When
    full, the oldest claim is dropped first (its name may then be claimed again within its
    ttl: the bound is what keeps a flood of claims from growing the process)."""

    def __init__(self, limit: int = 10_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self._clock = clock
        self._until: dict[str, float] = {}  # in the order claimed
        self._lock = threading.Lock()

    def claim(self, name: str, ttl: float) -> bool:
        """Take ``name`` for ``ttl`` seconds: True if nobody held it, else False."""
        now = self._clock()
        with self._lock:
            until = self._until
            while until:  # forget what expired, oldest first, and make room
                first = next(iter(until))
                if until[first] > now and len(until) < self.limit:
                    break
                del until[first]
            held = until.get(name)
            if held is not None and held > now:
                return False
            until.pop(name, None)  # expired but not yet forgotten: claimed anew, at the end
            until[name] = now + ttl
            return True

    def unclaim(self, name: str) -> None:
        """Give ``name`` back: it may be claimed again at once."""
        with self._lock:
            self._until.pop(name, None)

    def __len__(self) -> int:
        return len(self._until)
