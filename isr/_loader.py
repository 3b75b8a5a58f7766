"""What the runtime knows of one decorated function (the decorator makes it)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from ._entry import Policy

__all__ = ["ErrorHook", "Loader"]

T = TypeVar("T")
ErrorHook = Callable[[str, BaseException], None]


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
        #: Its key template (None: a key callable).
        self.template: str | None = None

    def observe(self, seconds: float) -> None:
        self.delta = seconds if self.delta == 0.0 else 0.8 * self.delta + 0.2 * seconds

    def fast_hits(self) -> int:
        return int(self.namespace.get("_isr_hits", 0)) + self.edge_hits
