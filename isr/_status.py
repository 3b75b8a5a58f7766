"""What every answer carries: its status and its age."""

from __future__ import annotations

import enum
from typing import Generic, TypeVar

__all__ = ["Result", "Status"]

T = TypeVar("T", covariant=True)


class Status(str, enum.Enum):
    """How an answer was produced; the HTTP edge turns it into ``X-Cache``."""

    HIT = "HIT"
    """Fresh (age < ttl); the loader was not called."""
    STALE = "STALE"
    """Past its ttl but within ``swr`` (or marked for revalidation): served at once while one
    background refresh runs. Also what a soft timeout serves while the slow fetch goes on."""
    MISS = "MISS"
    """Fetched by this call (or by a concurrent call it waited for)."""
    STALE_IF_ERROR = "STALE-IF-ERROR"
    """The fetch failed and an old value within ``stale_if_error`` was served instead."""
    BYPASS = "BYPASS"
    """The cache was off (`isr.disabled`, or a runtime built with ``enabled=False``): the
    loader ran for this call alone and nothing was stored. The page middleware also sends
    ``X-Cache: BYPASS`` for a request it passes to the app untouched (not a GET or HEAD,
    ``Authorization``, a ``bypass_query`` parameter, ...)."""

    def __str__(self) -> str:
        return self.value


class Result(Generic[T]):
    """An answer: the value, how it was produced, and seconds since the value was produced.

    ``error`` is the origin's exception when ``status`` is ``STALE_IF_ERROR``. A plain
    slotted class rather than a frozen dataclass: it is built on every ``lookup()``, and a
    frozen dataclass's ``__init__`` costs several times more. Treat it as read-only.
    """

    __slots__ = ("age", "error", "status", "value")

    def __init__(
        self, value: T, status: Status, age: float, error: BaseException | None = None
    ) -> None:
        self.value = value
        self.status = status
        self.age = age
        self.error = error

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Result):
            return NotImplemented
        return (self.value, self.status, self.age, self.error) == (
            other.value,
            other.status,
            other.age,
            other.error,
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        error = "" if self.error is None else f", error={self.error!r}"
        return f"Result(value={self.value!r}, status={self.status.name}, age={self.age:.3f}{error})"
