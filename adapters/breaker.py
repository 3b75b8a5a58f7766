"""A circuit breaker for a store that may go away (Redis down, a network partition).

Closed: every call goes through. After ``threshold`` failures in a row it opens: calls are
refused at once for ``cooldown`` seconds, so a dead store is not hammered and callers do not
each wait for a timeout. Then one call is let through (half open): success closes the breaker
again, failure opens it for another cooldown. No restart is ever needed. ``on_recovered`` is
called on the first success after failures (the store may have restarted meanwhile).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

__all__ = ["Breaker"]

logger = logging.getLogger("isr")


class Breaker:
    """Counts a store's consecutive failures and refuses calls while it is deemed down."""

    def __init__(
        self,
        name: str,
        *,
        threshold: int = 3,
        cooldown: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        on_recovered: Callable[[], None] = lambda: None,
    ) -> None:
        self.name = name
        self.threshold = threshold
        self.cooldown = cooldown
        self.clock = clock
        self.on_recovered = on_recovered
        self.failures = 0
        self._open_until = 0.0
        self._probing = False
        self._lock = threading.Lock()

    @property
    def is_open(self) -> bool:
        return self.failures >= self.threshold

    def allow(self) -> bool:
        """May a call go to the store now?"""
        if self.failures < self.threshold:
            return True
        with self._lock:
            if self._probing or self.clock() < self._open_until:
                return False
            self._probing = True  # half open: this one call probes the store
            return True

    def success(self) -> None:
        if self.failures:
            with self._lock:
                if self.failures >= self.threshold:
                    logger.warning("%s is reachable again; using it", self.name)
                self.failures = 0
                self._probing = False
            self.on_recovered()

    def abandon(self) -> None:
        """The half-open probe ended without an outcome (cancelled): let a later call probe,
        after the cooldown, without counting a failure."""
        with self._lock:
            if self._probing:
                self._probing = False
                self._open_until = self.clock() + self.cooldown

    def failure(self, exc: BaseException) -> None:
        with self._lock:
            self.failures += 1
            self._probing = False
            if self.failures >= self.threshold:
                if self.failures == self.threshold:
                    logger.error(
                        "%s failed %d times in a row (%s: %s); not using it for %.3g s",
                        self.name,
                        self.failures,
                        type(exc).__name__,
                        exc,
                        self.cooldown,
                    )
                self._open_until = self.clock() + self.cooldown
            else:
                logger.warning("%s failed (%s: %s)", self.name, type(exc).__name__, exc)
