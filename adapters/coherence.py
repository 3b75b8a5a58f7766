"""The instance registry and the invalidation log of a store one process uses.

What `isr.adapters.base.Adapter`'s defaults keep (the memory store's, and a third-party
store's that has no shared place for them): the instances this process registered (a
runtime registers itself, so the list is the runtime alone) and a bounded log of its
invalidations, a `collections.deque` of at most ``keep`` records, ids ``"<ms>-<n>"``.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import replace

from isr._coherence import Confirmation, Instance, LoggedInvalidation, is_live

__all__ = ["LocalCoherence", "LogIds"]


class LogIds:
    """Ordered log ids ``"<ms>-<n>"`` (a Redis stream id's shape): the wall clock's
    milliseconds, never going back, and a sequence within one millisecond."""

    def __init__(self) -> None:
        self._last = (0, 0)

    def next(self, at_ms: int | None = None) -> str:
        ms = int(time.time() * 1000) if at_ms is None else at_ms
        last_ms, n = self._last
        self._last = (ms, 0) if ms > last_ms else (last_ms, n + 1)
        return f"{self._last[0]}-{self._last[1]}"


class LocalCoherence:
    """One process's registry and log (see the module docstring); thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._instances: dict[str, Instance] = {}
        self._log: deque[LoggedInvalidation] = deque(maxlen=1000)
        self._ids = LogIds()

    def register(self, instance: Instance) -> None:
        with self._lock:
            self._instances[instance.id] = instance

    def unregister(self, instance_id: str) -> None:
        with self._lock:
            self._instances.pop(instance_id, None)

    def instances(self, now: float) -> list[Instance]:
        with self._lock:
            return sorted(
                (i for i in self._instances.values() if is_live(i, now)), key=lambda i: i.id
            )

    def log(self, entry: LoggedInvalidation, keep: int) -> str:
        with self._lock:
            if self._log.maxlen != keep:
                self._log = deque(self._log, maxlen=keep)
            logged = replace(entry, id=self._ids.next())
            self._log.append(logged)
            return logged.id

    def confirm(self, ids: Sequence[str], confirmation: Confirmation) -> None:
        wanted = set(ids)
        with self._lock:
            for i, logged in enumerate(self._log):
                if logged.id in wanted:
                    self._log[i] = replace(logged, confirmation=confirmation)

    def read(self, limit: int) -> list[LoggedInvalidation]:
        with self._lock:
            return list(reversed(self._log))[:limit]
