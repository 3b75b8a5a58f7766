"""What the runtime knows of one decorated function (the decorator makes it)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from ._entry import Policy
from ._status import Status

__all__ = ["ErrorHook", "Loader"]

T = TypeVar("T")
ErrorHook = Callable[[str, BaseException], None]

_HIT, _STALE, _MISS = Status.HIT, Status.STALE, Status.MISS
_STALE_IF_ERROR = Status.STALE_IF_ERROR


class Loader(Generic[T]):
    """A decorated function: the function itself, its windows, its tags, its timeouts."""

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str,
        is_async: bool,
        policy: Policy,
        tags: Callable[..., tuple[str, ...]],
        soft_timeout: float | None,
        timeout: float | None,
        xfetch: float | None,
        on_error: ErrorHook | None,
    ) -> None:
        self.fn = fn
        self.name = name
        self.is_async = is_async
        self.policy = policy
        self.tags = tags
        self.soft_timeout = soft_timeout
        self.timeout = timeout
        self.xfetch = xfetch
        self.on_error = on_error
        #: Moving average of the loader's duration: XFetch's "delta".
        self.delta = 0.0
        #: The generated wrapper's namespace; its ``_isr_hits`` counts fast-path hits.
        self.namespace: dict[str, Any] = {}
        #: Hits an edge served by the hot-path rule itself (see isr/adapters/base.py).
        self.edge_hits = 0
        #: Renders an edge saw answered 404 or 410 (see `isr.Stats.gone`).
        self.gone = 0
        #: The runtime it is bound to (an `isr.ISR`), once bound.
        self.runtime: object | None = None
        #: What metrics call it (``isr.function``): its name, or a page rule's path.
        self.label = name
        #: Its key template (None: a key callable, or the call-site form's keys).
        self.template: str | None = None
        #: Whether it was told that it blocked an event loop (`isr.ISRWarning`, once), and
        #: the async spelling that message names.
        self.warned = False
        self.async_hint = f"Define {name}() with `async def` and await it"
        self.reset()

    def reset(self) -> None:
        """Start counting its answers afresh (it was bound to another runtime)."""
        #: Answers past the hot path by status, calls that raised, calls with the cache
        #: off (`tally`); with `fast_hits`, what metrics report as ``isr.calls``.
        self.hits = self.stale = self.misses = self.stale_if_error = 0
        self.errors = self.bypassed = 0
        self.namespace["_isr_hits"] = 0
        self.edge_hits = 0

    def tally(self, status: Status) -> None:
        """Count an answer given past the hot path."""
        if status is _HIT:
            self.hits += 1
        elif status is _STALE:
            self.stale += 1
        elif status is _MISS:
            self.misses += 1
        elif status is _STALE_IF_ERROR:
            self.stale_if_error += 1
        else:
            self.bypassed += 1

    def calls(self) -> dict[str, int]:
        """Its answers since it was bound, by status (``"ERROR"``: calls that raised)."""
        return {
            "HIT": self.fast_hits() + self.hits,
            "STALE": self.stale,
            "MISS": self.misses,
            "STALE-IF-ERROR": self.stale_if_error,
            "BYPASS": self.bypassed,
            "ERROR": self.errors,
        }

    def observe(self, seconds: float) -> None:
        self.delta = seconds if self.delta == 0.0 else 0.8 * self.delta + 0.2 * seconds

    def fast_hits(self) -> int:
        return int(self.namespace.get("_isr_hits", 0)) + self.edge_hits
