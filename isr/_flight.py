"""One fetch of one key, shared by every caller that asks for the key meanwhile."""

from __future__ import annotations

from typing import Any, Generic, Protocol, TypeVar

from ._entry import Entry

__all__ = ["Flight", "Reading", "Waitable"]


class Waitable(Protocol):
    """The event a flight's callers wait on (see ``isr._synchronization``)."""

    def set(self) -> None: ...

    def is_set(self) -> bool: ...


E = TypeVar("E", bound=Waitable)


class Flight(Generic[E]):
    """A fetch in flight: its outcome once ``done``, and the ``event`` its waiters wait on.

    ``cancelled``: it ended without an outcome (its leader was cancelled), so its waiters
    try again. ``seen``: what the store held when the fetch was decided, so that a value
    another process stores meanwhile can be recognised. ``age_base``: ``created`` of the
    entry it stored, if any.
    """

    __slots__ = ("age_base", "cancelled", "done", "error", "event", "reported", "seen", "value")

    def __init__(self, event: E, seen: Entry | None = None) -> None:
        self.event = event
        self.seen = seen
        self.value: Any = None
        self.error: BaseException | None = None
        self.cancelled = False
        self.reported = False  # a stale-if-error answer from it has been logged
        self.done = False
        self.age_base: float | None = None


class Reading(Generic[E]):
    """One read of one key from a shared store, shared by every caller that reads the key
    meanwhile: one round trip however many ask. ``event`` is made only when a second caller
    comes (most reads have none), and set when ``done`` (the read gave ``entry``) or when the
    reader was cancelled (``done`` False: the others read for themselves)."""

    __slots__ = ("done", "entry", "event")

    def __init__(self) -> None:
        self.entry: Entry | None = None
        self.done = False
        self.event: E | None = None
