"""What every answer carries: its status and its age."""

from __future__ import annotations

import enum
from dataclasses import dataclass
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

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class Result(Generic[T]):
    """An answer: the value, how it was produced, and seconds since the value was produced.

    ``error`` is the origin's exception when ``status`` is ``STALE_IF_ERROR``.
    """

    value: T
    status: Status
    age: float
    error: BaseException | None = None
